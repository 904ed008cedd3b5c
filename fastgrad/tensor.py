"""`fg.Tensor`: NumPy-backed tensors on the same engine as `Var` (issue 10).

A Tensor is a NumPy array (float64 or float32, kept) plus, when it takes part in differentiation, a node of
the engine's graph: a leaf for `Tensor(x, requires_grad=True)`, an operation node (a custom node whose rule
is a `TensorRule`) for a result. The graph's ordering, marks, reference counts and reverse sweep are the
engine's; only the adjoints are arrays (docs/engine.md, "Tensors"). Elementwise ops take their values and
partials from the op table's compiled kernels (`fastgrad._elementwise`), so `Tensor([x]).exp()` is the same
bits as `Var(x).exp()`. A result no input of which requires grad (or made inside `fg.no_grad()`) is a plain
array with no node.

Broadcasting follows NumPy; each input's gradient is summed back to its own shape. Shape errors raise when
the op is built. Elementwise ops compute float32 inputs in float64 and round to float32; the reductions,
joins and the softmax family compute in the input's dtype (as PyTorch); either way the result keeps float32.

Besides the methods: `matmul`, `maximum`, `minimum`, `where`, `concatenate`, `stack`, and the numerically
stable `softmax`, `log_softmax`, `logsumexp` (shifted by the max: finite at ±1000; ±inf as PyTorch). The
losses on Tensors are in `fastgrad.tensor_functional`.
"""
from __future__ import annotations

import numbers
from typing import Any, Callable, Optional, Sequence, Tuple

import numpy as np

from fastgrad import _elementwise, _engine, _optable
from fastgrad._engine import TensorRule, Var

__all__ = ["Tensor", "concatenate", "log_softmax", "logsumexp", "matmul", "maximum", "minimum", "softmax",
           "stack", "where"]

_FLOATS = (np.dtype(np.float64), np.dtype(np.float32))
_CODES = {op.name: code for code, op in enumerate(_optable.OPS)}


def _as_array(data: Any, what: str = "Tensor()") -> np.ndarray:
    """A fresh C-contiguous float64/float32 copy of ``data`` (ints and bools become float64)."""
    if isinstance(data, Tensor):
        return data.data.copy()
    if isinstance(data, Var):
        return np.array(data.data)
    try:
        arr = np.array(data, copy=True, order="C")
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{what} takes array_like real numbers: {exc}") from None
    if arr.dtype in _FLOATS:
        return arr
    if arr.dtype.kind in "biu":
        return arr.astype(np.float64)
    raise TypeError(f"{what} takes real numbers (float64, float32, or ints/bools as float64), "
                    f"got dtype {arr.dtype}")


def _unbroadcast(g: np.ndarray, shape: Tuple[int, ...]) -> np.ndarray:
    """Sum ``g`` over the axes broadcasting added or stretched, back to ``shape``."""
    if g.shape == shape:
        return g
    extra = g.ndim - len(shape)
    if extra:
        g = g.sum(axis=tuple(range(extra)))
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    if stretched:
        g = g.sum(axis=stretched, keepdims=True)
    return g


class Tensor(_engine.TensorBase):
    """An n-dimensional array of float64 or float32 that records operations for `backward()`.

    `Tensor(array_like, requires_grad=False)`: the data is copied. `.data` (ndarray), `.grad` (ndarray of
    the same shape and dtype, or None before any backward), `.shape`, `.ndim`, `.dtype`, `.T`,
    `.backward()` (scalar outputs), `.item()`, `.numpy()`, `.detach()`, `.argmax(axis)`.
    Raises TypeError for non-real data, and for integer/bool data with `requires_grad=True`.
    """

    # NOTE: `data`, `_node`, the operators (+ - * / ** @, unary - and abs) and the elementwise methods of
    # the op table (exp, log, tanh, relu, sigmoid, ...) come from the engine's TensorBase, where each calls
    # the C fast path directly (src/fastgrad/_tensor_ops.pxi.in); everything else is here.
    __slots__ = ()
    __array_ufunc__ = None    # NumPy defers to Tensor's reflected operators

    def __init__(self, data: Any, requires_grad: bool = False) -> None:
        if not isinstance(requires_grad, bool):
            raise TypeError(f"requires_grad must be a bool, got {type(requires_grad).__name__}")
        if requires_grad and not isinstance(data, Tensor):
            probe = np.asarray(data)
            if probe.dtype.kind in "biu":
                raise TypeError(f"only float tensors can require gradients, got dtype {probe.dtype}")
        self.data = _as_array(data)
        self._node: Optional[Var] = None
        if requires_grad:
            self._become_leaf()

    def _become_leaf(self) -> None:
        """Take part in differentiation as a leaf: a node of the graph whose gradient is an array of this
        tensor's dtype (none until a backward reaches it)."""
        node = Var(0.0)
        _engine._tensor_leaf(node, self.data.dtype)
        self._node = node

    @classmethod
    def _result(cls, data: np.ndarray, node: Optional[Var]) -> Tensor:
        t = cls.__new__(cls)
        t.data = data if type(data) is np.ndarray else np.asarray(data)     # NumPy scalars: 0-d arrays
        t._node = node
        return t

    # ---- state ----
    @property
    def shape(self) -> Tuple[int, ...]:
        """The array's shape."""
        return self.data.shape

    @property
    def ndim(self) -> int:
        """The number of dimensions."""
        return self.data.ndim

    @property
    def dtype(self) -> np.dtype:
        """float64 or float32."""
        return self.data.dtype

    @property
    def size(self) -> int:
        """The number of elements."""
        return self.data.size

    @property
    def requires_grad(self) -> bool:
        """Does this tensor take part in differentiation (a leaf made with requires_grad=True and not frozen,
        or a result of one, built outside `fg.no_grad()`)?"""
        return self._node is not None and (not self._node.is_leaf or self._node.requires_grad)

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        """Freeze (`False`) or unfreeze (`True`) a leaf tensor, in place; returns it. A frozen leaf keeps its
        place among a module's parameters but gets no gradient, and optimizers leave it alone. A tensor made
        without requires_grad starts taking part with `True`. RuntimeError for an op's result (only leaves
        have the flag, as in PyTorch), TypeError unless `requires_grad` is a bool."""
        if not isinstance(requires_grad, bool):
            raise TypeError(f"requires_grad must be a bool, got {type(requires_grad).__name__}")
        if self._node is None:
            if requires_grad:
                self._become_leaf()
            return self
        if not self._node.is_leaf:
            raise RuntimeError("requires_grad_(): only a leaf tensor has the flag (this is an op's result; "
                               "use .detach() for a tensor outside the graph)")
        self._node.requires_grad_(requires_grad)
        return self

    @property
    def is_leaf(self) -> bool:
        """True for a tensor made by the user (or outside the graph), False for a recorded op's result."""
        return self._node is None or self._node.is_leaf

    @property
    def grad(self) -> Optional[np.ndarray]:
        """The accumulated gradient of a leaf (None before any backward reached it, and for non-leaves)."""
        if self._node is None or not self._node.is_leaf:
            return None
        return _engine._tensor_grad(self._node)

    @grad.setter
    def grad(self, value: Any) -> None:
        if self._node is None or not self._node.is_leaf:
            raise ValueError("only a leaf Tensor that requires grad has a settable .grad")
        if value is None:
            _engine._set_tensor_grad(self._node, self.dtype)
            return
        g = np.array(value, dtype=self.dtype, copy=True)
        if g.shape != self.shape:
            raise ValueError(f"grad must have shape {self.shape}, got {g.shape}")
        _engine._set_tensor_grad(self._node, g)

    def zero_grad(self) -> None:
        """Set the gradient to zeros, in place (the buffer is reused by later backward passes)."""
        g = self.grad
        if g is not None:
            g.fill(0.0)

    def item(self) -> float:
        """The value of a one-element tensor as a float; ValueError for more elements."""
        if self.data.size != 1:
            raise ValueError(f"item() needs a tensor of one element, got shape {self.shape}")
        return float(self.data.reshape(()))

    def numpy(self) -> np.ndarray:
        """The data array itself (shared, as PyTorch's `.numpy()` of a CPU tensor)."""
        return self.data

    def detach(self) -> Tensor:
        """A tensor sharing this one's data, outside the graph."""
        return Tensor._result(self.data, None)

    def argmax(self, axis: Optional[int] = None) -> np.ndarray:
        """NumPy's argmax of the data (an integer array, outside the graph)."""
        return np.argmax(self.data, axis=axis)

    def __reduce__(self) -> Any:
        """Pickle and deepcopy a leaf: its data, whether it requires grad, and its gradient."""
        if self._node is not None and not self._node.is_leaf:
            raise TypeError("only leaf Tensors can be pickled (the graph is not saved); pickle t.detach()")
        frozen = self._node is not None and not self._node.requires_grad
        return (_rebuild, (self.data, self._node is not None, self.grad, frozen))

    def __len__(self) -> int:
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __repr__(self) -> str:
        body = np.array2string(self.data, separator=", ", prefix="Tensor(")
        extra = ", requires_grad=True" if self.requires_grad else ""
        dtype = "" if self.dtype == np.float64 else f", dtype={self.dtype}"
        return f"Tensor({body}{dtype}{extra})"

    def __float__(self) -> float:
        return self.item()

    def __bool__(self) -> bool:
        if self.data.size != 1:
            raise ValueError("the truth value of a tensor of more than one element is ambiguous")
        return bool(self.data.reshape(()))

    # ---- backward ----
    def backward(self, gradient: Any = None) -> None:
        """Backpropagate from this tensor: every leaf that requires grad gains d self / d leaf in `.grad`.
        Scalar (one-element) outputs only unless `gradient` (same shape) is given."""
        if self._node is None:
            raise RuntimeError("backward(): this tensor does not require grad (no input of it did, or it was "
                               "made inside fg.no_grad())")
        if gradient is None:
            if self.data.size != 1:
                raise RuntimeError("backward() without a gradient needs a scalar output, got shape "
                                   f"{self.shape}; pass gradient= of that shape, or reduce first (.sum())")
            seed = np.ones(self.shape, dtype=np.float64)
        else:
            seed = np.array(gradient.data if isinstance(gradient, Tensor) else gradient, dtype=np.float64)
            if seed.shape != self.shape:
                raise ValueError(f"backward(): gradient has shape {seed.shape}, the output {self.shape}")
        _engine._tensor_backward(self._node, seed, True)       # seed: a fresh array, handed over


    # ---- reductions and shape ----
    def sum(self, axis: Any = None, keepdims: bool = False) -> Tensor:
        """Sum over ``axis`` (all axes by default)."""
        if axis is None and keepdims is False:
            return _engine._tensor_total(self, False)
        return _sum(self, axis, keepdims, mean=False)

    def mean(self, axis: Any = None, keepdims: bool = False) -> Tensor:
        """Mean over ``axis`` (all axes by default)."""
        if axis is None and keepdims is False:
            return _engine._tensor_total(self, True)
        return _sum(self, axis, keepdims, mean=True)

    def max(self, axis: Any = None, keepdims: bool = False) -> Tensor:
        """Largest entry over ``axis`` (all axes by default); tied entries share the gradient evenly.
        ValueError for an empty reduction."""
        return _extremum(self, axis, keepdims, largest=True)

    def min(self, axis: Any = None, keepdims: bool = False) -> Tensor:
        """Smallest entry over ``axis`` (all axes by default); tied entries share the gradient evenly.
        ValueError for an empty reduction."""
        return _extremum(self, axis, keepdims, largest=False)

    def maximum(self, other: Any) -> Tensor:
        """Elementwise larger of this tensor and ``other`` (see `fastgrad.tensor.maximum`)."""
        return maximum(self, other)

    def minimum(self, other: Any) -> Tensor:
        """Elementwise smaller of this tensor and ``other`` (see `fastgrad.tensor.minimum`)."""
        return minimum(self, other)

    def softmax(self, axis: int = -1) -> Tensor:
        """exp(x) / sum(exp(x)) along ``axis``, shifted by the max: no overflow (see `softmax`)."""
        return softmax(self, axis)

    def log_softmax(self, axis: int = -1) -> Tensor:
        """x - logsumexp(x) along ``axis``, stably (see `log_softmax`)."""
        return log_softmax(self, axis)

    def logsumexp(self, axis: Any = None, keepdims: bool = False) -> Tensor:
        """log(sum(exp(x))) over ``axis`` (all axes by default), stably (see `logsumexp`)."""
        return logsumexp(self, axis, keepdims)

    def reshape(self, *shape: Any) -> Tensor:
        """The same elements in ``shape`` (one -1 allowed); ValueError when the sizes differ."""
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        out = self.data.reshape(shape)
        original = self.shape
        return _make("reshape", out, [self], lambda g: (g.reshape(original),))

    def transpose(self, *axes: Any) -> Tensor:
        """Axes permuted by ``axes`` (reversed by default); ValueError for a bad permutation."""
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        perm = tuple(axes) if axes else tuple(reversed(range(self.ndim)))
        out = np.transpose(self.data, perm)
        inverse = tuple(np.argsort(perm))
        return _make("transpose", np.ascontiguousarray(out), [self], lambda g: (np.transpose(g, inverse),))

    @property
    def T(self) -> Tensor:
        """The transpose (axes reversed)."""
        return self.transpose()

    def __getitem__(self, index: Any) -> Tensor:
        if isinstance(index, Tensor):
            index = index.data
        out = self.data[index]
        shape, dtype = self.shape, self.dtype

        def backward(g: np.ndarray) -> Tuple[np.ndarray]:
            full = np.zeros(shape, dtype=np.float64)
            np.add.at(full, index, g)           # repeated indices accumulate
            return (full,)
        return _make("index", np.array(out, dtype=dtype, copy=True), [self], backward)


def _rebuild(data: np.ndarray, requires_grad: bool, grad: Optional[np.ndarray],
             frozen: bool = False) -> Tensor:
    t = Tensor(data, requires_grad=requires_grad)
    if grad is not None:
        t.grad = grad
    if frozen:
        t._node.requires_grad_(False)
    return t


# ---- building results ----

def _operand(x: Any) -> Tuple[np.ndarray, Optional[Var], Any]:
    """(array, node or None, original) of an operand: a Tensor, a Var (0-d), or array_like constants."""
    if isinstance(x, Tensor):
        return x.data, x._node, x
    if isinstance(x, Var):
        return np.array(x.data), x, x
    if isinstance(x, (numbers.Real, np.ndarray, list, tuple)) and not isinstance(x, bool):
        return _as_array(x, "a Tensor operand"), None, x
    if isinstance(x, bool):
        return np.array(float(x)), None, x
    raise TypeError(f"unsupported Tensor operand: {type(x).__name__}")


def _make(name: str, out: np.ndarray, inputs: Sequence[Any], backward: Callable[[np.ndarray], Tuple[Any, ...]]
          ) -> Tensor:
    """The result ``out`` of op ``name`` over ``inputs``: a node over the inputs that take part in
    differentiation, whose rule is ``backward(g) -> one gradient per input``."""
    nodes = [t._node if isinstance(t, Tensor) else t if isinstance(t, Var) else None for t in inputs]
    live = [n for n in nodes if n is not None]
    if not live or not _engine._is_grad_enabled():
        return Tensor._result(out, None)
    if len(live) < len(nodes):
        keep = [i for i, n in enumerate(nodes) if n is not None]

        def rule(g: np.ndarray) -> Tuple[Any, ...]:
            grads = backward(g)
            return tuple(grads[i] for i in keep)
    else:
        rule = backward
    node = _engine.custom(0.0, live, TensorRule(name, rule))
    return Tensor._result(out, node)


def _result_dtype(*operands: Any) -> np.dtype:
    """float32 if every array operand is float32, else float64. Python numbers and Vars are "weak" (as in
    NumPy 2 and PyTorch): `t32 * 2.0` stays float32."""
    arrays = [o.data if isinstance(o, Tensor) else o for o in operands
              if isinstance(o, (Tensor, np.ndarray)) or (isinstance(o, (list, tuple)))]
    arrays = [np.asarray(a) for a in arrays]
    if arrays and all(a.dtype == np.float32 for a in arrays):
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def _f64(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float64).reshape(-1)


def _unary(name: str, x: Any, k: float = 0.0) -> Tensor:
    a, _, orig = _operand(x)
    code = _CODES[name]
    dtype = _result_dtype(orig)
    af = _f64(a)
    y = np.empty(af.shape[0])
    _elementwise.value(code, af, None, k, y)
    out = y.reshape(a.shape).astype(dtype, copy=False)

    def backward(g: np.ndarray) -> Tuple[np.ndarray]:
        ga = np.zeros(af.shape[0])
        _elementwise.adjoint(code, af, None, k, y, _f64(g), ga, None)
        return (ga.reshape(a.shape),)
    return _make(name, out, [orig], backward)


def _binary(name: str, x: Any, z: Any) -> Tensor:
    a, _, ox = _operand(x)
    b, _, oz = _operand(z)
    try:
        shape = np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ValueError(f"{name}: shapes {a.shape} and {b.shape} do not broadcast") from None
    code = _CODES[name]
    dtype = _result_dtype(ox, oz)
    af = _f64(a if a.shape == shape else np.broadcast_to(a, shape))
    bf = _f64(b if b.shape == shape else np.broadcast_to(b, shape))
    y = np.empty(af.shape[0])
    _elementwise.value(code, af, bf, 0.0, y)
    out = y.reshape(shape).astype(dtype, copy=False)

    def backward(g: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        ga, gb = np.zeros(af.shape[0]), np.zeros(af.shape[0])
        _elementwise.adjoint(code, af, bf, 0.0, y, _f64(g if g.shape == shape else np.broadcast_to(g, shape)),
                             ga, gb)
        return _unbroadcast(ga.reshape(shape), a.shape), _unbroadcast(gb.reshape(shape), b.shape)
    return _make(name, out, [ox, oz], backward)


def _sum(x: Tensor, axis: Any, keepdims: bool, mean: bool) -> Tensor:
    a = x.data
    axes = _axes(axis, a.ndim)
    out = a.sum(axis=axes, keepdims=keepdims)
    count = 1
    for ax in axes:
        count *= a.shape[ax]
    if mean:
        out = out / count if count else out * np.nan
    out = np.asarray(out, dtype=a.dtype)
    shape = a.shape

    def backward(g: np.ndarray) -> Tuple[np.ndarray]:
        if not keepdims:
            g = np.expand_dims(g, axes)
        g = np.broadcast_to(g, shape)
        return ((g / count) if mean else np.array(g),)
    return _make("mean" if mean else "sum", out, [x], backward)


def _axes(axis: Any, ndim: int) -> Tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    items = axis if isinstance(axis, (tuple, list)) else (axis,)
    out = []
    for ax in items:
        if isinstance(ax, bool) or not isinstance(ax, (int, np.integer)):
            raise TypeError(f"axis must be an int or a tuple of ints, got {type(ax).__name__}")
        if not -ndim <= ax < ndim:
            raise ValueError(f"axis {ax} is out of range for a tensor of {ndim} dimensions")
        out.append(int(ax) % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"repeated axis in {axis!r}")
    return tuple(sorted(out))


def matmul(x: Any, z: Any) -> Tensor:
    """Matrix product of 1-D or 2-D tensors (NumPy's `@`). ValueError for mismatched inner sizes."""
    return _engine._tensor_matmul(x, z)


def _matmul(x: Any, z: Any) -> Tensor:
    """`matmul`'s general path (the engine's fast path takes two float64 matrices)."""
    a, _, ox = _operand(x)
    b, _, oz = _operand(z)
    if not (1 <= a.ndim <= 2 and 1 <= b.ndim <= 2):
        raise ValueError(f"matmul: 1-D or 2-D operands only, got shapes {a.shape} and {b.shape}")
    if a.shape[-1] != b.shape[0]:
        raise ValueError(f"matmul: inner sizes differ: {a.shape} @ {b.shape}")
    dtype = _result_dtype(ox, oz)
    out = np.matmul(a, b).astype(dtype, copy=False)
    a2 = a if a.ndim == 2 else a[None, :]
    b2 = b if b.ndim == 2 else b[:, None]

    def backward(g: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        g2 = np.asarray(g, dtype=np.float64).reshape(a2.shape[0], b2.shape[1])
        ga = (g2 @ b2.T).reshape(a.shape)
        gb = (a2.T @ g2).reshape(b.shape)
        return ga, gb
    return _make("matmul", out, [ox, oz], backward)


# a Tensor is never a plain number to the scalar engine: `Var + Tensor` goes to Tensor.__radd__, and
# fg.exp(tensor) is a TypeError instead of a float cut off from the graph
_engine._not_a_number(Tensor)

# ---- reductions that select: max, min ----

def _extremum(x: Tensor, axis: Any, keepdims: bool, largest: bool) -> Tensor:
    a = x.data
    axes = _axes(axis, a.ndim)
    name = "max" if largest else "min"
    if any(a.shape[ax] == 0 for ax in axes):
        raise ValueError(f"{name}(): empty reduction (shape {a.shape}, axis {axis!r}) has no {name}imum")
    # np.asarray: a 0-d input reduces to a NumPy scalar, and .data is always an ndarray
    out = np.asarray(a.max(axis=axes, keepdims=True) if largest else a.min(axis=axes, keepdims=True))
    result = out if keepdims else out.reshape([n for i, n in enumerate(a.shape) if i not in axes])

    def backward(g: np.ndarray) -> Tuple[np.ndarray]:
        # NOTE: ties split evenly, as the scalar max/min (and torch.amax/amin): each entry equal to the
        # result gets g / (number of such entries); a nan result gives nan gradients along its reduction.
        hit = a == out
        share = np.asarray(g).reshape(out.shape) / hit.sum(axis=axes, keepdims=True)
        return (hit * share,)
    return _make(name, result, [x], backward)


# ---- elementwise selections ----

# NOTE: `fg.maximum`/`fg.minimum` stay the engine's scalar functions: a Python wrapper that dispatched on
# Tensor would cost every scalar call about 130 ns (measured on Vars: 177 ns -> 309 ns, +75%). Tensors use
# these two functions or `Tensor.maximum`/`Tensor.minimum`.
def maximum(a: Any, b: Any) -> Tensor:
    """Elementwise larger of ``a`` and ``b`` (Tensors, Vars, numbers or arrays; NumPy broadcasting): the op
    table's `max` row, so a tie splits the gradient evenly, as `fg.maximum` does for Vars. Returns a Tensor
    (float32 if every array operand is). ValueError when the shapes do not broadcast, TypeError for a
    non-real operand."""
    return _engine._tensor_binop(_CODES["max"], -1, 1.0, -1, a, b)


def minimum(a: Any, b: Any) -> Tensor:
    """Elementwise smaller of ``a`` and ``b``; a tie splits the gradient evenly. Operands, result and errors
    as `maximum`."""
    return _engine._tensor_binop(_CODES["min"], -1, 1.0, -1, a, b)


def where(condition: Any, a: Any, b: Any) -> Tensor:
    """``a`` where ``condition`` is True, else ``b``, elementwise with NumPy broadcasting of all three.

    ``condition`` is a bool array_like (e.g. ``x.data > 0``), never differentiated; ``a`` and ``b`` are
    Tensors, Vars, numbers or arrays, and each gets the gradient of the entries it supplied, summed back to
    its shape. The result is float32 if every array operand is. TypeError for a non-bool condition,
    ValueError when the shapes do not broadcast.
    """
    cond = condition.data if isinstance(condition, Tensor) else np.asarray(condition)
    if cond.dtype != np.bool_:
        raise TypeError(f"where(): the condition must be bool (e.g. x.data > 0), got dtype {cond.dtype}")
    xa, _, ox = _operand(a)
    xb, _, ob = _operand(b)
    try:
        np.broadcast_shapes(cond.shape, xa.shape, xb.shape)
    except ValueError:
        raise ValueError(f"where(): shapes {cond.shape}, {xa.shape} and {xb.shape} do not broadcast"
                         ) from None
    dtype = _result_dtype(ox, ob)
    out = np.where(cond, xa, xb).astype(dtype, copy=False)

    def backward(g: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        zero = np.zeros((), dtype=g.dtype)
        return (_unbroadcast(np.where(cond, g, zero), xa.shape),
                _unbroadcast(np.where(cond, zero, g), xb.shape))
    return _make("where", out, [ox, ob], backward)


# ---- joining ----

def _operands(tensors: Any, name: str) -> Tuple[list, list]:
    if isinstance(tensors, (Tensor, np.ndarray)) or not isinstance(tensors, (list, tuple)):
        raise TypeError(f"{name}(): takes a list or tuple of tensors, got {type(tensors).__name__}")
    if not tensors:
        raise ValueError(f"{name}(): needs at least one tensor")
    arrays, originals = [], []
    for t in tensors:
        arr, _, orig = _operand(t)
        arrays.append(arr)
        originals.append(orig)
    return arrays, originals


def _axis_of(axis: Any, ndim: int, name: str) -> int:
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"{name}(): axis must be an int, got {type(axis).__name__}")
    if not -ndim <= axis < ndim:
        raise ValueError(f"{name}(): axis {axis} is out of range for {ndim} dimensions")
    return int(axis) % ndim


def concatenate(tensors: Sequence[Any], axis: int = 0) -> Tensor:
    """Join tensors (or arrays, Vars count as 0-d and cannot be joined) along an existing ``axis``, as
    `np.concatenate`; each input gets its slice of the gradient. The result is float32 if every input is.
    TypeError for a non-sequence or a bad axis type, ValueError for no inputs, 0-d inputs, differing numbers
    of dimensions or sizes off the axis, or an axis out of range."""
    arrays, originals = _operands(tensors, "concatenate")
    ndim = arrays[0].ndim
    if ndim == 0:
        raise ValueError("concatenate(): 0-d tensors cannot be concatenated (use stack)")
    ax = _axis_of(axis, ndim, "concatenate")
    first = arrays[0].shape
    for arr in arrays[1:]:
        if arr.ndim != ndim or arr.shape[:ax] + arr.shape[ax + 1:] != first[:ax] + first[ax + 1:]:
            raise ValueError(f"concatenate(): shapes {first} and {arr.shape} differ off axis {ax}")
    out = np.concatenate(arrays, axis=ax).astype(_result_dtype(*originals), copy=False)
    bounds = np.cumsum([arr.shape[ax] for arr in arrays])[:-1]

    def backward(g: np.ndarray) -> list:
        return np.split(g, bounds, axis=ax)
    return _make("concatenate", out, originals, backward)


def stack(tensors: Sequence[Any], axis: int = 0) -> Tensor:
    """Join tensors of one shape along a new ``axis``, as `np.stack`; each input gets its slice of the
    gradient. The result is float32 if every input is. TypeError for a non-sequence or a bad axis type,
    ValueError for no inputs, differing shapes or an axis out of range."""
    arrays, originals = _operands(tensors, "stack")
    first = arrays[0].shape
    for arr in arrays[1:]:
        if arr.shape != first:
            raise ValueError(f"stack(): every tensor needs the same shape, got {first} and {arr.shape}")
    ax = _axis_of(axis, len(first) + 1, "stack")
    out = np.stack(arrays, axis=ax).astype(_result_dtype(*originals), copy=False)
    lead = (slice(None),) * ax

    def backward(g: np.ndarray) -> list:
        return [g[lead + (k,)] for k in range(len(arrays))]
    return _make("stack", out, originals, backward)


# ---- the softmax family: shifted by the max, so nothing overflows at ±1000 ----

def softmax(x: Any, axis: int = -1) -> Tensor:
    """exp(x) / sum(exp(x)) along ``axis`` (default the last), computed as exp(x - max) / sum(...): finite at
    ±1000; an entry of +inf (or a row of -inf) gives nan, as in PyTorch. Keeps the input's dtype. TypeError
    or ValueError for a bad axis; a 0-d input is one element (its softmax is 1)."""
    a, _, orig = _operand(x)
    ax: Optional[int] = _axis_of(axis, max(a.ndim, 1), "softmax")
    if a.ndim == 0:
        ax = None                   # a 0-d input is one element (axis 0 or -1)
    e = np.exp(a - a.max(axis=ax, keepdims=True))
    s = np.asarray(e / e.sum(axis=ax, keepdims=True))

    def backward(g: np.ndarray) -> Tuple[np.ndarray]:
        return (s * (g - (g * s).sum(axis=ax, keepdims=True)),)
    return _make("softmax", s, [orig], backward)


def log_softmax(x: Any, axis: int = -1) -> Tensor:
    """x - logsumexp(x) along ``axis`` (default the last), computed from x - max: finite at ±1000 (-2000,
    not -inf, for the far entry); an entry of +inf (or a row of -inf) gives nan and an entry of -inf gives
    -inf, as in PyTorch. Keeps the input's dtype. TypeError or ValueError for a bad axis."""
    a, _, orig = _operand(x)
    ax: Optional[int] = _axis_of(axis, max(a.ndim, 1), "log_softmax")
    if a.ndim == 0:
        ax = None                   # a 0-d input is one element (axis 0 or -1)
    z = a - a.max(axis=ax, keepdims=True)
    e = np.exp(z)
    s = e.sum(axis=ax, keepdims=True)
    out = np.asarray(z - np.log(s))

    def backward(g: np.ndarray) -> Tuple[np.ndarray]:
        return (g - (e / s) * g.sum(axis=ax, keepdims=True),)
    return _make("log_softmax", out, [orig], backward)


def logsumexp(x: Any, axis: Any = None, keepdims: bool = False) -> Tensor:
    """log(sum(exp(x))) over ``axis`` (an int, a tuple, or None for all axes), shifted by the max:
    1000 + log 2 for [1000, 1000]. As PyTorch: +inf if an entry is +inf, -inf if every entry is -inf, nan
    for a nan. Its gradient is softmax(x). Keeps the input's dtype. ValueError for an empty reduction or a
    bad axis."""
    a, _, orig = _operand(x)
    axes = _axes(axis, a.ndim)
    if any(a.shape[ax] == 0 for ax in axes):
        raise ValueError(f"logsumexp(): empty reduction (shape {a.shape}, axis {axis!r})")
    m = np.asarray(a.max(axis=axes, keepdims=True))
    m[np.isinf(m)] = 0.0           # PyTorch's guard: inf - inf would make a nan of an infinite result
    lse = np.asarray(np.log(np.exp(a - m).sum(axis=axes, keepdims=True)) + m)
    out = lse if keepdims else lse.reshape([n for i, n in enumerate(a.shape) if i not in axes])

    def backward(g: np.ndarray) -> Tuple[np.ndarray]:
        return (np.asarray(g).reshape(lse.shape) * np.exp(a - lse),)
    return _make("logsumexp", out, [orig], backward)


# the engine's fast paths (float64 C-contiguous operands) fall back to these general ones
_engine._tensor_register(Tensor, _binary, _unary, _matmul, lambda x, mean: _sum(x, None, False, mean))
