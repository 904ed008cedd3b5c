"""Adagrad (PyTorch's `torch.optim.Adagrad`), over Var and Tensor parameters."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from fastgrad import _optim
from fastgrad.optim.optimizer import Optimizer, coupled_grad

__all__ = ["Adagrad"]


class Adagrad(Optimizer):
    """g = grad + weight_decay·p; sum = sum + g²; p = p - clr·g / (√sum + eps), where
    clr = lr / (1 + (t - 1)·lr_decay) at step t and sum starts at initial_accumulator_value."""

    state_names = ("sum",)

    def __init__(self, params: Iterable[Any], lr: float = 1e-2, lr_decay: float = 0, weight_decay: float = 0,
                 initial_accumulator_value: float = 0, eps: float = 1e-10, *, maximize: bool = False) -> None:
        defaults = {"lr": lr, "lr_decay": lr_decay, "eps": eps, "weight_decay": weight_decay,
                        "initial_accumulator_value": initial_accumulator_value, "maximize": maximize}
        self._check(defaults)
        super().__init__(params, defaults)

    def _check(self, group: dict[str, Any]) -> None:
        self._require_nonnegative(group, "lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps")

    def _initial_state(self, group: dict[str, Any], n: int) -> dict[str, Any]:
        # NOTE: as in PyTorch, Adagrad's state exists from construction (the accumulator's initial value).
        return {"step": 0, "sum": np.full(n, float(group["initial_accumulator_value"]), dtype=np.float64)}

    def _update(self, group: dict[str, Any], index: np.ndarray, state: dict[str, Any]) -> None:
        state_sum = self._array(state, "sum", len(index), float(group["initial_accumulator_value"]))
        state["step"] = step = state.get("step", 0) + 1
        clr = group["lr"] / (1 + (step - 1) * group["lr_decay"])
        _optim.adagrad_step(index, state_sum, clr, group["eps"], group["weight_decay"], group["maximize"])

    def _initial_tensor_state(self, group: dict[str, Any], param: Any) -> dict[str, Any]:
        return {"step": 0, "sum": np.full(param.shape, float(group["initial_accumulator_value"]),
                                          dtype=param.dtype)}

    def _update_tensor(self, group: dict[str, Any], param: np.ndarray, grad: np.ndarray,
                       state: dict[str, Any]) -> None:
        # NOTE: adagrad_loop's operations in its order, on arrays (torch's _single_tensor_adagrad)
        f = param.dtype.type
        state_sum = self._tensor_array(state, "sum", param, float(group["initial_accumulator_value"]))
        state["step"] = step = state.get("step", 0) + 1
        clr = group["lr"] / (1 + (step - 1) * group["lr_decay"])
        g = coupled_grad(grad, param, group["weight_decay"], group["maximize"])
        state_sum += g * g
        std = np.sqrt(state_sum)
        std += f(group["eps"])
        update = g * f(-clr)
        update /= std
        param += update
