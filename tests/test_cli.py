"""The `fastgrad` command: `python -m fastgrad demo|bench`, argument errors, the console script."""
import json
import os
import shutil
import subprocess
import sys

import pytest

import fastgrad
from fastgrad.app import backends, bench, cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(fastgrad.__file__)))


def _run(*args, timeout=300):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    return subprocess.run([sys.executable, "-m", "fastgrad", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


def test_python_m_fastgrad_demo_end_to_end():
    proc = _run("demo", "--steps", "100", "--seed", "1")
    assert proc.returncode == 0, proc.stderr
    assert "training accuracy 100% (100/100)" in proc.stdout
    assert "ms/step" in proc.stdout
    assert "100/100" in proc.stderr  # the progress bar (tqdm or the plain line)


def test_demo_options_in_process(capsys):
    assert cli.main(["demo", "--steps", "4", "--seed", "2", "--hidden", "8,4", "--optimizer", "adam",
                     "--lr", "0.01", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "MLP(2, [8, 4, 1])" in out and "Adam lr 0.01" in out and "4 steps" in out


@pytest.mark.parametrize("flag, backend", [("--compile", "compiled"), ("--batched", "batched"),
                                           ("--tensor", "tensor")])
def test_demo_compile_and_batched_flags_choose_the_backend(flag, backend, capsys):
    assert cli.main(["demo", "--steps", "3", "--no-progress", flag]) == 0
    out = capsys.readouterr().out
    from fastgrad.app import demo

    assert f"ms/step ({demo.MAIN_BACKENDS[backend].name};" in out
    assert "337 parameters" in out                  # a Tensor parameter counts its elements


def test_demo_tensor_gives_the_eager_losses(capsys):
    """`demo --tensor` trains the same model on the points as one matrix: the eager run's losses."""
    from fastgrad.app import demo

    runs = {}
    for flag in ([], ["--tensor"]):
        assert cli.main(["demo", "--steps", "40", "--no-progress", "--seed", "3", *flag]) == 0
        runs[bool(flag)] = capsys.readouterr().out.splitlines()
    final = [next(line for line in runs[k] if line.startswith("final:")) for k in (False, True)]
    assert final[0] == final[1]                     # loss to 6 decimals, accuracy, first step at 100%
    X, y = demo.moons(3)
    weights = demo.initial_weights(2, [16, 16], 3)
    eager = demo.train(demo.FusedBackend(weights, X, y, 40, "sgd", 1.0), 40, progress=False)
    batch = demo.train(demo.TensorBackend(weights, X, y, 40, "sgd", 1.0), 40, progress=False)
    assert max(abs(a - b) for a, b in zip(eager.losses, batch.losses)) < 1e-12


def test_python_m_fastgrad_demo_compile_end_to_end():
    proc = _run("demo", "--steps", "100", "--seed", "1", "--compile", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "training accuracy 100% (100/100)" in proc.stdout and "fg.compile" in proc.stdout


@pytest.mark.parametrize("args", [
    ["demo", "--compile", "--batched"],
    ["bench", "--only", "gpu"],
    ["demo", "--steps", "0"],
    ["demo", "--steps", "many"],
    ["demo", "--hidden", "16,x"],
    ["demo", "--hidden", "0"],
    ["demo", "--optimizer", "lbfgs"],
    ["demo", "--lr", "-1"],
    ["frobnicate"],
    [],
])
def test_bad_arguments_exit_with_status_2(args, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(args)
    assert info.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0 and fastgrad.__version__ in capsys.readouterr().out


def test_bench_moons_only_writes_table_json_and_plot(tmp_path, monkeypatch, capsys):
    # the slow pure-Python implementations are swapped for a fast one: this tests the command, not speed
    impls = backends.moons_step_implementations

    def fast_only(*args):
        chosen = [impl for impl in impls(*args) if impl[2] == 0 and impl[0].startswith("fastgrad")]
        return chosen + [(backends.REFERENCE_NAME, chosen[1][1], 0)]

    monkeypatch.setattr(bench, "moons_step_implementations", fast_only)
    json_path = tmp_path / "bench.json"
    argv = ["bench", "--quick", "--only", "moons", "--json", str(json_path)]
    have_mpl = _importable("matplotlib")
    if have_mpl:
        argv += ["--plot", str(tmp_path / "bench.png")]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "GC policy, every engine, every table: cyclic GC on while timing" in out
    assert "| implementation | graph nodes / step | steps timed | ms / step (median) | best |" in out
    assert "| fastgrad.nn (one fused call per layer) |" in out
    assert "target: fastgrad.nn (one fused call per layer) >= 250x" in out
    data = json.loads(json_path.read_text())
    assert data["machine"]["machine"] and data["engine"] == []
    assert {r["implementation"] for r in data["moons_step"]} >= {"fastgrad.nn (one fused call per layer)"}
    if have_mpl:
        assert (tmp_path / "bench.png").read_bytes()[:4] == b"\x89PNG"


def test_bench_moons_table_has_the_new_rows(monkeypatch, capsys):
    impls = backends.moons_step_implementations

    def fast_only(*args):
        chosen = [impl for impl in impls(*args)
                  if impl[2] == 0 and not impl[0].startswith(("fastgrad engine", "torch"))]
        return chosen + [(backends.REFERENCE_NAME, chosen[0][1], 0)]

    monkeypatch.setattr(bench, "moons_step_implementations", fast_only)
    assert cli.main(["bench", "--quick", "--only", "moons"]) == 0
    out = capsys.readouterr().out
    for name in ("fg.compile step (fastgrad.nn traced, replayed)", "fg.vmap per-point loss (batched replay)",
                 backends.NUMPY_NAME):
        assert f"| {name} |" in out
    assert "| speedup vs numpy |" in out and "## Compiled tapes" not in out and "## Engine" not in out


def test_bench_only_compiled(monkeypatch, capsys, tmp_path):
    from fastgrad.app import workloads

    monkeypatch.setattr(workloads, "run_compiled",
                        lambda quick: [*workloads.compiled_replay(2000, repeats=1),
                                       *workloads.vmap_threads(300, rounds=1, block=1)])
    json_path = tmp_path / "bench.json"
    assert cli.main(["bench", "--quick", "--only", "compiled", "--json", str(json_path)]) == 0
    out = capsys.readouterr().out
    assert "## Compiled tapes: replay and threads" in out and "## Training step" not in out
    assert "| chain y·0.9999999 + 1e-7 | 2,001 nodes | ns/node (own graph) | fg.compile replay" in out
    assert "| fg.vmap moons loss (MLP 2-16-16-1) | 300 samples | ms / call | threads=2 |" in out
    data = json.loads(json_path.read_text())
    assert data["engine"] == [] and data["moons_step"] == [] and len(data["compiled"]) == 3


def test_bench_plot_without_matplotlib_is_a_clear_error(monkeypatch, capsys):
    real_find_spec = bench.importlib.util.find_spec
    monkeypatch.setattr(bench.importlib.util, "find_spec",
                        lambda name, *a: None if name == "matplotlib" else real_find_spec(name, *a))
    assert cli.main(["bench", "--quick", "--plot", "x.png"]) == 2
    assert "needs matplotlib" in capsys.readouterr().err


def test_markdown_table_of_moons_rows():
    rows = [{"implementation": "a", "nodes": 7243, "ms": 1.0, "best_ms": 0.5, "repeats": 3,
             "vs_reference": 100.0, "gc_off_ms": 0.8, "gc_off_vs_reference": 25.0},
            {"implementation": "micrograd", "nodes": 65818, "ms": 50.0, "best_ms": 40.0, "repeats": 2,
             "vs_reference": 2.0, "gc_off_ms": 8.0, "gc_off_vs_reference": 2.5}]
    table = bench.moons_table(rows).splitlines()
    assert table[0] == ("| implementation | graph nodes / step | steps timed | ms / step (median) | best "
                        "| speedup vs reference.py | speedup vs micrograd | GC off: ms / step (median) "
                        "| GC off: speedup vs reference.py | GC off: speedup vs micrograd |")
    assert table[2] == "| a | 7,243 | 3 | 1.000 | 0.500 | 100.0x | 50.0x | 0.800 | 25.0x | 10.0x |"


def test_console_script_is_installed():
    script = shutil.which("fastgrad", path=os.path.dirname(sys.executable))
    if script is None:
        pytest.skip("the fastgrad console script is not installed in this environment")
    proc = subprocess.run([script, "demo", "--steps", "2", "--no-progress"], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "ms/step" in proc.stdout


def _importable(name):
    import importlib.util

    return importlib.util.find_spec(name) is not None
