"""The digits model: scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes) and an MLP on them.

Used by the sweep example, the tests and benchmarks/bench_distributed.py. Needs scikit-learn (the
``fastgrad[data]`` extra; the data ship inside it, no download).

`digits_loss` is the cross-entropy of one sample with a one-hot target, written so that ``fg.vmap`` can trace
it: the stabilising shift is the graph's own maximum of the logits (``fg.maximum``, an op that replays at any
value) rather than a float read from ``.data`` (which a trace would freeze at the traced sample's value), and
the target enters through a dot product (an integer label cannot be a traced Var).
"""
from __future__ import annotations

import random
import time
from typing import Any, Dict, Sequence, Tuple

import numpy as np

import fastgrad as fg
from fastgrad._engine import Var
from fastgrad.data import load_digits
from fastgrad.nn.layers import MLP
from fastgrad.nn.module import Module

__all__ = ["accuracy", "digits_loss", "digits_model", "digits_trial", "load_digits_split"]


def load_digits_split(test_fraction: float = 0.25, seed: int = 0
                      ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(X_train, T_train, X_test, y_test): pixels scaled to [0, 1] (64 columns), one-hot training targets
    (10 columns), integer test labels; a shuffled split (``np.random.default_rng(seed)``). Raises ImportError
    naming the extra without scikit-learn, ValueError for a fraction outside (0, 1)."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    X_train, y_train, X_test, y_test = load_digits(test_fraction, seed)
    return X_train, np.eye(10)[y_train], X_test, y_test


def digits_model(hidden: Sequence[int] = (32,), seed: int = 0) -> MLP:
    """``fg.nn.MLP(64, [*hidden, 10])`` (relu hidden layers, linear output), initialised from ``seed``."""
    return MLP(64, [*hidden, 10], rng=random.Random(seed))


def digits_loss(model: Module, x: Any, target: Any) -> Var:
    """Cross-entropy of ONE sample: log Σ exp(z) - z·target for the logits z = model(x) and a one-hot (or any
    probability) ``target``, shifted by max(z) for stability (see the module docstring)."""
    logits = model(list(x))
    top = logits[0]
    for z in logits[1:]:
        top = fg.maximum(top, z)
    log_sum_exp = top + fg.sum([(z - top).exp() for z in logits]).log()
    return log_sum_exp - fg.dot(list(target), logits)


def accuracy(model: Module, X: np.ndarray, y: np.ndarray) -> float:
    """The fraction of rows of ``X`` whose largest logit is the label ``y`` (evaluated without gradients)."""
    with fg.no_grad():
        hits = sum(int(np.argmax([v.data for v in model(list(x))]) == label) for x, label in zip(X, y))
    return hits / len(y)


def digits_trial(config: Dict[str, Any]) -> Dict[str, Any]:
    """Train the digits MLP in this process with the hyper-parameters of ``config`` and return its metrics.

    ``config`` keys (all optional): ``lr`` (Adam's, 0.01), ``hidden`` (hidden sizes, (32,)), ``epochs`` (5),
    ``batch_size`` (64), ``seed`` (0: initialisation, split and batch order). Each step replays the
    per-sample loss over the batch with ``fg.vmap`` on one thread. Returns {"test_accuracy", "train_loss"
    (the last epoch's mean), "parameters", "seconds" (training and evaluation, not loading the data)}.
    """
    lr = float(config.get("lr", 0.01))
    hidden = tuple(config.get("hidden", (32,)))
    epochs = int(config.get("epochs", 5))
    batch_size = int(config.get("batch_size", 64))
    seed = int(config.get("seed", 0))
    X, T, X_test, y_test = load_digits_split(seed=seed)
    start = time.perf_counter()
    model = digits_model(hidden, seed=seed)
    optimizer = fg.optim.Adam(model.parameters(), lr=lr)
    batched = fg.vmap(lambda x, t: digits_loss(model, x, t), reduce="mean", threads=1)
    rng = np.random.default_rng(seed)
    epoch_loss = float("nan")
    for _ in range(epochs):
        order = rng.permutation(len(X))
        total = 0.0
        for k in range(0, len(X), batch_size):
            rows = order[k:k + batch_size]
            optimizer.zero_grad()
            total += batched(X[rows], T[rows]).data * len(rows)
            optimizer.step()
        epoch_loss = total / len(X)
    return {"test_accuracy": accuracy(model, X_test, y_test), "train_loss": epoch_loss,
            "parameters": model.num_parameters(), "seconds": time.perf_counter() - start}
