"""Functional API: activations and losses on Vars (or lists of them), built from engine ops.

Every loss returns one `Var` and takes `reduction='mean'` (the sum divided by the number of terms) or
`'sum'`; anything else is a ValueError. Sums over terms are single fused `sum`/`dot` nodes. The numerically
delicate ones (binary cross-entropy with logits, cross-entropy, log-softmax) use stable forms that neither
overflow nor lose their gradient at logits of ±1000.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any, Union

from fastgrad._engine import Var, dot, maximum
from fastgrad._engine import sum as fsum

__all__ = [
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "hinge_loss",
    "log_softmax",
    "mse_loss",
    "relu",
    "sigmoid",
    "softmax",
    "tanh",
]

Scalar = Union[Var, float]
_REDUCTIONS = ("mean", "sum")


# ---- activations: a Var gives a Var, a list gives a list ----

def _elementwise(name: str, method: Any) -> Any:
    def function(x: Any) -> Any:
        if isinstance(x, (list, tuple)):
            return [method(_var(v)) for v in x]
        return method(_var(x))
    function.__name__ = function.__qualname__ = name
    function.__doc__ = f"{name}(x) of a Var, or of each element of a list of Vars."
    return function


relu = _elementwise("relu", Var.relu)
tanh = _elementwise("tanh", Var.tanh)
sigmoid = _elementwise("sigmoid", Var.sigmoid)


def log_softmax(logits: Sequence[Scalar]) -> list[Var]:
    """log(softmax(logits)), stably: x_k - m - log(sum_j exp(x_j - m)) with m = max value, a constant."""
    xs, m = _logits(logits, "log_softmax")
    lse = _log_sum_exp_shifted(xs, m)
    return [x - m - lse for x in xs]


def softmax(logits: Sequence[Scalar]) -> list[Var]:
    """exp(x_k - m) / sum_j exp(x_j - m) with m = max value, a constant (no overflow at ±1000)."""
    xs, m = _logits(logits, "softmax")
    es = [(x - m).exp() for x in xs]
    total = fsum(es)
    return [e / total for e in es]


# ---- losses ----

def mse_loss(input: Scalar | Sequence[Scalar], target: Scalar | Sequence[Scalar],
             reduction: str = "mean") -> Var:
    """Mean (or sum) of (input - target)²; the sum of squares is one fused dot node."""
    _check_reduction(reduction)
    xs, ts = _pairs(input, target, "mse_loss")
    diffs = [_var(x) - t for x, t in zip(xs, ts)]
    return _reduce(dot(diffs, diffs), len(diffs), reduction)


def hinge_loss(scores: Scalar | Sequence[Scalar], labels: float | Sequence[float],
               reduction: str = "mean") -> Var:
    """micrograd's max-margin loss: mean (or sum) of relu(1 - y·score) for labels y = -1 or +1."""
    _check_reduction(reduction)
    ss, ys = _pairs(scores, labels, "hinge_loss")
    terms = []
    for s, y in zip(ss, ys):
        # NOTE: 1 - y·s is 1 - s or 1 + s exactly for y = ±1: one node fewer than the product.
        if y == 1:
            terms.append((1.0 - _var(s)).relu())
        elif y == -1:
            terms.append((_var(s) + 1.0).relu())
        else:
            raise ValueError(f"hinge_loss: labels must be -1 or +1, got {y!r}")
    return _reduce(fsum(terms), len(terms), reduction)


def binary_cross_entropy_with_logits(input: Scalar | Sequence[Scalar], target: Scalar | Sequence[Scalar],
                                     reduction: str = "mean") -> Var:
    """-[y·log σ(x) + (1-y)·log(1-σ(x))], stably: max(x, 0) - x·y + log(1 + exp(-|x|)).

    NOTE: `maximum(x, 0)` rather than `relu(x)`: at x = 0 the tie splits its gradient (1/2) and the
    log term's gradient is 0 (abs'(0) = 0), which gives exactly σ(0) - y; relu'(0) = 0 would lose the 1/2.
    """
    _check_reduction(reduction)
    xs, ys = _pairs(input, target, "binary_cross_entropy_with_logits")
    terms = []
    for x, y in zip(xs, ys):
        x = _var(x)
        terms.append(maximum(x, 0.0) - x * y + ((-abs(x)).exp() + 1.0).log())
    return _reduce(fsum(terms), len(terms), reduction)


def cross_entropy(input: Sequence[Scalar] | Sequence[Sequence[Scalar]], target: int | Sequence[int],
                  reduction: str = "mean") -> Var:
    """-log softmax(logits)[target], stably: log(sum_j exp(x_j - m)) + m - x_target, m = max value.

    `input` is one list of logits with an int class `target`, or a batch (a list of such lists) with a
    list of int targets; the reduction runs over the batch.
    """
    _check_reduction(reduction)
    if not isinstance(input, (list, tuple)) or not input:
        raise ValueError("cross_entropy: input must be a non-empty list of logits (or a list of such lists)")
    if isinstance(input[0], (list, tuple)):
        if isinstance(target, (list, tuple)):
            targets = list(target)
        else:
            raise TypeError("cross_entropy: a batch of logits needs a list of int targets")
        if len(targets) != len(input):
            raise ValueError(f"cross_entropy: {len(input)} rows of logits but {len(targets)} targets")
        rows = list(input)
    else:
        rows, targets = [input], [target]
    terms = []
    for logits, t in zip(rows, targets):
        xs, m = _logits(logits, "cross_entropy")
        if isinstance(t, bool) or not isinstance(t, numbers.Integral):
            raise TypeError(f"cross_entropy: targets must be ints (class indices), got {type(t).__name__}")
        if not 0 <= t < len(xs):
            raise IndexError(f"Target {t} is out of bounds.")
        terms.append(_log_sum_exp_shifted(xs, m) + m - xs[int(t)])
    return _reduce(fsum(terms), len(terms), reduction)


# ---- helpers ----

def _var(x: Any) -> Var:
    return x if isinstance(x, Var) else Var(x)


def _check_reduction(reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{reduction!r} is not a valid value for reduction: use 'mean' or 'sum'")


def _reduce(total: Var, n: int, reduction: str) -> Var:
    # NOTE: mean = sum * (1/n), micrograd's form, so the demo's losses match micrograd's bit for bit.
    return total if reduction == "sum" else total * (1.0 / n)


def _pairs(input: Any, target: Any, name: str) -> tuple[list[Any], list[Any]]:
    """Two equal-length non-empty lists from scalars or sequences."""
    xs = list(input) if isinstance(input, (list, tuple)) else [input]
    ts = list(target) if isinstance(target, (list, tuple)) else [target]
    if len(xs) != len(ts):
        raise ValueError(f"{name}: input has {len(xs)} elements but target has {len(ts)}")
    if not xs:
        raise ValueError(f"{name}: empty input")
    return xs, ts


def _logits(logits: Any, name: str) -> tuple[list[Var], float]:
    """The logits as Vars and their largest value (a plain float: the shift is a constant)."""
    if not isinstance(logits, (list, tuple)) or not logits:
        raise ValueError(f"{name}: expected a non-empty list of logits")
    xs = [_var(x) for x in logits]
    values = [x.data for x in xs]
    # NOTE: shift by the max even when it is infinite, as PyTorch and JAX do: softmax([inf, 1]) is then
    # [nan, nan] (inf - inf), not [nan, 0]; a nan logit makes the max, and so every output, nan.
    m = math.nan if any(v != v for v in values) else max(values)
    return xs, m


def _log_sum_exp_shifted(xs: list[Var], m: float) -> Var:
    """log(sum_j exp(x_j - m)): at least log(1) = 0 since the largest term is exp(0)."""
    return fsum([(x - m).exp() for x in xs]).log()
