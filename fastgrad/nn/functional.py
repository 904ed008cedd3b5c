"""Functional API: activations and losses on Vars (or lists of them), built from engine ops.

The scalar engine has no tensors, so a batch is a list: a loss takes one `Var` (or number), a list of them
(one per sample), or a rectangular list of lists (samples × outputs), and a target of the same shape.
`cross_entropy` and `nll_loss` take one row of logits (a list) or a batch of rows (a list of lists) with
one int class per row. NumPy arrays are accepted wherever numbers are.

Every loss takes PyTorch's `reduction`: `'mean'` (the sum divided by the number of terms, or for
`cross_entropy`/`nll_loss` by the sum of the targets' class weights), `'sum'`, or `'none'` (the terms
themselves, in the shape of the input: a list of Vars for a list, one Var for a scalar or a single row).
Sums over terms are single fused `sum`/`dot` nodes. Values and gradients follow `torch.nn.functional`,
including at the kinks (l1 at 0, huber at |d| = delta); where they differ it is said at the function.
The numerically delicate ones (binary cross-entropy with logits, cross-entropy, log-softmax) use stable
forms that neither overflow nor lose their gradient at logits of ±1000.

Under `fg.compile`, what reads values (`.data`) is a tape constant: the input checks, and the max shift of
softmax, log_softmax and cross_entropy. The shift cancels in the math, so a replay is right unless its
logits are far enough above the traced ones to overflow exp (about 700): `fg.compile(check=True)` catches
that. Everything else that must follow the values (the clamps, the kinks) is a graph op, so compiled losses
replay correctly.
"""
from __future__ import annotations

import math
import numbers
import operator
from typing import Any, Callable, Optional, Union

import numpy as np

from fastgrad._engine import Var, dot, maximum, minimum
from fastgrad._engine import sum as fsum
from fastgrad import tensor_functional as _tf
from fastgrad.tensor import Tensor

__all__ = [
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "hinge_loss",
    "huber_loss",
    "l1_loss",
    "log_softmax",
    "mse_loss",
    "nll_loss",
    "relu",
    "sigmoid",
    "smooth_l1_loss",
    "softmax",
    "tanh",
]

Loss = Union[Var, list]   # a Var, or for reduction='none' a (nested) list of Vars
_REDUCTIONS = ("mean", "sum", "none")


# ---- activations: a Var gives a Var, a list gives a list ----

def _elementwise(name: str, method: Any) -> Any:
    def function(x: Any) -> Any:
        if isinstance(x, Tensor):
            return getattr(x, name)()
        if isinstance(x, (list, tuple)):
            return [method(_var(v)) for v in x]
        return method(_var(x))
    function.__name__ = function.__qualname__ = name
    function.__doc__ = f"{name}(x) of a Var, of each element of a list of Vars, or of a Tensor (elementwise)."
    return function


relu = _elementwise("relu", Var.relu)
tanh = _elementwise("tanh", Var.tanh)
sigmoid = _elementwise("sigmoid", Var.sigmoid)


def log_softmax(logits: Any, dim: Optional[int] = None) -> list:
    """log(softmax(logits)), stably: x_k - m - log(sum_j exp(x_j - m)) with m = the max value, a constant.

    `logits` is one row (a list of Vars or numbers: returns a list) or a batch of rows (a list of equal-length
    lists: returns a list of rows). `dim` is PyTorch's: None or -1 (the default, the last dimension: each
    row), or 0 / -2 for a batch (each column). Raises ValueError for an empty or ragged input and IndexError
    for a `dim` out of range.
    """
    return _along(logits, dim, "log_softmax", _log_softmax_row)


def softmax(logits: Any, dim: Optional[int] = None) -> list:
    """exp(x_k - m) / sum_j exp(x_j - m) with m = the max value, a constant (no overflow at ±1000).

    Takes one row or a batch of rows, and `dim`, as `log_softmax` does; returns the same shape.
    """
    return _along(logits, dim, "softmax", _softmax_row)


def _log_softmax_row(logits: Any, name: str) -> list[Var]:
    shifted, lse = _shifted_log_sum_exp(logits, name)
    return [s - lse for s in shifted]


def _softmax_row(logits: Any, name: str) -> list[Var]:
    xs, m = _logits(logits, name)
    es = [(x - m).exp() for x in xs]
    total = fsum(es)
    return [e / total for e in es]


def _along(logits: Any, dim: Any, name: str, row_fn: Callable[[Any, str], list[Var]]) -> list:
    """`row_fn` applied along dimension `dim` of one row or of a batch of rows."""
    if _is_sequence(logits) and len(logits) and _is_sequence(logits[0]):
        rows = _rows(logits, name)
        if _axis(dim, 2, name) == 1:
            return [row_fn(row, name) for row in rows]
        columns = [row_fn(list(column), name) for column in zip(*rows)]
        return [list(row) for row in zip(*columns)]
    _axis(dim, 1, name)
    return row_fn(logits, name)


def _axis(dim: Any, ndim: int, name: str) -> int:
    """`dim` as a non-negative axis of an `ndim`-dimensional input (None means the last)."""
    if dim is None:
        return ndim - 1
    if isinstance(dim, bool) or not isinstance(dim, numbers.Integral):
        raise TypeError(f"{name}: dim must be an int or None, got {type(dim).__name__}")
    if not -ndim <= dim < ndim:
        raise IndexError(f"{name}: dim out of range (expected to be in range of [{-ndim}, {ndim - 1}] for "
                         f"{'a batch of rows' if ndim == 2 else 'one row'}, but got {dim})")
    return int(dim) % ndim


# ---- elementwise losses: one term per element of the input ----

def mse_loss(input: Any, target: Any, reduction: str = "mean") -> Loss:
    """Squared error (input - target)², reduced; with 'sum' or 'mean' the sum of squares is one fused dot.

    `input` is a Var or number, a list of them or a list of equal-length lists; `target` has the same shape
    (numbers, Vars or a NumPy array). Raises ValueError for mismatched shapes, an empty input or a bad
    `reduction`, TypeError for elements that are not real numbers.
    """
    if isinstance(input, Tensor):
        return _tf.mse_loss(input, target, reduction)
    _check_reduction(reduction)
    xs, ts, shape = _elements(input, target, "mse_loss")
    diffs = [x - t for x, t in zip(xs, ts)]
    if reduction == "none":
        return _unflatten([dot([d], [d]) for d in diffs], shape)
    return _reduce(dot(diffs, diffs), len(diffs), reduction)


def l1_loss(input: Any, target: Any, reduction: str = "mean") -> Loss:
    """Absolute error |input - target|, reduced. Its gradient at input == target is 0, as in PyTorch.

    Shapes and errors as `mse_loss`.
    """
    _check_reduction(reduction)
    xs, ts, shape = _elements(input, target, "l1_loss")
    return _reduce_each([abs(x - t) for x, t in zip(xs, ts)], shape, reduction)


def huber_loss(input: Any, target: Any, reduction: str = "mean", delta: float = 1.0) -> Loss:
    """PyTorch's Huber loss: 0.5·d² where |d| < delta, else delta·(|d| - 0.5·delta), with d = input - target.

    Built as delta·(|d| - c) + 0.5·c² with c = min(|d|, delta), so the gradient is d inside, ±delta outside,
    and ±delta at |d| = delta exactly (the min's tie splits, and both halves give delta), as PyTorch's.
    `delta` must be a positive number (ValueError otherwise). Shapes and errors as `mse_loss`.
    """
    _check_reduction(reduction)
    delta = _positive(delta, "huber_loss", "delta", allow_zero=False)
    xs, ts, shape = _elements(input, target, "huber_loss")
    terms = []
    for x, t in zip(xs, ts):
        a = abs(x - t)
        c = minimum(a, delta)
        # NOTE: delta·a - delta·c first: exactly 0 inside (a == c), so 0.5·c² is not rounded against it.
        terms.append(([a, c, c], [delta, -delta, c * 0.5]))
    return _reduce_terms(terms, shape, reduction)


def smooth_l1_loss(input: Any, target: Any, reduction: str = "mean", beta: float = 1.0) -> Loss:
    """PyTorch's smooth L1: 0.5·d²/beta where |d| < beta, else |d| - 0.5·beta, with d = input - target.

    The Huber loss divided by beta, built the same way: gradient d/beta inside, ±1 outside and at |d| = beta.
    `beta = 0` is `l1_loss`, as in PyTorch. `beta` must be a non-negative number (ValueError otherwise).
    Shapes and errors as `mse_loss`.
    """
    _check_reduction(reduction)
    beta = _positive(beta, "smooth_l1_loss", "beta", allow_zero=True)
    xs, ts, shape = _elements(input, target, "smooth_l1_loss")
    if beta == 0.0:
        return _reduce_each([abs(x - t) for x, t in zip(xs, ts)], shape, reduction)
    terms = []
    for x, t in zip(xs, ts):
        a = abs(x - t)
        c = minimum(a, beta)
        terms.append(([a, c, c], [1.0, -1.0, c / (2.0 * beta)]))
    return _reduce_terms(terms, shape, reduction)


def hinge_loss(scores: Any, labels: Any, reduction: str = "mean") -> Loss:
    """micrograd's max-margin loss: relu(1 - y·score) for labels y = -1 or +1, reduced.

    Shapes and errors as `mse_loss`; a label other than ±1 is a ValueError.
    """
    _check_reduction(reduction)
    ss, ys, shape = _elements(scores, labels, "hinge_loss")
    if not set(ys) <= {1.0, -1.0}:
        bad = next(y for y in ys if isinstance(y, Var) or y not in (1.0, -1.0))
        raise ValueError(f"hinge_loss: labels must be -1 or +1, got {bad!r}")
    # NOTE: 1 - y·s is 1 - s or 1 + s exactly for y = ±1: one node fewer than the product.
    terms = [(1.0 - s).relu() if y == 1.0 else (s + 1.0).relu() for s, y in zip(ss, ys)]
    return _reduce_each(terms, shape, reduction)


def binary_cross_entropy(input: Any, target: Any, weight: Any = None, *, reduction: str = "mean") -> Loss:
    """-w·[y·log(x) + (1 - y)·log(1 - x)] on probabilities x, each log clamped at -100 as in PyTorch.

    `input` (probabilities in [0, 1]) and `target` (in [0, 1]) have the same shape, as in `mse_loss`;
    `weight` is None, one number, or numbers of the input's shape (or of its last dimension, broadcast
    over rows). The mean divides by the number of elements. Raises ValueError for an input or target value
    outside [0, 1] (NaN included: values are known when the loss is built).

    NOTE: PyTorch's gradient is its own formula w·(x - y) / max(x·(1 - x), 1e-12); here it is the derivative
    of the clamped loss. They agree wherever x·(1 - x) > 1e-12; nearer to 0 or 1, PyTorch caps the
    gradient's size at about 1e12·|x - y| while this one follows -y/x and (1 - y)/(1 - x), and at a clamp
    (x below e^-100, or x = 1 for the second log) it is 0 for that term, as for any constant.
    """
    _check_reduction(reduction)
    name = "binary_cross_entropy"
    xs, ys, shape = _elements(input, target, name)
    ws = _broadcast(weight, shape, name, "weight")
    for what, values in (("input", xs), ("target", ys)):
        for v in values:
            value = v.data if isinstance(v, Var) else v
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}: all elements of {what} should be between 0 and 1, got {value!r}")
    terms = []
    for x, y, w in zip(xs, ys, ws):
        pieces, coefs = [], []
        # NOTE: a plain target of exactly 1 or 0 drops the other log (its coefficient is 0 and it is finite).
        if isinstance(y, Var) or y != 0.0:
            pieces.append(_log_clamped(x))
            coefs.append(-y * w)
        if isinstance(y, Var) or y != 1.0:
            pieces.append(_log_one_minus_clamped(x))
            coefs.append((y - 1.0) * w)
        terms.append((pieces, coefs))
    return _reduce_terms(terms, shape, reduction)


def binary_cross_entropy_with_logits(input: Any, target: Any, weight: Any = None, *, reduction: str = "mean",
                                     pos_weight: Any = None) -> Loss:
    """-w·[p·y·log σ(x) + (1 - y)·log(1 - σ(x))] on logits x, stably: w·[(1 - y)·x + L·softplus(-x)].

    L = 1 + (p - 1)·y, with p the `pos_weight` (1 when None), as in PyTorch; softplus(-x) = -log σ(x) is
    max(-x, 0) + log1p(exp(-|x|)): no overflow at ±1000, and its derivative σ(-x) is exact there. `weight`
    and `pos_weight` are None, one number, or numbers of the input's shape or of its last dimension
    (PyTorch's pos_weight is per class: the last dimension). Shapes and errors as `mse_loss`.
    """
    if isinstance(input, Tensor):
        return _tf.binary_cross_entropy_with_logits(input, target, weight, reduction=reduction,
                                                    pos_weight=pos_weight)
    _check_reduction(reduction)
    name = "binary_cross_entropy_with_logits"
    xs, ys, shape = _elements(input, target, name)
    ws = _broadcast(weight, shape, name, "weight")
    ps = _broadcast(pos_weight, shape, name, "pos_weight")
    terms = []
    for x, y, w, p in zip(xs, ys, ws, ps):
        log_weight = 1.0 if pos_weight is None else (p - 1.0) * y + 1.0
        terms.append(([x, (-x).softplus()], [(1.0 - y) * w, log_weight * w]))
    return _reduce_terms(terms, shape, reduction)


# ---- class-index losses: one term per row ----

def cross_entropy(input: Any, target: Any, weight: Any = None, *, ignore_index: int = -100,
                  reduction: str = "mean", label_smoothing: float = 0.0) -> Loss:
    """-log softmax(logits)[target], stably (log-sum-exp shifted by the row's max): PyTorch's cross_entropy
    with class-index targets.

    `input` is one row of C logits with one int `target`, or a batch (a list of rows of C logits) with a list,
    tuple or 1-D NumPy integer array of targets. `weight` gives each class a weight (C numbers or Vars): a
    row's term is multiplied by its target's weight, and 'mean' divides by the sum of the targets' weights.
    Rows whose target is `ignore_index` contribute 0 and are left out of the mean (all rows ignored: nan).
    `label_smoothing` ε in [0, 1] mixes in the uniform distribution, with PyTorch's formula and weighting:
    (1 - ε)·w[t]·(-log p[t]) + (ε/C)·Σ_c w[c]·(-log p[c]), the mean divided by Σ w[t] as above.

    Raises TypeError for targets that are not integers (floats, bools, float or bool arrays), IndexError for
    a target outside [0, C) that is not `ignore_index`, ValueError for mismatched lengths, ragged rows, a
    `weight` of the wrong length, ε outside [0, 1] or a bad `reduction`.
    """
    if isinstance(input, Tensor):
        return _tf.cross_entropy(input, target, weight, ignore_index=ignore_index, reduction=reduction,
                                 label_smoothing=label_smoothing)
    _check_reduction(reduction)
    name = "cross_entropy"
    smoothing = _fraction(label_smoothing, name, "label_smoothing")
    rows, targets, batched = _class_rows(input, target, ignore_index, name)
    n_classes = len(rows[0])
    ws = _class_weights(weight, n_classes, name)
    total_weight = None if ws is None else _add_all(ws)
    terms, counted = [], []
    for row, t in zip(rows, targets):
        if t == ignore_index:
            terms.append(None)
            continue
        shifted, lse = _shifted_log_sum_exp(row, name)
        w_t = 1.0 if ws is None else ws[t]
        counted.append(w_t)
        if smoothing == 0.0:
            term = lse - shifted[t]
            terms.append(term if ws is None else term * w_t)
            continue
        # (1 - ε)·w_t·(lse - s_t) + (ε/C)·Σ_c w_c·(lse - s_c), as one dot over [lse, s_t, s_0, ..., s_{C-1}]:
        # every product is >= 0 for non-negative weights (s_c <= 0 <= lse), so nothing cancels.
        share = smoothing / n_classes
        lse_coef = (1.0 - smoothing) * w_t + share * (n_classes if ws is None else total_weight)
        class_coefs = [-share] * n_classes if ws is None else [-share * w for w in ws]
        terms.append(dot([lse_coef, -(1.0 - smoothing) * w_t, *class_coefs], [lse, shifted[t], *shifted]))
    return _reduce_rows(terms, counted, batched, reduction)


def nll_loss(input: Any, target: Any, weight: Any = None, *, ignore_index: int = -100,
             reduction: str = "mean") -> Loss:
    """-w[t]·input[t] for rows of log-probabilities (e.g. from `log_softmax`): PyTorch's nll_loss.

    Takes `input`, `target`, `weight`, `ignore_index` and `reduction` exactly as `cross_entropy` does (the
    mean divides by the sum of the targets' weights), with the same errors.
    """
    _check_reduction(reduction)
    name = "nll_loss"
    rows, targets, batched = _class_rows(input, target, ignore_index, name)
    ws = _class_weights(weight, len(rows[0]), name)
    terms, counted = [], []
    for row, t in zip(rows, targets):
        if t == ignore_index:
            terms.append(None)
            continue
        w_t = 1.0 if ws is None else ws[t]
        counted.append(w_t)
        terms.append(-_var(row[t]) if ws is None else _var(row[t]) * -w_t)
    return _reduce_rows(terms, counted, batched, reduction)


# ---- reductions ----

def _check_reduction(reduction: Any) -> None:
    if not isinstance(reduction, str) or reduction not in _REDUCTIONS:
        raise ValueError(f"{reduction!r} is not a valid value for reduction: use 'mean', 'sum' or 'none'")


def _reduce(total: Var, n: int, reduction: str) -> Var:
    # NOTE: mean = sum * (1/n), micrograd's form, so the demo's losses match micrograd's bit for bit.
    return total if reduction == "sum" else total * (1.0 / n)


def _reduce_each(terms: list[Var], shape: tuple[int, ...], reduction: str) -> Loss:
    """Reduce one Var per element: one fused sum for 'sum'/'mean'."""
    if reduction == "none":
        return _unflatten(terms, shape)
    return _reduce(fsum(terms), len(terms), reduction)


def _reduce_terms(terms: list[tuple[list[Any], list[Any]]], shape: tuple[int, ...], reduction: str) -> Loss:
    """Reduce per-element terms, each Σ_k coefs[k]·pieces[k]: one dot per term for 'none', one dot over
    all of them for 'sum'/'mean'."""
    if reduction == "none":
        return _unflatten([dot(coefs, pieces) for pieces, coefs in terms], shape)
    pieces = [p for ps, _ in terms for p in ps]
    coefs = [c for _, cs in terms for c in cs]
    return _reduce(dot(coefs, pieces), len(terms), reduction)


def _reduce_rows(terms: list[Optional[Var]], counted: list[Any], batched: bool, reduction: str) -> Loss:
    """Reduce per-row terms (None for an ignored row); 'mean' divides by the counted rows' total weight."""
    if reduction == "none":
        values = [Var(0.0) if term is None else term for term in terms]
        return values if batched else values[0]
    total = fsum([term for term in terms if term is not None])
    # NOTE: division (PyTorch's form); no counted row gives 0/0 = nan, as in PyTorch.
    return total if reduction == "sum" else total / _add_all(counted)


# ---- stable pieces ----

def _lowest_log_argument(floor: float) -> float:
    """The smallest float x with log(x) >= floor."""
    x = math.exp(floor)
    while math.log(x) < floor:
        x = math.nextafter(x, math.inf)
    while math.log(math.nextafter(x, 0.0)) >= floor:
        x = math.nextafter(x, 0.0)
    return x


_E_MINUS_100 = _lowest_log_argument(-100.0)   # log of anything below is below -100
_E_MINUS_101 = _lowest_log_argument(-101.0)   # log of it is exactly -101.0
_BELOW_ONE = math.nextafter(1.0, 0.0)         # 1 - 2^-53: the largest x with log1p(-x) finite


def _log_clamped(x: Var) -> Var:
    """max(log x, -100), PyTorch's clamp, as log(max(x, e^-100)): 0 gradient and no 0·inf below."""
    return maximum(x, _E_MINUS_100).log()


def _log_one_minus_clamped(x: Var) -> Var:
    """max(log1p(-x), -100), with log1p's accuracy near 0 and no nan gradient at x = 1.

    log1p(-x) reaches -100 only at x = 1, where its derivative is infinite: a clamp after it would send 0·inf
    = nan back. So the argument stops at 1 - 2^-53 (x - relu(x - (1 - 2^-53)): the same x below, with full
    gradient even at 1 - 2^-53 since relu'(0) = 0), and at x = 1 the min picks the second operand,
    log(max(1 - x, e^-101)) + 1 = -100, whose gradient is 0. Below 1 that operand exceeds the first by ~1.
    """
    kept_below_one = x - (x - _BELOW_ONE).relu()
    return minimum((-kept_below_one).log1p(), maximum(1.0 - x, _E_MINUS_101).log() + 1.0)


def _logits(logits: Any, name: str) -> tuple[list[Var], float]:
    """The logits as Vars and their largest value (a plain float: the shift is a constant)."""
    if isinstance(logits, np.ndarray):
        logits = _array_values(logits, name, "logits")
    if not isinstance(logits, (list, tuple)) or not logits:
        raise ValueError(f"{name}: expected a non-empty list of logits, got {_describe(logits)}")
    xs = [_var(x) for x in logits]
    values = [x.data for x in xs]
    # NOTE: shift by the max even when it is infinite, as PyTorch and JAX do: softmax([inf, 1]) is then
    # [nan, nan] (inf - inf), not [nan, 0]; a nan logit makes the max, and so every output, nan.
    m = math.nan if any(v != v for v in values) else max(values)
    return xs, m


def _shifted_log_sum_exp(logits: Any, name: str) -> tuple[list[Var], Var]:
    """(x_k - m for each k, log Σ_j exp(x_j - m)); the log-sum-exp is at least log(1) = 0 and each shifted
    logit at most 0, so log p_k = shifted_k - lse never cancels large numbers."""
    xs, m = _logits(logits, name)
    shifted = [x - m for x in xs]
    return shifted, fsum([s.exp() for s in shifted]).log()


# ---- input handling ----

def _var(x: Any) -> Var:
    return x if isinstance(x, Var) else Var(x)


def _describe(x: Any) -> str:
    return f"a {type(x).__name__}" if not isinstance(x, (str, bytes)) else f"{type(x).__name__} {x!r}"


_NESTED = (list, tuple, np.ndarray)
_PLAIN = frozenset((float, int, Var))   # element types that need no check


def _is_sequence(x: Any) -> bool:
    return isinstance(x, (list, tuple)) or (isinstance(x, np.ndarray) and x.ndim > 0)


def _array_values(array: np.ndarray, name: str, what: str) -> Any:
    """A real NumPy array as (nested) Python floats; other dtypes are a TypeError."""
    if array.dtype.kind not in "iuf":
        raise TypeError(f"{name}: {what} must hold real numbers, got a NumPy array of dtype {array.dtype}")
    return array.astype(float).tolist()


def _number(x: Any, name: str, what: str) -> Any:
    """A Var as it is, a real number as a float; anything else is a TypeError."""
    kind = type(x)
    if kind is float or kind is Var:   # the common cases first: this runs once per element
        return x
    if kind is int:
        return float(x)
    if isinstance(x, Var):
        return x
    if isinstance(x, (str, bytes, complex, np.complexfloating)) or x is None or isinstance(x, np.ndarray):
        raise TypeError(f"{name}: {what} must hold real numbers or Vars, got {_describe(x)}")
    try:
        return float(x)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: {what} must hold real numbers or Vars, got {_describe(x)}") from None


def _flatten(x: Any, name: str, what: str) -> tuple[list[Any], tuple[int, ...]]:
    """The leaves of a number, Var, (nested) list/tuple or NumPy array, and its shape; ragged is an error."""
    if isinstance(x, np.ndarray):
        x = _array_values(x, name, what)
    if not isinstance(x, (list, tuple)):
        return [x], ()
    if set(map(type, x)) <= _PLAIN or not any(isinstance(item, _NESTED) for item in x):
        return list(x), (len(x),)     # a flat list (the common case is checked at C speed)
    parts = [_flatten(item, name, what) for item in x]
    inner = parts[0][1]
    for i, (_, sub) in enumerate(parts):
        if sub != inner:
            raise ValueError(f"{name}: {what} is ragged: item 0 has shape {inner} but item {i} has shape "
                             f"{sub}")
    return [leaf for leaves, _ in parts for leaf in leaves], (len(x), *inner)


def _unflatten(flat: list[Any], shape: tuple[int, ...]) -> Any:
    """Nested lists of `shape` from the flat list (a scalar shape gives the element itself)."""
    if not shape:
        return flat[0]
    if len(shape) == 1:
        return list(flat)
    step = len(flat) // shape[0]
    return [_unflatten(flat[i * step:(i + 1) * step], shape[1:]) for i in range(shape[0])]


_TENSOR_LOSSES = ("on Tensors, fastgrad.tensor_functional has cross_entropy, mse_loss and "
                  "binary_cross_entropy_with_logits (this module's versions of those three take Tensors "
                  "too), and Tensor ops build the others, e.g. (x - y).abs().mean() for l1_loss")


def _no_tensor(input: Any, target: Any, name: str) -> None:
    """TypeError for a Tensor given to a loss that takes Vars only, saying where Tensor losses are."""
    if isinstance(input, Tensor) or isinstance(target, Tensor):
        raise TypeError(f"{name}: takes Vars (or lists of them); {_TENSOR_LOSSES}")


def _elements(input: Any, target: Any, name: str) -> tuple[list[Var], list[Any], tuple[int, ...]]:
    """Input elements as Vars, target elements as Vars or numbers, and their common shape."""
    _no_tensor(input, target, name)
    if type(input) is list and type(target) is list and input and len(input) == len(target):
        # NOTE: the common case at C speed (this runs on every loss call): flat lists of Vars and numbers
        input_kinds = set(map(type, input))
        if input_kinds <= _PLAIN and set(map(type, target)) <= _PLAIN:
            return (input if input_kinds == {Var} else [_var(x) for x in input]), target, (len(input),)
    xs, shape = _flatten(input, name, "input")
    ts, target_shape = _flatten(target, name, "target")
    if shape != target_shape:
        raise ValueError(f"{name}: input has {len(xs)} elements (shape {shape}) but target has {len(ts)} "
                         f"(shape {target_shape}); they must have the same shape")
    if not xs:
        raise ValueError(f"{name}: empty input")
    return _checked(xs, name, "input", as_var=True), _checked(ts, name, "target", as_var=False), shape


def _checked(values: list[Any], name: str, what: str, as_var: bool) -> list[Any]:
    """Vars, floats and ints as they are, other real numbers as floats (all as Vars when `as_var`), and a
    TypeError naming the loss for anything else."""
    kinds = set(map(type, values))
    if not kinds <= _PLAIN:
        values = [_number(v, name, what) for v in values]
    if as_var and kinds != {Var}:
        values = [v if isinstance(v, Var) else Var(v) for v in values]
    return values


def _broadcast(value: Any, shape: tuple[int, ...], name: str, what: str) -> list[Any]:
    """`value` (None = 1, a number, or numbers of `shape` or of its last dimension) over every element."""
    count = math.prod(shape)
    if value is None:
        return [1.0] * count
    flat, value_shape = _flatten(value, name, what)
    flat = [_number(v, name, what) for v in flat]
    if value_shape in ((), (1,)):
        return flat * count
    if value_shape == shape:
        return flat
    if shape and value_shape == shape[-1:]:
        return flat * (count // shape[-1])
    raise ValueError(f"{name}: {what} has shape {value_shape}, which does not broadcast to the input's "
                     f"shape {shape} (give one number, the input's shape or its last dimension)")


def _positive(x: Any, name: str, what: str, allow_zero: bool) -> float:
    if isinstance(x, (bool, Var)) or not isinstance(x, numbers.Real):
        raise TypeError(f"{name}: {what} must be a number, got {_describe(x)}")
    value = float(x)
    if not (value >= 0.0 if allow_zero else value > 0.0) or value == math.inf:
        bound = "non-negative" if allow_zero else "positive"
        raise ValueError(f"{name}: {what} must be a finite {bound} number, got {x!r}")
    return value


def _fraction(x: Any, name: str, what: str) -> float:
    if isinstance(x, (bool, Var)) or not isinstance(x, numbers.Real):
        raise TypeError(f"{name}: {what} must be a number, got {_describe(x)}")
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"{name}: {what} must be between 0.0 and 1.0, got {x!r}")
    return float(x)


def _add_all(values: list[Any]) -> Any:
    """Σ values left to right: a float for numbers, one fused node when there are Vars."""
    if any(isinstance(v, Var) for v in values):
        return fsum(values)
    total = 0.0
    for v in values:
        total += v
    return total


def _rows(input: Any, name: str) -> list[list[Any]]:
    """A batch as a list of equal-length non-empty rows."""
    rows = []
    for i, row in enumerate(input):
        if isinstance(row, np.ndarray):
            row = _array_values(row, name, "input")
        if not isinstance(row, (list, tuple)) or not row:
            raise ValueError(f"{name}: row {i} of the batch must be a non-empty list of logits, got "
                             f"{_describe(row)}")
        if len(row) != len(rows[0] if rows else row):
            raise ValueError(f"{name}: row {i} has {len(row)} entries but row 0 has {len(rows[0])}")
        rows.append(list(row))
    return rows


def _class_index(t: Any, name: str) -> int:
    if isinstance(t, (bool, np.bool_)) or isinstance(t, Var):
        raise TypeError(f"{name}: targets must be ints (class indices), got {_describe(t)}")
    try:
        return operator.index(t)
    except TypeError:
        raise TypeError(f"{name}: targets must be ints (class indices), got {_describe(t)}") from None


def _class_rows(input: Any, target: Any, ignore_index: Any,
                name: str) -> tuple[list[list[Any]], list[int], bool]:
    """(rows, int targets, batched?) for cross_entropy/nll_loss, with every target checked."""
    _no_tensor(input, target, name)
    if isinstance(ignore_index, (bool, np.bool_)) or not isinstance(ignore_index, (numbers.Integral)):
        raise TypeError(f"{name}: ignore_index must be an int, got {_describe(ignore_index)}")
    if not _is_sequence(input) or not len(input):
        raise ValueError(f"{name}: input must be a non-empty list of logits (or a list of such lists), got "
                         f"{_describe(input) if not _is_sequence(input) else 'an empty one'}")
    batched = _is_sequence(input[0])
    if isinstance(target, np.ndarray):
        if target.dtype.kind not in "iu":
            raise TypeError(f"{name}: targets must be integers (class indices), got a NumPy array of dtype "
                            f"{target.dtype}")
        if target.ndim > 1:
            raise ValueError(f"{name}: targets must be a 1-D array (one class per row), got shape "
                             f"{target.shape}")
        target = target.tolist() if target.ndim == 1 else int(target)
    if batched:
        rows = _rows(input, name)
        if not isinstance(target, (list, tuple)):
            raise TypeError(f"{name}: a batch of {len(rows)} rows needs a list of {len(rows)} int targets, "
                            f"got {_describe(target)}")
        if len(target) != len(rows):
            raise ValueError(f"{name}: {len(rows)} rows of logits but {len(target)} targets")
        targets = [_class_index(t, name) for t in target]
    else:
        if isinstance(target, (list, tuple)):
            raise TypeError(f"{name}: one row of logits takes one int target, got a {type(target).__name__} "
                            f"(for a batch, give a list of rows)")
        rows, targets = [_rows([input], name)[0]], [_class_index(target, name)]
    n_classes = len(rows[0])
    for i, t in enumerate(targets):
        if t != ignore_index and not 0 <= t < n_classes:
            where = f" (row {i})" if batched else ""
            raise IndexError(f"{name}: Target {t} is out of bounds: the input has {n_classes} classes, "
                             f"0 to {n_classes - 1}{where}")
    return rows, targets, batched


def _class_weights(weight: Any, n_classes: int, name: str) -> Optional[list[Any]]:
    """Per-class weights (Vars or floats), or None; their count must be the number of classes."""
    if weight is None:
        return None
    if not _is_sequence(weight):
        hint = " (pass reduction= by keyword)" if isinstance(weight, str) else ""
        raise TypeError(f"{name}: weight must be a list of {n_classes} per-class numbers, got "
                        f"{_describe(weight)}{hint}")
    flat, shape = _flatten(weight, name, "weight")
    if shape != (n_classes,):
        raise ValueError(f"{name}: weight has shape {shape} but the input has {n_classes} classes: give one "
                         f"weight per class")
    return [_number(w, name, "weight") for w in flat]
