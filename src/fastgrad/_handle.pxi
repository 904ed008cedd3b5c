# Handles and operands: what every Var-making function shares (included by _engine.pyx).

_Real = numbers.Real
_Complex = numbers.Complex
_ndarray = np.ndarray
# types that have __float__ but are not real numbers to an operator (fg.Tensor joins: a one-element Tensor
# must reach Tensor's reflected operator, not become a constant cut off from its graph)
_NOT_REAL = (str, bytes, bytearray, Var, _Complex)


def _not_a_number(cls):
    """Make ``as_real`` refuse instances of ``cls`` (operators then return NotImplemented)."""
    global _NOT_REAL
    if not isinstance(cls, type):
        raise TypeError("_not_a_number takes a class")
    if cls not in _NOT_REAL:
        _NOT_REAL = _NOT_REAL + (cls,)


cdef int as_real(object o, f64* out) except -1:
    """Store ``o`` as a float64 and return 1 if it is a real number (int, float, bool, NumPy real scalar,
    0-d real array, numbers.Real, any other object with ``__float__`` but str, bytes, complex and Var);
    return 0 otherwise (the operator then returns NotImplemented)."""
    if PyFloat_Check(o):
        out[0] = PyFloat_AS_DOUBLE(o)
        return 1
    if PyLong_Check(o):
        out[0] = PyLong_AsDouble(o)
        return 1
    if isinstance(o, _ndarray):
        if (<object>o).ndim != 0 or (<object>o).dtype.kind not in "biuf":
            return 0
        out[0] = float(o)
        return 1
    if isinstance(o, _Real):
        out[0] = float(o)
        return 1
    # NOTE: anything else that converts itself with __float__ (decimal.Decimal, a user's number type) is a
    # real number too; strings are never parsed, complex numbers never lose their imaginary part.
    if isinstance(o, _NOT_REAL) or not hasattr(type(o), "__float__"):
        return 0
    out[0] = float(o)
    return 1


cdef f64 as_float(object o, str what) except? -1.0:
    """``o`` as a float64 if it is a real number (see ``as_real``), else TypeError naming ``what``."""
    cdef f64 x
    if not as_real(o, &x):
        raise TypeError(f"{what} must be a real number, got {type(o).__name__}")
    return x


cdef inline i64 idx_of(Var v) except -1:
    """The node of handle ``v``; RuntimeError for a handle that was never given one (see ``unset``)."""
    if v.idx < 0:
        unset(v)
    return v.idx


cdef int unset(Var v) except -1:
    raise RuntimeError(
        f"this {type(v).__name__} was never initialised, so it has no node: it was made with "
        f"{type(v).__name__}.__new__ without __init__, or by a subclass whose __init__ does not call "
        "super().__init__(value)")


cdef inline Var handle(i64 i):
    """A new handle on existing node ``i`` (which must be reachable from a live handle)."""
    cdef Var v = Var.__new__(Var)
    v.idx = i
    A.refc[i] += 1
    return v


cdef Var make(u8 op, i64 a, i64 b, f64 k):
    """Create a unary/binary node over parents ``a``, ``b`` (-1: none) and constant ``k``."""
    # NOTE: the handle object is allocated BEFORE the node: allocation can run the GC, which may release
    # segments; a node with no handle yet could be recycled under us.
    cdef Var v = Var.__new__(Var)
    cdef f64 y = op_value(op, A.value[a], A.value[b] if b >= 0 else 0.0, k)
    v.idx = new_node(op, a, b, k, y)
    A.refc[v.idx] += 1
    return v


cdef Var make_leaf(f64 x):
    cdef Var v = Var.__new__(Var)
    v.idx = new_node(OP_LEAF, -1, -1, 0.0, x)
    A.refc[v.idx] += 1
    return v


cdef Var constant_or_var(object o, str fname):
    cdef f64 k
    if isinstance(o, Var):
        return <Var>o
    if as_real(o, &k):
        return make_leaf(k)
    raise TypeError(f"{fname}: expected Var or a real number, got {type(o).__name__}")


cdef i64 operand(object o, list keep, str fname) except -1:
    """Node index of a Var operand; a number becomes a leaf whose handle ``keep`` holds until it is
    referenced by the node being built."""
    cdef Var v
    if type(o) is Var:
        return idx_of(<Var>o)
    v = constant_or_var(o, fname)
    if v is not o:
        keep.append(v)
    return idx_of(v)


cdef Var make_nary(u8 op, list first, list second):
    """One SUM node over ``first``, or one DOT node over the pairs (first[k], second[k])."""
    cdef intp n = len(first), m, width = 1 if second is None else 2
    cdef Var v
    cdef f64 y = 0.0
    cdef str fname = OP_NAMES[op]
    cdef i64* arg = <i64*>malloc(max(width * n, 1) * sizeof(i64))
    if arg == NULL:
        raise MemoryError()
    keep = []
    # NOTE: the handle first: making it may run the GC, whose finalizers must not run between reading the
    # operands' indices and referencing them.
    v = Var.__new__(Var)
    try:
        for m in range(n):
            arg[width * m] = operand(first[m], keep, fname)
            if width == 2:
                arg[2 * m + 1] = operand(second[m], keep, fname)
        if width == 1:
            for m in range(n):
                y += A.value[arg[m]]
        else:
            for m in range(n):
                y += A.value[arg[2 * m]] * A.value[arg[2 * m + 1]]
        v.idx = new_nary(op, arg, width * n, n, y)
        A.refc[v.idx] += 1
    finally:
        free(arg)
    return v


def real(x, what="value"):
    """``x`` as a float if it is a real number (the rule operators use), else TypeError naming ``what``."""
    return as_float(x, what)


def _rebuild_leaf(data, grad, frozen=False, label=''):
    cdef Var v = make_leaf(data)
    A.grad[v.idx] = grad
    if frozen:
        v.requires_grad_(False)
    if label:
        set_label(v, label)
    return v


# ---------------------------------------------------------------------------------------------------
# micrograd's per-node extras: label, constructor children and op, _prev
# ---------------------------------------------------------------------------------------------------

# node index -> a handle on it that _prev hands out (the user's own handle once it is labelled)
_prev_handles = weakref.WeakValueDictionary()

# op name -> micrograd's symbol (the others keep their name: 'tanh', 'exp', ...)
_MICROGRAD_OPS = {"leaf": "", "add": "+", "addc": "+", "sub": "-", "rsubc": "-", "mul": "*", "mulc": "*",
                  "div": "/", "divc": "/", "rdivc": "/", "relu": "ReLU"}


cdef tuple check_children(object children):
    try:
        items = tuple(children)
    except TypeError:
        raise TypeError(f"_children must be an iterable of Vars, got {type(children).__name__}") from None
    for c in items:
        if not isinstance(c, Var):
            raise TypeError(f"_children must hold Vars, got {type(c).__name__}")
    return items


cdef str check_op(object op):
    if not isinstance(op, str):
        raise TypeError(f"_op must be a str, got {type(op).__name__}")
    return op


cdef int check_label(object label) except -1:
    if not isinstance(label, str):
        raise TypeError(f"label must be a str, got {type(label).__name__}")
    return 0


cdef int set_given(Var v, tuple given) except -1:
    global _n_meta
    if v.idx not in _given:
        _n_meta += 1
    _given[v.idx] = given
    return 0


cdef int set_label(Var v, str label) except -1:
    global _n_meta
    cdef i64 i = idx_of(v)
    if not label:
        if _labels.pop(i, None) is not None:
            _n_meta -= 1
        return 0
    if i not in _labels:
        _n_meta += 1
    _labels[i] = label
    _prev_handles[i] = v
    return 0


cdef Var shared_handle(i64 i):
    """The handle ``_prev`` gives for node ``i``: the one handed out before while it lives, else a new one."""
    h = _prev_handles.get(i)
    if h is None:
        h = handle(i)
        _prev_handles[i] = h
    return <Var>h


cdef set prev_of(Var v):
    cdef i64 i = idx_of(v), m
    cdef u8 op = A.op[i]
    if _n_meta != 0 and i in _given:
        return set(_given[i][0])
    if op == OP_LEAF:
        return set()
    if is_nary(op):
        return {shared_handle(args_of(i)[m]) for m in range(nary_slots(i))}
    if A.p1[i] >= 0:
        return {shared_handle(A.p0[i]), shared_handle(A.p1[i])}
    return {shared_handle(A.p0[i])}


cdef str micrograd_op(u8 op, f64 k):
    name = OP_NAMES[op]
    if name == "powc":
        if -1e15 < k < 1e15 and k == <f64>(<i64>k):
            return f"**{<i64>k}"       # micrograd prints the exponent as given: 2, not 2.0
        return f"**{k!r}"
    return _MICROGRAD_OPS.get(name, name)


def _set_grad_enabled(bint mode):
    """Set the calling thread's grad mode; returns the previous one (see ``fastgrad.no_grad``)."""
    global fastgrad_grad_off, fastgrad_grad_off_threads
    cdef bint was_on = fastgrad_grad_off == 0
    if mode and not was_on:
        fastgrad_grad_off = 0
        fastgrad_grad_off_threads -= 1
    elif not mode and was_on:
        fastgrad_grad_off = 1
        fastgrad_grad_off_threads += 1
    return was_on


def _is_grad_enabled():
    """Is the calling thread's grad mode on (operations record graph nodes)?"""
    return fastgrad_grad_off == 0
