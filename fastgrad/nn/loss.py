"""Loss modules, PyTorch's names for the functions in `fastgrad.nn.functional`."""
from __future__ import annotations

from typing import Any

from fastgrad._engine import Var
from fastgrad.nn import functional as F
from fastgrad.nn.module import Module

__all__ = ["BCEWithLogitsLoss", "CrossEntropyLoss", "HingeLoss", "MSELoss"]


class _Loss(Module):
    """A loss with a fixed reduction ('mean' or 'sum', checked at construction)."""

    _fn: Any

    def __init__(self, reduction: str = "mean") -> None:
        F._check_reduction(reduction)
        self.reduction = reduction

    def forward(self, input: Any, target: Any) -> Var:
        return type(self)._fn(input, target, reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"


class MSELoss(_Loss):
    """Mean squared error: `F.mse_loss`."""

    _fn = staticmethod(F.mse_loss)


class HingeLoss(_Loss):
    """micrograd's max-margin loss, labels ±1: `F.hinge_loss`."""

    _fn = staticmethod(F.hinge_loss)


class BCEWithLogitsLoss(_Loss):
    """Stable binary cross-entropy on logits, targets in [0, 1]: `F.binary_cross_entropy_with_logits`."""

    _fn = staticmethod(F.binary_cross_entropy_with_logits)


class CrossEntropyLoss(_Loss):
    """Stable softmax cross-entropy over a list of logits and an int class: `F.cross_entropy`."""

    _fn = staticmethod(F.cross_entropy)
