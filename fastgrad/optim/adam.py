"""Adam and AdamW (PyTorch's `torch.optim.Adam` and `torch.optim.AdamW`), with amsgrad, over Var and Tensor
parameters."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from fastgrad import _optim
from fastgrad.optim.optimizer import Optimizer, empty, lerp_

__all__ = ["Adam", "AdamW"]


class Adam(Optimizer):
    """At step t: g = grad + weight_decay·p (Adam) or p = p·(1 - lr·weight_decay) (AdamW);
    m = β1·m + (1-β1)·g; v = β2·v + (1-β2)·g²; v̂ = max(v̂, v) with amsgrad;
    p = p - lr/(1-β1^t) · m / (√v / √(1-β2^t) + eps)."""

    state_names = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0, amsgrad: bool = False, *, maximize: bool = False,
                 decoupled_weight_decay: bool = False) -> None:
        defaults = {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay,
                    "amsgrad": amsgrad,
                        "maximize": maximize, "decoupled_weight_decay": decoupled_weight_decay}
        self._check(defaults)
        super().__init__(params, defaults)

    def _check(self, group: dict[str, Any]) -> None:
        betas = group["betas"]
        self._require_nonnegative(group, "lr", "eps")
        if len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        if not 0.0 <= betas[0] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 0: {betas[0]}")
        if not 0.0 <= betas[1] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 1: {betas[1]}")
        self._require_nonnegative(group, "weight_decay")

    def _update(self, group: dict[str, Any], index: np.ndarray, state: dict[str, Any]) -> None:
        n = len(index)
        lr, (beta1, beta2), amsgrad = group["lr"], group["betas"], group["amsgrad"]
        exp_avg = self._array(state, "exp_avg", n)
        exp_avg_sq = self._array(state, "exp_avg_sq", n)
        max_exp_avg_sq = self._array(state, "max_exp_avg_sq", n) if amsgrad else empty()
        state["step"] = step = state.get("step", 0) + 1
        # NOTE: the per-step scalars exactly as torch.optim.adam computes them, with Python floats
        bias_correction1 = 1 - beta1 ** step
        bias_correction2 = 1 - beta2 ** step
        step_size = lr / bias_correction1
        bias_correction2_sqrt = bias_correction2 ** 0.5
        _optim.adam_step(index, exp_avg, exp_avg_sq, max_exp_avg_sq, lr, beta1, beta2, group["eps"],
                         group["weight_decay"], step_size, bias_correction2_sqrt,
                         group["decoupled_weight_decay"], amsgrad, group["maximize"])

    def _update_tensor(self, group: dict[str, Any], param: np.ndarray, grad: np.ndarray,
                       state: dict[str, Any]) -> None:
        # NOTE: adam_loop's operations in its order, on arrays (torch's _single_tensor_adam), with the
        # per-step scalars computed from this Tensor's own step count as _update computes them
        f = param.dtype.type
        lr, (beta1, beta2), amsgrad = group["lr"], group["betas"], group["amsgrad"]
        weight_decay = group["weight_decay"]
        exp_avg = self._tensor_array(state, "exp_avg", param)
        exp_avg_sq = self._tensor_array(state, "exp_avg_sq", param)
        max_exp_avg_sq = self._tensor_array(state, "max_exp_avg_sq", param) if amsgrad else None
        state["step"] = step = state.get("step", 0) + 1
        bias_correction1 = 1 - beta1 ** step
        bias_correction2 = 1 - beta2 ** step
        step_size = lr / bias_correction1
        bias_correction2_sqrt = bias_correction2 ** 0.5
        # float64 C-contiguous arrays: the Var loop's own C code over the elements, one pass
        if _optim.adam_array(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, lr, beta1, beta2, group["eps"],
                             weight_decay, step_size, bias_correction2_sqrt, group["decoupled_weight_decay"],
                             group["maximize"]):
            return
        g = np.negative(grad) if group["maximize"] else grad
        if weight_decay != 0:
            if group["decoupled_weight_decay"]:
                param *= f(1 - lr * weight_decay)
            else:
                g = g + param * f(weight_decay)
        lerp_(exp_avg, g, 1 - beta1)
        term = g * f(1.0 - beta2)
        term *= g
        exp_avg_sq *= f(beta2)
        exp_avg_sq += term
        v = exp_avg_sq
        if max_exp_avg_sq is not None:
            np.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)  # propagates nan, as torch.maximum
            v = max_exp_avg_sq
        denom = np.sqrt(v)
        denom /= f(bias_correction2_sqrt)
        denom += f(group["eps"])
        update = exp_avg * f(-step_size)
        update /= denom
        param += update


class AdamW(Adam):
    """Adam with decoupled weight decay (default 1e-2): p = p·(1 - lr·weight_decay) before the Adam update."""

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False, *,
                 maximize: bool = False) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize,
                         decoupled_weight_decay=True)

    def _check(self, group: dict[str, Any]) -> None:
        super()._check(group)
        group["decoupled_weight_decay"] = True
