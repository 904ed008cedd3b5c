"""`Module`: the base of every layer — parameters found by walking attributes, state dicts, repr.

A module's parameters are the `Var` leaves stored in its public attributes, in attribute order:
- a `Var` attribute is one scalar parameter (`b` → state-dict entry `"b": 0.5`);
- a list of Vars, or a list of equal-length lists of Vars, is a parameter array (`w` → `"w": [0.1, -0.3]`);
- a `Module` attribute, or a list of Modules, is a child (its names get the prefix `"layers.0."`).
Other attributes (sizes, activation names) and attributes starting with `_` (caches) are ignored.

`parameters()` is flat (one Var per scalar, micrograd's order); `state_dict()` keeps the arrays' shapes as
nested lists of plain floats, so `load_state_dict()` can check them.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np

from fastgrad._engine import Var

__all__ = ["IncompatibleKeys", "Module"]


class IncompatibleKeys(NamedTuple):
    """What `load_state_dict(strict=False)` skipped: keys the model has but the dict lacks, and the
    reverse."""

    missing_keys: list[str]
    unexpected_keys: list[str]


class Module:
    """Base class of layers and models: subclasses store parameters and children as attributes and define
    `forward` (or `__call__`)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    # ---- the attribute walk: every other method is built on these two ----

    def _named_entries(self) -> Iterator[tuple[str, Any]]:
        """(name, Var or nested list of Vars) for this module's own parameters, in attribute order."""
        for name, value in vars(self).items():
            if not name.startswith("_") and _param_shape(name, value) is not None:
                yield name, value

    def named_children(self) -> Iterator[tuple[str, Module]]:
        """(name, module) for the direct children, in attribute order; list items are named `attr.i`."""
        for name, value in vars(self).items():
            if name.startswith("_"):
                continue
            if isinstance(value, Module):
                yield name, value
            elif isinstance(value, (list, tuple)) and value and all(isinstance(m, Module) for m in value):
                for i, m in enumerate(value):
                    yield f"{name}.{i}", m

    # ---- derived views ----

    def children(self) -> Iterator[Module]:
        """The direct children, in the order of `named_children`, without building their names."""
        for name, value in vars(self).items():
            if name.startswith("_"):
                continue
            if isinstance(value, Module):
                yield value
            elif isinstance(value, (list, tuple)) and value and all(isinstance(m, Module) for m in value):
                yield from value

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        """This module and every descendant, depth first (iterative: no recursion limit on deep nests)."""
        stack = [(prefix, self)]
        while stack:
            name, module = stack.pop()
            yield name, module
            kids = [(f"{name}.{n}" if name else n, m) for n, m in module.named_children()]
            stack.extend(reversed(kids))

    def modules(self) -> Iterator[Module]:
        """This module and every descendant, in the order of `named_modules`, without building names."""
        stack = [self]
        while stack:
            module = stack.pop()
            yield module
            stack.extend(reversed(list(module.children())))

    def named_arrays(self) -> Iterator[tuple[str, Any]]:
        """(state-dict key, Var or nested list of Vars) for every parameter array of the whole tree."""
        for prefix, module in self.named_modules():
            for name, entry in module._named_entries():
                yield (f"{prefix}.{name}" if prefix else name), entry

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Var]]:
        """(name, Var) for every scalar parameter: `"layers.0.neurons.3.w.1"`, `"layers.0.neurons.3.b"`."""
        for key, entry in self.named_arrays():
            key = f"{prefix}.{key}" if prefix else key
            if isinstance(entry, Var):
                yield key, entry
            else:
                for i, item in enumerate(entry):
                    if isinstance(item, Var):
                        yield f"{key}.{i}", item
                    else:
                        for j, v in enumerate(item):
                            yield f"{key}.{i}.{j}", v

    def parameters(self) -> list[Var]:
        """Every scalar parameter, flat, in a fixed order (micrograd's: a neuron's w..., then its b)."""
        params = []
        for entry in (e for m in self.modules() for _, e in m._named_entries()):
            if isinstance(entry, Var):
                params.append(entry)
            else:
                for item in entry:
                    if isinstance(item, Var):
                        params.append(item)
                    else:
                        params.extend(item)
        return params

    def num_parameters(self) -> int:
        return len(self.parameters())

    def zero_grad(self) -> None:
        """Set every parameter's `.grad` to 0.0.

        NOTE: this walks the module tree (about 0.1 ms for micrograd's MLP(2, [16, 16, 1])); in a hot loop,
        `optimizer.zero_grad()` does the same in one C loop over cached indices.
        """
        for p in self.parameters():
            p.grad = 0.0

    # ---- serialization ----

    def state_dict(self) -> dict[str, Any]:
        """{key: float or nested list of floats}: a snapshot of the values, free of any Var."""
        return {key: _values(entry) for key, entry in self.named_arrays()}

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True) -> IncompatibleKeys:
        """Copy values into the parameters (in place: optimizers keep working).

        Everything is checked before anything is written: a shape mismatch or a non-numeric value always
        raises, and with `strict` a missing or unexpected key raises too (RuntimeError, as in PyTorch);
        the model is then unchanged.
        """
        arrays = dict(self.named_arrays())
        missing = [k for k in arrays if k not in state_dict]
        unexpected = [k for k in state_dict if k not in arrays]
        errors = []
        if strict and unexpected:
            errors.append("Unexpected key(s) in state_dict: " + ", ".join(map(repr, unexpected)) + ".")
        if strict and missing:
            errors.append("Missing key(s) in state_dict: " + ", ".join(map(repr, missing)) + ".")
        staged = []
        for key, entry in arrays.items():
            if key not in state_dict:
                continue
            value = _as_float_array(state_dict[key])
            if value is None:
                errors.append(f"value for {key!r} is not a real number or a rectangular array of them.")
                continue
            shape = _param_shape(key, entry)
            if value.shape != shape:
                errors.append(
                    f"size mismatch for {key}: copying a param with shape {value.shape} from checkpoint, "
                    f"the shape in current model is {shape}."
                )
                continue
            staged.append((entry, value))
        if errors:
            raise RuntimeError(
                f"Error(s) in loading state_dict for {type(self).__name__}:\n\t" + "\n\t".join(errors)
            )
        for entry, value in staged:
            _assign(entry, value)
        return IncompatibleKeys(missing, unexpected)

    # ---- repr: PyTorch's layout, one child per line ----

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = []
        for name, child in self.named_children():
            text = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {text}")
        head = f"{type(self).__name__}({self.extra_repr()}"
        return head + ("\n" + "\n".join(lines) + "\n)" if lines else ")")


def _param_shape(name: str, value: Any) -> tuple[int, ...] | None:
    """The shape of a parameter attribute (() for a Var), or None if the attribute holds no parameters."""
    if isinstance(value, Var):
        return ()
    if not isinstance(value, (list, tuple)) or not value:
        return None
    first = value[0]
    if isinstance(first, Var):
        if not all(isinstance(v, Var) for v in value):
            raise TypeError(f"parameter list {name!r} mixes Vars with other objects")
        return (len(value),)
    if isinstance(first, (list, tuple)) and first and isinstance(first[0], Var):
        n = len(first)
        for row in value:
            rectangular = isinstance(row, (list, tuple)) and len(row) == n
            if not rectangular or not all(isinstance(v, Var) for v in row):
                raise TypeError(f"parameter array {name!r} must be a rectangular list of lists of Vars")
        return (len(value), n)
    return None


def _as_float_array(value: Any) -> np.ndarray | None:
    """A state-dict value as a float64 array; None unless it is a real number or a rectangular array of them.

    NOTE: strings are refused, never parsed (numpy would turn "1.5" into 1.5).
    """
    try:
        array = np.asarray(value)
    except ValueError:  # ragged nested lists
        return None
    if array.dtype.kind not in "biuf":
        return None
    return array.astype(np.float64)


def _values(entry: Any) -> Any:
    """The plain-float copy of a Var or nested list of Vars."""
    if isinstance(entry, Var):
        return entry.data
    return [v.data if isinstance(v, Var) else [u.data for u in v] for v in entry]


def _assign(entry: Any, value: np.ndarray) -> None:
    """Write a checked float array into a Var or nested list of Vars, in place."""
    if isinstance(entry, Var):
        entry.data = float(value)
        return
    for v, x in zip(entry, value.tolist()):
        if isinstance(v, Var):
            v.data = x
        else:
            for u, y in zip(v, x):
                u.data = y
