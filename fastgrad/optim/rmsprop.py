"""RMSprop, optionally centered and with momentum (PyTorch's `torch.optim.RMSprop`), over Var and Tensor
parameters."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from fastgrad import _optim
from fastgrad.optim.optimizer import Optimizer, coupled_grad, empty, lerp_

__all__ = ["RMSprop"]


class RMSprop(Optimizer):
    """g = grad + weight_decay·p; v = α·v + (1-α)·g²; centered: ḡ = ḡ + (1-α)·(g - ḡ), avg = √(v - ḡ²),
    else avg = √v; avg = avg + eps; with momentum μ > 0: buf = μ·buf + g/avg, p = p - lr·buf;
    else p = p - lr·g/avg."""

    state_names = ("square_avg", "momentum_buffer", "grad_avg")

    def __init__(self, params: Iterable[Any], lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0, momentum: float = 0, centered: bool = False, *,
                 maximize: bool = False) -> None:
        defaults = {"lr": lr, "momentum": momentum, "alpha": alpha, "eps": eps, "centered": centered,
                        "weight_decay": weight_decay, "maximize": maximize}
        self._check(defaults)
        super().__init__(params, defaults)

    def _check(self, group: dict[str, Any]) -> None:
        self._require_nonnegative(group, "lr", "eps", "momentum", "weight_decay", "alpha")

    def _update(self, group: dict[str, Any], index: np.ndarray, state: dict[str, Any]) -> None:
        n = len(index)
        momentum, centered = group["momentum"], group["centered"]
        square_avg = self._array(state, "square_avg", n)
        buf = self._array(state, "momentum_buffer", n) if momentum > 0 else empty()
        grad_avg = self._array(state, "grad_avg", n) if centered else empty()
        state["step"] = state.get("step", 0) + 1
        _optim.rmsprop_step(index, square_avg, grad_avg, buf, group["lr"], group["alpha"], group["eps"],
                            group["weight_decay"], momentum, centered, group["maximize"])

    def _update_tensor(self, group: dict[str, Any], param: np.ndarray, grad: np.ndarray,
                       state: dict[str, Any]) -> None:
        # NOTE: rmsprop_loop's operations in its order, on arrays (torch's _single_tensor_rmsprop)
        f = param.dtype.type
        momentum, centered, alpha = group["momentum"], group["centered"], group["alpha"]
        square_avg = self._tensor_array(state, "square_avg", param)
        buf = self._tensor_array(state, "momentum_buffer", param) if momentum > 0 else None
        grad_avg = self._tensor_array(state, "grad_avg", param) if centered else None
        state["step"] = state.get("step", 0) + 1
        g = coupled_grad(grad, param, group["weight_decay"], group["maximize"])
        term = g * f(1.0 - alpha)
        term *= g
        square_avg *= f(alpha)
        square_avg += term
        if grad_avg is not None:
            lerp_(grad_avg, g, 1.0 - alpha)
            avg = grad_avg * f(-1.0)
            avg *= grad_avg
            avg += square_avg
            np.sqrt(avg, out=avg)
        else:
            avg = np.sqrt(square_avg)
        avg += f(group["eps"])
        if buf is not None:
            buf *= f(momentum)
            buf += g / avg
            param += buf * f(-group["lr"])
        else:
            update = g * f(-group["lr"])
            update /= avg
            param += update
