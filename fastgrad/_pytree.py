"""Trees of arguments and results for the transforms (JAX's pytrees, reduced to what fastgrad needs).

Numbers and Vars are leaves; tuples (and namedtuples), lists, dicts and real NumPy arrays are nodes.
`flatten` gives the leaves (numbers as floats, Vars as they are) and a `TreeDef`; `TreeDef.unflatten` puts
leaves back into the same structure, as the transforms do to return results shaped like their arguments.
"""
from __future__ import annotations

import numbers
from typing import Any, List, Sequence, Tuple

import numpy as np

import fastgrad as fg

__all__ = ["TreeDef", "LEAF", "flatten", "contains_var", "is_number"]



def is_number(x: Any) -> bool:
    if isinstance(x, numbers.Real):
        return True
    return isinstance(x, np.ndarray) and x.ndim == 0 and x.dtype.kind in "biuf"


class TreeDef:
    """The structure of a tree, without its leaves; `unflatten` puts leaves back in."""

    __slots__ = ("kind", "meta", "children", "num_leaves")

    def __init__(self, kind: str, meta: Any = None, children: Sequence["TreeDef"] = ()):
        self.kind = kind            # 'leaf', 'tuple', 'namedtuple', 'list', 'dict', 'array'
        self.meta = meta            # namedtuple type, dict keys, or array shape
        self.children = tuple(children)
        self.num_leaves = 1 if kind == "leaf" else (
            int(np.prod(meta)) if kind == "array" else sum(c.num_leaves for c in self.children))

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, TreeDef) and self.kind == other.kind and self.meta == other.meta
                and self.children == other.children)

    def __hash__(self) -> int:
        return hash((self.kind, str(self.meta), self.children))

    def __repr__(self) -> str:
        if self.kind == "leaf":
            return "*"
        if self.kind == "array":
            return f"array{tuple(self.meta)}"
        inner = ", ".join(map(repr, self.children))
        if self.kind == "dict":
            inner = ", ".join(f"{k!r}: {c!r}" for k, c in zip(self.meta, self.children))
            return "{" + inner + "}"
        if self.kind == "list":
            return f"[{inner}]"
        return f"({inner}{',' if len(self.children) == 1 else ''})"

    def unflatten(self, leaves: Sequence[Any]) -> Any:
        """Rebuild a tree of this structure from leaves (in flatten order)."""
        return self._build(iter(leaves))

    def _build(self, it: Any) -> Any:
        if self.kind == "leaf":
            return _py(next(it))
        if self.kind == "array":
            items = [_py(next(it)) for _ in range(self.num_leaves)]
            return _as_array(items, tuple(self.meta))
        built = [c._build(it) for c in self.children]
        if self.kind == "tuple":
            return tuple(built)
        if self.kind == "namedtuple":
            return self.meta(*built)
        if self.kind == "list":
            return built
        return dict(zip(self.meta, built))


def _py(x: Any) -> Any:
    """NumPy float scalars become Python floats; everything else is kept."""
    if isinstance(x, np.floating):
        return float(x)
    return x


def _as_array(items: List[Any], shape: Tuple[int, ...]) -> np.ndarray:
    """An array of `shape` from leaves; leaves that are float arrays (of one shape) add trailing axes."""
    if all(isinstance(v, float) for v in items):
        return np.array(items, dtype=np.float64).reshape(shape)
    if items and all(isinstance(v, np.ndarray) and v.dtype != object for v in items) \
            and len({v.shape for v in items}) == 1:
        return np.stack(items).reshape(shape + items[0].shape)
    out = np.empty(len(items), dtype=object)  # Vars (differentiable path) or nested structures
    for i, v in enumerate(items):
        out[i] = v
    return out.reshape(shape)


def flatten(tree: Any, what: str) -> Tuple[List[Any], TreeDef]:
    """Leaves (numbers as floats, Vars as they are) and the structure of `tree`; TypeError otherwise."""
    leaves: List[Any] = []
    return leaves, _walk(tree, leaves, what)


def _walk(x: Any, leaves: List[Any], what: str) -> TreeDef:
    """Append the leaves of `x` to `leaves` and return its structure.

    NOTE: a module-level function, not a closure: a recursive closure is a reference cycle, which would
    keep every traced graph alive until the cyclic GC runs.
    """
    if isinstance(x, fg.Var):
        leaves.append(x)
        return LEAF
    if is_number(x):
        leaves.append(float(x))
        return LEAF
    if isinstance(x, tuple):
        children = [_walk(c, leaves, what) for c in x]
        if hasattr(x, "_fields"):
            return TreeDef("namedtuple", type(x), children)
        return TreeDef("tuple", None, children)
    if isinstance(x, list):
        return TreeDef("list", None, [_walk(c, leaves, what) for c in x])
    if isinstance(x, dict):
        keys = sorted(x, key=repr)
        return TreeDef("dict", tuple(keys), [_walk(x[k], leaves, what) for k in keys])
    if isinstance(x, np.ndarray):
        if x.dtype.kind in "biuf":
            leaves.extend(float(v) for v in x.ravel())
            return TreeDef("array", tuple(x.shape))
        if x.dtype == object:
            for v in x.ravel():
                if not (isinstance(v, fg.Var) or is_number(v)):
                    raise TypeError(f"{what}: array element of type {type(v).__name__} is not a real number")
                leaves.append(v if isinstance(v, fg.Var) else float(v))
            return TreeDef("array", tuple(x.shape))
        raise TypeError(f"{what}: arrays of dtype {x.dtype} are not supported (real numbers only)")
    if isinstance(x, numbers.Complex):
        raise TypeError(f"{what}: complex numbers are not supported (got {x!r})")
    raise TypeError(f"{what}: expected a real number, a Var, or a tuple/list/dict/array of them; "
                    f"got {type(x).__name__} {x!r:.60}")


LEAF = TreeDef("leaf")


def contains_var(objs: Sequence[Any]) -> bool:
    """Is a Var anywhere in these objects or inside their lists, tuples, dicts or object arrays?"""
    stack, seen = list(objs), set()
    while stack:
        x = stack.pop()
        if isinstance(x, fg.Var):
            return True
        if id(x) in seen:
            continue
        seen.add(id(x))
        if isinstance(x, (list, tuple)):
            stack.extend(x)
        elif isinstance(x, dict):
            stack.extend(x.values())
        elif isinstance(x, np.ndarray) and x.dtype == object:
            stack.extend(x.ravel().tolist())
    return False
