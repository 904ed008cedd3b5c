"""The main job, `python -m fastgrad demo`: train micrograd's MLP on two moons, with progress and timing.

The recipe and the backends it can run on (`--compare`) are in `fastgrad.app.backends`. The main run trains
`fastgrad.nn` eagerly (`FusedBackend`), or with its loss compiled by `fg.compile` (`--compile`,
`CompiledBackend`) or replayed per point by `fg.vmap` (`--batched`, `BatchedBackend`), or as one batch with
Tensor parameters (`--tensor`, `TensorBackend`): the same losses.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from fastgrad.app.threads import one_blas_thread
from fastgrad.app.backends import (
    DEFAULT_LR,
    L2,
    NOISE,
    OPTIMIZERS,
    BatchedBackend,
    CompiledBackend,
    EngineBackend,
    FusedBackend,
    MicrogradBackend,
    NumpyBackend,
    ScalarBackend,
    TensorBackend,
    Weights,
    _have_matplotlib,
    _importable,
    accuracy,
    initial_weights,
    lr_factor,
    moons,
)

__all__ = ["MAIN_BACKENDS", "Progress", "TrainResult", "run", "train"]

# the backends the main run can train on: the same model, loss and optimizer, the same losses
MAIN_BACKENDS = {"fused": FusedBackend, "compiled": CompiledBackend, "batched": BatchedBackend,
                 "tensor": TensorBackend}


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
        out: TextIO | None = None, backend: str = "fused") -> int:
    """`python -m fastgrad demo`. `backend`: a key of MAIN_BACKENDS. Returns the exit status."""
    out = out if out is not None else sys.stdout
    if backend not in MAIN_BACKENDS:
        raise ValueError(f"unknown backend {backend!r}: use {', '.join(MAIN_BACKENDS)}")
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
    main = MAIN_BACKENDS[backend](weights, X, y, steps, optimizer, lr)
    n_params = sum(getattr(p, "size", 1) for p in main.params)     # a Tensor counts its elements
    sizes = [2, *hidden, 1]
    print(f"fastgrad demo: two moons, {len(X)} points (noise {NOISE}, seed {seed}); "
          f"MLP(2, {sizes[1:]}), {n_params} parameters", file=out)
    print(f"recipe: hinge loss + {L2:g}*L2, {optimizer.upper() if optimizer == 'sgd' else 'Adam'} "
          f"lr {lr:g} -> {lr * lr_factor(steps, steps):g} (linear), {steps} steps, full batch", file=out)
    out.flush()
    with one_blas_thread():         # the Tensor backend's small matrices: BLAS threads only cost
        result = train(main, steps, progress)
    final_acc = accuracy(main.predict(X), y)
    first = result.first_perfect
    reached = f"first reached 100% at step {first}" if first else "never 100% during training"
    print(f"final: loss {result.losses[-1]:.6f}, training accuracy {final_acc:.0%} "
          f"({round(final_acc * len(y))}/{len(y)}); {reached}", file=out)
    print(f"time: {result.ms_per_step:.3f} ms/step ({main.name}; {steps} steps in {result.seconds:.3f} s)",
          file=out)
    if compare:
        _compare(result, backend, weights, X, y, steps, optimizer, lr, progress, out)
    if plot:
        _plot(main, X, y, plot, f"fastgrad demo: seed {seed}, {steps} steps, accuracy {final_acc:.0%}")
        print(f"plot: decision boundary written to {plot}", file=out)
    return 0


def compare_backends(weights: Weights, X: list[list[float]], y: list[int], steps: int, optimizer: str,
                     lr: float, main: str = "fused") -> list[tuple[str, Callable[[], Any]]]:
    """(name, factory) of the backends that `--compare` runs besides the main run's (`main`, a key of
    MAIN_BACKENDS), in table order."""
    from fastgrad import reference

    backends: list[tuple[str, Callable[[], Any]]] = [
        (cls.name, lambda cls=cls: cls(weights, X, y, steps, optimizer, lr))
        for key, cls in MAIN_BACKENDS.items() if key != main]
    backends += [
        ("numpy", lambda: NumpyBackend(weights, X, y, steps, optimizer, lr)),
        ("fg.Value, micrograd-style", lambda: ScalarBackend(weights, X, y, steps, optimizer, lr)),
        ("fastgrad.reference", lambda: EngineBackend(reference, weights, X, y, steps, optimizer, lr)),
    ]
    if _importable("micrograd"):
        backends.append(("micrograd", lambda: MicrogradBackend(weights, X, y, steps, optimizer, lr)))
    return backends


def _compare(main: TrainResult, backend: str, weights: Weights, X: list[list[float]], y: list[int],
             steps: int, optimizer: str, lr: float, progress: bool, out: TextIO) -> None:
    print(f"\ncompare: the same {steps} steps from the same weights on each backend", file=out)
    out.flush()
    results = [main]
    for _, factory in compare_backends(weights, X, y, steps, optimizer, lr, backend):
        results.append(train(factory(), steps, progress))
    if not _importable("micrograd"):
        print("(micrograd is not installed: pip install micrograd to compare with it)", file=out)
    width = max(len(r.name) for r in results)
    print(f"  {'backend':<{width}}  {'ms/step':>9}  {'the main run is':>15}  {'final loss':>10}  "
          f"{'accuracy':>8}  {'max |dloss|':>11}", file=out)
    for r in results:
        speedup = r.ms_per_step / main.ms_per_step
        dev = max(abs(a - b) for a, b in zip(r.losses, main.losses))
        print(f"  {r.name:<{width}}  {r.ms_per_step:>9.3f}  {speedup:>8.1f}x faster  {r.losses[-1]:>10.6f}  "
              f"{r.accuracies[-1]:>8.0%}  {dev:>11.1e}", file=out)


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
