"""Losses and the softmax family on `fg.Tensor` batches (issue 10): PyTorch's `torch.nn.functional` forms.

Each loss is ONE graph node whose reverse rule is written out (no chain of elementwise nodes), so a batched
loss costs one node and a few NumPy calls. Values and gradients follow `torch.nn.functional`, with its
`reduction` (`'mean'`, `'sum'`, `'none'`), and use stable forms that stay finite at logits of ±1000; a
logit of ±inf gives what PyTorch gives. The input's float dtype is kept (float32 stays float32).

`fastgrad.nn.functional` keeps its functions of the same names for lists of `Var`s; these take Tensors
(or arrays), and `fastgrad.nn.functional` may dispatch to them.
"""
from __future__ import annotations

import math
from typing import Any, Optional, Tuple

import numpy as np

from fastgrad import _engine
from fastgrad.tensor import Tensor, _make, _operand, log_softmax, logsumexp, softmax

__all__ = ["binary_cross_entropy_with_logits", "cross_entropy", "log_softmax", "logsumexp", "mse_loss",
           "softmax"]

_REDUCTIONS = ("mean", "sum", "none")


def _check_reduction(reduction: Any, name: str) -> None:
    if not isinstance(reduction, str) or reduction not in _REDUCTIONS:
        raise ValueError(f"{name}(): {reduction!r} is not a valid value for reduction: use 'mean', 'sum' or "
                         "'none'")


def _pair(input: Any, target: Any, name: str) -> Tuple[np.ndarray, Any, np.ndarray, Any]:
    """The arrays and originals of an (input, target) pair of one shape."""
    x, _, ox = _operand(input)
    y, _, oy = _operand(target)
    if x.shape != y.shape:
        raise ValueError(f"{name}(): input of shape {x.shape} and target of shape {y.shape} differ")
    return x, ox, y, oy


def _reduced(terms: np.ndarray, reduction: str, dtype: np.dtype) -> Tuple[np.ndarray, float]:
    """(the reduced value in ``dtype``, the scale d value / d term) of elementwise ``terms``."""
    if reduction == "none":
        return np.asarray(terms, dtype=dtype), 1.0        # (a 0-d input gives a NumPy scalar)
    total = terms.sum()
    if reduction == "sum":
        return np.asarray(total, dtype=dtype), 1.0
    n = terms.size
    return np.asarray(total / n if n else np.nan, dtype=dtype), (1.0 / n if n else np.nan)


def mse_loss(input: Any, target: Any, reduction: str = "mean") -> Tensor:
    """(input - target)², reduced: PyTorch's `mse_loss`. Both may require grad.

    ``input`` and ``target`` are Tensors (or arrays, numbers) of ONE shape (PyTorch would broadcast with a
    warning; here it is an error). The result has the input's dtype. Returns a 0-d Tensor, or the squared
    errors for ``reduction='none'``.
    ValueError for differing shapes or a bad ``reduction``; TypeError for non-real operands.
    """
    name = "mse_loss"
    _check_reduction(reduction, name)
    x, ox, y, oy = _pair(input, target, name)
    d = x - y
    out, scale = _reduced(d * d, reduction, x.dtype)

    def backward(g: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        gx = (2.0 * scale) * d * g      # g broadcasts: 0-d for 'mean'/'sum', the shape of d for 'none'
        return gx, -gx
    return _make(name, out, [ox, oy], backward)


def binary_cross_entropy_with_logits(input: Any, target: Any, weight: Any = None, *, reduction: str = "mean",
                                     pos_weight: Any = None) -> Tensor:
    """-w·[p·y·log σ(x) + (1 - y)·log(1 - σ(x))] on logits x, stably as
    w·[(1 - y)·softplus(x) + p·y·softplus(-x)].

    p is the ``pos_weight`` (1 when None), as PyTorch. softplus(±x) = max(±x, 0) + log1p(exp(-|x|)), and both
    terms are >= 0 for targets in [0, 1], so nothing overflows at ±1000 and nothing cancels: the loss at
    x = -40, y = 0 is softplus(-40) ≈ 4.2e-18, not 0 (PyTorch's form gives 0 there). The gradient is
    w·[(1 - y)·σ(x) - p·y·σ(-x)] (σ(x) - y when w = p = 1) for the input, w·[p·softplus(-x) - softplus(x)]
    (-x when p = 1) for the target. ``input`` and ``target`` (probabilities) are Tensors or arrays of one
    shape, both differentiable; ``weight`` and ``pos_weight`` are constants that broadcast to the input
    (``pos_weight`` per class: the last dimension). The result has the input's dtype. Returns a 0-d Tensor, or
    the terms for ``reduction='none'``. ValueError for differing or non-broadcasting shapes or a bad
    ``reduction``; TypeError for non-real operands.
    """
    name = "binary_cross_entropy_with_logits"
    _check_reduction(reduction, name)
    x, ox, y, oy = _pair(input, target, name)
    w = _constant(weight, x.shape, name, "weight")
    p = _constant(pos_weight, x.shape, name, "pos_weight")
    e = np.exp(-np.abs(x))
    log1p_e = np.log1p(e)
    sp_pos = np.maximum(x, 0.0) + log1p_e           # softplus(x) = -log(1 - σ(x))
    sp_neg = np.maximum(-x, 0.0) + log1p_e          # softplus(-x) = -log σ(x)
    py = y if p is None else p * y
    terms = (1.0 - y) * sp_pos + py * sp_neg
    if w is not None:
        terms = terms * w
    out, scale = _reduced(terms, reduction, x.dtype)

    def backward(g: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        positive = x >= 0
        sig_pos = np.where(positive, 1.0, e) / (1.0 + e)          # σ(x), without overflow
        sig_neg = np.where(positive, e, 1.0) / (1.0 + e)          # σ(-x) = 1 - σ(x), without cancellation
        gs = g * scale if w is None else g * scale * w
        gx = gs * ((1.0 - y) * sig_pos - py * sig_neg)
        gy = gs * -x if p is None else gs * (p * sp_neg - sp_pos)
        return gx, gy
    return _make(name, out, [ox, oy], backward)


def _constant(value: Any, shape: Tuple[int, ...], name: str, what: str) -> Optional[np.ndarray]:
    """A weight: None, or float64 constants that broadcast to ``shape`` (a Tensor's data, no gradient)."""
    if value is None:
        return None
    arr = value.data if isinstance(value, Tensor) else np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name}(): {what} must be real numbers, got dtype {arr.dtype}")
    try:
        np.broadcast_shapes(arr.shape, shape)
    except ValueError:
        raise ValueError(f"{name}(): {what} of shape {arr.shape} does not broadcast to the input's {shape}"
                         ) from None
    if np.broadcast_shapes(arr.shape, shape) != shape:
        raise ValueError(f"{name}(): {what} of shape {arr.shape} would enlarge the input's {shape}")
    return arr.astype(np.float64, copy=False)


def _labels(target: Any, n: Optional[int], n_classes: int, ignore_index: int, name: str) -> np.ndarray:
    """Checked class indices: ints of shape (n,) (or () when n is None), each in [0, C) or ignore_index."""
    if isinstance(target, Tensor):
        raise TypeError(f"{name}(): targets are class indices (a NumPy integer array or a list of ints), "
                        "not a float Tensor")
    t = np.asarray(target)
    if t.size == 0 and t.dtype == np.float64:     # [] is float64 to NumPy
        t = t.astype(np.int64)
    if t.dtype.kind not in "iu":
        raise TypeError(f"{name}(): targets must be integer class indices, got dtype {t.dtype}")
    want = () if n is None else (n,)
    if t.shape != want:
        raise ValueError(f"{name}(): {'one target' if n is None else f'{n} targets'} needed for logits of "
                         f"{'one row' if n is None else f'{n} rows'}, got targets of shape {t.shape}")
    if t.size == 0 or (t.min() >= 0 and t.max() < n_classes):
        return t.astype(np.intp, copy=False)
    bad = (t != ignore_index) & ((t < 0) | (t >= n_classes))
    if bad.any():
        raise IndexError(f"{name}(): target {t[bad].flat[0]} is out of bounds for {n_classes} classes")
    return t.astype(np.intp, copy=False)


def cross_entropy(input: Any, target: Any, weight: Any = None, *, ignore_index: int = -100,
                  reduction: str = "mean", label_smoothing: float = 0.0) -> Tensor:
    """-log softmax(logits)[target] per row, stably: PyTorch's `cross_entropy` with class-index targets.

    ``input`` is a Tensor (or array) of logits of shape (N, C) with ``target`` N integer class indices (a
    NumPy integer array, a list or tuple of ints), or one row (C,) with one int. ``weight`` (C numbers, a
    constant) multiplies a row's term by its target's weight, and 'mean' divides by the sum of the targets'
    weights; rows whose target is ``ignore_index`` give 0 and are left out of the mean (all rows ignored:
    nan). ``label_smoothing`` ε in [0, 1] mixes in the uniform distribution, PyTorch's formula:
    (1 - ε)·w[t]·(-log p[t]) + (ε/C)·Σ_c w[c]·(-log p[c]). Finite at logits of ±1000; a logit of ±inf gives
    what PyTorch gives (nan for +inf). Its gradient is Σq·softmax - q per row, q the target distribution.
    Returns a 0-d Tensor ('mean', 'sum') or the N terms ('none').

    Raises TypeError for targets that are not integers (floats, bools) or non-real logits, IndexError for a
    target outside [0, C) that is not ``ignore_index``, ValueError for logits that are not 1-D or 2-D, a
    target count that differs from N, a ``weight`` not of length C, ε outside [0, 1] or a bad ``reduction``.
    """
    name = "cross_entropy"
    # NOTE: _smoothing checks label_smoothing as the general path does (a bool is a TypeError there too)
    if weight is None and reduction == "mean" and _smoothing(label_smoothing, name) == 0.0:
        # the common case, one engine node (None: it declined, for the general path to decide)
        fast = _engine._tensor_cross_entropy(input, target, ignore_index)
        if fast is not None:
            return fast
    _check_reduction(reduction, name)
    eps = _smoothing(label_smoothing, name)
    x, _, ox = _operand(input)
    if x.ndim not in (1, 2) or x.shape[-1] == 0:
        raise ValueError(f"{name}(): logits must be (N, C) or (C,) with C >= 1, got shape {x.shape}")
    single = x.ndim == 1
    x2 = x[None, :] if single else x
    n, n_classes = x2.shape
    t = _labels(target, None if single else n, n_classes, ignore_index, name).reshape(n)
    w = _class_weights(weight, n_classes, name)
    rows = np.arange(n)
    kept = t != ignore_index
    every = bool(kept.all())
    t_safe = t if every else np.where(kept, t, 0)
    if w is None:           # each row's weight (0: ignored)
        w_t = 1.0 if every else kept.astype(np.float64)
    else:
        w_t = w[t_safe] if every else np.where(kept, w[t_safe], 0.0)
    # log softmax, shifted by the row max
    z = x2 - x2.max(axis=1, keepdims=True)
    e = np.exp(z)
    s = e.sum(axis=1, keepdims=True)
    logp = z - np.log(s)
    terms = -logp[rows, t_safe] * w_t
    if not every:
        terms = np.where(kept, terms, 0.0)     # an ignored row is 0 even where its logp is -inf or nan
    if eps:
        smooth = -(logp.sum(axis=1) if w is None else logp @ w)
        terms = (1.0 - eps) * terms + (eps / n_classes) * (smooth if every else np.where(kept, smooth, 0.0))
    dtype = x.dtype
    if reduction == "none":
        out, scale = terms.astype(dtype, copy=False), 1.0
        if single:
            out = out.reshape(())
    else:
        if reduction == "sum":
            denom = 1.0
        else:                       # 'mean' divides by the targets' total weight (all rows ignored: nan)
            denom = n if w is None and every else float(np.sum(w_t))
        scale = 1.0 / denom if denom else math.nan
        out = np.asarray(terms.sum() * scale if denom else math.nan, dtype=dtype)

    def backward(g: np.ndarray) -> Tuple[np.ndarray]:
        # d term_i / d x_i = (Σ_c q_ic)·p_i - q_i, q_i row i's target distribution times its weight
        gr = (np.asarray(g).reshape(-1) * scale)[:, None] if reduction == "none" else g * scale
        if w is None and every and not eps:         # q is one-hot: softmax - onehot
            grad = e / s
            grad[rows, t] -= 1.0
            grad *= gr
            return (grad.reshape(x.shape),)
        q = np.zeros((n, n_classes))
        q[rows, t_safe] = (1.0 - eps) * w_t
        if eps:
            q += (eps / n_classes) * (1.0 if w is None else w) * (1.0 if every else kept[:, None])
        grad = (q.sum(axis=1, keepdims=True) * (e / s) - q) * gr
        return (grad.reshape(x.shape),)
    return _make(name, out, [ox], backward)


def _smoothing(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}(): label_smoothing must be a number, got {type(value).__name__}")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name}(): label_smoothing must be in [0, 1], got {value}")
    return float(value)


def _class_weights(weight: Any, n_classes: int, name: str) -> Optional[np.ndarray]:
    if weight is None:
        return None
    w = weight.data if isinstance(weight, Tensor) else np.asarray(weight)
    if w.dtype.kind not in "biuf":
        raise TypeError(f"{name}(): weight must be real numbers, got dtype {w.dtype}")
    if w.shape != (n_classes,):
        raise ValueError(f"{name}(): weight must have one entry per class ({n_classes}), got shape {w.shape}")
    return w.astype(np.float64, copy=False)
