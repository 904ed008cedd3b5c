"""Gradient clipping with PyTorch's semantics (`torch.nn.utils.clip_grad_norm_`, `clip_grad_value_`).

Both act in place on `.grad` of the parameters, given as a `Var`, an iterable of Vars (`model.parameters()`)
or nested lists of them (`layer.weight`); call them between `loss.backward()` and `optimizer.step()`:

    loss.backward()
    total = fg.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
    opt.step()

- `clip_grad_norm_(params, max_norm, norm_type=2.0)`: the p-norm of all gradients taken as one vector
  (each Var is one entry), returned as a float; every gradient is multiplied by
  min(1, max_norm / (total + 1e-6)), as PyTorch does (also when that is 1). `norm_type` may be `inf`
  (or the string "inf"): the largest |grad|. A NaN or infinite total norm makes the gradients NaN or
  zero/NaN, as in PyTorch, or raises RuntimeError with `error_if_nonfinite=True` (before any change).
- `clip_grad_value_(params, clip_value)`: clamp every gradient into [-clip_value, clip_value]; NaN
  gradients stay NaN.
"""
from __future__ import annotations

import math
import numbers
import types
import warnings
from collections.abc import Iterable
from typing import Any, Union

from fastgrad._engine import Var
from fastgrad.nn.init import _flatten

__all__ = ["clip_grad_norm_", "clip_grad_value_"]

Parameters = Union[Var, Iterable[Any]]


def _parameters(parameters: Any) -> list[Var]:
    """The Vars of a Var, an iterable of Vars or nested lists/tuples of them (TypeError otherwise)."""
    if isinstance(parameters, Var):
        return [parameters]
    if isinstance(parameters, (str, bytes, dict)) or not isinstance(parameters, Iterable):
        raise TypeError(f"parameters must be a Var or an iterable of Vars, got {type(parameters).__name__}")
    items = parameters if isinstance(parameters, (list, tuple)) else list(parameters)
    return _flatten(items, "parameters to be Vars (or nested lists of Vars)")


def _number(name: str, value: Any) -> float:
    if isinstance(value, (bool, str, bytes)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    return float(value)


def _norm(values: list[float], p: float) -> float:
    """The p-norm of `values` (each already an absolute value), as `torch.linalg.vector_norm` defines it.

    NOTE: computed without overflow (scaled by the largest entry; `math.hypot` for p = 2), where PyTorch
    squares first: for gradients near 1e155 and above its 2-norm is inf and its clipping zeroes them; here
    the norm is the finite, exact one.
    """
    if not values:
        return 0.0
    if p == 0:  # the number of nonzero entries (NaN counts)
        return float(sum(1 for v in values if v != 0.0))
    if any(math.isnan(v) for v in values):
        return math.nan
    if p == math.inf:
        return max(values)
    if p == -math.inf:
        return min(values)
    # scaled by the largest (p > 0) or smallest (p < 0) entry, so that no power overflows
    m = max(values) if p > 0 else min(values)
    if m == 0.0 or math.isinf(m):
        return m
    if p == 2.0:
        return math.hypot(*values)
    if p == 1.0:
        return math.fsum(values)
    return m * math.fsum((v / m) ** p for v in values) ** (1.0 / p)


def clip_grad_norm_(parameters: Parameters, max_norm: float, norm_type: float | str = 2.0,
                    error_if_nonfinite: bool = False) -> float:
    """Scale the gradients so that their joint `norm_type`-norm is at most `max_norm`; returns the norm
    before clipping (a float).

    Every `.grad` is multiplied by min(1, max_norm / (total_norm + 1e-6)). `norm_type` is any real p
    (`math.inf` or "inf" for the max-norm, 0 counts the nonzero gradients). With `error_if_nonfinite=True`
    a NaN or infinite total norm raises RuntimeError and no gradient changes. An empty parameter list gives
    0.0. Raises TypeError for parameters that are not Vars or non-numeric arguments.
    """
    is_generator = isinstance(parameters, types.GeneratorType)
    params = _parameters(parameters)
    if is_generator and not params:
        warnings.warn("`parameters` is an empty generator, no gradient clipping will occur.", stacklevel=2)
    max_norm = _number("max_norm", max_norm)
    if isinstance(norm_type, str):
        if norm_type.strip().lower() not in ("inf", "-inf"):
            raise TypeError(f"norm_type must be a number or 'inf', got {norm_type!r}")
        norm_type = float(norm_type)
    p = _number("norm_type", norm_type)
    if not params:
        return 0.0
    grads = [param.grad for param in params]
    total = _norm([abs(g) for g in grads], p)
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(
            f"The total norm of order {p} for gradients from `parameters` is non-finite, so it cannot be "
            "clipped. To disable this error and scale the gradients by the non-finite norm anyway, set "
            "`error_if_nonfinite=False`"
        )
    coef = max_norm / (total + 1e-6)
    if coef > 1.0:  # NOTE: clamped like torch.clamp(max=1.0): a NaN coefficient stays NaN
        coef = 1.0
    for param, g in zip(params, grads):
        param.grad = g * coef
    return total


def clip_grad_value_(parameters: Parameters, clip_value: float) -> None:
    """Clamp every gradient into [-clip_value, clip_value], in place (NaN stays NaN). Returns None.

    Raises TypeError for parameters that are not Vars or a non-numeric `clip_value`."""
    params = _parameters(parameters)
    clip_value = _number("clip_value", clip_value)
    low = -clip_value
    for param in params:
        g = param.grad
        # NOTE: torch.clamp_(min, max) is min(max(g, low), high); NaN passes through
        if g < low:
            g = low
        if g > clip_value:
            g = clip_value
        param.grad = g
