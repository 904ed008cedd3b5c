"""The two-moons demo: data, training to 100% for seeds 0-4, backends agreeing, progress, plot."""
import importlib.util
import io
import sys

import numpy as np
import pytest

import fastgrad
from fastgrad import reference
from fastgrad.app import backends, bench, demo
from fastgrad.data import make_moons

# ---- data ----

def test_make_moons_shapes_labels_and_determinism():
    X, y = make_moons(100, noise=0.1, random_state=3)
    assert X.shape == (100, 2) and X.dtype == np.float64 and sorted(set(y.tolist())) == [0, 1]
    assert (y == 0).sum() == 50
    X2, y2 = make_moons(100, noise=0.1, random_state=3)
    assert np.array_equal(X, X2) and np.array_equal(y, y2)
    assert not np.array_equal(X, make_moons(100, noise=0.1, random_state=4)[0])


def test_make_moons_without_noise_lies_on_the_half_circles():
    X, y = make_moons(7, shuffle=False)
    outer, inner = X[y == 0], X[y == 1]
    assert np.allclose(np.hypot(outer[:, 0], outer[:, 1]), 1.0)
    assert np.allclose(np.hypot(inner[:, 0] - 1.0, inner[:, 1] - 0.5), 1.0)
    assert len(outer) == 3 and len(inner) == 4
    _Xp, yp = make_moons((2, 5), shuffle=False)
    assert (yp == 0).sum() == 2 and (yp == 1).sum() == 5


def test_make_moons_is_sklearns_algorithm():
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    for seed in range(3):
        a = make_moons(100, noise=0.1, random_state=seed)
        b = sklearn_datasets.make_moons(100, noise=0.1, random_state=seed)
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_make_moons_rejects_bad_arguments():
    with pytest.raises(ValueError):
        make_moons(-1)
    with pytest.raises(ValueError):
        make_moons(10, noise=-0.1)
    with pytest.raises(ValueError):
        make_moons(10, random_state="seed")


# ---- training ----

@pytest.mark.parametrize("seed", range(5))
def test_micrograds_recipe_reaches_100_percent_in_100_steps(seed):
    X, y = backends.moons(seed)
    backend = backends.FusedBackend(backends.initial_weights(2, (16, 16), seed), X, y, steps=100)
    result = demo.train(backend, 100, progress=False)
    assert result.first_perfect is not None
    assert backends.accuracy(backend.predict(X), y) == 1.0
    assert result.losses[-1] < 0.05


def test_adam_option_trains_too():
    X, y = backends.moons(0)
    weights = backends.initial_weights(2, (16, 16), 0)
    backend = backends.FusedBackend(weights, X, y, 100, "adam", backends.DEFAULT_LR["adam"])
    demo.train(backend, 100, progress=False)
    assert backends.accuracy(backend.predict(X), y) == 1.0


def test_every_backend_computes_the_same_steps():
    X, y = backends.moons(1)
    weights = backends.initial_weights(2, (16, 16), 1)
    steps = 3
    impls = [
        backends.FusedBackend(weights, X, y, steps),
        backends.EngineBackend(fastgrad, weights, X, y, steps),
        backends.EngineBackend(reference, weights, X, y, steps),
        backends.ScalarBackend(weights, X, y, steps),
        backends.ScalarBackend(weights, X, y, steps, Value=reference.Value,
                               name="reference, micrograd-style"),
    ]
    if importlib.util.find_spec("micrograd") is not None:
        impls.append(backends.MicrogradBackend(weights, X, y, steps))
    runs = [[b.step() for _ in range(steps)] for b in impls]
    for run in runs[1:]:
        assert [loss for loss, _ in run] == pytest.approx([loss for loss, _ in runs[0]], rel=1e-12, abs=1e-12)
        assert [acc for _, acc in run] == [acc for _, acc in runs[0]]


def test_adam_backends_agree():
    X, y = backends.moons(2)
    weights = backends.initial_weights(2, (4,), 2)
    fused = backends.FusedBackend(weights, X, y, 3, "adam", 0.05)
    plain = backends.EngineBackend(reference, weights, X, y, 3, "adam", 0.05)
    expected = [plain.step()[0] for _ in range(3)]
    assert [fused.step()[0] for _ in range(3)] == pytest.approx(expected, rel=1e-12)


# NOTE: both sides compute in float64 and differ only in summation order (a BLAS matmul per layer against one
# fused dot per neuron, `mean` against `sum * (1/n)`): a few ulps per step. Over 100 steps on seeds 0-2 the
# losses stayed within 7e-15 relative of each other, so 1e-12 leaves a 100-fold margin. Any real difference is
# far above it: Adam's eps 1.1e-8 instead of 1e-8 moves the loss by 3e-7 at step 1, a missing lr schedule by
# 6e-2 at step 2. Step 0 alone sees neither: its loss is computed before the first update.
TORCH_RTOL = 1e-12


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_torch_backend_follows_fastgrads_trajectory(optimizer):
    pytest.importorskip("torch")
    X, y = backends.moons(0)
    weights = backends.initial_weights(2, (16, 16), 0)
    steps, lr = 20, backends.DEFAULT_LR[optimizer]
    fused = backends.FusedBackend(weights, X, y, steps, optimizer, lr)
    torch_backend = backends.TorchBackend(weights, X, y, steps, optimizer, lr)
    for k in range(steps):
        (loss, acc), (torch_loss, torch_acc) = fused.step(), torch_backend.step()
        assert torch_loss == pytest.approx(loss, rel=TORCH_RTOL), f"step {k}"
        assert torch_acc == acc, f"step {k}"
    weights_after = [p.data for p in fused.params]
    torch_after = [v for W, b in zip(torch_backend.Ws, torch_backend.bs)
                   for row, bias in zip(W.tolist(), b.tolist()) for v in (*row, bias)]
    assert torch_after == pytest.approx(weights_after, rel=TORCH_RTOL, abs=1e-14)


# ---- the command ----

def test_run_prints_accuracy_and_timing():
    out = io.StringIO()
    assert demo.run(steps=100, seed=0, progress=False, out=out) == 0
    text = out.getvalue()
    assert "MLP(2, [16, 16, 1]), 337 parameters" in text
    assert "training accuracy 100% (100/100)" in text
    assert "ms/step" in text


def test_run_with_few_steps_and_other_options():
    out = io.StringIO()
    assert demo.run(steps=3, seed=4, hidden=[8], optimizer="adam", lr=0.02, progress=False, out=out) == 0
    text = out.getvalue()
    assert "MLP(2, [8, 1]), 33 parameters" in text and "Adam lr 0.02" in text and "3 steps" in text


def test_compare_prints_speedups(monkeypatch):
    monkeypatch.setattr(demo, "_importable", lambda name: False)  # keep micrograd out: it is slow
    out = io.StringIO()
    demo.run(steps=2, seed=0, compare=True, progress=False, out=out)
    text = out.getvalue()
    assert "fastgrad.reference" in text and "fg.Value, micrograd-style" in text
    assert "x faster" in text and "micrograd is not installed" in text


def test_progress_falls_back_to_a_plain_line_without_tqdm(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm now raises ImportError
    err = io.StringIO()
    bar = demo.Progress(20, "train", file=err)
    assert bar.bar is None
    for k in range(20):
        bar.update(0.5, 1.0 if k > 10 else 0.5)
    bar.close()
    lines = err.getvalue().splitlines()
    assert len(lines) == 10 and lines[-1].startswith("train: 20/20 [") and "acc 100%" in lines[-1]


def test_progress_uses_tqdm_when_installed():
    pytest.importorskip("tqdm")
    err = io.StringIO()
    bar = demo.Progress(3, "train", file=err)
    for _ in range(3):
        bar.update(0.25, 1.0)
    bar.close()
    assert bar.bar is not None and "3/3" in err.getvalue() and "loss=0.2500" in err.getvalue()


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "moons.png"
    assert demo.run(steps=2, progress=False, plot=str(path), out=io.StringIO()) == 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_is_a_clear_error(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(demo, "_have_matplotlib", lambda: False)
    assert demo.run(steps=2, progress=False, plot=str(tmp_path / "x.png")) == 2
    assert "needs matplotlib" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_bench_moons_step_rows(monkeypatch):
    fast = [impl for impl in backends.moons_step_implementations(*_small()) if impl[2] == 0][:1]
    monkeypatch.setattr(bench, "moons_step_implementations",
                        lambda *a: fast + [(backends.REFERENCE_NAME, fast[0][1], 0)])
    rows = bench.bench_moons_step(quick=True)
    assert [r["implementation"] for r in rows] == [fast[0][0], backends.REFERENCE_NAME]
    assert all(r[key] > 0 for r in rows for key in ("ms", "vs_reference", "gc_off_ms", "gc_off_vs_reference"))
    assert rows[0]["nodes"] == rows[1]["nodes"] > 0


def test_step_graph_nodes_counts_each_engines_own_graph():
    X, y = backends.moons(0)
    weights = backends.initial_weights(2, (4,), 0)
    fused_loss = backends.FusedBackend(weights, X[:3], y[:3], 1).train_step()[0]
    ref_loss = backends.EngineBackend(reference, weights, X[:3], y[:3], 1).train_step()[0]
    assert backends.step_graph_nodes(ref_loss) == reference_nodes(ref_loss)
    assert backends.step_graph_nodes(fused_loss) < backends.step_graph_nodes(ref_loss)


def test_step_graph_nodes_of_torch_are_its_autograd_nodes():
    torch = pytest.importorskip("torch")
    w = torch.ones(3, requires_grad=True)
    loss = (w * 2.0).relu().sum()  # MulBackward, ReluBackward, SumBackward and w's AccumulateGrad
    assert backends.step_graph_nodes(loss) == 4


def reference_nodes(out):
    """The reference graph's nodes, walked recursively (small graphs only)."""
    seen = set()

    def visit(v):
        if id(v) not in seen:
            seen.add(id(v))
            for p in v._prev:
                visit(p)
    visit(out)
    return len(seen)


def _small():
    X, y = backends.moons(0)
    return backends.initial_weights(2, (16, 16), 0), X, y, 100
