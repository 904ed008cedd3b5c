"""Pure-Python reference engine: fastgrad's scalar ``Var`` API written micrograd-style, numbers only.

It is the oracle of the tests (every value and gradient of the compiled engine is compared with it) and the
baseline of the benchmarks. It needs no NumPy and follows the shared semantics of docs/semantics.md:

- values and gradients are Python floats (float64);
- leaf gradients accumulate across ``backward()`` calls until zeroed; interior gradients start from zero in
  every ``backward()`` (never re-propagated stale), so calling it twice adds exactly twice into the leaves;
- relu'(0) = abs'(0) = 0; ties of ``maximum``/``minimum`` split the gradient 0.5/0.5;
- IEEE results, never Python exceptions: x/0 -> ±inf or nan, log(0) -> -inf, exp overflow -> inf,
  0 ** -1 -> inf, negative base ** non-integer -> nan (never complex); x ** 0 at x = 0 is 1 with gradient 0;
- a bad operand (str, None, list, complex) is a TypeError (operators return NotImplemented).

NOTE: a real-number operand becomes a constant leaf, as in micrograd: ``v + 2`` is one ``add`` node.
NOTE: every node stores its local derivatives (one per parent), computed in the forward pass: ``backward()``
uses the values of the forward pass even if a leaf's ``.data`` was changed in between.
NOTE: ``dot`` and ``sum`` are plain loops of binary ``*`` and ``+`` nodes, one node per scalar operation, like
micrograd's ``sum((wi * xi for wi, xi in zip(w, x)), b)``: this is the pure-Python baseline that fastgrad's
fused n-ary nodes are measured against.
"""
import itertools
import math
import numbers
import operator

__all__ = ["Var", "Value", "exp", "log", "sqrt", "sin", "cos", "tanh", "sigmoid", "relu", "abs",
           "log1p", "expm1", "tan", "asin", "acos", "atan", "sinh", "cosh", "erf", "softplus", "leaky_relu",
           "maximum", "minimum", "dot", "sum"]

inf, nan = math.inf, math.nan
_creation_number = itertools.count().__next__


# ---- float functions with IEEE results where Python's math raises ----

def _div(a, b):
    """a / b; division by zero gives ±inf, or nan for 0/0."""
    try:
        return a / b
    except ZeroDivisionError:
        return nan if a == 0 or math.isnan(a) else math.copysign(inf, a) * math.copysign(1.0, b)


def _pow(a, b):
    """a ** b as C's pow(): ±inf on overflow and for 0 ** negative, nan for negative ** non-integer."""
    try:
        return math.pow(a, b)
    except ValueError:  # 0 ** negative (a pole) or negative ** non-integer
        if a != 0:
            return nan
    except OverflowError:
        pass
    return -inf if math.copysign(1.0, a) < 0 and b % 2.0 == 1.0 else inf


def _exp(x):
    try:
        return math.exp(x)
    except OverflowError:
        return inf


def _log(x):
    return math.log(x) if x > 0 else -inf if x == 0 else nan


def _sqrt(x):
    return math.sqrt(x) if x >= 0 else nan


def _sin(x):
    return math.sin(x) if math.isfinite(x) else nan


def _cos(x):
    return math.cos(x) if math.isfinite(x) else nan


def _tan(x):
    return math.tan(x) if math.isfinite(x) else nan


def _log1p(x):
    """log(1 + x); -inf at x = -1, nan below (math.log1p raises)."""
    return math.log1p(x) if x > -1 else -inf if x == -1 else nan


def _expm1(x):
    try:
        return math.expm1(x)
    except OverflowError:
        return inf


def _asin(x):
    return math.asin(x) if -1 <= x <= 1 else nan


def _acos(x):
    return math.acos(x) if -1 <= x <= 1 else nan


def _sinh(x):
    try:
        return math.sinh(x)
    except OverflowError:
        return math.copysign(inf, x)


def _cosh(x):
    try:
        return math.cosh(x)
    except OverflowError:
        return inf


def _sigmoid(x):
    """1 / (1 + e^-x), evaluated so that e^t never overflows."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = _exp(x)
    return e / (1.0 + e)


# ---- operands ----

def _number(x):
    """float(x) for a real number (bool, int, float, NumPy scalar, anything else with ``__float__``); None
    for anything else: strings are never parsed, complex numbers and arrays are not real numbers."""
    if type(x) is float:
        return x
    if isinstance(x, numbers.Real):
        return float(x)
    if isinstance(x, (str, bytes, bytearray, Var, numbers.Complex)) or not hasattr(type(x), "__float__"):
        return None
    if hasattr(x, "ndim") and (x.ndim != 0 or x.dtype.kind not in "biuf"):  # NumPy: 0-d real arrays only
        return None
    return float(x)


def _lift(x):
    """x itself if it is a Var, a constant leaf if it is a real number, else None."""
    if isinstance(x, Var):
        return x
    k = _number(x)
    return None if k is None else Var(k)


def _as_var(x):
    """x as a Var; TypeError unless it is a Var or a real number."""
    return x if isinstance(x, Var) else Var(x)


def _compare(op):
    """A comparison method: compares values, gives a plain bool, builds no node."""
    def method(self, other):
        k = other.data if isinstance(other, Var) else _number(other)
        return NotImplemented if k is None else op(self.data, k)
    method.__name__ = f"__{op.__name__}__"
    return method


def _unpickle(data, grad):
    v = Var(data)
    v.grad = grad
    return v


class Var:
    """A float64 scalar in a computation graph: ``.data``, ``.grad`` and the local derivatives to its parents.

    ``Var(x)`` makes a leaf from a real number or a 0-d real array. Interior nodes are made by the operations;
    each keeps its parents (``_prev``) and d self / d parent for each of them (``_partials``).
    """
    __slots__ = ("data", "grad", "op", "_prev", "_partials", "_order", "__weakref__")
    __array_ufunc__ = None  # NumPy defers to our reflected operators instead of building object arrays

    def __init__(self, data, _prev=(), _partials=(), op="leaf"):
        self.data = data if _prev else _leaf_value(data)
        self.grad = 0.0
        self.op = op
        self._prev = _prev
        self._partials = _partials
        self._order = _creation_number()  # creation order is a topological order

    # ---- primitives: the value and d out / d parent side by side ----

    def __add__(self, other):
        if (other := _lift(other)) is None:
            return NotImplemented
        return Var(self.data + other.data, (self, other), (1.0, 1.0), "add")

    def __mul__(self, other):
        if (other := _lift(other)) is None:
            return NotImplemented
        return Var(self.data * other.data, (self, other), (other.data, self.data), "mul")

    def __truediv__(self, other):
        if (other := _lift(other)) is None:
            return NotImplemented
        a, b = self.data, other.data
        y = _div(a, b)
        return Var(y, (self, other), (_div(1.0, b), -_div(y, b)), "div")

    def __pow__(self, other):
        if (other := _lift(other)) is None:
            return NotImplemented
        a, b = self.data, other.data
        y = _pow(a, b)
        da = 0.0 if b == 0 else b * _pow(a, b - 1.0)  # x ** 0 has gradient 0, even at x = 0
        db = 0.0 if a == 0 else y * _log(a)  # 0 ** y has gradient 0; nan for a negative base
        return Var(y, (self, other), (da, db), "pow")

    def __neg__(self):
        return Var(-self.data, (self,), (-1.0,), "neg")

    def __abs__(self):
        x = self.data
        return Var(math.fabs(x), (self,), (1.0 if x > 0 else -1.0 if x < 0 else 0.0,), "abs")

    def exp(self):
        y = _exp(self.data)
        return Var(y, (self,), (y,), "exp")

    def log(self):
        return Var(_log(self.data), (self,), (_div(1.0, self.data),), "log")

    def sqrt(self):
        y = _sqrt(self.data)
        return Var(y, (self,), (_div(0.5, y),), "sqrt")

    def sin(self):
        return Var(_sin(self.data), (self,), (_cos(self.data),), "sin")

    def cos(self):
        return Var(_cos(self.data), (self,), (-_sin(self.data),), "cos")

    def tanh(self):
        y = math.tanh(self.data)
        return Var(y, (self,), (1.0 - y * y,), "tanh")

    def sigmoid(self):
        y = _sigmoid(self.data)
        return Var(y, (self,), (y * (1.0 - y),), "sigmoid")

    def relu(self):
        x = self.data
        return Var(0.0 if x <= 0 else x, (self,), (1.0 if x > 0 else 0.0,), "relu")  # relu(nan) is nan

    def log1p(self):
        x = self.data
        return Var(_log1p(x), (self,), (_div(1.0, 1.0 + x),), "log1p")

    def expm1(self):
        x = self.data
        return Var(_expm1(x), (self,), (_exp(x),), "expm1")

    def tan(self):
        y = _tan(self.data)
        return Var(y, (self,), (1.0 + y * y,), "tan")

    def asin(self):
        x = self.data
        return Var(_asin(x), (self,), (_div(1.0, _sqrt(1.0 - x * x)),), "asin")

    def acos(self):
        x = self.data
        return Var(_acos(x), (self,), (-_div(1.0, _sqrt(1.0 - x * x)),), "acos")

    def atan(self):
        x = self.data
        return Var(math.atan(x), (self,), (1.0 / (1.0 + x * x),), "atan")

    def sinh(self):
        x = self.data
        return Var(_sinh(x), (self,), (_cosh(x),), "sinh")

    def cosh(self):
        x = self.data
        return Var(_cosh(x), (self,), (_sinh(x),), "cosh")

    def erf(self):
        x = self.data
        return Var(math.erf(x), (self,), (2.0 / math.sqrt(math.pi) * _exp(-x * x),), "erf")

    def softplus(self):  # log(1 + e^x) = max(x, 0) + log1p(e^-|x|): never overflows
        x = self.data
        y = (x if x > 0 else 0.0) + math.log1p(_exp(-math.fabs(x)))
        return Var(y, (self,), (_sigmoid(x),), "softplus")

    def leaky_relu(self, negative_slope=0.01):  # its derivative at 0 is negative_slope
        x, k = self.data, _number(negative_slope)
        if k is None:
            raise TypeError(f"negative_slope must be a real number, got {type(negative_slope).__name__}")
        return Var(x if x > 0 or math.isnan(x) else k * x, (self,), (1.0 if x > 0 else k,), "leaky_relu")

    # ---- derived: built from the primitives ----

    __radd__ = __add__  # k + self
    __rmul__ = __mul__  # k * self

    def __sub__(self, other):  # self + (-other)
        if isinstance(other, Var):
            return self + (-other)
        return NotImplemented if (k := _number(other)) is None else self + (-k)

    def __rsub__(self, other):  # other + (-self)
        return NotImplemented if (other := _lift(other)) is None else other + (-self)

    def __rtruediv__(self, other):  # other / self
        return NotImplemented if (other := _lift(other)) is None else other / self

    def __rpow__(self, other):  # other ** self: d/dself = 0 if other == 0 else out * log(other)
        return NotImplemented if (other := _lift(other)) is None else other ** self

    # ---- the backward pass ----

    def backward(self):
        """Add d self / d leaf into every leaf's ``.grad``; interior ``.grad`` are recomputed from zero."""
        # Collect every node self depends on, without recursion, then visit them newest first: a node is
        # always created after its parents, so decreasing creation number is a reverse topological order.
        nodes, seen, stack = [], {self}, [self]
        while stack:
            v = stack.pop()
            nodes.append(v)
            for p in v._prev:
                if p not in seen:
                    seen.add(p)
                    stack.append(p)
        nodes.sort(key=_by_creation, reverse=True)
        for v in nodes:
            if v._prev:
                v.grad = 0.0
        self.grad += 1.0
        for v in nodes:
            g = v.grad
            for p, d in zip(v._prev, v._partials):
                p.grad += d * g

    # ---- plain Python values: no graph node ----

    @property
    def is_leaf(self):
        return not self._prev

    def detach(self):
        """A new leaf with the same value."""
        return Var(self.data)

    __lt__, __le__, __gt__, __ge__, __eq__, __ne__ = map(
        _compare, (operator.lt, operator.le, operator.gt, operator.ge, operator.eq, operator.ne))
    __hash__ = object.__hash__  # identity: Vars are graph nodes, usable as dict keys

    def __float__(self):
        return self.data

    def __bool__(self):
        return bool(self.data)

    def __reduce__(self):  # a leaf pickles with its value and gradient; a graph is never saved
        if self._prev:
            raise TypeError("only leaf Vars can be pickled (its graph is not saved); "
                            "pickle v.detach() or float(v)")
        return _unpickle, (self.data, self.grad)

    def __repr__(self):
        return f"Var(data={self.data}, grad={self.grad})"


Value = Var  # micrograd's name: micrograd code runs unchanged
_by_creation = operator.attrgetter("_order")


def _leaf_value(x):
    """The value of Var(x): a real number or a 0-d real array as a float, else TypeError."""
    k = _number(x)
    kind = getattr(getattr(x, "dtype", None), "kind", None)
    if k is None and getattr(x, "shape", None) == () and kind in ("b", "i", "u", "f"):  # a 0-d real array
        k = float(x)
    if k is None:
        raise TypeError(f"Var() takes a real number, not {type(x).__name__!r}")
    return k


# ---- functional forms: a Var gives a Var, a plain real number gives a float ----

def _function(name, method):
    def function(x):
        return method(x) if isinstance(x, Var) else method(Var(x)).data
    function.__name__ = function.__qualname__ = name
    function.__doc__ = f"{name}(x): a Var node for a Var, a float for a real number."
    return function


exp, log, sqrt, sin, cos, tanh, sigmoid, relu = (
    _function(name, getattr(Var, name))
    for name in ("exp", "log", "sqrt", "sin", "cos", "tanh", "sigmoid", "relu"))
log1p, expm1, tan, asin, acos, atan, sinh, cosh, erf, softplus = (
    _function(name, getattr(Var, name))
    for name in ("log1p", "expm1", "tan", "asin", "acos", "atan", "sinh", "cosh", "erf", "softplus"))
abs = _function("abs", Var.__abs__)


def leaky_relu(x, negative_slope=0.01):
    """x if x > 0 else negative_slope * x: a Var node for a Var, a float for a real number."""
    return x.leaky_relu(negative_slope) if isinstance(x, Var) else Var(x).leaky_relu(negative_slope).data


def _operands(u, v):
    """u and v as Vars, and whether both were plain numbers (then the result is a float)."""
    return _as_var(u), _as_var(v), not isinstance(u, Var) and not isinstance(v, Var)


def maximum(u, v):
    """max(u, v); a tie splits the gradient 0.5/0.5."""
    u, v, numbers_only = _operands(u, v)
    a, b = u.data, v.data
    d = 1.0 if a > b else 0.0 if a < b else 0.5
    out = Var(a if a >= b or math.isnan(a) else b, (u, v), (d, 1.0 - d), "max")
    return out.data if numbers_only else out


def minimum(u, v):
    """min(u, v); a tie splits the gradient 0.5/0.5."""
    u, v, numbers_only = _operands(u, v)
    a, b = u.data, v.data
    d = 1.0 if a < b else 0.0 if a > b else 0.5
    out = Var(a if a <= b or math.isnan(a) else b, (u, v), (d, 1.0 - d), "min")
    return out.data if numbers_only else out


def sum(vs):
    """vs[0] + vs[1] + ... as a left-to-right chain of binary + nodes from a leaf 0.0 (empty: that leaf)."""
    total = Var(0.0)
    for v in vs:
        total = total + v
    return total


def dot(ws, xs):
    """sum_k ws[k] * xs[k] as binary * and + nodes, one per scalar operation (micrograd's neuron)."""
    ws, xs = list(ws), list(xs)
    if len(ws) != len(xs):
        raise ValueError(f"dot() needs sequences of equal length, got {len(ws)} and {len(xs)}")
    return sum([w * x for w, x in zip(ws, xs)])
