"""`Optimizer`: parameter groups, state, `zero_grad`, serialization — the part every optimizer shares.

Layout. Each parameter group keeps the int64 arena indices of its parameters (`param_index`) and its state
as one float64 NumPy array per state name ("exp_avg", ...), entry i belonging to the group's i-th parameter,
plus a step count. `step()` hands those to one C loop per group (`fastgrad._optim`). Every parameter is
updated on every step: a zero gradient is a real gradient (docs/semantics.md, 2), so the group-level step
count is every parameter's step count.

`state_dict()` is PyTorch's layout with plain numbers: {"state": {position: {"step": int, name: float}},
"param_groups": [{hyper-parameters..., "params": [positions]}]}, positions counted across groups.
"""
from __future__ import annotations

import copy
import numbers
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from fastgrad import _optim
from fastgrad._engine import Var, param_index, same_nodes

__all__ = ["Optimizer"]

_EMPTY = np.empty(0, dtype=np.float64)
_SET_MESSAGE = ("optimizer parameters need to be organized in ordered collections, but the ordering of "
                "Vars in sets will change between runs. Please use a list instead.")


class Optimizer:
    """Base class: subclasses set `state_names`, validate hyper-parameters in `_check`, and run their C
    loop in `_update`."""

    # per-parameter state arrays, in state-dict order; "step" is kept per group
    state_names: tuple[str, ...] = ()

    def __init__(self, params: Iterable[Var] | Iterable[dict[str, Any]], defaults: dict[str, Any]) -> None:
        if isinstance(params, (Var, dict)):
            raise TypeError(
                "params argument given to the optimizer should be an iterable of Vars or dicts, but got "
                + type(params).__name__
            )
        if isinstance(params, (set, frozenset)):
            raise TypeError(_SET_MESSAGE)
        self.defaults = dict(defaults)
        self.param_groups: list[dict[str, Any]] = []
        self._index: list[np.ndarray] = []  # per group: arena indices of its params (rebuilt on unpickle)
        self._held: list[tuple[Var, ...]] = []  # per group: the Vars indexed, kept alive with their nodes
        self._group_state: list[dict[str, Any]] = []  # per group: {"step": int, name: ndarray}
        groups = list(params)
        if not groups:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    # ---- groups ----

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group of parameters with its own hyper-parameters (missing ones take the defaults)."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group).__name__}")
        group = dict(param_group)
        if "params" not in group:
            raise ValueError("param_group must have a 'params' entry")
        params = group["params"]
        if isinstance(params, Var):
            params = [params]
        params = self._validated(params, self.param_groups)
        for name, default in self.defaults.items():
            group.setdefault(name, default)
        self._check(group)
        group["params"] = params
        self.param_groups.append(group)
        self._index.append(param_index(params))
        self._held.append(tuple(params))
        self._group_state.append(self._initial_state(group, len(params)))

    @staticmethod
    def _validated(params: Any, others: list[dict[str, Any]]) -> list[Var]:
        """A group's parameters as a list, checked: leaf Vars, none twice, none in another group."""
        if isinstance(params, (set, frozenset)):
            raise TypeError(_SET_MESSAGE)
        params = list(params)
        for p in params:
            if not isinstance(p, Var):
                raise TypeError(
                    "optimizer can only optimize Vars, but one of the params is " + type(p).__name__)
            if not p.is_leaf:
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
        """Each group's node indices, re-derived if its "params" list changed since they were taken.

        NOTE: the optimizer holds every Var it indexed (`_held`), so an indexed node can never be freed and
        its slot reused by an unrelated Var; and `same_nodes` (one C loop, ~1 ns per parameter) notices an
        edited list or a re-initialised parameter before any update is written.
        """
        for g, group in enumerate(self.param_groups):
            if not same_nodes(group["params"], self._index[g]):
                self._reindex(g)
        return self._index

    def _reindex(self, g: int) -> None:
        """Follow an edit of ``param_groups[g]["params"]``: state stays with its parameter (matched by
        identity); removed parameters are dropped. A parameter added after the group has state would start
        from a state PyTorch would not give it, so that is an error pointing to `add_param_group`."""
        group = self.param_groups[g]
        params = self._validated(group["params"], self.param_groups[:g] + self.param_groups[g + 1:])
        old = {id(p): k for k, p in enumerate(self._held[g])}
        positions = [old.get(id(p)) for p in params]
        state = self._group_state[g]
        if any(k is None for k in positions) and state:
            raise ValueError(
                f"parameters were added to param_groups[{g}]['params'] after the optimizer took steps; "
                "add new parameters with add_param_group()")
        for name, array in list(state.items()):
            if isinstance(array, np.ndarray):
                state[name] = array[np.array(positions, dtype=np.intp)]
        group["params"] = params
        self._index[g] = param_index(params)
        self._held[g] = tuple(params)

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
        """The state of a new group: empty (created lazily at its first step) unless overridden."""
        return {}

    # ---- the two calls of a training loop ----

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Set every parameter's gradient to 0.0 (one C loop per group). A Var's grad is a float, never
        None: `set_to_none` is accepted for PyTorch compatibility and changes nothing."""
        for index in self._indices():
            _optim.zero_grad(index)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Update every parameter from its `.grad`; with a closure, call it first and return its loss."""
        loss = None if closure is None else closure()
        for group, index, state in zip(self.param_groups, self._indices(), self._group_state):
            self._update(group, index, state)
        return loss

    def _update(self, group: dict[str, Any], index: np.ndarray, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def _array(self, state: dict[str, Any], name: str, n: int, fill: float = 0.0) -> np.ndarray:
        """The state array `name`, created (filled with `fill`) if absent."""
        array = state.get(name)
        if array is None:
            array = state[name] = np.full(n, fill, dtype=np.float64)
        return array

    # ---- serialization ----

    def state_dict(self) -> dict[str, Any]:
        """{"state": {position: {"step": int, name: float}}, "param_groups": [...]}: plain numbers only."""
        self._indices()  # follow any edit of the parameter lists first
        state: dict[int, dict[str, Any]] = {}
        groups = []
        start = 0
        for group, gstate in zip(self.param_groups, self._group_state):
            n = len(group["params"])
            packed = {k: copy.deepcopy(v) for k, v in group.items() if k != "params"}
            packed["params"] = list(range(start, start + n))
            groups.append(packed)
            names = [k for k in self.state_names if k in gstate]
            if "step" in gstate or names:
                lists = {k: gstate[k].tolist() for k in names}
                for i in range(n):
                    entry: dict[str, Any] = {}
                    if "step" in gstate:
                        entry["step"] = gstate["step"]
                    for k in names:
                        entry[k] = lists[k][i]
                    state[start + i] = entry
            start += n
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore hyper-parameters and state saved by `state_dict()` into this optimizer's own parameters.

        Everything is checked first (same number of groups and of parameters per group, known state
        names, real numbers, one step count per group); on an error nothing has changed (ValueError).
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
        new_groups, new_states = [], []
        for group, saved in zip(self.param_groups, saved_groups):
            hyper = {k: copy.deepcopy(v) for k, v in saved.items() if k != "params"}
            new_group = {**group, **hyper, "params": group["params"]}
            self._check(new_group)
            new_groups.append(new_group)
            new_states.append(self._unpack_state(saved["params"], saved_state))
        for i, (group, gstate) in enumerate(zip(new_groups, new_states)):
            self.param_groups[i].clear()
            self.param_groups[i].update(group)
            self._group_state[i] = gstate

    def _unpack_state(self, positions: list[Any], saved_state: dict[Any, Any]) -> dict[str, Any]:
        """A group's state arrays from the per-parameter entries of a state dict (checked, not applied)."""
        entries = [saved_state.get(pos, saved_state.get(str(pos))) for pos in positions]
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
            step = steps.pop()
            if isinstance(step, bool) or not isinstance(step, numbers.Real) or step < 0 or step != int(step):
                raise ValueError(f"loaded state dict has an invalid step count {step!r}")
            gstate["step"] = int(step)
        for name in self.state_names:
            if name in keys:
                values = [e[name] for e in present]
                if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values):
                    raise ValueError(f"loaded state dict has a non-numeric {name!r}")
                gstate[name] = np.array(values, dtype=np.float64)
        return gstate

    # ---- pickle: the arena indices are rebuilt for the unpickled Vars ----

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_index"], state["_held"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._index = [param_index(group["params"]) for group in self.param_groups]
        self._held = [tuple(group["params"]) for group in self.param_groups]

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for key in sorted(group):
                if key != "params":
                    lines.append(f"    {key}: {group[key]}")
        lines.append(")")
        return "\n".join(lines)


def empty() -> np.ndarray:
    """A zero-length float64 array for the C loops' unused state arguments."""
    return _EMPTY
