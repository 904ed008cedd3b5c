"""Loss modules, PyTorch's names for the functions in `fastgrad.nn.functional`.

A module holds its options (checked at construction, with the function's errors) and calls the function.
Weights are stored as tuples of floats: like PyTorch's buffers they are constants, never parameters (a
trainable weight is a Var passed to the function itself).
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from fastgrad._engine import Var
from fastgrad.nn import functional as F
from fastgrad.nn.module import Module

__all__ = [
    "BCELoss",
    "BCEWithLogitsLoss",
    "CrossEntropyLoss",
    "HingeLoss",
    "HuberLoss",
    "L1Loss",
    "MSELoss",
    "NLLLoss",
    "SmoothL1Loss",
]


class _Loss(Module):
    """A loss with a fixed reduction ('mean', 'sum' or 'none', checked at construction) and options.

    `_defaults` names the options a subclass stores as attributes, with their default values: they are
    passed to the function by keyword and shown by `repr` when they differ from the default.
    """

    _fn: Any
    _defaults: dict[str, Any] = {}

    def __init__(self, reduction: str = "mean") -> None:
        F._check_reduction(reduction)
        self.reduction = reduction

    def forward(self, input: Any, target: Any) -> Any:
        """The loss of `input` against `target` (see the function for shapes, errors and the result)."""
        options = {key: getattr(self, key) for key in self._defaults}
        return type(self)._fn(input, target, reduction=self.reduction, **options)

    def extra_repr(self) -> str:
        parts = [f"reduction={self.reduction!r}"]
        for key, default in self._defaults.items():
            value = getattr(self, key)
            if value is not default and value != default:
                parts.append(f"{key}={value!r}")
        return ", ".join(parts)


def _constants(value: Any, name: str, what: str) -> Optional[tuple]:
    """A weight as (nested) tuples of floats, or None; a Var or a non-number is a TypeError."""
    if value is None:
        return None
    if isinstance(value, np.ndarray):
        value = F._array_values(value, name, what)
    if isinstance(value, (list, tuple)):
        return tuple(_constants(v, name, what) for v in value)
    if isinstance(value, Var):
        raise TypeError(f"{name}: {what} holds numbers (a constant, as PyTorch's buffers); pass Vars to the "
                        f"functional form for a trainable {what}")
    number = F._number(value, name, what)
    return number


class MSELoss(_Loss):
    """Mean squared error: `F.mse_loss`."""

    _fn = staticmethod(F.mse_loss)


class L1Loss(_Loss):
    """Mean absolute error: `F.l1_loss`."""

    _fn = staticmethod(F.l1_loss)


class HuberLoss(_Loss):
    """PyTorch's Huber loss with threshold `delta` > 0: `F.huber_loss`."""

    _fn = staticmethod(F.huber_loss)
    _defaults = {"delta": 1.0}

    def __init__(self, reduction: str = "mean", delta: float = 1.0) -> None:
        super().__init__(reduction)
        self.delta = F._positive(delta, "HuberLoss", "delta", allow_zero=False)


class SmoothL1Loss(_Loss):
    """PyTorch's smooth L1 loss with threshold `beta` >= 0 (0 is L1): `F.smooth_l1_loss`."""

    _fn = staticmethod(F.smooth_l1_loss)
    _defaults = {"beta": 1.0}

    def __init__(self, reduction: str = "mean", beta: float = 1.0) -> None:
        super().__init__(reduction)
        self.beta = F._positive(beta, "SmoothL1Loss", "beta", allow_zero=True)


class HingeLoss(_Loss):
    """micrograd's max-margin loss, labels ±1: `F.hinge_loss`."""

    _fn = staticmethod(F.hinge_loss)


class BCELoss(_Loss):
    """Binary cross-entropy on probabilities, optionally weighted: `F.binary_cross_entropy`."""

    _fn = staticmethod(F.binary_cross_entropy)
    _defaults = {"weight": None}

    def __init__(self, weight: Any = None, *, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.weight = _constants(weight, "BCELoss", "weight")


class BCEWithLogitsLoss(_Loss):
    """Stable binary cross-entropy on logits, targets in [0, 1], with `weight` and `pos_weight`:
    `F.binary_cross_entropy_with_logits`."""

    _fn = staticmethod(F.binary_cross_entropy_with_logits)
    _defaults = {"weight": None, "pos_weight": None}

    def __init__(self, weight: Any = None, *, reduction: str = "mean", pos_weight: Any = None) -> None:
        super().__init__(reduction)
        self.weight = _constants(weight, "BCEWithLogitsLoss", "weight")
        self.pos_weight = _constants(pos_weight, "BCEWithLogitsLoss", "pos_weight")


class NLLLoss(_Loss):
    """Negative log-likelihood of rows of log-probabilities and int classes: `F.nll_loss`."""

    _fn = staticmethod(F.nll_loss)
    _defaults = {"weight": None, "ignore_index": -100}

    def __init__(self, weight: Any = None, *, ignore_index: int = -100, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.weight = _class_weights(weight, "NLLLoss")
        self.ignore_index = _ignore_index(ignore_index, "NLLLoss")


class CrossEntropyLoss(_Loss):
    """Stable softmax cross-entropy of rows of logits and int classes, with per-class `weight`,
    `ignore_index` and `label_smoothing`: `F.cross_entropy`."""

    _fn = staticmethod(F.cross_entropy)
    _defaults = {"weight": None, "ignore_index": -100, "label_smoothing": 0.0}

    def __init__(self, weight: Any = None, *, ignore_index: int = -100, reduction: str = "mean",
                 label_smoothing: float = 0.0) -> None:
        super().__init__(reduction)
        self.weight = _class_weights(weight, "CrossEntropyLoss")
        self.ignore_index = _ignore_index(ignore_index, "CrossEntropyLoss")
        self.label_smoothing = F._fraction(label_smoothing, "CrossEntropyLoss", "label_smoothing")


def _class_weights(weight: Any, name: str) -> Optional[tuple]:
    """Per-class weights as a flat tuple of floats (their count is checked against the input later)."""
    if weight is not None and not F._is_sequence(weight):
        hint = " (pass reduction= by keyword)" if isinstance(weight, str) else ""
        raise TypeError(f"{name}: weight must be a list of per-class numbers, got "
                        f"{F._describe(weight)}{hint}")
    weights = _constants(weight, name, "weight")
    if weights is not None and any(isinstance(w, tuple) for w in weights):
        raise ValueError(f"{name}: weight must be a flat list, one number per class")
    return weights


def _ignore_index(value: Any, name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: ignore_index must be an int, got {F._describe(value)}")
    return int(value)
