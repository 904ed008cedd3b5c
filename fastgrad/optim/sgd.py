"""SGD with momentum, dampening, Nesterov momentum and weight decay (PyTorch's `torch.optim.SGD`), over Var
and Tensor parameters."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from fastgrad import _optim
from fastgrad.optim.optimizer import Optimizer, coupled_grad, empty

__all__ = ["SGD"]


class SGD(Optimizer):
    """g = grad + weight_decay·p; with momentum μ: buf = g at the first step, then
    buf = μ·buf + (1 - dampening)·g, and g = g + μ·buf (nesterov) or buf; finally p = p - lr·g."""

    state_names = ("momentum_buffer",)

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, momentum: float = 0, dampening: float = 0,
                 weight_decay: float = 0, nesterov: bool = False, *, maximize: bool = False) -> None:
        defaults = {"lr": lr, "momentum": momentum, "dampening": dampening, "weight_decay": weight_decay,
                        "nesterov": nesterov, "maximize": maximize}
        self._check(defaults)
        super().__init__(params, defaults)

    def _check(self, group: dict[str, Any]) -> None:
        # NOTE: PyTorch's SGD checks `x < 0.0` (NaN passes), unlike the others' `not 0.0 <= x`: kept as is.
        if group["lr"] < 0.0:
            raise ValueError(f"Invalid learning rate: {group['lr']}")
        if group["momentum"] < 0.0:
            raise ValueError(f"Invalid momentum value: {group['momentum']}")
        if group["weight_decay"] < 0.0:
            raise ValueError(f"Invalid weight_decay value: {group['weight_decay']}")
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")

    def _update(self, group: dict[str, Any], index: np.ndarray, state: dict[str, Any]) -> None:
        momentum = group["momentum"]
        buf = state.get("momentum_buffer")
        init = momentum != 0 and buf is None
        if init:
            buf = state["momentum_buffer"] = np.zeros(len(index), dtype=np.float64)
        _optim.sgd_step(index, empty() if buf is None else buf, group["lr"], momentum, group["dampening"],
                        group["weight_decay"], group["nesterov"], group["maximize"], init)

    def _update_tensors(self, group: dict[str, Any], tensors: list[Any], grads: list[np.ndarray | None],
                        states: list[dict[str, Any]]) -> None:
        # without momentum (no state): one C loop over the group's float64 Tensors, the same per-element
        # operations as _update_tensor's
        if group["momentum"] == 0 and _optim.sgd_arrays([p.data for p in tensors], grads, group["lr"],
                                                       group["weight_decay"], group["maximize"]):
            return
        super()._update_tensors(group, tensors, grads, states)

    def _update_tensor(self, group: dict[str, Any], param: np.ndarray, grad: np.ndarray,
                       state: dict[str, Any]) -> None:
        momentum = group["momentum"]
        # float64 C-contiguous arrays: the Var loop's own C code over the elements, one pass
        buf = state.get("momentum_buffer")
        init = buf is None
        if momentum != 0 and buf is None and param.dtype == np.float64:
            buf = np.empty_like(param)
        if _optim.sgd_array(param, grad, buf, group["lr"], momentum, group["dampening"],
                            group["weight_decay"], group["nesterov"], group["maximize"], init):
            if buf is not None:
                state["momentum_buffer"] = buf
            return
        # NOTE: sgd_loop's operations in its order, on arrays (torch's _single_tensor_sgd)
        f = param.dtype.type
        g = coupled_grad(grad, param, group["weight_decay"], group["maximize"])
        if momentum != 0:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = np.array(g, dtype=param.dtype, copy=True)
            else:
                buf *= f(momentum)
                buf += g * f(1.0 - group["dampening"])
            g = g + buf * f(momentum) if group["nesterov"] else buf
        param += g * f(-group["lr"])
