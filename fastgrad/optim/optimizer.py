"""`Optimizer`: parameter groups, state, `zero_grad`, serialization — the part every optimizer shares.

Layout. A parameter is a leaf `Var` or a `Tensor` that requires grad; a group may hold both.

- Vars: each group keeps the int64 arena indices of its Vars (`param_index`) and their state as one float64
  NumPy array per state name ("exp_avg", ...), entry i belonging to the group's i-th Var, plus a step count.
  `step()` hands those to one C loop per group (`fastgrad._optim`): no Python per Var. Every Var is updated
  on every step: a zero gradient is a real gradient (docs/semantics.md, 2), so the group-level step count
  is every Var's step count.
- Tensors: each Tensor has its own state, {"step": int, name: ndarray of the parameter's shape and dtype},
  and is updated in place by vectorized NumPy code (the subclass's `_update_tensor`) that follows the same
  C loop's operations in the same order, so a float64 Tensor moves exactly as Vars of the same numbers do.
  A Tensor whose `.grad` is None (no backward reached it yet) is skipped, step count included, as PyTorch
  skips a parameter whose grad is None.

`state_dict()` is PyTorch's layout with plain numbers and arrays: {"state": {position: {"step": int,
name: float (a Var) or ndarray (a Tensor, a copy)}}, "param_groups": [{hyper-parameters..., "params":
[positions]}]}, positions counted across groups.
"""
from __future__ import annotations

import copy
import numbers
import operator
from collections.abc import Callable, Iterable
from typing import Any, Union

import numpy as np

from fastgrad import _engine, _optim
from fastgrad._engine import Var, param_index, same_nodes
from fastgrad.tensor import Tensor

__all__ = ["Optimizer"]

_EMPTY = np.empty(0, dtype=np.float64)
_SET_MESSAGE = ("optimizer parameters need to be organized in ordered collections, but the ordering of "
                "Vars in sets will change between runs. Please use a list instead.")

Param = Union[Var, Tensor]


class Optimizer:
    """Base class: subclasses set `state_names`, validate hyper-parameters in `_check`, run their C loop
    over a group's Vars in `_update` and their NumPy update of one Tensor in `_update_tensor`."""

    # per-parameter state arrays, in state-dict order; "step" is kept per group (Vars) or per Tensor
    state_names: tuple[str, ...] = ()

    def __init__(self, params: Iterable[Param] | Iterable[dict[str, Any]], defaults: dict[str, Any]) -> None:
        if isinstance(params, (Var, Tensor, dict)):
            raise TypeError(
                "params argument given to the optimizer should be an iterable of Vars or dicts (Tensors "
                "too), but got " + type(params).__name__
            )
        if isinstance(params, (set, frozenset)):
            raise TypeError(_SET_MESSAGE)
        self.defaults = dict(defaults)
        self.param_groups: list[dict[str, Any]] = []
        self._index: list[np.ndarray] = []  # per group: arena indices of its Vars (rebuilt on unpickle)
        self._held: list[tuple[Param, ...]] = []  # per group: its params as indexed, Vars kept alive
        self._vars: list[list[Var] | None] = []  # per mixed group: its Vars in order (None: all are Vars)
        self._tensor_at: list[tuple[int, ...]] = []  # per group: positions of its Tensors in "params"
        self._group_state: list[dict[str, Any]] = []  # per group: {"step": int, name: ndarray} of its Vars
        self._tensor_state: list[list[dict[str, Any]]] = []  # per group, per Tensor: {"step", name: ndarray}
        groups = list(params)
        if not groups:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    # ---- groups ----

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group of parameters (Vars and/or Tensors under "params") with its own hyper-parameters
        (missing ones take the defaults). Raises TypeError/ValueError as the constructor does."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group).__name__}")
        group = dict(param_group)
        if "params" not in group:
            raise ValueError("param_group must have a 'params' entry")
        params = group["params"]
        if isinstance(params, (Var, Tensor)):
            params = [params]
        params = self._validated(params, self.param_groups)
        for name, default in self.defaults.items():
            group.setdefault(name, default)
        self._check(group)
        group["params"] = params
        self.param_groups.append(group)
        self._index.append(_EMPTY_INDEX)
        self._held.append(())
        self._vars.append(None)
        self._tensor_at.append(())
        self._track(len(self.param_groups) - 1, params)
        self._group_state.append(self._initial_state(group, len(self._index[-1])))
        self._tensor_state.append([self._initial_tensor_state(group, params[k]) for k in self._tensor_at[-1]])

    def _track(self, g: int, params: list[Param]) -> None:
        """Record group g's parameters: the Vars' node indices, the Tensors' positions."""
        tensor_at = tuple(k for k, p in enumerate(params) if isinstance(p, Tensor))
        vars_ = [p for p in params if not isinstance(p, Tensor)] if tensor_at else None
        self._index[g] = param_index(params if vars_ is None else vars_)
        self._held[g] = tuple(params)
        self._vars[g] = vars_
        self._tensor_at[g] = tensor_at

    @staticmethod
    def _validated(params: Any, others: list[dict[str, Any]]) -> list[Param]:
        """A group's parameters as a list, checked: leaf Vars and leaf Tensors that require grad, none
        twice, none in another group."""
        if isinstance(params, (set, frozenset)):
            raise TypeError(_SET_MESSAGE)
        params = list(params)
        for p in params:
            if isinstance(p, Tensor):
                if not p.is_leaf:
                    raise ValueError("can't optimize a non-leaf Tensor")
                if p._node is None:     # made without requires_grad (a frozen leaf may stay, as a Var may)
                    raise ValueError("optimizing a parameter that doesn't require gradients")
            elif not isinstance(p, Var):
                raise TypeError(
                    "optimizer can only optimize Vars and Tensors, but one of the params is "
                    + type(p).__name__)
            elif not p.is_leaf:
                raise ValueError("can't optimize a non-leaf Var")
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        ids = {id(p) for p in params}
        if len(ids) != len(params):
            raise ValueError("optimizer got a parameter group with duplicate parameters")
        for other in others:
            if any(id(p) in ids for p in other["params"]):
                raise ValueError("some parameters appear in more than one parameter group")
        return params

    def _indices(self) -> list[np.ndarray]:
        """Each group's Var node indices, re-derived if its "params" list changed since they were taken.

        NOTE: the optimizer holds every parameter it indexed (`_held`), so an indexed node can never be freed
        and its slot reused by an unrelated Var; and `same_nodes` (one C loop, ~1 ns per parameter) notices
        an edited list or a re-initialised parameter before any update is written. A group holding Tensors
        also compares its list with `_held` by identity (`map(operator.is_, ...)`, a C loop too).
        """
        for g, group in enumerate(self.param_groups):
            vars_ = self._vars[g]
            if vars_ is None:
                if not same_nodes(group["params"], self._index[g]):
                    self._reindex(g)
            else:
                params, held = group["params"], self._held[g]
                if (len(params) != len(held) or not all(map(operator.is_, params, held))
                        or not same_nodes(vars_, self._index[g])):
                    self._reindex(g)
        return self._index

    def _reindex(self, g: int) -> None:
        """Follow an edit of ``param_groups[g]["params"]``: state stays with its parameter (matched by
        identity); removed parameters are dropped. A Var added after the group's Vars have state would
        start from a state PyTorch would not give it, so that is an error pointing to `add_param_group`;
        an added Tensor gets a fresh state of its own (as in PyTorch)."""
        group = self.param_groups[g]
        params = self._validated(group["params"], self.param_groups[:g] + self.param_groups[g + 1:])
        old_vars = [p for p in self._held[g] if not isinstance(p, Tensor)]
        old = {id(p): k for k, p in enumerate(old_vars)}
        positions = [old.get(id(p)) for p in params if not isinstance(p, Tensor)]
        state = self._group_state[g]
        if any(k is None for k in positions) and state:
            raise ValueError(
                f"parameters were added to param_groups[{g}]['params'] after the optimizer took steps; "
                "add new parameters with add_param_group()")
        held = self._held[g]
        old_tensor_state = {id(held[k]): s for k, s in zip(self._tensor_at[g], self._tensor_state[g])}
        for name, array in list(state.items()):
            if isinstance(array, np.ndarray):
                state[name] = array[np.array(positions, dtype=np.intp)]
        group["params"] = params
        self._track(g, params)
        fresh = self._initial_tensor_state
        self._tensor_state[g] = [
            old_tensor_state[id(params[k])] if id(params[k]) in old_tensor_state else fresh(group, params[k])
            for k in self._tensor_at[g]]

    def _check(self, group: dict[str, Any]) -> None:
        """Raise ValueError (PyTorch's messages) for invalid hyper-parameters of a group."""

    @staticmethod
    def _require_nonnegative(group: dict[str, Any], *names: str) -> None:
        """PyTorch's `if not 0.0 <= x` checks, in order (NaN fails too), with its wording: "Invalid learning
        rate: x", "Invalid epsilon value: x", else "Invalid <name> value: x"."""
        for name in names:
            if not 0.0 <= group[name]:
                label = {"lr": "learning rate", "eps": "epsilon value"}.get(name, f"{name} value")
                raise ValueError(f"Invalid {label}: {group[name]}")

    def _initial_state(self, group: dict[str, Any], n: int) -> dict[str, Any]:
        """The state of a new group's n Vars: empty (created lazily at its first step) unless overridden."""
        return {}

    def _initial_tensor_state(self, group: dict[str, Any], param: Tensor) -> dict[str, Any]:
        """The state of a new Tensor parameter: empty (created lazily at its first step) unless overridden."""
        return {}

    # ---- the two calls of a training loop ----

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Set every parameter's gradient to zero: a Var's to 0.0 (one C loop per group), a Tensor's array
        filled with zeros in place (the buffer is kept and reused by the next backward; a Tensor no backward
        has reached keeps `.grad` None). `set_to_none` is accepted for PyTorch compatibility and changes
        nothing: gradients are zeroed, never dropped, so every parameter with a gradient is updated by the
        next step (PyTorch's `zero_grad(set_to_none=False)`)."""
        for g, index in enumerate(self._indices()):
            _optim.zero_grad(index)
            if self._tensor_at[g]:
                params = self.param_groups[g]["params"]
                _engine._tensor_zero_grads([params[k] for k in self._tensor_at[g]])     # one C loop

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Update every parameter from its `.grad` (Tensors whose grad is None are skipped); with a closure,
        call it first and return its loss. Raises ValueError if a Tensor's gradient or state no longer has
        the shape of its data."""
        loss = None if closure is None else closure()
        for g, (group, index, state) in enumerate(zip(self.param_groups, self._indices(), self._group_state)):
            if index.shape[0]:
                self._update(group, index, state)
            if self._tensor_at[g]:
                params = group["params"]
                tensors = [params[k] for k in self._tensor_at[g]]
                grads = _engine._tensor_param_grads(tensors)        # one C loop; None: skip it
                self._update_tensors(group, tensors, grads, self._tensor_state[g])
        return loss

    def _update_tensors(self, group: dict[str, Any], tensors: list[Tensor], grads: list[np.ndarray | None],
                        states: list[dict[str, Any]]) -> None:
        """Update the group's Tensors, each from its gradient in ``grads`` (None: skipped), keeping each one's
        state arrays in its dict of ``states``. ValueError if a state array lost its data's shape."""
        for p, grad, state in zip(tensors, grads, states):
            if grad is not None:
                if state:
                    _check_state(p.data.shape, state)
                self._update_tensor(group, p.data, grad, state)

    def _update(self, group: dict[str, Any], index: np.ndarray, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def _update_tensor(self, group: dict[str, Any], param: np.ndarray, grad: np.ndarray,
                       state: dict[str, Any]) -> None:
        """Update one Tensor's data array ``param`` in place from ``grad`` (same shape and dtype), keeping
        its state arrays in ``state``."""
        raise NotImplementedError

    def _array(self, state: dict[str, Any], name: str, n: int, fill: float = 0.0) -> np.ndarray:
        """The state array `name`, created (filled with `fill`) if absent."""
        array = state.get(name)
        if array is None:
            array = state[name] = np.full(n, fill, dtype=np.float64)
        return array

    @staticmethod
    def _tensor_array(state: dict[str, Any], name: str, param: np.ndarray, fill: float = 0.0) -> np.ndarray:
        """A Tensor's state array `name` (the parameter's shape and dtype), created (filled) if absent."""
        array = state.get(name)
        if array is None:
            array = state[name] = np.full(param.shape, fill, dtype=param.dtype)
        return array

    # ---- serialization ----

    def state_dict(self) -> dict[str, Any]:
        """{"state": {position: {"step": int, name: value}}, "param_groups": [...]}: a Var's state values
        are plain floats, a Tensor's are NumPy arrays (copies, the parameter's shape and dtype)."""
        self._indices()  # follow any edit of the parameter lists first
        state: dict[int, dict[str, Any]] = {}
        groups = []
        start = 0
        for g, (group, gstate) in enumerate(zip(self.param_groups, self._group_state)):
            n = len(group["params"])
            packed = {k: copy.deepcopy(v) for k, v in group.items() if k != "params"}
            packed["params"] = list(range(start, start + n))
            groups.append(packed)
            tensor_at = self._tensor_at[g]
            entries: dict[int, dict[str, Any]] = {}
            names = [k for k in self.state_names if k in gstate]
            if "step" in gstate or names:
                lists = {k: gstate[k].tolist() for k in names}
                for i, pos in enumerate(_var_positions(n, tensor_at)):
                    entry: dict[str, Any] = {}
                    if "step" in gstate:
                        entry["step"] = gstate["step"]
                    for k in names:
                        entry[k] = lists[k][i]
                    entries[pos] = entry
            for pos, tstate in zip(tensor_at, self._tensor_state[g]):
                if tstate:
                    entries[pos] = {k: tstate[k].copy() if isinstance(tstate[k], np.ndarray) else tstate[k]
                                    for k in ("step", *self.state_names) if k in tstate}
            for pos in sorted(entries):
                state[start + pos] = entries[pos]
            start += n
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore hyper-parameters and state saved by `state_dict()` into this optimizer's own parameters.

        Everything is checked first (same number of groups and of parameters per group, known state
        names, real numbers, one step count per group's Vars, Tensor state of each Tensor's shape); on an
        error nothing has changed (ValueError). Tensor state is copied (to the parameter's dtype).
        """
        self._indices()
        try:
            saved_groups = state_dict["param_groups"]
            saved_state = state_dict["state"]
        except (TypeError, KeyError) as exc:
            raise ValueError("optimizer state_dict must have 'state' and 'param_groups' entries") from exc
        if len(saved_groups) != len(self.param_groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        for group, saved in zip(self.param_groups, saved_groups):
            if len(saved.get("params", ())) != len(group["params"]):
                raise ValueError(
                    "loaded state dict contains a parameter group that doesn't match the size of "
                    "optimizer's group"
                )
        new_groups, new_states, new_tensor_states = [], [], []
        for g, (group, saved) in enumerate(zip(self.param_groups, saved_groups)):
            hyper = {k: copy.deepcopy(v) for k, v in saved.items() if k != "params"}
            new_group = {**group, **hyper, "params": group["params"]}
            self._check(new_group)
            new_groups.append(new_group)
            positions = list(saved["params"])
            tensor_at = self._tensor_at[g]
            var_positions = [positions[k] for k in _var_positions(len(positions), tensor_at)]
            new_states.append(self._unpack_state(var_positions, saved_state))
            new_tensor_states.append([
                self._unpack_tensor_state(group["params"][k], _saved_entry(saved_state, positions[k]))
                for k in tensor_at])
        for i, group in enumerate(new_groups):
            self.param_groups[i].clear()
            self.param_groups[i].update(group)
            self._group_state[i] = new_states[i]
            self._tensor_state[i] = new_tensor_states[i]

    def _unpack_state(self, positions: list[Any], saved_state: dict[Any, Any]) -> dict[str, Any]:
        """A group's Var state arrays from the per-parameter entries of a state dict (checked, not
        applied)."""
        entries = [_saved_entry(saved_state, pos) for pos in positions]
        present = [e for e in entries if e]
        if not present:
            return {}
        if len(present) != len(entries):
            raise ValueError("loaded state dict has state for only some parameters of a group")
        keys = set(present[0])
        unknown = keys - {"step", *self.state_names}
        if unknown:
            raise ValueError(f"loaded state dict has unknown state entries {sorted(unknown)}")
        if any(set(e) != keys for e in present):
            raise ValueError("loaded state dict has different state entries for parameters of one group")
        gstate: dict[str, Any] = {}
        if "step" in keys:
            steps = {e["step"] for e in present}
            if len(steps) != 1:
                raise ValueError("loaded state dict has different step counts within one parameter group")
            gstate["step"] = _step_count(steps.pop())
        for name in self.state_names:
            if name in keys:
                values = [e[name] for e in present]
                if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values):
                    raise ValueError(f"loaded state dict has a non-numeric {name!r}")
                gstate[name] = np.array(values, dtype=np.float64)
        return gstate

    def _unpack_tensor_state(self, param: Tensor, entry: Any) -> dict[str, Any]:
        """One Tensor's state from its state-dict entry (checked, copied to the parameter's dtype)."""
        if not entry:
            return {}
        unknown = set(entry) - {"step", *self.state_names}
        if unknown:
            raise ValueError(f"loaded state dict has unknown state entries {sorted(unknown)}")
        tstate: dict[str, Any] = {}
        if "step" in entry:
            tstate["step"] = _step_count(entry["step"])
        for name in self.state_names:
            if name in entry:
                try:
                    array = np.asarray(entry[name])
                except (TypeError, ValueError):
                    array = np.asarray(None)
                if array.dtype.kind not in "iuf":
                    raise ValueError(f"loaded state dict has a non-numeric {name!r}")
                if array.shape != param.shape:
                    raise ValueError(f"loaded state dict has {name!r} of shape {array.shape} for a parameter "
                                     f"of shape {param.shape}")
                tstate[name] = np.array(array, dtype=param.dtype, copy=True)
        return tstate

    # ---- pickle: the arena indices are rebuilt for the unpickled Vars ----

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_index"], state["_held"], state["_vars"], state["_tensor_at"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        n = len(self.param_groups)
        self._index, self._held = [_EMPTY_INDEX] * n, [()] * n
        self._vars, self._tensor_at = [None] * n, [()] * n
        for g, group in enumerate(self.param_groups):
            self._track(g, group["params"])
        if "_tensor_state" not in state:  # pickled before Tensors could be parameters
            self._tensor_state = [[] for _ in range(n)]

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for key in sorted(group):
                if key != "params":
                    lines.append(f"    {key}: {group[key]}")
        lines.append(")")
        return "\n".join(lines)


_EMPTY_INDEX = np.empty(0, dtype=np.int64)


def _var_positions(n: int, tensor_at: tuple[int, ...]) -> Iterable[int]:
    """The positions of a group's Vars among its n parameters, given its Tensors' positions."""
    if not tensor_at:
        return range(n)
    skip = set(tensor_at)
    return [k for k in range(n) if k not in skip]


def _saved_entry(saved_state: dict[Any, Any], pos: Any) -> Any:
    """A parameter's entry of a state dict's "state" (keys may be ints, or strings after JSON)."""
    return saved_state.get(pos, saved_state.get(str(pos)))


def _step_count(step: Any) -> int:
    """A saved step count, checked: a non-negative whole number."""
    if isinstance(step, bool) or not isinstance(step, numbers.Real) or step < 0 or step != int(step):
        raise ValueError(f"loaded state dict has an invalid step count {step!r}")
    return int(step)


def _check_state(shape: tuple[int, ...], state: dict[str, Any]) -> None:
    """ValueError if one of a Tensor parameter's state arrays no longer has its data's ``shape``."""
    for name, array in state.items():
        if isinstance(array, np.ndarray) and array.shape != shape:
            raise ValueError(f"a Tensor parameter's data has shape {shape} but its {name!r} state "
                             f"{array.shape}")


def empty() -> np.ndarray:
    """A zero-length float64 array for the C loops' unused state arguments."""
    return _EMPTY


def coupled_grad(grad: np.ndarray, param: np.ndarray, weight_decay: float, maximize: bool) -> np.ndarray:
    """The gradient a Tensor update follows, as the C loops' `coupled_grad`: -grad to maximize, then
    + weight_decay·param (a new array whenever it differs from ``grad``; ``grad`` is never written)."""
    g = np.negative(grad) if maximize else grad
    if weight_decay != 0:
        g = g + param * param.dtype.type(weight_decay)
    return g


def lerp_(start: np.ndarray, end: np.ndarray, weight: float) -> None:
    """start = torch.lerp(start, end, weight) in place, evaluated from the nearer end as ATen (and the C
    loops' `lerp`) do: start + weight·(end - start) for |weight| < 0.5, else
    end - (end - start)·(1 - weight)."""
    diff = end - start
    if -0.5 < weight < 0.5:
        diff *= start.dtype.type(weight)
        start += diff
    else:
        diff *= start.dtype.type(1.0 - weight)
        np.subtract(end, diff, out=start)
