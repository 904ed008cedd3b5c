"""`Module`: the base of every layer — children and parameters found by walking attributes, state dicts, repr.

A module is made of what its public attributes (names not starting with `_`) hold, in attribute order:
- a `Var` is one scalar parameter (`b` → state-dict entry `"b": 0.5`);
- a list or tuple of Vars, or a rectangular list of lists of Vars, is a parameter array
  (`w` → `"w": [0.1, -0.3]`);
- a `Module` is a child, and so is every item of a list or tuple of Modules (named `"layers.0"`);
- a dict is walked as if its items were attributes named `attr.key`
  (`self.blocks = {"enc": Linear(2, 3)}` → `"blocks.enc"`);
- anything else is data and is ignored, but a Var or Module inside a list, tuple, dict or set in any other
  shape (`[Linear(2, 2), 3]`, `[[Linear(2, 2)]]`, a set of Modules) is a TypeError: a parameter that is
  silently skipped never trains.

Every method that visits the tree (`modules`, `parameters`, `zero_grad`, `state_dict`, `repr`, ...) takes a
module's children from `named_children()`, the one hook, so a container class either stores its children in
public attributes (as `Sequential` does: "0", "1", ...) or overrides `named_children` alone. The walks are
iterative (a deep nest hits no recursion limit) and list a module, or a Var, reachable by several paths once,
under its first name (PyTorch's rule); optimizers therefore accept `model.parameters()` of a model with
shared parts.

`parameters()` is flat (one Var per scalar, micrograd's order); `state_dict()` keeps the arrays' shapes as
nested lists of plain floats, so `load_state_dict()` can check them.

Training and evaluation mode (PyTorch's): `model.train()` / `model.eval()` set `.training` on the module and
every descendant; `Dropout` reads it. `training` is True until then, with no `super().__init__()` needed (a
class attribute; `train`/`eval` set instance attributes). A bool is data, so it is never a parameter or a
state-dict entry. `model.apply(fn)` calls `fn` on every module, children before their parent.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, NamedTuple, TypeVar

import numpy as np

from fastgrad._engine import Var
from fastgrad.tensor import Tensor

__all__ = ["IncompatibleKeys", "Module"]

_M = TypeVar("_M", bound="Module")


class IncompatibleKeys(NamedTuple):
    """What `load_state_dict(strict=False)` skipped: keys the model has but the dict lacks, and the
    reverse."""

    missing_keys: list[str]
    unexpected_keys: list[str]


class Module:
    """Base class of layers and models: subclasses store parameters and children as attributes and define
    `forward` (or `__call__`).

    Subclasses need not call `super().__init__()`: `training` defaults to True at the class level.
    """

    # NOTE: a class-level default, so subclasses that never call super().__init__() (micrograd's style) have
    # it; train()/eval() set an instance attribute, which pickles and deep-copies with the module.
    training: bool = True

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """What calling the module computes; subclasses define it (here: NotImplementedError)."""
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    # ---- the one walk: every method that visits the tree is built on named_children ----

    def named_children(self) -> Iterator[tuple[str, Module]]:
        """(name, module) for the direct children, in attribute order: `attr`, `attr.i` for the items of a
        list or tuple, `attr.key` for those of a dict. A child held twice is listed twice (as repr shows).

        The hook of every walk: a container that keeps its children elsewhere overrides this alone.
        """
        return iter(_contents(self, True)[0])

    def children(self) -> Iterator[Module]:
        """The direct children, as `named_children` lists them."""
        for _, m in self.named_children():
            yield m

    def _walk(self, prefix: str | None) -> Iterator[tuple[str, Module, list[Any]]]:
        """(name, module, its own parameter arrays) for this module and every descendant, depth first, each
        once under its first name; iterative, so deep nests and back-references to an ancestor are fine.

        The arrays are (name, array) pairs; with `prefix=None` nothing is named (names are "", arrays bare):
        `modules`, `parameters` and `zero_grad` skip building strings they would drop.
        """
        named = prefix is not None
        seen: dict[int, Module] = {}  # NOTE: holds the modules, so no id is reused during the walk
        stack = [(prefix or "", self)]
        while stack:
            name, module = stack.pop()
            if id(module) in seen:
                continue
            seen[id(module)] = module
            kids, arrays = _parts(module, named)
            yield name, module, arrays
            if named:
                kids = [(f"{name}.{n}" if name else n, m) for n, m in kids]
            else:
                kids = [("", m) for m in kids]
            kids.reverse()
            stack.extend(kids)

    # ---- derived views ----

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        """This module and every descendant, depth first, each once under its first name (PyTorch's order)."""
        for name, module, _ in self._walk(prefix):
            yield name, module

    def modules(self) -> Iterator[Module]:
        """This module and every descendant, in the order of `named_modules`, without building names."""
        for _, module, _ in self._walk(None):
            yield module

    def named_arrays(self) -> Iterator[tuple[str, Any]]:
        """(state-dict key, Var or nested list of Vars) for every parameter array of the whole tree.

        NOTE: an array whose Vars have all been listed under an earlier key is left out (a tied weight is
        saved once); one that shares only some of its Vars with earlier arrays is kept whole.
        """
        seen: set[int] = set()
        for prefix, _, arrays in self._walk(""):
            for name, entry in arrays:
                ids = list(map(id, _flat(entry)))
                if seen.issuperset(ids):
                    continue
                seen.update(ids)
                yield (f"{prefix}.{name}" if prefix else name), entry

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Any]]:
        """(name, Var) for every scalar parameter, once each: `"layers.0.neurons.3.w.1"`, `"...3.b"`; (name,
        Tensor) for a Tensor parameter: `"layers.0.weight"`."""
        seen: set[int] = set()
        for key, entry in self.named_arrays():
            key = f"{prefix}.{key}" if prefix else key
            if isinstance(entry, (Var, Tensor)):
                items: Any = [(key, entry)]
            elif isinstance(entry[0], Var):
                items = [(f"{key}.{i}", v) for i, v in enumerate(entry)]
            else:
                items = [(f"{key}.{i}.{j}", v) for i, row in enumerate(entry) for j, v in enumerate(row)]
            for item in items:
                if id(item[1]) not in seen:
                    seen.add(id(item[1]))
                    yield item

    def parameters(self) -> list[Any]:
        """Every parameter once, flat, in a fixed order (micrograd's: a neuron's w..., then its b): the scalar
        parameters as Vars, and Tensor parameters (a leaf Tensor that requires grad) as Tensors."""
        params: list[Any] = []
        for _, _, arrays in self._walk(None):
            for entry in arrays:
                if isinstance(entry, (Var, Tensor)):
                    params.append(entry)
                elif isinstance(entry[0], Var):
                    params.extend(entry)
                else:
                    for row in entry:
                        params.extend(row)
        if len(set(map(id, params))) != len(params):  # shared Vars: keep the first of each
            params = list({id(p): p for p in params}.values())
        return params

    def num_parameters(self) -> int:
        """The number of scalar parameters, each shared one counted once: a Var counts 1, a Tensor its
        elements (PyTorch's `sum(p.numel() for p in model.parameters())`)."""
        return sum(p.size if isinstance(p, Tensor) else 1 for p in self.parameters())

    # ---- modes and visitors ----

    def train(self: _M, mode: bool = True) -> _M:
        """Set training mode (`mode=True`) or evaluation mode (`False`) on this module and every descendant.

        Returns self (so `model = Model().eval()` works). Raises ValueError, as PyTorch does, unless `mode`
        is a bool: a mode given as a string such as "eval" would otherwise count as True.
        """
        if not isinstance(mode, bool):
            raise ValueError(f"train(mode): mode must be True or False, got {mode!r}")
        for module in self.modules():
            module.training = mode
        return self

    def eval(self: _M) -> _M:
        """Evaluation mode on this module and every descendant: `train(False)`. Returns self."""
        return self.train(False)

    def apply(self: _M, fn: Callable[[Module], Any]) -> _M:
        """Call `fn(module)` on every descendant, children before their parent, then on self; returns self.

        PyTorch's order (depth first, children in `named_children` order). A module reachable by several paths
        is visited once, where the walk first meets it (PyTorch calls `fn` on it once per parent). Iterative:
        deep nests are fine. TypeError if `fn` is not callable.
        """
        if not callable(fn):
            raise TypeError(f"apply(fn): fn must be callable, got {type(fn).__name__}")
        seen: dict[int, Module] = {id(self): self}  # NOTE: holds the modules, so no id is reused
        stack = [(self, iter([m for _, m in self.named_children()]))]
        while stack:
            module, kids = stack[-1]
            for child in kids:
                if id(child) not in seen:
                    seen[id(child)] = child
                    stack.append((child, iter([m for _, m in child.named_children()])))
                    break
            else:
                stack.pop()
                fn(module)
        return self

    def requires_grad_(self: _M, requires_grad: bool = True) -> _M:
        """Freeze (`False`) or unfreeze (`True`) every parameter of this module and its children, in place;
        returns the module. A frozen parameter receives no gradient in `backward()` (nor in compiled
        replays) and every optimizer leaves it and its state alone, so a frozen layer can stay in an
        optimizer's parameter list. Raises TypeError unless `requires_grad` is a bool."""
        if not isinstance(requires_grad, bool):
            raise TypeError(f"requires_grad must be a bool, got {type(requires_grad).__name__}")
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def zero_grad(self) -> None:
        """Set every parameter's `.grad` to 0.0.

        NOTE: this walks the module tree (about 0.1 ms for micrograd's MLP(2, [16, 16, 1])); in a hot loop,
        `optimizer.zero_grad()` does the same in one C loop over cached indices.
        """
        for p in self.parameters():
            if isinstance(p, Tensor):
                p.zero_grad()
            else:
                p.grad = 0.0

    # ---- serialization ----

    def state_dict(self) -> dict[str, Any]:
        """{key: float or nested list of floats, or an array (a copy) for a Tensor parameter}: a snapshot of
        the values, free of any Var or Tensor."""
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
            shape = _shape(entry)
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
        """The text inside the parentheses of this module's repr line (PyTorch's hook); empty by default."""
        return ""

    def __repr__(self) -> str:
        """The class, its `extra_repr()` and one `(name): child` line per child, nested children indented.

        Iterative, so a deep nest prints without RecursionError: a child whose class defines its own
        `__repr__` is asked for it, the others are expanded here. A child that is its own ancestor (a
        back-reference) prints as `ClassName(...)`.
        """
        lines: list[str] = []
        open_ids: set[int] = set()  # the modules being expanded: the current path from self
        stack: list[Any] = [("", self, "")]  # (line prefix, module, indent) to print, or (id, closing line)
        while stack:
            item = stack.pop()
            if len(item) == 2:
                open_ids.discard(item[0])
                lines.append(item[1])
                continue
            label, module, pad = item
            if type(module).__repr__ is not Module.__repr__:
                lines.append(label + repr(module).replace("\n", "\n" + pad))
                continue
            head = f"{label}{type(module).__name__}("
            if id(module) in open_ids:
                lines.append(head + "...)")
                continue
            kids = list(module.named_children())
            head += module.extra_repr()
            if not kids:
                lines.append(head + ")")
                continue
            lines.append(head)
            open_ids.add(id(module))
            stack.append((id(module), pad + ")"))
            inner = pad + "  "
            stack.extend((f"{inner}({name}): ", child, inner) for name, child in reversed(kids))
        return "\n".join(lines)


# ---- what a module's attributes hold: the rules of the module docstring, in one place ----

_CHILD, _CHILDREN, _ARRAY = 1, 2, 3  # a Module; a list or tuple of Modules; a Var or an array of Vars
_SCANNED = (list, tuple, dict, set, frozenset)  # the containers searched for hidden Vars and Modules
_WALKED = (Var, Module, *_SCANNED)
_VAR_TYPE = {Var}
_RULES = ("keep Modules in an attribute, a list, tuple or dict of Modules; Vars in an attribute, a list or "
          "tuple of Vars, a rectangular list of lists of Vars, or a dict of these; other data must not "
          "contain Vars or Modules (or give the attribute a name starting with '_')")


def _contents(module: Module, named: bool) -> tuple[list[Any], list[Any]]:
    """The children and the parameter arrays in a module's public attributes, in attribute order: (name,
    object) pairs if `named`, else the bare objects. TypeError for Vars or Modules in any other shape."""
    kids: list[Any] = []
    arrays: list[Any] = []
    for name, value in vars(module).items():
        if name[:1] == "_":
            continue
        if isinstance(value, Module):
            kids.append((name, value) if named else value)
        elif isinstance(value, Var) or _is_tensor_param(value):
            arrays.append((name, value) if named else value)
        elif isinstance(value, (list, tuple)):
            kind = _sequence_kind(name, value)
            if kind == _ARRAY:
                arrays.append((name, value) if named else value)
            elif kind == _CHILDREN:
                kids.extend([(f"{name}.{i}", m) for i, m in enumerate(value)] if named else value)
        elif isinstance(value, dict):
            # NOTE: walked as attributes named attr.key: a dict item holding Modules or Vars is a child
            # (or children) or a parameter array, the other items are data
            for key, item in value.items():
                where = f"{name}.{key}"
                kind = _kind(where, item)
                if kind and (not isinstance(key, str) or not key or "." in key):
                    raise TypeError(f"{where!r}: a dict of Modules or Vars needs keys that are non-empty "
                                    f"strings without '.' (they become state-dict names), got {key!r}")
                if kind == _ARRAY:
                    arrays.append((where, item) if named else item)
                elif kind == _CHILD:
                    kids.append((where, item) if named else item)
                elif kind == _CHILDREN:
                    kids.extend([(f"{where}.{i}", m) for i, m in enumerate(item)] if named else item)
        elif isinstance(value, (set, frozenset)):
            _kind(name, value)  # raises if the set holds Vars or Modules
    return kids, arrays


def _parts(module: Module, named: bool) -> tuple[list[Any], list[Any]]:
    """A module's children, as its `named_children` lists them, and its own parameter arrays (named or bare,
    as in `_contents`): one pass over the attributes unless its class overrides `named_children`."""
    if type(module).named_children is Module.named_children:
        return _contents(module, named)
    kids = list(module.named_children())
    return (kids if named else [m for _, m in kids]), _contents(module, named)[1]


def _kind(name: str, value: Any) -> int:
    """_CHILD, _CHILDREN, _ARRAY, or 0 for data; TypeError for Vars or Modules hidden in other shapes."""
    if isinstance(value, Module):
        return _CHILD
    if isinstance(value, Var) or _is_tensor_param(value):
        return _ARRAY
    if isinstance(value, (list, tuple)):
        return _sequence_kind(name, value)
    if isinstance(value, _SCANNED) and _holds_nn(value):
        raise TypeError(f"{name!r} holds Vars or Modules in a shape fastgrad does not walk: {_RULES}")
    return 0


def _sequence_kind(name: str, value: list[Any] | tuple[Any, ...]) -> int:
    """_kind of a list or tuple."""
    if not value:
        return 0
    # NOTE: one pass in C over the items, then checks over their few distinct types (usually one)
    types = set(map(type, value))
    if len(types) == 1:
        t = types.pop()
        if issubclass(t, Var):
            return _ARRAY
        if issubclass(t, Module):
            return _CHILDREN
        if issubclass(t, (list, tuple)):
            if _is_matrix(value):
                return _ARRAY
        elif not issubclass(t, _SCANNED):
            return 0
    elif all(issubclass(t, Module) for t in types):
        return _CHILDREN
    elif all(issubclass(t, Var) for t in types):
        return _ARRAY
    elif all(issubclass(t, (list, tuple)) for t in types):
        if _is_matrix(value):
            return _ARRAY
    elif not any(issubclass(t, _WALKED) for t in types):
        return 0
    if _holds_nn(value):
        raise TypeError(f"{name!r} holds Vars or Modules in a shape fastgrad does not walk: {_RULES}")
    return 0


def _is_matrix(rows: list[Any] | tuple[Any, ...]) -> bool:
    """Are these rows (lists or tuples) non-empty, of equal length, and made of Vars only?"""
    n = len(rows[0])
    if not n:
        return False
    for row in rows:
        if len(row) != n:
            return False
        types = set(map(type, row))
        if not (types == _VAR_TYPE or all(issubclass(t, Var) for t in types)):
            return False
    return True


def _holds_nn(value: Any) -> bool:
    """Is there a Var or a Module anywhere inside this list, tuple, dict (its values) or set?"""
    stack, seen = [value], set()
    while stack:
        container = stack.pop()
        if id(container) in seen:  # NOTE: the containers stay alive during the scan: ids are not reused
            continue
        seen.add(id(container))
        for item in container.values() if isinstance(container, dict) else container:
            if isinstance(item, (Var, Module)):
                return True
            if isinstance(item, _SCANNED):
                stack.append(item)
    return False


def _is_tensor_param(value: Any) -> bool:
    """Is this a Tensor parameter: a leaf Tensor that requires grad? (Other Tensors are data.)"""
    return isinstance(value, Tensor) and value._node is not None and value.is_leaf    # frozen ones too


def _flat(entry: Any) -> list[Any]:
    """The Vars of a parameter array, in order (a Tensor parameter is its own one entry)."""
    if isinstance(entry, (Var, Tensor)):
        return [entry]
    if isinstance(entry[0], Var):
        return list(entry)
    return [v for row in entry for v in row]


def _shape(entry: Any) -> tuple[int, ...]:
    """The shape of a parameter array: () for a Var, (n,) for a list of Vars, (rows, n) for a matrix."""
    if isinstance(entry, Var):
        return ()
    if isinstance(entry, Tensor):
        return entry.shape
    if isinstance(entry[0], Var):
        return (len(entry),)
    return (len(entry), len(entry[0]))


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
    if isinstance(entry, Tensor):
        return entry.data.copy()
    return [v.data if isinstance(v, Var) else [u.data for u in v] for v in entry]


def _assign(entry: Any, value: np.ndarray) -> None:
    """Write a checked float array into a Var or nested list of Vars, in place."""
    if isinstance(entry, Var):
        entry.data = float(value)
        return
    if isinstance(entry, Tensor):
        entry.data[...] = value          # in place, in the parameter's dtype: optimizers keep working
        return
    for v, x in zip(entry, value.tolist()):
        if isinstance(v, Var):
            v.data = x
        else:
            for u, y in zip(v, x):
                u.data = y
