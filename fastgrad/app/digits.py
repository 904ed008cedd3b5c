"""`python -m fastgrad demo digits`: batched training on real data, scikit-learn's 8x8 handwritten digits.

An MLP 64-128-10 with Tensor parameters (`nn.MLP(..., tensor=True)`, PyTorch's initialisation) on standardized
pixels, cross-entropy on integer labels, Adam, shuffled minibatches, a held-out test split; a progress bar
per epoch, then the test accuracy and the training time per epoch. Needs scikit-learn (the `data` extra)
for the images.
"""
from __future__ import annotations

import random
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

import numpy as np

import fastgrad as fg
from fastgrad import nn, optim
from fastgrad.app.demo import Progress
from fastgrad.app.threads import one_blas_thread
from fastgrad.data import load_digits
from fastgrad.tensor_functional import cross_entropy

__all__ = ["evaluate", "run_digits", "train_digits"]


def evaluate(model: nn.Module, X: np.ndarray, y: np.ndarray) -> float:
    """The fraction of rows of ``X`` whose largest logit is at the label ``y`` (no graph is built)."""
    with fg.no_grad():
        return float(np.mean(model(X).argmax(axis=1) == y))


def train_digits(epochs: int = 20, batch_size: int = 64, hidden: Sequence[int] = (128,), lr: float = 1e-3,
                 seed: int = 0, progress: bool = True, file: TextIO | None = None) -> dict[str, Any]:
    """Train the digits MLP and return {"test_accuracy", "train_accuracy", "ms_per_epoch" (median),
    "epoch_ms" (each), "losses" (the mean loss of each epoch), "model"}. Raises ImportError naming the extra
    without scikit-learn."""
    X, y, X_test, y_test = load_digits(test_fraction=0.2, seed=seed)
    # standardized pixels (scikit-learn's StandardScaler, fitted on the training rows only; a pixel that
    # never varies is only centred): about 1 point of test accuracy over the raw [0, 1] pixels
    mean, scale = X.mean(axis=0), X.std(axis=0)
    scale[scale == 0.0] = 1.0
    X, X_test = (X - mean) / scale, (X_test - mean) / scale
    model = nn.MLP(64, [*hidden, 10], rng=random.Random(seed), init="pytorch", tensor=True)
    opt = optim.Adam(model.parameters(), lr=lr)
    order_rng = np.random.default_rng(seed + 1)
    n_batches = -(-len(y) // batch_size)
    epoch_ms: list[float] = []
    losses: list[float] = []
    for epoch in range(epochs):
        order = order_rng.permutation(len(y))
        bar = Progress(n_batches, f"epoch {epoch + 1}/{epochs}", file=file, enabled=progress)
        seconds, total = 0.0, 0.0
        try:
            for start in range(0, len(y), batch_size):
                rows = order[start:start + batch_size]
                xb, yb = X[rows], y[rows]
                t0 = time.perf_counter()
                opt.zero_grad()
                logits = model(xb)
                loss = cross_entropy(logits, yb)
                loss.backward()
                opt.step()
                seconds += time.perf_counter() - t0
                value = loss.item()
                total += value * len(rows)
                bar.update(value, float(np.mean(logits.data.argmax(axis=1) == yb)))
        finally:
            bar.close()
        epoch_ms.append(1e3 * seconds)
        losses.append(total / len(y))
    return {"test_accuracy": evaluate(model, X_test, y_test), "train_accuracy": evaluate(model, X, y),
            "ms_per_epoch": statistics.median(epoch_ms), "epoch_ms": epoch_ms, "losses": losses,
            "model": model, "train_size": len(y), "test_size": len(y_test)}


def run_digits(epochs: int = 20, batch_size: int = 64, hidden: Sequence[int] = (128,), lr: float = 1e-3,
               seed: int = 0, progress: bool = True, out: TextIO | None = None) -> int:
    """The command: train, print the result; exit status 0, or 2 (with a message) without scikit-learn."""
    out = out if out is not None else sys.stdout
    try:
        with one_blas_thread():     # small matrices: BLAS threads only cost (see fastgrad.app.threads)
            result = train_digits(epochs, batch_size, hidden, lr, seed, progress)
    except ImportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    sizes = "-".join(str(n) for n in (64, *hidden, 10))
    print(f"digits: MLP {sizes} (Tensor parameters), Adam lr={lr:g}, batches of {batch_size}, "
          f"{result['train_size']} training / {result['test_size']} test images, seed {seed}", file=out)
    print(f"{epochs} epochs: loss {result['losses'][0]:.4f} -> {result['losses'][-1]:.4f}, "
          f"train accuracy {result['train_accuracy']:.1%}", file=out)
    print(f"test accuracy {result['test_accuracy']:.1%}; {result['ms_per_epoch']:.2f} ms/epoch "
          f"(median; forward, backward and Adam step, data slicing excluded)", file=out)
    return 0
