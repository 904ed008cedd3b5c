"""The main job, `python -m fastgrad demo`: train micrograd's MLP on two moons, with progress and timing.

micrograd's recipe: 100 points of `make_moons(noise=0.1)`, labels ±1, `MLP(2, [16, 16, 1])`, the max-margin
(hinge) loss plus 1e-4 · L2 on every parameter, full-batch SGD with the learning rate falling linearly from
1.0 to 0.1 (`lr · (1 - 0.9·k/steps)` at step k) over 100 steps. `--seed s` seeds both the data
(`make_moons(random_state=s)`) and the weights (`random.Random(s)`: uniform(-1, 1), zero biases, as
micrograd does).

The same training can run on several backends, all started from the same weights (`--compare`):
- `FusedBackend`: `fastgrad.nn.MLP` (one fused dot node per neuron) + `fastgrad.optim` (C update loop);
- `EngineBackend(engine)`: a tiny MLP written against an engine module's `Var`/`dot`/`sum` — with
  `fastgrad.reference`, whose `dot`/`sum` are per-scalar Python loops, it is the pure-Python baseline;
- `ScalarBackend(Value)`: micrograd's own `nn.py` code (per-scalar `sum(wi*xi ...)`), here on `fg.Value`;
- `MicrogradBackend`: the `micrograd` package itself, when installed (and `TorchBackend` for benchmarks).
"""
from __future__ import annotations

import contextlib
import gc
import math
import random
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import fastgrad
from fastgrad import nn, optim
from fastgrad.data import make_moons
from fastgrad.nn import functional as F

__all__ = [
    "DEFAULT_LR",
    "L2",
    "NOISE",
    "N_POINTS",
    "EngineBackend",
    "FusedBackend",
    "MicrogradBackend",
    "Progress",
    "ScalarBackend",
    "TorchBackend",
    "TrainResult",
    "lr_factor",
    "moons",
    "run",
    "train",
]

N_POINTS = 100
NOISE = 0.1
L2 = 1e-4  # weight of the L2 penalty on all parameters
DEFAULT_LR = {"sgd": 1.0, "adam": 0.05}
OPTIMIZERS = tuple(DEFAULT_LR)

Weights = list  # per layer, per neuron: (list of weights, bias), as plain floats


def moons(seed: int, n: int = N_POINTS, noise: float = NOISE) -> tuple[list[list[float]], list[int]]:
    """The data set: points as lists of floats and labels as -1/+1 ints."""
    X, y = make_moons(n, noise=noise, random_state=seed)
    return X.tolist(), [2 * int(t) - 1 for t in y]


def lr_factor(k: int, steps: int) -> float:
    """micrograd's schedule: 1.0 at step 0 falling linearly by 0.9 over `steps` steps."""
    return 1.0 - 0.9 * k / steps


def accuracy(scores: Sequence[float], y: Sequence[int]) -> float:
    return sum((s > 0) == (t > 0) for s, t in zip(scores, y)) / len(y)


# ---------------------------------------------------------------------------------------------------
# backends: each trains the same model from the same weights. train_step() is the benchmarked step
# (zero_grad, forward over all points, backward, update) and returns (loss, scores); step() also
# computes the accuracy and returns plain floats.
# ---------------------------------------------------------------------------------------------------

class _Backend:
    name: str
    y: list[int]

    def train_step(self) -> tuple[Any, list[Any]]:
        raise NotImplementedError

    def step(self) -> tuple[float, float]:
        loss, scores = self.train_step()
        return loss.data, accuracy([s.data for s in scores], self.y)


class FusedBackend(_Backend):
    """fastgrad.nn + fastgrad.optim: each layer built in one engine call (a fused dot per neuron), the
    update in one C loop."""

    name = "fastgrad.nn (fused)"

    def __init__(self, weights: Weights, X: list[list[float]], y: list[int], steps: int,
                 optimizer: str = "sgd", lr: float = 1.0) -> None:
        self.model = mlp_from_weights(weights)
        self.params = self.model.parameters()
        # NOTE: inputs become leaves once, reused by every step (a float in a dot would be a new leaf per use)
        self.inputs = [[fastgrad.Var(a) for a in row] for row in X]
        self.y = y
        cls = optim.SGD if optimizer == "sgd" else optim.Adam
        self.optimizer = cls(self.params, lr=lr)
        self.scheduler = optim.lr_scheduler.LambdaLR(self.optimizer, lambda k: lr_factor(k, steps))

    def train_step(self) -> tuple[Any, list[Any]]:
        """zero_grad, forward over every point, backward, update: (loss, scores)."""
        self.optimizer.zero_grad()
        scores = [self.model(x) for x in self.inputs]
        loss = F.hinge_loss(scores, self.y) + L2 * fastgrad.dot(self.params, self.params)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        return loss, scores

    def predict(self, points: Sequence[Sequence[float]]) -> list[float]:
        return [self.model(p).data for p in points]


def layer_sizes(weights: Weights) -> list[int]:
    """[nin, n1, n2, ...] of the MLP that the weights describe."""
    return [len(weights[0][0][0])] + [len(layer) for layer in weights]


def mlp_from_weights(weights: Weights) -> nn.MLP:
    """A fastgrad.nn.MLP holding the given weights."""
    sizes = layer_sizes(weights)
    model = nn.MLP(sizes[0], sizes[1:], rng=random.Random(0))
    for layer, layer_weights in zip(model.layers, weights):
        for neuron, (w, b) in zip(layer.neurons, layer_weights):
            for p, value in zip(neuron.w, w):
                p.data = value
            neuron.b.data = b
    return model


def initial_weights(nin: int, hidden: Sequence[int], seed: int) -> Weights:
    """The weights of `fastgrad.nn.MLP(nin, [*hidden, 1], rng=random.Random(seed))`, as plain floats."""
    model = nn.MLP(nin, [*hidden, 1], rng=random.Random(seed))
    return [[([p.data for p in n.w], n.b.data) for n in layer.neurons] for layer in model.layers]


class PythonUpdate:
    """The optimizer of the per-scalar backends, in plain Python: SGD, or Adam with PyTorch's formula."""

    def __init__(self, params: list[Any], optimizer: str, lr: float, steps: int) -> None:
        self.params, self.optimizer, self.lr, self.steps, self.k = params, optimizer, lr, steps, 0
        self.m = [0.0] * len(params)
        self.v = [0.0] * len(params)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = 0.0

    def step(self) -> None:
        lr = self.lr * lr_factor(self.k, self.steps)
        self.k += 1
        if self.optimizer == "sgd":
            for p in self.params:
                p.data -= lr * p.grad
            return
        beta1, beta2, eps, t = 0.9, 0.999, 1e-8, self.k
        step_size = lr / (1 - beta1 ** t)
        bc2_sqrt = (1 - beta2 ** t) ** 0.5
        m, v = self.m, self.v
        for i, p in enumerate(self.params):
            g = p.grad
            m[i] = m[i] + (1 - beta1) * (g - m[i])
            v[i] = v[i] * beta2 + (1 - beta2) * g * g
            p.data = p.data + -step_size * m[i] / (math.sqrt(v[i]) / bc2_sqrt + eps)


class EngineBackend(_Backend):
    """A tiny MLP written once against an engine module (`Var`, `dot`, `sum`, `.relu()`): with
    `fastgrad.reference` it is the pure-Python baseline (per-scalar nodes inside `dot` and `sum`)."""

    def __init__(self, engine: Any, weights: Weights, X: list[list[float]], y: list[int], steps: int,
                 optimizer: str = "sgd", lr: float = 1.0, name: str | None = None) -> None:
        self.engine = engine
        self.name = name or engine.__name__
        Var = engine.Var
        # rows [b, w0, w1, ...] per neuron, so that a neuron is dot(row, [1, x0, x1, ...])
        self.layers = [[[Var(b), *(Var(v) for v in w)] for w, b in layer] for layer in weights]
        self.params = [p for layer in self.layers for row in layer for p in (*row[1:], row[0])]
        self.one = Var(1.0)
        self.inputs = [[Var(a) for a in row] for row in X]
        self.y = y
        self.update = PythonUpdate(self.params, optimizer, lr, steps)

    def forward(self, x: list[Any]) -> Any:
        dot, last = self.engine.dot, len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            xb = [self.one, *x]
            x = [dot(row, xb) for row in layer]
            if i != last:
                x = [v.relu() for v in x]
        return x[0]

    def train_step(self) -> tuple[Any, list[Any]]:
        e = self.engine
        self.update.zero_grad()
        scores = [self.forward(x) for x in self.inputs]
        terms = [(1.0 - s).relu() if t > 0 else (s + 1.0).relu() for s, t in zip(scores, self.y)]
        loss = e.sum(terms) * (1.0 / len(terms)) + L2 * e.dot(self.params, self.params)
        loss.backward()
        self.update.step()
        return loss, scores


class ScalarMLP:
    """micrograd's nn.py over any Value class: per-scalar nodes, `sum((wi*xi ...), b)` in every neuron."""

    def __init__(self, Value: Any, weights: Weights) -> None:
        self.layers = [[([Value(v) for v in w], Value(b)) for w, b in layer] for layer in weights]

    def __call__(self, x: list[Any]) -> Any:
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            out = [sum((wi * xi for wi, xi in zip(w, x)), b) for w, b in layer]
            x = [v.relu() for v in out] if i != last else out
        return x[0] if len(x) == 1 else x

    def parameters(self) -> list[Any]:
        return [p for layer in self.layers for w, b in layer for p in (*w, b)]


class ScalarBackend(_Backend):
    """micrograd's demo loop, verbatim in spirit, on a Value class (default `fastgrad.Value`)."""

    def __init__(self, weights: Weights, X: list[list[float]], y: list[int], steps: int,
                 optimizer: str = "sgd", lr: float = 1.0, Value: Any = None, name: str | None = None) -> None:
        self.Value = Value or fastgrad.Value
        self.name = name or "fg.Value, micrograd-style"
        self.model = self._model(weights)
        self.params = self.model.parameters()
        self.X, self.y = X, y
        self.update = PythonUpdate(self.params, optimizer, lr, steps)

    def _model(self, weights: Weights) -> Any:
        return ScalarMLP(self.Value, weights)

    def train_step(self) -> tuple[Any, list[Any]]:
        Value = self.Value
        inputs = [list(map(Value, row)) for row in self.X]
        scores = list(map(self.model, inputs))
        losses = [(1 + -yi * si).relu() for yi, si in zip(self.y, scores)]
        data_loss = sum(losses) * (1.0 / len(losses))
        reg_loss = L2 * sum(p * p for p in self.params)
        total = data_loss + reg_loss
        self.update.zero_grad()
        total.backward()
        self.update.step()
        return total, scores


class MicrogradBackend(ScalarBackend):
    """The `micrograd` package itself (its nn.MLP and Value), with our weights copied in."""

    def __init__(self, weights: Weights, X: list[list[float]], y: list[int], steps: int,
                 optimizer: str = "sgd", lr: float = 1.0) -> None:
        from micrograd.engine import Value

        super().__init__(weights, X, y, steps, optimizer, lr, Value=Value, name="micrograd")

    def _model(self, weights: Weights) -> Any:
        from micrograd.nn import MLP

        sizes = layer_sizes(weights)
        model = MLP(sizes[0], sizes[1:])
        flat = [v for layer in weights for w, b in layer for v in (*w, b)]
        for p, value in zip(model.parameters(), flat):
            p.data = value
        return model


class TorchBackend:
    """PyTorch, batched float64 tensors (the whole data set in one matmul per layer) — for reference only."""

    name = "torch (batched tensors)"

    def __init__(self, weights: Weights, X: list[list[float]], y: list[int], steps: int,
                 optimizer: str = "sgd", lr: float = 1.0) -> None:
        import torch

        self.torch = torch
        dt = torch.float64
        self.Ws = [torch.tensor([w for w, _ in layer], dtype=dt, requires_grad=True) for layer in weights]
        self.bs = [torch.tensor([b for _, b in layer], dtype=dt, requires_grad=True) for layer in weights]
        self.params = [p for pair in zip(self.Ws, self.bs) for p in pair]
        self.X = torch.tensor(X, dtype=dt)
        self.y = torch.tensor(y, dtype=dt)
        cls = torch.optim.SGD if optimizer == "sgd" else torch.optim.Adam
        self.optimizer = cls(self.params, lr=lr)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda k: lr_factor(k, steps))

    def train_step(self) -> tuple[Any, Any]:
        torch = self.torch
        self.optimizer.zero_grad()
        h = self.X
        for i, (W, b) in enumerate(zip(self.Ws, self.bs)):
            h = h @ W.T + b
            if i != len(self.Ws) - 1:
                h = torch.relu(h)
        scores = h[:, 0]
        loss = torch.relu(1 - self.y * scores).mean() + L2 * sum((p * p).sum() for p in self.params)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        return loss, scores

    def step(self) -> tuple[float, float]:
        loss, scores = self.train_step()
        return loss.item(), ((self.y > 0) == (scores > 0)).double().mean().item()


# ---------------------------------------------------------------------------------------------------
# the training loop, with a progress bar
# ---------------------------------------------------------------------------------------------------

class Progress:
    """tqdm when it is installed, else a plain line: redrawn in place on a terminal, every 10% otherwise."""

    def __init__(self, total: int, desc: str, file: TextIO | None = None, enabled: bool = True) -> None:
        self.total, self.desc, self.n = total, desc, 0
        self.file = file if file is not None else sys.stderr
        self.enabled = enabled
        self.bar = None
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self.bar = tqdm(total=total, desc=desc, unit="step", file=self.file, leave=True,
                                dynamic_ncols=True)

    def update(self, loss: float, acc: float) -> None:
        self.n += 1
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_postfix_str(f"loss={loss:.4f}, acc={acc:.0%}", refresh=False)
            self.bar.update(1)
            return
        width = 30
        filled = width * self.n // self.total
        line = (f"{self.desc}: {self.n:>{len(str(self.total))}}/{self.total} "
                f"[{'#' * filled}{'.' * (width - filled)}] loss {loss:.4f}  acc {acc:.0%}")
        if getattr(self.file, "isatty", lambda: False)():
            self.file.write("\r" + line + ("\n" if self.n == self.total else ""))
            self.file.flush()
        elif self.n == self.total or self.n % max(1, self.total // 10) == 0:
            self.file.write(line + "\n")
            self.file.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@dataclass
class TrainResult:
    name: str
    losses: list[float] = field(default_factory=list)
    accuracies: list[float] = field(default_factory=list)
    seconds: float = 0.0  # time in step() only (progress drawing excluded)

    @property
    def steps(self) -> int:
        return len(self.losses)

    @property
    def ms_per_step(self) -> float:
        return 1e3 * self.seconds / max(1, self.steps)

    @property
    def first_perfect(self) -> int | None:
        """The first step (1-based) whose forward pass classified every point correctly."""
        return next((k + 1 for k, a in enumerate(self.accuracies) if a == 1.0), None)


def train(backend: Any, steps: int, progress: bool = True, file: TextIO | None = None) -> TrainResult:
    """Run `steps` training steps on a backend, timing each one."""
    result = TrainResult(backend.name)
    bar = Progress(steps, backend.name, file=file, enabled=progress)
    clock = time.perf_counter
    try:
        for _ in range(steps):
            t0 = clock()
            loss, acc = backend.step()
            result.seconds += clock() - t0
            result.losses.append(loss)
            result.accuracies.append(acc)
            bar.update(loss, acc)
    finally:
        bar.close()
    return result


# ---------------------------------------------------------------------------------------------------
# the command
# ---------------------------------------------------------------------------------------------------

def run(steps: int = 100, seed: int = 0, hidden: Sequence[int] = (16, 16), optimizer: str = "sgd",
        lr: float | None = None, compare: bool = False, plot: str | None = None, progress: bool = True,
        out: TextIO | None = None) -> int:
    """`python -m fastgrad demo`. Returns the exit status."""
    out = out if out is not None else sys.stdout
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}: use {' or '.join(OPTIMIZERS)}")
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if plot and not _have_matplotlib():
        print("error: --plot needs matplotlib, which is not installed: "
              "pip install matplotlib (or pip install 'fastgrad[plot]')", file=sys.stderr)
        return 2
    lr = DEFAULT_LR[optimizer] if lr is None else lr
    X, y = moons(seed)
    weights = initial_weights(2, hidden, seed)
    main = FusedBackend(weights, X, y, steps, optimizer, lr)
    n_params = len(main.params)
    sizes = [2, *hidden, 1]
    print(f"fastgrad demo: two moons, {len(X)} points (noise {NOISE}, seed {seed}); "
          f"MLP(2, {sizes[1:]}), {n_params} parameters", file=out)
    print(f"recipe: hinge loss + {L2:g}*L2, {optimizer.upper() if optimizer == 'sgd' else 'Adam'} "
          f"lr {lr:g} -> {lr * lr_factor(steps, steps):g} (linear), {steps} steps, full batch", file=out)
    out.flush()
    result = train(main, steps, progress)
    final_acc = accuracy(main.predict(X), y)
    first = result.first_perfect
    reached = f"first reached 100% at step {first}" if first else "never 100% during training"
    print(f"final: loss {result.losses[-1]:.6f}, training accuracy {final_acc:.0%} "
          f"({round(final_acc * len(y))}/{len(y)}); {reached}", file=out)
    print(f"time: {result.ms_per_step:.3f} ms/step ({main.name}; {steps} steps in {result.seconds:.3f} s)",
          file=out)
    if compare:
        _compare(result, weights, X, y, steps, optimizer, lr, progress, out)
    if plot:
        _plot(main, X, y, plot, f"fastgrad demo: seed {seed}, {steps} steps, accuracy {final_acc:.0%}")
        print(f"plot: decision boundary written to {plot}", file=out)
    return 0


def compare_backends(weights: Weights, X: list[list[float]], y: list[int], steps: int, optimizer: str,
                     lr: float) -> list[tuple[str, Callable[[], Any]]]:
    """(name, factory) of the backends that `--compare` runs besides fastgrad.nn, in table order."""
    from fastgrad import reference

    backends: list[tuple[str, Callable[[], Any]]] = [
        ("fg.Value, micrograd-style", lambda: ScalarBackend(weights, X, y, steps, optimizer, lr)),
        ("fastgrad.reference", lambda: EngineBackend(reference, weights, X, y, steps, optimizer, lr)),
    ]
    if _importable("micrograd"):
        backends.append(("micrograd", lambda: MicrogradBackend(weights, X, y, steps, optimizer, lr)))
    return backends


def _compare(main: TrainResult, weights: Weights, X: list[list[float]], y: list[int], steps: int,
             optimizer: str, lr: float, progress: bool, out: TextIO) -> None:
    print(f"\ncompare: the same {steps} steps from the same weights on each backend", file=out)
    out.flush()
    results = [main]
    for _, factory in compare_backends(weights, X, y, steps, optimizer, lr):
        results.append(train(factory(), steps, progress))
    if not _importable("micrograd"):
        print("(micrograd is not installed: pip install micrograd to compare with it)", file=out)
    width = max(len(r.name) for r in results)
    print(f"  {'backend':<{width}}  {'ms/step':>9}  {'fastgrad.nn is':>15}  {'final loss':>10}  "
          f"{'accuracy':>8}  {'max |dloss|':>11}", file=out)
    for r in results:
        speedup = r.ms_per_step / main.ms_per_step
        dev = max(abs(a - b) for a, b in zip(r.losses, main.losses))
        print(f"  {r.name:<{width}}  {r.ms_per_step:>9.3f}  {speedup:>8.1f}x faster  {r.losses[-1]:>10.6f}  "
              f"{r.accuracies[-1]:>8.0%}  {dev:>11.1e}", file=out)


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _have_matplotlib() -> bool:
    return _importable("matplotlib")


def _plot(backend: FusedBackend, X: list[list[float]], y: list[int], path: str, title: str) -> None:
    """The decision boundary (sign of the score on a grid) and the points, written to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    xs, ys = [p[0] for p in X], [p[1] for p in X]
    gx = np.linspace(min(xs) - 0.5, max(xs) + 0.5, 80)
    gy = np.linspace(min(ys) - 0.5, max(ys) + 0.5, 80)
    grid = [[a, b] for b in gy for a in gx]
    Z = np.array(backend.predict(grid)).reshape(len(gy), len(gx))
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.contourf(gx, gy, Z > 0, levels=[-0.5, 0.5, 1.5], colors=["#f4c7c3", "#c6dbef"], alpha=0.8)
    ax.contour(gx, gy, Z, levels=[0.0], colors="k", linewidths=1)
    ax.scatter(xs, ys, c=["#d62728" if t < 0 else "#1f77b4" for t in y], s=25, edgecolors="k", linewidths=0.5)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------
# the benchmark of one training step (used by `python -m fastgrad bench`)
# ---------------------------------------------------------------------------------------------------

MOONS_WORKLOAD = "moons step (100 pts, MLP 2-16-16-1)"
REFERENCE_NAME = "fastgrad.reference (pure Python)"


def moons_step_implementations(weights: Weights, X: list[list[float]], y: list[int], steps: int
                               ) -> list[tuple[str, Callable[[], Any], int]]:
    """(name, factory, cost class) of every implementation of the moons step that can run here."""
    from fastgrad import reference

    impls: list[tuple[str, Callable[[], Any], int]] = [
        ("fastgrad.nn (one fused call per layer)", lambda: FusedBackend(weights, X, y, steps), 0),
        ("fastgrad engine API (fg.dot, no nn)", lambda: EngineBackend(fastgrad, weights, X, y, steps), 0),
        ("fg.Value, micrograd-style per-scalar", lambda: ScalarBackend(weights, X, y, steps), 1),
        (REFERENCE_NAME, lambda: EngineBackend(reference, weights, X, y, steps), 2),
    ]
    if _importable("micrograd"):
        impls.append(("micrograd", lambda: MicrogradBackend(weights, X, y, steps), 2))
    if _importable("torch"):
        impls.append(("torch (batched float64 tensors)", lambda: TorchBackend(weights, X, y, steps), 0))
    return impls


def step_graph_nodes(loss: Any) -> int:
    """The nodes of one step's graph, leaves included: fastgrad's from `fastgrad.stats`, a Python engine's
    walked along `_prev`, torch's autograd nodes (one per tensor op, one per leaf parameter) along
    `grad_fn.next_functions`."""
    from fastgrad.benchmark import walk_nodes

    if isinstance(loss, fastgrad.Var):
        return fastgrad.stats(loss).nodes
    if hasattr(loss, "grad_fn"):
        seen, stack = set(), [loss.grad_fn]
        while stack:
            fn = stack.pop()
            if fn is not None and fn not in seen:
                seen.add(fn)
                stack.extend(f for f, _ in fn.next_functions)
        return len(seen)
    return walk_nodes(loss)


def _time_steps(backend: Any, repeats: int, gc_enabled: bool) -> list[float]:
    """Seconds of `repeats` steps, sorted, each freeing its graph; one full collection before the steps.
    GC on: no collection between steps but the GC's own (each step pays for collecting its predecessors'
    garbage, as in a training loop). GC off: off throughout; before each step, untimed, a collection of the
    youngest generation, which then holds everything the previous step allocated (micrograd's cyclic graph)
    and nothing older, so it does not walk the rest of the heap."""
    from fastgrad.benchmark import gc_policy

    clock = time.perf_counter
    times = []
    with gc_policy(gc_enabled):
        for _ in range(repeats):
            if not gc_enabled:
                gc.collect(0)
            t0 = clock()
            out = backend.train_step()
            del out  # freeing the graph is part of the step
            times.append(clock() - t0)
    return sorted(times)


def bench_moons_step(quick: bool = False, seed: int = 0, progress: Callable[[str], None] | None = None
                     ) -> list[dict[str, Any]]:
    """Time of one training step (zero_grad, forward over the 100 points, backward, update, freeing the
    graph) for each implementation: the median of the timed steps ("ms"; "best_ms" too), its speedup over the
    pure-Python reference, and the nodes of one step's graph ("nodes", counted on a warm-up step).

    GC policy (`fastgrad.benchmark.GC_POLICY`): the cyclic GC stays on. The "gc_off_" keys time the same
    steps, on a fresh backend, with it off; then micrograd's graphs (reference cycles) are freed by the
    untimed collections between steps, not in its times.

    NOTE: the median, not the best: a pure-Python step allocates ~65,000 objects and pays for the cyclic
    GC in some steps but not others; the median charges each implementation its typical step.
    NOTE: torch runs on one intra-op thread, as every other implementation here does (with its default of
    one thread per core, a shared or loaded machine made its step 10-100x slower and its time meaningless).
    """
    X, y = moons(seed)
    weights = initial_weights(2, (16, 16), seed)
    # (warm-up steps, timed steps) per cost class: fast, per-scalar on the engine, pure Python
    plan = [(3, 10), (1, 5), (1, 2)] if quick else [(5, 100), (2, 20), (1, 10)]
    rows = []
    for name, factory, cost in moons_step_implementations(weights, X, y, 100):
        if progress:
            progress(name)
        warmup, repeats = plan[cost]
        row: dict[str, Any] = {"workload": MOONS_WORKLOAD, "implementation": name, "repeats": repeats}
        with _one_torch_thread(name.startswith("torch")):
            _time_backend(row, factory, warmup, repeats)
        rows.append(row)
    ref = next(r for r in rows if r["implementation"] == REFERENCE_NAME)
    for r in rows:
        r["vs_reference"] = ref["ms"] / r["ms"]
        r["gc_off_vs_reference"] = ref["gc_off_ms"] / r["gc_off_ms"]
    return rows


@contextlib.contextmanager
def _one_torch_thread(active: bool) -> Iterator[None]:
    """torch.set_num_threads(1) inside the block (restored after) when `active`."""
    if not active:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _time_backend(row: dict[str, Any], factory: Callable[[], Any], warmup: int, repeats: int) -> None:
    """Fill `row` with the median/best step times (GC on, then off, each on a fresh backend)."""
    for prefix, gc_enabled in (("", True), ("gc_off_", False)):
        backend = factory()
        for k in range(warmup):
            out = backend.train_step()
            if k == 0 and gc_enabled:
                row["nodes"] = step_graph_nodes(out[0])
            del out  # nothing of a step's graph may stay alive into the timed steps
        times = _time_steps(backend, repeats, gc_enabled)
        del backend
        row[prefix + "ms"] = 1e3 * times[len(times) // 2]
        row[prefix + "best_ms"] = 1e3 * times[0]
