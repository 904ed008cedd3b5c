"""Learning-rate schedules with PyTorch's formulas (`torch.optim.lr_scheduler`, as PyTorch 2.x computes them).

A scheduler writes `group["lr"]` of its optimizer's groups. Construction performs step 0 (the lr becomes the
schedule's value at epoch 0); call `scheduler.step()` once after each `optimizer.step()`
(`ReduceLROnPlateau.step(metric)` with the monitored quantity instead).

Schedulers:

- `LambdaLR`: initial_lr · lr_lambda(epoch).  `StepLR`: × gamma every `step_size` epochs.
- `MultiStepLR`: × gamma at each milestone.  `ExponentialLR`: × gamma every epoch.
- `CosineAnnealingLR`: eta_min + (initial_lr - eta_min)·(1 + cos(π·epoch/T_max))/2.
- `LinearLR`: the factor goes linearly from `start_factor` to `end_factor` over `total_iters` epochs.
- `OneCycleLR`: warm up to `max_lr`, anneal to `max_lr / div_factor / final_div_factor` (cosine or linear,
  two or three phases), cycling the optimizer's momentum (or Adam's beta1) inversely.
- `ReduceLROnPlateau`: × factor when a metric has stopped improving for `patience` epochs.
- `SequentialLR`: one scheduler after another, switching at the given milestones (warm-up, then decay).

NOTE: like PyTorch, the multiplicative schedulers (StepLR, MultiStepLR, ExponentialLR, CosineAnnealingLR,
LinearLR) are *chainable*: each step updates the lr the optimizer holds now, so their values agree with the
closed forms only up to rounding (PyTorch's numbers are reproduced exactly, rounding included). When
`SequentialLR` switches to a scheduler, that scheduler starts from its closed form at epoch 0.

Checkpoints: `state_dict()` holds plain values (numbers, lists, dicts; never the optimizer or a function),
and `load_state_dict()` restores it into a scheduler of the same kind built on the restored optimizer; the
restored pair continues exactly as the original. `get_last_lr()` gives the learning rates of the last step.
"""
from __future__ import annotations

import copy
import math
import numbers
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from fastgrad.optim.optimizer import Optimizer

__all__ = [
    "CosineAnnealingLR",
    "ExponentialLR",
    "LRScheduler",
    "LambdaLR",
    "LinearLR",
    "MultiStepLR",
    "OneCycleLR",
    "ReduceLROnPlateau",
    "SequentialLR",
    "StepLR",
]


# ---- argument checks ----

def _check_optimizer(optimizer: Any) -> Optimizer:
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")
    return optimizer


def _real(name: str, value: Any) -> float:
    """`value` as a float, or TypeError if it is not a real number (bools and strings are not)."""
    if isinstance(value, (bool, str, bytes)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    return float(value)


def _integer(name: str, value: Any, minimum: int) -> int:
    """`value` as an int, or TypeError (not an integer) / ValueError (below `minimum`)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value}")
    return int(value)


def _per_group(name: str, optimizer: Optimizer, value: Any) -> list[float]:
    """One real number per parameter group: `value` repeated, or a list/tuple of the right length."""
    n = len(optimizer.param_groups)
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(f"{name} must have one value per parameter group: expected {n}, "
                             f"got {len(value)}")
        return [_real(name, v) for v in value]
    return [_real(name, value)] * n


# ---- the base class ----

class LRScheduler:
    """Base class: `get_lr()` gives the learning rates for epoch `last_epoch`; `step()` advances and applies.

    `last_epoch=-1` starts a new schedule (each group's `initial_lr` is set from its `lr`); another value
    resumes one whose optimizer groups already hold `initial_lr` (KeyError if not).
    """

    # True only during the step the constructor performs (class default; set on the instance meanwhile)
    _is_initial = False
    # attributes that are not part of the state dict
    _not_state: tuple[str, ...] = ("optimizer",)

    def __init__(self, optimizer: Optimizer, last_epoch: int = -1) -> None:
        self.optimizer = _check_optimizer(optimizer)
        last_epoch = _integer("last_epoch", last_epoch, -1)
        if last_epoch == -1:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
        else:
            for i, group in enumerate(optimizer.param_groups):
                if "initial_lr" not in group:
                    raise KeyError(
                        f"param 'initial_lr' is not specified in param_groups[{i}] when resuming a scheduler "
                        "with last_epoch >= 0 (load the optimizer's state dict first)"
                    )
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = last_epoch
        self._initial_step()

    def _initial_step(self) -> None:
        """The step the constructor performs (epoch 0, or the resumed epoch + 1)."""
        self._is_initial = True
        try:
            self.step()
        finally:
            del self._is_initial  # back to the class default, so it never reaches a state dict

    def get_lr(self) -> list[float]:
        """The learning rates for epoch `last_epoch` (called by `step()`; read `get_last_lr()` instead)."""
        raise NotImplementedError

    def get_last_lr(self) -> list[float]:
        """The learning rates set by the last `step()`, one per parameter group."""
        return list(self._last_lr)

    def step(self) -> None:
        """Advance one epoch and write the new learning rates into the optimizer's groups."""
        self._update_lr()

    def _update_lr(self, epoch: int | None = None) -> None:
        """Go to the next epoch (chainable form), or jump to `epoch` (closed form, where there is one)."""
        if epoch is None:
            self.last_epoch += 1
            lrs = self.get_lr()
        else:
            self.last_epoch = epoch
            closed_form = getattr(self, "_closed_form_lr", None)
            lrs = closed_form() if closed_form is not None else self.get_lr()
        groups = self.optimizer.param_groups
        if len(lrs) != len(groups):
            raise ValueError(
                f"the optimizer has {len(groups)} parameter groups but the scheduler computed {len(lrs)} "
                "learning rates (was a group added after the scheduler was made?)"
            )
        for group, lr in zip(groups, lrs):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in groups]

    def _current_lrs(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    # ---- checkpoints ----

    def state_dict(self) -> dict[str, Any]:
        """The scheduler's state as a dict of plain values: every attribute but the optimizer (and
        functions). A copy: stepping on does not change it."""
        return {k: copy.deepcopy(v) for k, v in self.__dict__.items() if k not in self._not_state}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a state saved by `state_dict()` of the same kind of scheduler.

        Raises ValueError if keys are missing or unknown (nothing is changed then). Restore the optimizer's
        state too (its groups hold the current learning rates), so the pair continues as the original.
        """
        if not isinstance(state_dict, dict):
            raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
        expected = {k for k in self.__dict__ if k not in self._not_state}
        given = set(state_dict)
        if given != expected:
            missing, unknown = sorted(expected - given), sorted(given - expected)
            raise ValueError(
                f"{type(self).__name__}.load_state_dict: missing keys {missing}, unknown keys {unknown} "
                "(is it the state of another kind of scheduler?)"
            )
        self.__dict__.update({k: copy.deepcopy(v) for k, v in state_dict.items()})

    def __repr__(self) -> str:
        return f"{type(self).__name__}(last_epoch={self.last_epoch}, last_lr={self.get_last_lr()})"


# ---- schedulers ----

class LambdaLR(LRScheduler):
    """lr = initial_lr · lr_lambda(epoch): one function, or one per parameter group.

    The functions are not part of the state dict (build the scheduler with them again).
    """

    _not_state = ("optimizer", "lr_lambdas")

    def __init__(self, optimizer: Optimizer,
                 lr_lambda: Callable[[int], float] | Sequence[Callable[[int], float]],
                 last_epoch: int = -1) -> None:
        n = len(_check_optimizer(optimizer).param_groups)
        if callable(lr_lambda):
            self.lr_lambdas = [lr_lambda] * n
        else:
            lambdas = list(lr_lambda)
            if len(lambdas) != n:
                raise ValueError(f"Expected {n} lr_lambdas, but got {len(lambdas)}")
            if not all(callable(f) for f in lambdas):
                raise TypeError("lr_lambda must be a function or a list of functions, one per "
                                "parameter group")
            self.lr_lambdas = lambdas
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        return [base * f(self.last_epoch) for f, base in zip(self.lr_lambdas, self.base_lrs)]


class StepLR(LRScheduler):
    """lr = initial_lr · gamma ** (epoch // step_size): decays by `gamma` every `step_size` epochs."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1,
                 last_epoch: int = -1) -> None:
        if isinstance(step_size, bool) or not isinstance(step_size, numbers.Integral) or step_size <= 0:
            raise ValueError(f"step_size must be a positive int, got {step_size!r}")
        self.step_size = int(step_size)
        self.gamma = _real("gamma", gamma)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        # PyTorch's chainable form: multiply the current lr by gamma at each boundary
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return self._current_lrs()
        return [lr * self.gamma for lr in self._current_lrs()]

    def _closed_form_lr(self) -> list[float]:
        return [base * self.gamma ** (self.last_epoch // self.step_size) for base in self.base_lrs]


class MultiStepLR(LRScheduler):
    """lr = initial_lr · gamma ** (number of milestones <= epoch): decays by `gamma` at each milestone.

    A milestone listed n times decays by gamma ** n there (PyTorch keeps them in a Counter too).
    """

    def __init__(self, optimizer: Optimizer, milestones: Iterable[int], gamma: float = 0.1,
                 last_epoch: int = -1) -> None:
        if isinstance(milestones, (str, bytes)) or not isinstance(milestones, Iterable):
            raise TypeError(f"milestones must be a list of ints, got {type(milestones).__name__}")
        self.milestones = Counter(_integer("each milestone", m, 0) for m in milestones)
        self.gamma = _real("gamma", gamma)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        if self.last_epoch not in self.milestones:
            return self._current_lrs()
        return [lr * self.gamma ** self.milestones[self.last_epoch] for lr in self._current_lrs()]

    def _closed_form_lr(self) -> list[float]:
        milestones = sorted(self.milestones.elements())
        return [base * self.gamma ** bisect_right(milestones, self.last_epoch) for base in self.base_lrs]

    def state_dict(self) -> dict[str, Any]:
        """As `LRScheduler.state_dict`, with the milestones as a plain dict {epoch: count}."""
        state = super().state_dict()
        state["milestones"] = dict(state["milestones"])
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """As `LRScheduler.load_state_dict`; milestone keys may be strings (a state dict that went through
        JSON)."""
        state = dict(state_dict)
        if isinstance(state.get("milestones"), dict):
            state["milestones"] = Counter({int(k): int(v) for k, v in state["milestones"].items()})
        super().load_state_dict(state)


class ExponentialLR(LRScheduler):
    """lr = initial_lr · gamma ** epoch: decays by `gamma` every epoch."""

    def __init__(self, optimizer: Optimizer, gamma: float, last_epoch: int = -1) -> None:
        self.gamma = _real("gamma", gamma)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        if self._is_initial:  # a resumed schedule keeps the lr its optimizer holds
            return self._current_lrs()
        return [lr * self.gamma for lr in self._current_lrs()]

    def _closed_form_lr(self) -> list[float]:
        return [base * self.gamma ** self.last_epoch for base in self.base_lrs]


class CosineAnnealingLR(LRScheduler):
    """lr = eta_min + (initial_lr - eta_min)·(1 + cos(π·epoch/T_max))/2, computed recursively as PyTorch
    does: lr_{t} = eta_min + (lr_{t-1} - eta_min)·(1 + cos(π·t/T_max))/(1 + cos(π·(t-1)/T_max)).

    Without restarts: past `T_max` the lr rises again along the same cosine (period 2·T_max).
    """

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0, last_epoch: int = -1) -> None:
        self.T_max = _integer("T_max", T_max, 1)
        self.eta_min = _real("eta_min", eta_min)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        # NOTE: the operations in PyTorch's order, so the values agree to the last bit. (PyTorch has one more
        # branch, the closed form when `_step_count == 1 and last_epoch > 0`; no sequence of public calls
        # reaches it, so it is left out.)
        epoch, t_max, eta_min = self.last_epoch, self.T_max, self.eta_min
        if self._is_initial:
            return self._current_lrs()
        if (epoch - 1 - t_max) % (2 * t_max) == 0:
            # the cosine's minimum, where the ratio below would be 0/0
            return [lr + (base - eta_min) * (1 - math.cos(math.pi / t_max)) / 2
                    for base, lr in zip(self.base_lrs, self._current_lrs())]
        ratio = (1 + math.cos(math.pi * epoch / t_max)) / (1 + math.cos(math.pi * (epoch - 1) / t_max))
        return [ratio * (lr - eta_min) + eta_min for lr in self._current_lrs()]

    def _closed_form_lr(self) -> list[float]:
        eta_min, cosine = self.eta_min, math.cos(math.pi * self.last_epoch / self.T_max)
        return [eta_min + (base - eta_min) * (1 + cosine) / 2 for base in self.base_lrs]


class LinearLR(LRScheduler):
    """lr = initial_lr · (start_factor + (end_factor - start_factor) · min(epoch, total_iters) / total_iters):
    the factor moves linearly from `start_factor` (epoch 0) to `end_factor` (epoch `total_iters` and after).

    Raises ValueError unless 0 < start_factor <= 1, 0 <= end_factor <= 1 and total_iters >= 1.
    """

    def __init__(self, optimizer: Optimizer, start_factor: float = 1.0 / 3, end_factor: float = 1.0,
                 total_iters: int = 5, last_epoch: int = -1) -> None:
        start_factor, end_factor = _real("start_factor", start_factor), _real("end_factor", end_factor)
        if not 0 < start_factor <= 1.0:
            raise ValueError(f"start_factor must be in (0, 1], got {start_factor}")
        if not 0 <= end_factor <= 1.0:
            raise ValueError(f"end_factor must be in [0, 1], got {end_factor}")
        self.start_factor = start_factor
        self.end_factor = end_factor
        self.total_iters = _integer("total_iters", total_iters, 1)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        start, end, total, epoch = self.start_factor, self.end_factor, self.total_iters, self.last_epoch
        if epoch == 0:
            return [lr * start for lr in self._current_lrs()]
        if self._is_initial or epoch > total:
            return self._current_lrs()
        # the ratio of consecutive factors, as PyTorch writes it
        return [lr * (1.0 + (end - start) / (total * start + (epoch - 1) * (end - start)))
                for lr in self._current_lrs()]

    def _closed_form_lr(self) -> list[float]:
        start, end = self.start_factor, self.end_factor
        return [base * (start + (end - start) * min(self.total_iters, self.last_epoch) / self.total_iters)
                for base in self.base_lrs]


class OneCycleLR(LRScheduler):
    """The 1cycle policy (Smith & Topin): the lr rises from max_lr/div_factor to `max_lr` over the first
    `pct_start` of `total_steps`, then falls to max_lr/div_factor/final_div_factor; the momentum moves the
    other way, between `max_momentum` and `base_momentum`. Step it after every batch.

    - `total_steps`, or `epochs` and `steps_per_epoch` (total_steps = epochs · steps_per_epoch).
    - `anneal_strategy`: "cos" (default) or "linear".
    - `three_phase=True`: up, back down to the initial lr (symmetric), then down to the minimum
      (the paper's schedule); the default two phases are fastai's.
    - `cycle_momentum=True` writes `group["momentum"]` (SGD, RMSprop) or beta1 of `group["betas"]` (Adam,
      AdamW); an optimizer with neither (Adagrad) is a ValueError unless `cycle_momentum=False`.
    - `max_lr`, `base_momentum`, `max_momentum`: a number, or a list with one per parameter group.

    The groups also get the keys "initial_lr", "max_lr", "min_lr" (and "max_momentum", "base_momentum"),
    as in PyTorch. Stepping past `total_steps` is a ValueError.
    """

    def __init__(self, optimizer: Optimizer, max_lr: float | Sequence[float], total_steps: int | None = None,
                 epochs: int | None = None, steps_per_epoch: int | None = None, pct_start: float = 0.3,
                 anneal_strategy: str = "cos", cycle_momentum: bool = True,
                 base_momentum: float | Sequence[float] = 0.85, max_momentum: float | Sequence[float] = 0.95,
                 div_factor: float = 25.0, final_div_factor: float = 1e4, three_phase: bool = False,
                 last_epoch: int = -1) -> None:
        _check_optimizer(optimizer)
        if total_steps is not None:
            self.total_steps = _integer("total_steps", total_steps, 1)
        elif epochs is not None and steps_per_epoch is not None:
            self.total_steps = _integer("epochs", epochs, 1) * _integer("steps_per_epoch", steps_per_epoch, 1)
        else:
            raise ValueError("OneCycleLR needs total_steps, or both epochs and steps_per_epoch")
        pct_start = _real("pct_start", pct_start)
        if not 0.0 <= pct_start <= 1.0:
            raise ValueError(f"pct_start must be between 0 and 1, got {pct_start}")
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"anneal_strategy must be 'cos' or 'linear', got {anneal_strategy!r}")
        self._anneal_func_type = anneal_strategy
        div_factor = _real("div_factor", div_factor)
        final_div_factor = _real("final_div_factor", final_div_factor)

        total = self.total_steps
        up_end = float(pct_start * total) - 1
        if three_phase:
            down_end = float(2 * pct_start * total) - 2
            phases = [(up_end, "initial_lr", "max_lr", "max_momentum", "base_momentum"),
                      (down_end, "max_lr", "initial_lr", "base_momentum", "max_momentum"),
                      (total - 1, "initial_lr", "min_lr", "max_momentum", "max_momentum")]
        else:
            phases = [(up_end, "initial_lr", "max_lr", "max_momentum", "base_momentum"),
                      (total - 1, "max_lr", "min_lr", "base_momentum", "max_momentum")]
        keys = ("end_step", "start_lr", "end_lr", "start_momentum", "end_momentum")
        self._schedule_phases = [dict(zip(keys, phase)) for phase in phases]

        max_lrs = _per_group("max_lr", optimizer, max_lr)
        if last_epoch == -1:
            for group, top in zip(optimizer.param_groups, max_lrs):
                group["initial_lr"] = top / div_factor
                group["max_lr"] = top
                group["min_lr"] = group["initial_lr"] / final_div_factor

        self.cycle_momentum = bool(cycle_momentum)
        self.use_beta1 = "betas" in optimizer.defaults
        if self.cycle_momentum:
            if "momentum" not in optimizer.defaults and not self.use_beta1:
                raise ValueError(
                    "cycle_momentum=True needs an optimizer with momentum or betas; "
                    f"{type(optimizer).__name__} has neither (pass cycle_momentum=False)"
                )
            max_momentums = _per_group("max_momentum", optimizer, max_momentum)
            base_momentums = _per_group("base_momentum", optimizer, base_momentum)
            if last_epoch == -1:
                for group, top, bottom in zip(optimizer.param_groups, max_momentums, base_momentums):
                    self._set_momentum(group, top)
                    group["max_momentum"] = top
                    group["base_momentum"] = bottom
        else:
            self.use_beta1 = False
        if last_epoch != -1:
            needed = ["initial_lr", "max_lr", "min_lr"]
            if self.cycle_momentum:
                needed += ["max_momentum", "base_momentum"]
            for i, group in enumerate(optimizer.param_groups):
                absent = [k for k in needed if k not in group]
                if absent:
                    raise KeyError(f"resuming OneCycleLR: param_groups[{i}] has no {absent} "
                                   "(load the optimizer's state dict first)")
        super().__init__(optimizer, last_epoch)

    def _set_momentum(self, group: dict[str, Any], momentum: float) -> None:
        if self.use_beta1:
            group["betas"] = (momentum, *group["betas"][1:])
        else:
            group["momentum"] = momentum

    def _anneal(self, start: float, end: float, pct: float) -> float:
        if self._anneal_func_type == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def get_lr(self) -> list[float]:
        """The learning rates at step `last_epoch`; also writes the cycled momentum into the groups."""
        step_num = self.last_epoch
        if step_num > self.total_steps:
            raise ValueError(f"Tried to step {step_num} times. The specified number of total steps is "
                             f"{self.total_steps}")
        lrs = []
        last = len(self._schedule_phases) - 1
        for group in self.optimizer.param_groups:
            start_step = 0.0
            for i, phase in enumerate(self._schedule_phases):
                end_step = phase["end_step"]
                if step_num <= end_step or i == last:
                    pct = (step_num - start_step) / (end_step - start_step)
                    lrs.append(self._anneal(group[phase["start_lr"]], group[phase["end_lr"]], pct))
                    if self.cycle_momentum:
                        self._set_momentum(group, self._anneal(group[phase["start_momentum"]],
                                                               group[phase["end_momentum"]], pct))
                    break
                start_step = phase["end_step"]
        return lrs


class ReduceLROnPlateau(LRScheduler):
    """Multiply the lr by `factor` when the metric passed to `step(metric)` has not improved for more than
    `patience` epochs.

    - `mode`: "min" (lower is better) or "max".
    - improvement: "rel" threshold_mode: metric < best·(1 - threshold) ("min") or > best·(1 + threshold)
      ("max"); "abs": metric < best - threshold or > best + threshold.
    - after a reduction, `cooldown` epochs pass with bad epochs not counted.
    - the lr never goes below `min_lr` (a number, or one per group), and a change smaller than `eps` is
      skipped.

    Raises ValueError for factor >= 1, an unknown mode or threshold_mode, or a `min_lr` list of the wrong
    length. Unlike the others, constructing it changes no lr.
    """

    def __init__(self, optimizer: Optimizer, mode: str = "min", factor: float = 0.1, patience: int = 10,
                 threshold: float = 1e-4, threshold_mode: str = "rel", cooldown: int = 0,
                 min_lr: float | Sequence[float] = 0, eps: float = 1e-8) -> None:
        self.optimizer = _check_optimizer(optimizer)
        factor = _real("factor", factor)
        if factor >= 1.0:
            raise ValueError(f"factor must be < 1.0 (the lr is multiplied by it), got {factor}")
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"threshold_mode must be 'rel' or 'abs', got {threshold_mode!r}")
        self.factor = factor
        if isinstance(min_lr, (list, tuple)):
            self.default_min_lr = None
            self.min_lrs = _per_group("min_lr", optimizer, min_lr)
        else:
            self.default_min_lr = _real("min_lr", min_lr)
            self.min_lrs = [self.default_min_lr] * len(optimizer.param_groups)
        self.patience = _integer("patience", patience, 0)
        self.cooldown = _integer("cooldown", cooldown, 0)
        self.threshold = _real("threshold", threshold)
        self.eps = _real("eps", eps)
        self.mode = mode
        self.threshold_mode = threshold_mode
        self.mode_worse = math.inf if mode == "min" else -math.inf
        self.last_epoch = 0
        self._last_lr = self._current_lrs()
        self.best = self.mode_worse
        self.cooldown_counter = 0
        self.num_bad_epochs = 0

    @property
    def in_cooldown(self) -> bool:
        """True while epochs after a reduction are being ignored."""
        return self.cooldown_counter > 0

    def _is_better(self, current: float, best: float) -> bool:
        if self.mode == "min" and self.threshold_mode == "rel":
            return current < best * (1.0 - self.threshold)
        if self.mode == "min":
            return current < best - self.threshold
        if self.threshold_mode == "rel":
            return current > best * (self.threshold + 1.0)
        return current > best + self.threshold

    def step(self, metrics: Any) -> None:  # type: ignore[override]
        """Record this epoch's metric (a number or a Var) and reduce the lr if it has plateaued."""
        if isinstance(metrics, (bool, str, bytes)):
            raise TypeError(f"metrics must be a number, got {type(metrics).__name__}")
        try:
            current = float(metrics)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"metrics must be a number, got {type(metrics).__name__}") from exc
        self.last_epoch += 1
        if self._is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.in_cooldown:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0  # bad epochs in cooldown do not count
        if self.num_bad_epochs > self.patience:
            self._reduce_lr()
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = self._current_lrs()

    def _reduce_lr(self) -> None:
        groups = self.optimizer.param_groups
        if len(groups) != len(self.min_lrs):
            if self.default_min_lr is None:
                raise ValueError(
                    f"the optimizer has {len(groups)} parameter groups but min_lr was given for "
                    f"{len(self.min_lrs)}; set `min_lrs` to one value per group"
                )
            self.min_lrs = [self.default_min_lr] * len(groups)
        for group, min_lr in zip(groups, self.min_lrs):
            old_lr = float(group["lr"])
            new_lr = max(old_lr * self.factor, min_lr)
            if old_lr - new_lr > self.eps:
                group["lr"] = new_lr


class SequentialLR(LRScheduler):
    """Run `schedulers` one after another: the first until epoch milestones[0], the next from there, and so
    on; e.g. `SequentialLR(opt, [LinearLR(opt, 0.1, total_iters=5), CosineAnnealingLR(opt, 95)], [5])` warms
    up for 5 epochs and then decays.

    Each scheduler counts its own epochs from 0, starting at its closed form. All must drive `optimizer`;
    ReduceLROnPlateau is not accepted (its step needs a metric). Raises ValueError unless there is one
    milestone fewer than schedulers, in non-decreasing order.
    """

    _not_state = ("optimizer", "_schedulers")

    def __init__(self, optimizer: Optimizer, schedulers: Sequence[LRScheduler], milestones: Sequence[int],
                 last_epoch: int = -1) -> None:
        _check_optimizer(optimizer)
        schedulers = list(schedulers)
        if not schedulers:
            raise ValueError("SequentialLR needs at least one scheduler, got none")
        for i, scheduler in enumerate(schedulers):
            if not isinstance(scheduler, LRScheduler):
                raise TypeError(f"schedulers[{i}] is a {type(scheduler).__name__}, not a scheduler")
            if isinstance(scheduler, ReduceLROnPlateau):
                raise ValueError(f"schedulers[{i}] is a ReduceLROnPlateau, which SequentialLR cannot run: "
                                 "its step needs a metric")
            if scheduler.optimizer is not optimizer:
                raise ValueError(f"schedulers[{i}] ({type(scheduler).__name__}) drives another optimizer; "
                                 "all must drive the one given to SequentialLR")
        milestones = [_integer("each milestone", m, 0) for m in milestones]
        if len(milestones) != len(schedulers) - 1:
            raise ValueError(f"SequentialLR needs one milestone fewer than schedulers: got {len(schedulers)} "
                             f"schedulers and {len(milestones)} milestones")
        if milestones != sorted(milestones):
            raise ValueError(f"milestones must be in non-decreasing order, got {milestones}")
        self._schedulers = schedulers
        self._milestones = milestones
        self.last_epoch = _integer("last_epoch", last_epoch, -1) + 1
        self.optimizer = optimizer
        # back to the initial learning rates, and undo the step each scheduler took when it was made
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"]
        self._undo_initial_steps(self)
        first = self._schedulers[bisect_right(self._milestones, 0)]
        first._initial_step()
        self._last_lr = first.get_last_lr()

    def _family(self) -> list[LRScheduler]:
        """This scheduler and every scheduler inside it, at any depth."""
        found, stack = [], [self]
        while stack:
            s = stack.pop()
            found.append(s)
            if isinstance(s, SequentialLR):
                stack.extend(s._schedulers)
        return found

    @classmethod
    def _undo_initial_steps(cls, scheduler: LRScheduler) -> None:
        stack = [scheduler]
        while stack:
            s = stack.pop()
            if isinstance(s, SequentialLR):
                stack.extend(s._schedulers)
            else:
                s.last_epoch -= 1

    def step(self) -> None:
        """Advance one epoch: step the scheduler in charge, or start the next one at a milestone."""
        self.last_epoch += 1
        idx = bisect_right(self._milestones, self.last_epoch)
        scheduler = self._schedulers[idx]
        if idx > 0 and self._milestones[idx - 1] == self.last_epoch:
            scheduler._update_lr(0)
        else:
            scheduler.step()
        self._last_lr = scheduler.get_last_lr()

    def state_dict(self) -> dict[str, Any]:
        """Own state plus each scheduler's state dict under "_schedulers"."""
        state = super().state_dict()
        state["_schedulers"] = [s.state_dict() for s in self._schedulers]
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore own state and each scheduler's; everything is checked before anything changes."""
        if not isinstance(state_dict, dict) or "_schedulers" not in state_dict:
            raise ValueError("SequentialLR.load_state_dict: the state has no '_schedulers' entry")
        inner = state_dict["_schedulers"]
        if not isinstance(inner, list) or len(inner) != len(self._schedulers):
            raise ValueError("SequentialLR.load_state_dict: expected "
                             f"{len(self._schedulers)} scheduler states")
        own = {k: v for k, v in state_dict.items() if k != "_schedulers"}
        # dry run on copies, so that a bad entry leaves every scheduler as it was
        saved = [(s, copy.copy(s.__dict__)) for s in self._family()]
        try:
            LRScheduler.load_state_dict(self, own)
            for s, sd in zip(self._schedulers, inner):
                s.load_state_dict(sd)
        except BaseException:
            for s, attrs in saved:
                s.__dict__.clear()
                s.__dict__.update(attrs)
            raise
