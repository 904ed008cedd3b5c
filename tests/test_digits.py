"""`python -m fastgrad demo digits` and `fastgrad.data.load_digits`: real data, batched Tensor training."""
import builtins
import subprocess
import sys

import numpy as np
import pytest

from fastgrad.app import cli
from fastgrad.data import load_digits


def _without_sklearn(monkeypatch):
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "sklearn" or name.startswith("sklearn."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", fake_import)


def test_load_digits_splits_scaled_images_and_integer_labels():
    pytest.importorskip("sklearn")
    X, y, X_test, y_test = load_digits(test_fraction=0.2, seed=3)
    assert X.shape == (1438, 64) and X_test.shape == (359, 64)
    assert y.shape == (1438,) and y_test.shape == (359,) and y.dtype == np.intp
    assert X.dtype == np.float64 and X.min() == 0.0 and X.max() == 1.0
    assert set(np.unique(np.concatenate([y, y_test]))) == set(range(10))
    from sklearn.datasets import load_digits as sk
    raw = sk()
    # every image is in exactly one part, with its own label
    both = np.concatenate([X, X_test]) * 16.0
    order = np.lexsort(both.T)
    ref = np.lexsort(raw.data.T)
    assert np.array_equal(both[order], raw.data[ref])
    again = load_digits(test_fraction=0.2, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(again, (X, y, X_test, y_test)))
    assert not np.array_equal(load_digits(seed=4)[1], y)


@pytest.mark.parametrize("fraction", [0, 1, 1.5, -0.1, "0.2", True])
def test_load_digits_rejects_a_bad_fraction(fraction):
    with pytest.raises(ValueError, match="test_fraction"):
        load_digits(test_fraction=fraction)


def test_without_scikit_learn_the_error_names_the_extra(monkeypatch, capsys):
    _without_sklearn(monkeypatch)
    with pytest.raises(ImportError, match=r"fastgrad\[data\]"):
        load_digits()
    assert cli.main(["demo", "digits", "--no-progress"]) == 2
    assert "pip install 'fastgrad[data]'" in capsys.readouterr().err


def test_demo_digits_trains_and_reports(capsys):
    pytest.importorskip("sklearn")
    assert cli.main(["demo", "digits", "--epochs", "3", "--no-progress", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "MLP 64-128-10 (Tensor parameters), Adam lr=0.002, batches of 64" in out
    assert "1438 training / 359 test images" in out
    acc = float(out.split("test accuracy ")[1].split("%")[0])
    assert acc > 85.0                   # three epochs already learn most digits (chance: 10%)
    assert "ms/epoch" in out


def test_demo_digits_options_and_misuse(capsys):
    pytest.importorskip("sklearn")
    assert cli.main(["demo", "digits", "--epochs", "1", "--batch-size", "256", "--hidden", "32",
                     "--lr", "0.01", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "MLP 64-32-10" in out and "batches of 256" in out and "lr=0.01" in out
    misuse = ((["demo", "digits", "--steps", "5"], "--steps"), (["demo", "digits", "--compile"], "--compile"),
              (["demo", "--epochs", "2"], "--epochs"),
              (["demo", "moons", "--batch-size", "8"], "--batch-size"))
    for args, bad in misuse:
        assert cli.main(args) == 2
        assert f"{bad} do(es) not apply" in capsys.readouterr().err


def test_python_m_fastgrad_demo_digits_end_to_end():
    pytest.importorskip("sklearn")
    proc = subprocess.run([sys.executable, "-m", "fastgrad", "demo", "digits", "--epochs", "2"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "test accuracy" in proc.stdout
    assert "epoch 2/2" in proc.stderr               # the progress bar


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(10))
def test_the_default_recipe_reaches_97_percent(seed):
    pytest.importorskip("sklearn")
    from fastgrad.app.digits import train_digits
    result = train_digits(epochs=cli.DIGITS_EPOCHS, lr=cli.DIGITS_LR, seed=seed, progress=False)
    assert result["test_accuracy"] >= 0.97, result["test_accuracy"]
