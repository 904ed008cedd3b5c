"""The two-moons demo: data, training to 100% for seeds 0-4, backends agreeing, progress, plot."""
import contextlib
import functools
import importlib.util
import io
import sys

import numpy as np
import pytest

import fastgrad
from fastgrad import reference
from fastgrad.app import backends, bench, demo, workloads
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


# ---- compiled, batched, NumPy and JAX: FusedBackend's trajectory ----
#
# CompiledBackend replays FusedBackend's graph: the same bits. The others sum in another order (fg.vmap's
# gradients over the points by blocks; NumPy and JAX a matmul per layer and NumPy's pairwise mean): a few ulps
# per step, as torch (see TORCH_RTOL), so 1e-12 on every loss of 10 steps, and the same accuracies.

TRAJECTORY_STEPS = 10


def _fused_and(cls, optimizer, seed=0, n=backends.N_POINTS, **kwargs):
    X, y = backends.moons(seed, n=n)
    weights = backends.initial_weights(2, (16, 16), seed)
    lr = backends.DEFAULT_LR[optimizer]
    return (backends.FusedBackend(weights, X, y, 100, optimizer, lr),
            cls(weights, X, y, 100, optimizer, lr, **kwargs))


def _follows(fused, other, rel):
    for k in range(TRAJECTORY_STEPS):
        (loss, acc), (other_loss, other_acc) = fused.step(), other.step()
        assert other_loss == pytest.approx(loss, rel=rel, abs=rel), f"step {k}"
        assert other_acc == acc, f"step {k}"


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_compiled_backend_is_the_fused_backend_bit_for_bit(optimizer):
    fused, compiled = _fused_and(backends.CompiledBackend, optimizer)
    for k in range(TRAJECTORY_STEPS):
        assert compiled.step() == fused.step(), f"step {k}"
    assert [p.data for p in compiled.params] == [p.data for p in fused.params]
    assert compiled.loss.traces == 1  # traced once, replayed after


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("threads", [1, 2])
def test_batched_backend_follows_the_fused_backend(optimizer, threads):
    fused, batched = _fused_and(backends.BatchedBackend, optimizer, threads=threads)
    _follows(fused, batched, 1e-12)
    assert [p.data for p in batched.params] == pytest.approx([p.data for p in fused.params], rel=1e-12,
                                                              abs=1e-14)


def test_batched_backend_first_loss_is_the_fused_one_and_threads_give_the_same_bits():
    # 300 points: three blocks of 128, so two threads really split them
    fused, one = _fused_and(backends.BatchedBackend, "sgd", n=300, threads=1)
    _, two = _fused_and(backends.BatchedBackend, "sgd", n=300, threads=2)
    first = fused.step()
    assert one.step() == two.step() == first  # before any update: every term is fused's bit for bit
    for _ in range(3):
        assert one.step() == two.step()
    assert [p.data for p in one.params] == [p.data for p in two.params]


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_numpy_backend_follows_the_fused_backend(optimizer):
    fused, floor = _fused_and(backends.NumpyBackend, optimizer)
    _follows(fused, floor, 1e-12)
    after = [v for W, b in zip(floor.Ws, floor.bs) for row, bias in zip(W.tolist(), b.tolist())
             for v in (*row, bias)]
    assert after == pytest.approx([p.data for p in fused.params], rel=1e-12, abs=1e-14)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_jax_backend_follows_the_fused_backend(optimizer):
    pytest.importorskip("jax")
    fused, jitted = _fused_and(backends.JaxBackend, optimizer)
    _follows(fused, jitted, 1e-12)


def test_backends_reject_an_unknown_optimizer():
    X, y = backends.moons(0)
    weights = backends.initial_weights(2, (4,), 0)
    with pytest.raises(ValueError, match="lbfgs"):
        backends.NumpyBackend(weights, X, y, 3, "lbfgs")


def test_compiled_graphs_count_the_eager_graphs_nodes():
    fused, compiled = _fused_and(backends.CompiledBackend, "sgd")
    fused_loss, _ = fused.train_step()
    compiled.train_step()
    assert backends.step_graph_nodes(None, compiled) == fastgrad.stats(fused_loss).nodes
    _, batched = _fused_and(backends.BatchedBackend, "sgd")
    xs = [[fastgrad.Var(a) for a in row] for row in batched.X.tolist()]
    labels = [fastgrad.Var(t) for t in batched.labels.tolist()]
    terms = [batched.point_loss(x, t)[0] for x, t in zip(xs, labels)]
    eager = (fastgrad.sum(terms) * (1.0 / len(terms))
             + backends.L2 * fastgrad.dot(batched.params, batched.params))
    assert backends.step_graph_nodes(None, batched) == fastgrad.stats(eager).nodes
    assert backends.step_graph_nodes(None, backends.NumpyBackend(*_small())) is None


@pytest.mark.parametrize("backend", ["compiled", "batched"])
def test_demo_backends_give_the_default_runs_losses(backend, monkeypatch):
    runs = []

    def recording_train(b, steps, progress=True, file=None):
        runs.append(train(b, steps, progress, file))
        return runs[-1]

    train = demo.train
    monkeypatch.setattr(demo, "train", recording_train)
    texts = []
    for name in ("fused", backend):
        out = io.StringIO()
        assert demo.run(steps=TRAJECTORY_STEPS, seed=3, progress=False, out=out, backend=name) == 0
        texts.append(out.getvalue())
    default, other = runs
    assert other.name == demo.MAIN_BACKENDS[backend].name and other.name in texts[1]
    assert other.losses == pytest.approx(default.losses, rel=1e-12, abs=1e-12)
    assert other.accuracies == default.accuracies
    assert texts[0].splitlines()[2] == texts[1].splitlines()[2]  # "final: loss ..., training accuracy ..."
    if backend == "compiled":
        assert other.losses == default.losses


def test_demo_rejects_an_unknown_backend():
    with pytest.raises(ValueError, match="unknown backend"):
        demo.run(steps=1, progress=False, out=io.StringIO(), backend="gpu")


def test_compare_runs_the_other_fastgrad_backends_and_numpy():
    names = [name for name, _ in demo.compare_backends(*_small()[:4], "sgd", 1.0, main="compiled")]
    assert backends.FusedBackend.name in names and backends.BatchedBackend.name in names
    assert backends.CompiledBackend.name not in names and "numpy" in names


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


NEW_MOONS_ROWS = ["fg.compile step (fastgrad.nn traced, replayed)", "fg.vmap per-point loss (batched replay)",
                  backends.NUMPY_NAME]


def test_bench_moons_step_has_the_compiled_batched_numpy_and_jax_rows(monkeypatch):
    # every fast implementation; the reference's place taken by a fast one (this tests the rows, not speed)
    fast = [impl for impl in backends.moons_step_implementations(*_small()) if impl[2] == 0]
    names = [name for name, _, _ in fast]
    assert set(NEW_MOONS_ROWS) <= set(names)
    assert ("jax.jit (batched float64 arrays)" in names) == (importlib.util.find_spec("jax") is not None)
    monkeypatch.setattr(bench, "moons_step_implementations",
                        lambda *a: fast + [(backends.REFERENCE_NAME, fast[0][1], 0)])
    rows = {r["implementation"]: r for r in bench.bench_moons_step(quick=True)}
    fused, floor = rows["fastgrad.nn (one fused call per layer)"], rows[backends.NUMPY_NAME]
    for r in rows.values():
        for prefix in ("", "gc_off_"):
            assert r[prefix + "ms"] > 0 and r[prefix + "best_ms"] <= r[prefix + "ms"]
            assert r[prefix + "vs_reference"] > 0
            assert r[prefix + "vs_numpy"] == pytest.approx(floor[prefix + "ms"] / r[prefix + "ms"])
    assert floor["vs_numpy"] == 1.0 and floor["nodes"] is None
    assert rows[NEW_MOONS_ROWS[0]]["nodes"] == fused["nodes"]  # the tape is the fused step's graph
    assert rows[NEW_MOONS_ROWS[1]]["nodes"] > fused["nodes"]   # a label leaf and 1 - y*s per point
    table = bench.moons_table(list(rows.values()))
    assert "| speedup vs numpy |" in table.splitlines()[0] and "| GC off: speedup vs numpy |" in table
    assert f"| {backends.NUMPY_NAME} |  |" in table and "| 1x |" in table


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


def _logging_backend(log, nodes):
    """A moons-step backend class whose steps append its name to `log` (no work, `nodes` graph nodes)."""
    class Fake:
        def __init__(self, name):
            self.name = name

        def train_step(self):
            log.append(self.name)
            return (None,)

        def graph_nodes(self):
            return nodes

    return Fake


def test_the_fast_moons_rows_are_timed_in_turns():
    """bench._time_in_turns: each implementation warmed up on a fresh backend, then rounds in which each
    times a block of steps in turn (for the GC on, then off), so a change of load reaches every row alike."""
    log = []
    Fake = _logging_backend(log, nodes=7)

    rows = [{"implementation": "a"}, {"implementation": "b"}]
    bench._time_in_turns([(rows[0], lambda: Fake("a"), 1, 6), (rows[1], lambda: Fake("b"), 1, 6)], rounds=3)
    one_pass = ["a", "b"] + (["a"] * 3 + ["b"] * 3) * 3       # warm-ups; each turn: 1 untimed + 2 timed
    assert log == one_pass * 2                                   # GC on, then GC off
    for row in rows:
        assert row["repeats"] == 6 and row["nodes"] == 7
        assert 0 < row["best_ms"] <= row["ms"] and 0 < row["gc_off_best_ms"] <= row["gc_off_ms"]


def test_time_in_turns_calls_before_untimed_and_each_player_inside_its_context():
    """workloads.time_in_turns (the moons rows' and fg.vmap threads row's loop): per round and player, one
    untimed call then ``block`` timed ones, each after ``before``, all inside the player's context."""
    log = []

    @contextlib.contextmanager
    def context(name):
        log.append(f"enter {name}")
        yield
        log.append(f"exit {name}")

    blocks = (("a", 2), ("b", 1))
    players = [(lambda n=n: log.append(n), block, functools.partial(context, n),
                lambda n=n: log.append(f"zero {n}")) for n, block in blocks]
    times = workloads.time_in_turns(players, 2, gc_enabled=False)
    turn = {n: [f"enter {n}"] + [f"zero {n}", n] * (1 + block) + [f"exit {n}"] for n, block in blocks}
    assert log == (turn["a"] + turn["b"]) * 2
    assert [len(t) for t in times] == [4, 2] and all(x >= 0 for t in times for x in t)


def test_the_slow_moons_rows_run_before_the_fast_turns(monkeypatch):
    """The pure-Python rows are timed before the fast ones (whose turns import torch and jax, and a bigger
    heap slows a pure-Python engine under the cyclic GC); the rows keep the implementations' order."""
    log = []
    Fake = _logging_backend(log, nodes=1)

    impls = [("fast1", lambda: Fake("fast1"), 0), (backends.REFERENCE_NAME, lambda: Fake("slow"), 2),
             (backends.NUMPY_NAME, lambda: Fake("fast2"), 0)]
    monkeypatch.setattr(bench, "moons_step_implementations", lambda *a: impls)
    rows = bench.bench_moons_step(quick=True)
    assert [r["implementation"] for r in rows] == [name for name, _, _ in impls]
    last_slow = max(i for i, name in enumerate(log) if name == "slow")
    assert set(log[:last_slow + 1]) == {"slow"} and {"fast1", "fast2"} <= set(log[last_slow + 1:])
