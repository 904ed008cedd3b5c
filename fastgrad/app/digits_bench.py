"""The digits epoch of `python -m fastgrad bench`: one pass of minibatch training over scikit-learn's 8x8
digits, on fastgrad Tensors, by hand in NumPy, and on torch (eager), from the same weights
(`python -m fastgrad demo digits`, in `fastgrad.app.digits`, trains the same model).

The recipe: `fastgrad.data.load_digits` (scikit-learn's 1,797 images of 64 pixels, 10 classes), features
x / 16 in [0, 1], a fixed 80/20 split (a seeded permutation: the first fifth is the test set), an MLP
64-128-10 with relu on the hidden layer and PyTorch's default initialisation (`nn.MLP(..., init="pytorch")`,
seeded), the mean cross-entropy over integer labels, Adam (lr 1e-3, PyTorch's formulas), batches of 64.
One epoch is one pass over the training rows in a seeded shuffled order (`epoch_batches`): every
implementation trains on the same batches in the same order, so their losses agree to rounding (~1e-15).

- `TensorDigits`: `fastgrad.nn.MLP(tensor=True)` + `fastgrad.tensor_functional.cross_entropy` +
  `fastgrad.optim.Adam`;
- `NumpyDigits`: the same forward, backward and Adam written by hand in NumPy: the floor;
- `TorchDigits`: torch eager, float64, `torch.nn.functional` + `torch.optim.Adam`, when torch is installed.

scikit-learn is an optional extra (`fastgrad[data]`): `load_split` imports it and the bench skips the
section without it.
"""
from __future__ import annotations

import gc
import importlib.util
import random
import time
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = [
    "BATCH",
    "DIGITS_WORKLOAD",
    "NumpyDigits",
    "TensorDigits",
    "TorchDigits",
    "bench_digits_epoch",
    "digits_implementations",
    "digits_table",
    "digits_targets",
    "epoch_batches",
    "initial_weights",
    "load_split",
]

SIZES = (64, 128, 10)
BATCH = 64
LR = 1e-3
TEST_FRACTION = 0.2
DIGITS_WORKLOAD = "digits epoch (MLP 64-128-10, batch 64, Adam)"
TENSOR_NAME = "fastgrad Tensor (nn.MLP + cross_entropy + Adam)"
NUMPY_NAME = "numpy, hand-written forward + backward + Adam"
TORCH_NAME = "torch eager (float64, 1 thread)"

Weights = list  # per layer: (W (out, in), b (out,)) as float64 arrays


def load_split(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(X_train, y_train, X_test, y_test): `fastgrad.data.load_digits(0.2, seed)`, the digits scaled to
    [0, 1] (float64 rows, integer labels) split 80/20 by a seeded permutation. Needs scikit-learn
    (ImportError without it)."""
    from fastgrad.data import load_digits

    return load_digits(test_fraction=TEST_FRACTION, seed=seed)


def epoch_batches(n: int, epoch: int, seed: int = 0, batch: int = BATCH) -> list[np.ndarray]:
    """The row indices of each batch of epoch `epoch`: a permutation of range(n) seeded by (seed, epoch),
    cut into batches of `batch` (the last one shorter)."""
    order = np.random.default_rng([seed, epoch]).permutation(n)
    return [order[i:i + batch] for i in range(0, n, batch)]


def _tensor_mlp(seed: int) -> Any:
    from fastgrad import nn

    return nn.MLP(SIZES[0], list(SIZES[1:]), rng=random.Random(seed), init="pytorch", tensor=True)


def initial_weights(seed: int = 0) -> Weights:
    """The weights of `fastgrad.nn.MLP(64, [128, 10], rng=random.Random(seed), init="pytorch")` as arrays:
    [(W0, b0), (W1, b1)], W (out, in). Every implementation starts from these."""
    model = _tensor_mlp(seed)
    return [(layer.weight.data.copy(), layer.bias.data.copy()) for layer in model.layers]


def accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    """The fraction of rows whose largest logit is the label's."""
    return float(np.mean(np.argmax(logits, axis=1) == y))


class TensorDigits:
    """fastgrad: `nn.MLP(64, [128, 10], tensor=True)` holding the given weights, the loss
    `tensor_functional.cross_entropy(logits, labels)`, `optim.Adam(model.parameters(), lr=1e-3)`."""

    name = TENSOR_NAME

    def __init__(self, weights: Weights, X: np.ndarray, y: np.ndarray, lr: float = LR) -> None:
        from fastgrad import optim

        self.model = _tensor_mlp(0)
        for layer, (W, b) in zip(self.model.layers, weights):
            layer.weight.data[...] = W
            layer.bias.data[...] = b
        self.optimizer = optim.Adam(self.model.parameters(), lr=lr)
        self.X, self.y = X, y

    def train_batch(self, rows: np.ndarray) -> float:
        """zero_grad, forward, backward and one Adam step on the rows `rows`: the batch's mean loss."""
        from fastgrad.tensor_functional import cross_entropy

        self.optimizer.zero_grad()
        loss = cross_entropy(self.model(self.X[rows]), self.y[rows])
        loss.backward()
        self.optimizer.step()
        return loss.item()

    def logits(self, X: np.ndarray) -> np.ndarray:
        """The model's logits for the rows of X (no graph)."""
        import fastgrad

        with fastgrad.no_grad():
            return np.asarray(self.model(X).data)


class NumpyDigits:
    """The same MLP, loss and Adam by hand in NumPy (float64): the backward pass derived by hand, Adam with
    torch's formulas in torch's order (`lerp_`, `mul_`/`addcmul_`, `addcdiv_`). No autodiff: the floor."""

    name = NUMPY_NAME

    def __init__(self, weights: Weights, X: np.ndarray, y: np.ndarray, lr: float = LR) -> None:
        self.params = [np.array(a, dtype=np.float64) for W, b in weights for a in (W, b)]  # W0, b0, W1, b1
        self.m = [np.zeros_like(p) for p in self.params]
        self.v = [np.zeros_like(p) for p in self.params]
        self.lr, self.t = lr, 0
        self.X, self.y = X, y

    def train_batch(self, rows: np.ndarray) -> float:
        """Forward, the hand-derived backward, one Adam step on the rows `rows`: the batch's mean loss."""
        W0, b0, W1, b1 = self.params
        x, t = self.X[rows], self.y[rows]
        n = len(t)
        pre = x @ W0.T + b0
        h = np.maximum(pre, 0.0)
        z = h @ W1.T + b1
        z = z - z.max(axis=1, keepdims=True)        # log-softmax, shifted by the row max
        e = np.exp(z)
        s = e.sum(axis=1, keepdims=True)
        logp = z - np.log(s)
        index = np.arange(n)
        loss = -logp[index, t].sum() / n
        # backward: d loss / d logits = (softmax - onehot) / n; relu'(0) = 0
        dz = e / s
        dz[index, t] -= 1.0
        dz /= n
        dh = (dz @ W1) * (pre > 0.0)
        grads = [dh.T @ x, dh.sum(axis=0), dz.T @ h, dz.sum(axis=0)]
        self._adam(grads)
        return float(loss)

    def _adam(self, grads: list[np.ndarray]) -> None:
        """torch.optim.Adam's step (no weight decay), in place."""
        beta1, beta2, eps = 0.9, 0.999, 1e-8
        self.t += 1
        step_size = self.lr / (1 - beta1 ** self.t)
        bc2_sqrt = (1 - beta2 ** self.t) ** 0.5
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            m += (1 - beta1) * (g - m)
            v *= beta2
            v += (1 - beta2) * g * g
            denom = np.sqrt(v)
            denom /= bc2_sqrt
            denom += eps
            p += -step_size * (m / denom)

    def logits(self, X: np.ndarray) -> np.ndarray:
        """The model's logits for the rows of X."""
        W0, b0, W1, b1 = self.params
        return np.maximum(X @ W0.T + b0, 0.0) @ W1.T + b1


class TorchDigits:
    """torch eager, float64: `F.linear`, `torch.relu`, `F.cross_entropy`, `torch.optim.Adam(lr=1e-3)`. Needs
    torch; the bench runs it on one intra-op thread."""

    name = TORCH_NAME

    def __init__(self, weights: Weights, X: np.ndarray, y: np.ndarray, lr: float = LR) -> None:
        import torch

        self.torch = torch
        self.params = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for W, b in weights
                       for a in (W, b)]
        self.optimizer = torch.optim.Adam(self.params, lr=lr)
        self.X, self.y = torch.from_numpy(X), torch.from_numpy(y)

    def _forward(self, x: Any) -> Any:
        F = self.torch.nn.functional
        W0, b0, W1, b1 = self.params
        return F.linear(self.torch.relu(F.linear(x, W0, b0)), W1, b1)

    def train_batch(self, rows: np.ndarray) -> float:
        """zero_grad, forward, backward and one Adam step on the rows `rows`: the batch's mean loss."""
        index = self.torch.from_numpy(rows)
        self.optimizer.zero_grad()
        loss = self.torch.nn.functional.cross_entropy(self._forward(self.X[index]), self.y[index])
        loss.backward()
        self.optimizer.step()
        return loss.item()

    def logits(self, X: np.ndarray) -> np.ndarray:
        """The model's logits for the rows of X (no graph)."""
        with self.torch.no_grad():
            return self._forward(self.torch.from_numpy(X)).numpy()


def train_epoch(trainer: Any, batches: list[np.ndarray]) -> list[float]:
    """One epoch: `trainer.train_batch` on each batch in order; the batch losses."""
    return [trainer.train_batch(rows) for rows in batches]


def digits_implementations(weights: Weights, X: np.ndarray, y: np.ndarray
                           ) -> list[tuple[str, Callable[[], Any]]]:
    """(name, factory) of every implementation of the digits epoch that can run here."""
    impls: list[tuple[str, Callable[[], Any]]] = [
        (TENSOR_NAME, lambda: TensorDigits(weights, X, y)),
        (NUMPY_NAME, lambda: NumpyDigits(weights, X, y)),
    ]
    if importlib.util.find_spec("torch") is not None:
        impls.append((TORCH_NAME, lambda: TorchDigits(weights, X, y)))
    return impls


def bench_digits_epoch(quick: bool = False, seed: int = 0, progress: Callable[[str], None] | None = None
                       ) -> list[dict[str, Any]]:
    """Time one epoch of each implementation: one untimed warm-up epoch, then `repeats` timed epochs (each
    a new shuffle, the training going on; the implementations take turns, epoch by epoch), GC on. Each
    row: "ms" (median epoch), "best_ms", "vs_numpy" (ms / the NumPy epoch's ms: the slowdown over the
    floor), "last_loss" (the final batch's loss) and "test_accuracy" after the timed epochs. Needs
    scikit-learn (ImportError without it)."""
    from fastgrad.app.bench import _one_torch_thread
    from fastgrad.app.workloads import gc_policy

    X, y, X_test, y_test = load_split(seed)
    weights = initial_weights(seed)
    repeats = 3 if quick else 7
    clock = time.perf_counter
    names, trainers, losses = [], [], []
    for name, factory in digits_implementations(weights, X, y):
        if progress:
            progress(name)
        with _one_torch_thread(name == TORCH_NAME):
            trainer = factory()
            losses.append(train_epoch(trainer, epoch_batches(len(X), 0, seed)))     # the warm-up epoch
        names.append(name)
        trainers.append(trainer)
    # NOTE: the implementations take turns, epoch by epoch, so a change in the (shared) machine's load
    # reaches each of them alike
    times: list[list[float]] = [[] for _ in names]
    with gc_policy(True):
        for epoch in range(1, repeats + 1):
            batches = epoch_batches(len(X), epoch, seed)  # untimed: the same for every trainer
            for k, (name, trainer) in enumerate(zip(names, trainers)):
                with _one_torch_thread(name == TORCH_NAME):
                    t0 = clock()
                    losses[k] = train_epoch(trainer, batches)
                    times[k].append(clock() - t0)
    rows = []
    for name, trainer, own, last in zip(names, trainers, times, losses):
        with _one_torch_thread(name == TORCH_NAME):
            acc = accuracy(trainer.logits(X_test), y_test)
        own.sort()
        rows.append({"workload": DIGITS_WORKLOAD, "implementation": name, "epochs": repeats,
                     "batches": len(batches), "train_rows": len(X), "test_rows": len(X_test),
                     "ms": 1e3 * own[len(own) // 2], "best_ms": 1e3 * own[0],
                     "last_loss": last[-1], "test_accuracy": acc})
    del trainers
    gc.collect()
    floor = next(r for r in rows if r["implementation"] == NUMPY_NAME)
    for r in rows:
        r["vs_numpy"] = r["ms"] / floor["ms"]
    return rows


def digits_table(rows: list[dict[str, Any]]) -> str:
    """The digits rows as a Markdown table."""
    lines = ["| implementation | epochs timed | ms / epoch (median) | best | vs numpy | last batch loss "
             "| test accuracy |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['implementation']} | {r['epochs']} | {r['ms']:.2f} | {r['best_ms']:.2f} "
                     f"| {r['vs_numpy']:.2f}x | {r['last_loss']:.6f} | {r['test_accuracy']:.3f} |")
    return "\n".join(lines)


def digits_targets(rows: list[dict[str, Any]]) -> list[str]:
    """The issue's targets for the digits epoch, checked against this run: fastgrad within 1.25x of the
    hand-written NumPy epoch, and faster than torch eager."""
    by_name = {r["implementation"]: r for r in rows}
    fg = by_name.get(TENSOR_NAME)
    if fg is None:
        return []
    ratio = fg["vs_numpy"]
    lines = [f"target: {TENSOR_NAME} within 1.25x of numpy: {ratio:.2f}x "
             f"({'met' if ratio <= 1.25 else 'NOT met'})"]
    torch_row = by_name.get(TORCH_NAME)
    if torch_row is not None:
        speedup = torch_row["ms"] / fg["ms"]
        lines.append(f"target: {TENSOR_NAME} faster than torch eager: {speedup:.2f}x "
                     f"({'met' if speedup > 1.0 else 'NOT met'})")
    return lines
