# Tensor nodes (included by _engine.pyx): rows of the same graph whose values are NumPy arrays.
#
# A Tensor leaf is an OP_LEAF node registered in ``_tensor_grads`` (node -> its gradient array, or None
# before any backward). A Tensor operation is an OP_CUSTOM node whose rule is a ``TensorRule``: its inputs
# are the operands (Tensor nodes or Var nodes), the arrays its backward needs are held by the rule (the
# side table of payloads). The graph's ordering, marks, reference counts and reverse sweep are the engine's
# own; only an adjoint is an array, kept per walk in ``_walk_tensor_adj[wk]`` (node -> array) beside the
# walk's scalar marks: a tensor node reached by a walk is marked there (an ``acc`` of 0.0) and pending as
# any node, and its rule runs when the sweep comes to it, as a custom op's does.

cdef dict _tensor_grads = {}     # tensor leaf node -> accumulated gradient (ndarray), or its dtype before any
cdef list _walk_tensor_adj = []  # walk record k -> {tensor node: adjoint array} while walk k runs
cdef intp _n_tensor = 0          # entries of _tensor_grads (freeing a node tests this first)


cdef class TensorRule:
    """The reverse rule of one Tensor operation: ``backward(g)`` takes the adjoint of the output (an array of
    its shape) and returns one gradient per input (an array of that input's shape, or None for none)."""
    cdef public object backward
    cdef public str name

    def __init__(self, str name, backward):
        self.name = name
        self.backward = backward

    def __repr__(self):
        return f"<TensorRule {self.name}>"

    def __call__(self, g):
        # the engine runs a TensorRule on its array adjoint (run_tensor_rule), never as a scalar rule
        raise TypeError(f"tensor op {self.name}: its rule takes an array adjoint")


cdef void forget_tensor(i64 i) noexcept:
    """Freed node ``i`` was a tensor leaf: drop its gradient array."""
    global _n_tensor
    if _tensor_grads.pop(i, _MISSING) is not _MISSING:
        _n_tensor -= 1


_MISSING = object()


def _tensor_leaf(Var v, dtype):
    """Register leaf ``v`` as a Tensor leaf whose gradient is an array of ``dtype``."""
    global _n_tensor
    cdef i64 i = idx_of(v)
    if A.op[i] != OP_LEAF:
        raise ValueError("only a leaf can hold a tensor gradient")
    if i not in _tensor_grads:
        _n_tensor += 1
    _tensor_grads[i] = np.dtype(dtype)


def _tensor_grad(Var v):
    """The gradient array of tensor leaf ``v`` (None before any backward reached it)."""
    g = _tensor_grads.get(idx_of(v))
    return g if isinstance(g, np.ndarray) else None


def _set_tensor_grad(Var v, g):
    """Set tensor leaf ``v``'s gradient: an array, or a dtype (no gradient yet)."""
    cdef i64 i = idx_of(v)
    if i not in _tensor_grads:
        raise ValueError("not a tensor leaf")
    _tensor_grads[i] = g


cdef int accumulate_leaf(i64 p, g) except -1:
    """Add ``g`` to tensor leaf ``p``'s gradient, in place once it exists (the buffer is reused)."""
    old = _tensor_grads[p]
    if isinstance(old, np.ndarray):
        np.add(old, g, out=old, casting="unsafe")
    else:
        _tensor_grads[p] = np.array(g, dtype=old, copy=True)
    return 0


def _tensor_rule(Var v):
    """The TensorRule of tensor op node ``v`` (None for any other node): which path built it."""
    rule = _custom_fns.get(idx_of(v))
    return rule if isinstance(rule, TensorRule) else None


cdef object leaf_grad(object t, str caller):
    """Tensor ``t``'s gradient array, or None (no node, not a leaf, or no gradient yet: its dtype).
    TypeError naming ``caller`` for an item that is not a Tensor."""
    if not isinstance(t, TensorBase):
        raise TypeError(f"{caller} takes Tensors, got {type(t).__name__}")
    node = (<TensorBase>t)._node
    if node is None:
        return None
    g = _tensor_grads.get(idx_of(<Var>node))
    return g if g is not None and cnp.PyArray_Check(g) else None


def _tensor_zero_grads(tensors):
    """Fill the gradient of each Tensor leaf in ``tensors`` with zeros, in place (one without a gradient
    yet keeps none): ``optimizer.zero_grad()``'s loop. TypeError for an item that is not a Tensor."""
    for t in tensors:
        g = leaf_grad(t, "_tensor_zero_grads")
        if g is None:
            continue
        if FG_F64W(g):
            if fsize(g):
                memset(fptr(g), 0, <size_t>fsize(g) * sizeof(f64))
        else:
            g.fill(0.0)


def _tensor_param_grads(tensors):
    """The gradient an optimizer step applies to each Tensor in ``tensors`` (a list): its gradient array, or
    None (skip it) when it has no node, no gradient yet, or is frozen. One C loop instead of a Python call
    per parameter. TypeError for an item that is not a Tensor; ValueError if a gradient lost its data's
    shape."""
    cdef list out = []
    for t in tensors:
        g = leaf_grad(t, "_tensor_param_grads")
        if g is not None and A.aux[idx_of(<Var>(<TensorBase>t)._node)] == FROZEN:     # a leaf, frozen
            g = None
        if g is not None:
            data = (<TensorBase>t)._data
            if not (cnp.PyArray_Check(data) and same_shape(g, data)):
                shape = getattr(data, "shape", None)
                raise ValueError(f"a Tensor parameter's data has shape {shape} but its grad {g.shape}")
        out.append(g)
    return out


def _tensor_adjoints_held():
    """How many array adjoints the walk records hold (0 whenever no walk runs)."""
    # NOTE: a loop, not sum(): in this module `sum` is the engine's fg.sum, which would return a Var
    cdef intp held = 0
    for d in _walk_tensor_adj:
        held += len(<dict>d)
    return held


cdef dict tensor_adj(intp wk):
    while len(_walk_tensor_adj) <= wk:
        _walk_tensor_adj.append({})
    return <dict>_walk_tensor_adj[wk]


cdef int run_tensor_rule(i64 j, TensorRule rule, intp wk, bint keep_leaves, intp* pending) except -1:
    """Run the rule of tensor node ``j`` on its adjoint array and pass the results to its inputs."""
    cdef dict adj = tensor_adj(wk)
    g = adj.pop(j, None)
    if g is None:       # reached only by zero scalar contributions: nothing to pass on
        return 0
    if type(rule) is ElemRule:
        return run_elem_rule(j, <ElemRule>rule, g, adj, wk, keep_leaves, pending)
    if type(rule) is MatmulRule:
        return run_matmul_rule(j, <MatmulRule>rule, g, adj, wk, keep_leaves, pending)
    if type(rule) is TotalRule:
        return run_total_rule(j, <TotalRule>rule, g, adj, wk, keep_leaves, pending)
    if type(rule) is LinearRule:
        return run_linear_rule(j, <LinearRule>rule, g, adj, wk, keep_leaves, pending)
    if type(rule) is CrossEntropyRule:
        return run_cross_entropy_rule(j, <CrossEntropyRule>rule, g, adj, wk, keep_leaves, pending)
    grads = rule.backward(g)
    cdef intp n = <intp>A.p1[j], m
    if len(grads) != n:
        raise ValueError(f"tensor op {rule.name}: backward returned {len(grads)} gradients for {n} inputs")
    for m in range(n):
        gm = grads[m]
        if gm is not None:
            # re-read: the rule may have grown the side arrays. Not owned: a rule may return views of g, or
            # one array for two inputs
            deliver(args_of(j)[m], gm, False, adj, wk, keep_leaves, pending)
    return 0


def _tensor_backward(Var root, seed, bint owned=False):
    """Backpropagate the array ``seed`` from tensor node ``root``: tensor leaves' gradients accumulate.
    ``owned``: ``seed`` is a fresh float64 C array nothing else refers to (else it is copied)."""
    cdef i64 i = idx_of(root)
    cdef intp wk
    if i in _tensor_grads:                  # the root is a leaf
        if A.aux[i] != FROZEN:
            accumulate_leaf(i, seed)
        return
    if not is_tensor_op(i):
        raise TypeError("_tensor_backward: the root is not a tensor node")
    wk = acquire_walk()
    try:
        # owned by the walk
        tensor_adj(wk)[i] = seed if owned and FG_F64W(seed) else np.array(seed, dtype=np.float64, order="C")
        reverse_pass(i, 0.0, wk, True)      # clears the walk's array adjoints when it ends, raising or not
    finally:
        release_walk(wk)


# ---------------------------------------------------------------------------------------------------
# Fast paths. The common Tensor ops on float64 C-contiguous arrays are built and differentiated here, with
# no Python per op beyond the call: elementwise ops of the op table (same shapes, a row broadcast over the
# last axis as for a bias, or a Python number), 2-D matmul and whole-array sum/mean. Their rules are
# TensorRule subclasses that the sweep runs in C, accumulating into the inputs' gradient buffers in place.
# Anything else (float32, other broadcasts, bad shapes, for the error message) takes tensor.py's general
# path, registered by ``_tensor_register``.
#
# The array adjoints of a walk (``_walk_tensor_adj[wk]``) are owned by the walk: every array stored there is
# one nothing else refers to (a fresh result, or a copy), so a fast rule may add into it in place.
# ---------------------------------------------------------------------------------------------------

cdef extern from *:
    """
    #define FG_F64C(o) (PyArray_Check(o) && PyArray_TYPE((PyArrayObject*)(o)) == NPY_DOUBLE \\
        && PyArray_ISCARRAY_RO((PyArrayObject*)(o)) && PyArray_ISNOTSWAPPED((PyArrayObject*)(o)))
    #define FG_F64W(o) (FG_F64C(o) && PyArray_ISWRITEABLE((PyArrayObject*)(o)))
    """
    bint FG_F64C(object o)     # a float64, C-contiguous, aligned, native array (read-only allowed)
    bint FG_F64W(object o)     # the same, writeable


cdef object _Tensor = None          # fastgrad.tensor.Tensor
cdef object _slow_binary = None     # tensor.py's general paths: (name, x, z), (name, x, k), (x, z), (x, mean)
cdef object _slow_unary = None
cdef object _slow_matmul = None
cdef object _slow_sum = None
cdef object _np_matmul = np.matmul
cdef object _np_add_reduce = np.add.reduce
cdef object _F64 = np.dtype(np.float64)


# ---- a whole-array float64 sum with NumPy's bits, without its per-call cost ----
#
# np.add.reduce over a contiguous float64 array is NumPy's pairwise summation (pairwise_sum in its umath
# loops) added to the identity 0.0. Its call costs ~1.5 us of argument parsing and iterator setup; the same
# summation here costs what the additions cost. The fast paths use it only when a self-check at import
# (_check_total_like_numpy, below) found its bits equal to this NumPy's on arrays of every size class;
# otherwise they call np.add.reduce, as before.

cdef bint total_like_numpy = False
# NOTE: arrays of more than TOTAL_C_MAX values are left to NumPy: some NumPy versions (2.0-2.2, seen in the
# Python 3.9 and 3.10 wheel tests) sum larger arrays in another grouping (buffers of 8,192 values, added in
# order), and the check below covers sizes up to TOTAL_C_MAX only.
cdef enum:
    TOTAL_C_MAX = 8192


cdef f64 pairwise_sum(const f64* a, intp n) noexcept nogil:
    """NumPy's pairwise summation of ``a[:n]``: fewer than 8 values in order; up to 128 as 8 running sums
    over blocks of 8, combined as ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7)), then the rest in
    order; more than 128 as the sum of two halves, cut at a multiple of 8 (depth: log2(n / 128) levels)."""
    cdef intp i, j, n2
    cdef f64 res
    cdef f64 r[8]
    if n < 8:
        res = 0.0
        for i in range(n):
            res = res + a[i]
        return res
    if n <= 128:
        for j in range(8):
            r[j] = a[j]
        i = 8
        while i < n - n % 8:
            for j in range(8):
                r[j] = r[j] + a[i + j]
            i += 8
        res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
        while i < n:
            res = res + a[i]
            i += 1
        return res
    n2 = n // 2
    n2 -= n2 % 8
    return pairwise_sum(a, n2) + pairwise_sum(a + n2, n - n2)


cdef inline f64 f64_total(object a) except? -1.0:
    """The sum of every value of ``a``, a C-contiguous float64 ndarray: np.add.reduce(a, None)'s bits."""
    if total_like_numpy and fsize(a) <= TOTAL_C_MAX:
        return 0.0 + pairwise_sum(fptr(a), fsize(a))
    return <f64>float(_np_add_reduce(a, None))


def _check_total_like_numpy(reference=None):
    """Turn the C total on when it gives np.add.reduce's bits on this NumPy (``reference(a, None)``: for
    tests, another summation), for arrays of every size class of the summation (below 8, up to 128,
    halved once and many times, not multiples of 8) and of values that cancel; returns whether it did."""
    global total_like_numpy
    cdef f64 got, want
    rng = np.random.default_rng(20261130)
    values = rng.standard_normal(TOTAL_C_MAX) * np.exp2(rng.integers(-30, 30, size=TOTAL_C_MAX))
    total_like_numpy = False
    for n in (*range(0, 140), 255, 256, 257, 1000, 4099, TOTAL_C_MAX - 1, TOTAL_C_MAX):
        x = values[:n]                                     # a C-contiguous view
        got = 0.0 + pairwise_sum(fptr(x), n)
        want = <f64>float((_np_add_reduce if reference is None else reference)(x, None))
        if (<i64*>&got)[0] != (<i64*>&want)[0]:
            return False
    total_like_numpy = True
    return True


def _total_like_numpy(value=None):
    """Whether whole-array totals use the C summation (tests: ``value`` turns it on or off)."""
    global total_like_numpy
    if value is not None:
        total_like_numpy = bool(value)
    return total_like_numpy


_check_total_like_numpy()


cdef extern from *:
    """
    /* Give the subclass `sub` the binary-operator slots of its base `base` (see _tensor_register). */
    static int fg_inherit_binops(PyObject* sub, PyObject* base) {
        PyNumberMethods* s = ((PyTypeObject*)sub)->tp_as_number;
        PyNumberMethods* b = ((PyTypeObject*)base)->tp_as_number;
        if (s == NULL || b == NULL || ((PyTypeObject*)sub)->tp_base != (PyTypeObject*)base) {
            PyErr_SetString(PyExc_TypeError, "fg_inherit_binops: not a direct subclass with number slots");
            return -1;
        }
        s->nb_add = b->nb_add;
        s->nb_subtract = b->nb_subtract;
        s->nb_multiply = b->nb_multiply;
        s->nb_true_divide = b->nb_true_divide;
        s->nb_power = b->nb_power;
        s->nb_matrix_multiply = b->nb_matrix_multiply;
        return 0;
    }
    """
    int fg_inherit_binops(object sub, object base) except -1


_BINOP_NAMES = ("add", "sub", "mul", "truediv", "pow", "matmul")


def _tensor_register(cls, binary, unary, matmul, total):
    """tensor.py hands over its Tensor class and its general paths (the fast paths fall back to them).

    NOTE: Cython lists a cdef class's binary operators as methods too (`__add__` a method_descriptor, for
    direct calls), so CPython gives a Python subclass its generic `slot_nb_add`, which looks `__add__` up
    by name at every `a + b` (~4% of the instructions of an op on 0-d Tensors, callgrind). The class defines
    none of these operators, so its slots are set to TensorBase's C functions, which it would otherwise
    inherit (a user's subclass of Tensor keeps CPython's generic slots, and the general path)."""
    global _Tensor, _slow_binary, _slow_unary, _slow_matmul, _slow_sum
    if not (isinstance(cls, type) and cls.__base__ is TensorBase):
        raise TypeError("_tensor_register takes a direct subclass of TensorBase")
    for name in _BINOP_NAMES:
        if f"__{name}__" in cls.__dict__ or f"__r{name}__" in cls.__dict__:
            raise TypeError(f"{cls.__name__} overrides __{name}__: its slots must stay TensorBase's")
    fg_inherit_binops(cls, TensorBase)
    _Tensor, _slow_binary, _slow_unary, _slow_matmul, _slow_sum = cls, binary, unary, matmul, total


cdef inline f64* fptr(object a) noexcept:
    return <f64*>cnp.PyArray_DATA(<cnp.ndarray>a)


cdef inline intp fsize(object a) noexcept:
    return <intp>cnp.PyArray_SIZE(<cnp.ndarray>a)


cdef inline bint same_shape(object a, object b) noexcept:
    cdef int nd = cnp.PyArray_NDIM(<cnp.ndarray>a), d
    if nd != cnp.PyArray_NDIM(<cnp.ndarray>b):
        return False
    cdef cnp.npy_intp* da = cnp.PyArray_DIMS(<cnp.ndarray>a)
    cdef cnp.npy_intp* db = cnp.PyArray_DIMS(<cnp.ndarray>b)
    for d in range(nd):
        if da[d] != db[d]:
            return False
    return True


cdef inline bint row_of(object r, object a) noexcept:
    """Is ``r`` a 1-D row that broadcasts along the last axis of ``a`` (of 2 or more dimensions)?"""
    cdef int nd = cnp.PyArray_NDIM(<cnp.ndarray>a)
    if cnp.PyArray_NDIM(<cnp.ndarray>r) != 1 or nd < 2:
        return False
    cdef cnp.npy_intp h = cnp.PyArray_DIMS(<cnp.ndarray>r)[0]
    return h > 0 and cnp.PyArray_DIMS(<cnp.ndarray>a)[nd - 1] == h


cdef inline object empty_as(object a):
    return cnp.PyArray_EMPTY(cnp.PyArray_NDIM(<cnp.ndarray>a), cnp.PyArray_DIMS(<cnp.ndarray>a),
                             cnp.NPY_DOUBLE, 0)


cdef inline object zeros_as(object a):
    return cnp.PyArray_ZEROS(cnp.PyArray_NDIM(<cnp.ndarray>a), cnp.PyArray_DIMS(<cnp.ndarray>a),
                             cnp.NPY_DOUBLE, 0)


cdef object new_tensor(object data, object node):
    cdef TensorBase t = TensorBase.__new__(_Tensor)
    t._data = data
    t._node = node
    return t


cdef object tensor_op(object data, object na, object nb, TensorRule rule, object nc=None):
    """The Tensor ``data`` of an op over the nodes ``na``, ``nb``, ``nc`` (None: a constant), recorded with
    ``rule`` unless none takes part in differentiation or grad mode is off."""
    cdef i64 arg[3]
    cdef intp n = 0
    if (na is None and nb is None and nc is None) or not grad_enabled():
        return new_tensor(data, None)
    for node in (na, nb, nc):
        if node is not None:
            arg[n] = idx_of(<Var>node)
            n += 1
    cdef Var v = Var.__new__(Var)
    v.idx = new_nary(OP_CUSTOM, arg, n, n, 0.0)
    A.refc[v.idx] += 1
    _custom_fns[v.idx] = rule
    return new_tensor(data, v)


cdef inline int slot(object node, int* count) noexcept:
    """The position ``node`` takes among an op's node inputs as ``tensor_op`` packs them (the inputs that are
    not None, in order), or -1 for a constant; ``count`` counts the positions taken so far."""
    if node is None:
        return -1
    count[0] += 1
    return count[0] - 1


cdef inline void add_into(object dst, object src) noexcept:
    """dst += src, elementwise, for float64 C arrays of one size (checked by the caller)."""
    cdef f64* d = fptr(dst)
    cdef const f64* e = fptr(src)
    cdef intp s
    for s in range(fsize(dst)):
        d[s] += e[s]


# how an input's gradient reaches it (tensor_dest, then settle)
cdef enum:
    DEST_DROP = 0       # nowhere (a constant, a frozen leaf, or a leaf outside backward())
    DEST_LEAF = 1       # added in place into the tensor leaf's gradient buffer
    DEST_NODE = 2       # added in place into the tensor node's adjoint (then marked pending)
    DEST_LEAF_ADD = 3   # into scratch, then accumulate_leaf (a float32 leaf)
    DEST_NODE_ADD = 4   # into scratch, then added to an adjoint that cannot take it in place
    DEST_VAR = 5        # into scratch, then its sum to a scalar node (a Var operand)


cdef inline int is_tensor_op(i64 p) except -1:
    return A.op[p] == OP_CUSTOM and isinstance(_custom_fns.get(p), TensorRule)


cdef object tensor_dest(i64 p, object like, dict adj, bint keep_leaves, int* kind):
    """A float64 C array of ``like``'s shape into which input ``p``'s gradient is to be added: its own buffer
    where it can take it in place (``kind`` DEST_LEAF or DEST_NODE), else zeroed scratch (see ``settle``)."""
    old = _tensor_grads.get(p, _MISSING)
    if old is not _MISSING:
        if not keep_leaves or A.aux[p] == FROZEN:
            kind[0] = DEST_DROP
            return zeros_as(like)
        if FG_F64W(old) and same_shape(old, like):
            kind[0] = DEST_LEAF
            return old
        if old is _F64:                     # the first gradient of a float64 leaf
            buf = zeros_as(like)
            _tensor_grads[p] = buf
            kind[0] = DEST_LEAF
            return buf
        kind[0] = DEST_LEAF_ADD
        return zeros_as(like)
    if is_tensor_op(p):
        old = adj.get(p)
        if old is None:
            buf = zeros_as(like)
            adj[p] = buf
            kind[0] = DEST_NODE
            return buf
        if FG_F64W(old) and same_shape(old, like):
            kind[0] = DEST_NODE
            return old
        kind[0] = DEST_NODE_ADD
        return zeros_as(like)
    kind[0] = DEST_VAR
    return zeros_as(like)


cdef int settle(i64 p, int kind, object buf, dict adj, intp wk, bint keep_leaves, intp* pending) except -1:
    """Finish what ``tensor_dest`` started once ``buf`` holds input ``p``'s gradient."""
    cdef Walk* w
    cdef f64 total = 0.0
    cdef f64* d
    cdef intp s
    if kind == DEST_DROP or kind == DEST_LEAF:
        return 0
    if kind == DEST_LEAF_ADD:
        return accumulate_leaf(p, buf)
    if kind == DEST_NODE_ADD:
        adj[p] = adj[p] + buf
    if kind == DEST_VAR:
        d = fptr(buf)
        for s in range(fsize(buf)):
            total += d[s]
    w = &A.walk[wk]
    acc(p, total, A.op, A.aux, A.grad, w.mark, w.adj, w.epoch, keep_leaves, True, pending)
    return 0


cdef int deliver(i64 p, object g, bint owned, dict adj, intp wk, bint keep_leaves, intp* pending) except -1:
    """Add the gradient array ``g`` into input ``p``: a tensor leaf's ``.grad``, a tensor node's adjoint, or
    (summed) a scalar node's. ``owned``: nothing else refers to ``g``, so it may be kept as it is."""
    cdef Walk* w
    old = _tensor_grads.get(p, _MISSING)
    if old is not _MISSING:                 # a tensor leaf
        if keep_leaves and A.aux[p] != FROZEN:
            if FG_F64W(old) and FG_F64C(g) and same_shape(old, g):
                add_into(old, g)
            elif owned and old is _F64 and FG_F64W(g):
                _tensor_grads[p] = g
            else:
                accumulate_leaf(p, g)
        return 0
    if is_tensor_op(p):
        old = adj.get(p)
        if old is None:
            adj[p] = g if owned else np.array(g, order="C")
        elif FG_F64W(old) and FG_F64C(g) and same_shape(old, g):
            add_into(old, g)
        else:
            adj[p] = old + g
        w = &A.walk[wk]
        acc(p, 0.0, A.op, A.aux, A.grad, w.mark, w.adj, w.epoch, keep_leaves, True, pending)
    else:                                   # a Var operand (a 0-d tensor meets a scalar): a number
        total = float(np.sum(g))
        w = &A.walk[wk]
        acc(p, total, A.op, A.aux, A.grad, w.mark, w.adj, w.epoch, keep_leaves, True, pending)
    return 0


cdef object adjoint_f64c(object g, object like, str name):
    """The adjoint ``g`` as a float64 C array of ``like``'s size (it is one already on the fast paths)."""
    if not FG_F64C(g):
        g = np.ascontiguousarray(g, dtype=np.float64)
    if fsize(g) != fsize(like):
        raise ValueError(f"tensor op {name}: adjoint of {fsize(g)} elements for an output of {fsize(like)}")
    return g


# ---- elementwise ops of the op table ----

cdef enum:
    ELEM_SAME = 0       # a, b (if any) and y have one shape
    ELEM_ROW_B = 1      # b is a row repeated along a's last axis (a bias)
    ELEM_ROW_A = 2      # a is the row, b the full array


cdef class ElemRule(TensorRule):
    """An elementwise op of the op table over float64 C arrays (see ``_tensor_binop``)."""
    cdef u8 code
    cdef f64 k
    cdef int mode
    cdef int ia, ib             # the node input that a (b) is, or -1 for a constant operand
    cdef object a, b, y         # b is None for an op of one operand (unary, or one with a constant k)


cdef void elem_blocks(u8 code, int mode, const f64* a, const f64* b, f64 k, f64* y, intp n, intp h) noexcept:
    """Values: ``n`` elements of the full operand; ``h`` the row length in the ROW modes."""
    cdef intp r
    if mode == ELEM_SAME:
        op_value_block(code, a, b, k, y, n)
    elif mode == ELEM_ROW_B:
        for r in range(n // h):
            op_value_block(code, a + r * h, b, k, y + r * h, h)
    else:
        for r in range(n // h):
            op_value_block(code, a, b + r * h, k, y + r * h, h)


cdef object elem_rule(u8 code, f64 k, int mode, object a, object b, object na, object nb):
    """Compute and record op ``code`` on the float64 C arrays ``a``, ``b`` (None: one operand) of the
    nodes ``na``, ``nb`` (None: constants)."""
    cdef object full = b if mode == ELEM_ROW_A else a
    cdef intp n = fsize(full)
    cdef intp h = fsize(a if mode == ELEM_ROW_A else b) if mode != ELEM_SAME else n
    y = empty_as(full)
    if n:
        elem_blocks(code, mode, fptr(a), fptr(b) if b is not None else fptr(a), k, fptr(y), n, h)
    if (na is None and nb is None) or not grad_enabled():
        return new_tensor(y, None)
    cdef ElemRule rule = ElemRule.__new__(ElemRule)
    cdef int count = 0
    rule.name = OP_NAMES[code]
    rule.code, rule.k, rule.mode, rule.a, rule.b, rule.y = code, k, mode, a, b, y
    rule.ia = slot(na, &count)
    rule.ib = slot(nb, &count)
    return tensor_op(y, na, nb, rule)


cdef int run_elem_rule(i64 j, ElemRule r, object g, dict adj, intp wk, bint keep_leaves,
                       intp* pending) except -1:
    cdef int ka = DEST_DROP, kb = DEST_DROP
    cdef i64 pa = args_of(j)[r.ia] if r.ia >= 0 else -1
    cdef i64 pb = args_of(j)[r.ib] if r.ib >= 0 else -1
    cdef object full = r.b if r.mode == ELEM_ROW_A else r.a
    g = adjoint_f64c(g, full, r.name)
    da = tensor_dest(pa, r.a, adj, keep_leaves, &ka) if pa >= 0 else zeros_as(r.a)
    db = None
    if r.b is not None:
        db = tensor_dest(pb, r.b, adj, keep_leaves, &kb) if pb >= 0 else zeros_as(r.b)
    cdef intp n = fsize(full), h, row
    cdef const f64* a = fptr(r.a)
    cdef const f64* b = fptr(r.b) if r.b is not None else a
    cdef f64* ga = fptr(da)
    cdef f64* gb = fptr(db) if db is not None else ga
    cdef const f64* y = fptr(r.y)
    cdef const f64* gy = fptr(g)
    if n:
        if r.mode == ELEM_SAME:
            op_adjoint_block(r.code, a, b, r.k, y, gy, ga, gb, n)
        elif r.mode == ELEM_ROW_B:
            h = fsize(r.b)
            for row in range(n // h):
                op_adjoint_block(r.code, a + row * h, b, r.k, y + row * h, gy + row * h, ga + row * h, gb, h)
        else:
            h = fsize(r.a)
            for row in range(n // h):
                op_adjoint_block(r.code, a, b + row * h, r.k, y + row * h, gy + row * h, ga, gb + row * h, h)
    if pa >= 0:
        settle(pa, ka, da, adj, wk, keep_leaves, pending)
    if pb >= 0:
        settle(pb, kb, db, adj, wk, keep_leaves, pending)
    return 0


cdef inline int elem_mode(object a, object b) noexcept:
    """How float64 arrays ``a`` and ``b`` meet elementwise on the fast path: ELEM_SAME, ELEM_ROW_B,
    ELEM_ROW_A, or -1 (another broadcast, or none: the general path decides)."""
    if same_shape(a, b):
        return ELEM_SAME
    if row_of(b, a):
        return ELEM_ROW_B
    if row_of(a, b):
        return ELEM_ROW_A
    return -1


cdef inline bint plain_number(object o) noexcept:
    """A Python float (or a float subclass such as NumPy's float64) or int: a constant operand."""
    return PyFloat_Check(o) or type(o) is int


cdef inline object constant_array(object o):
    """A float64 C-contiguous ndarray operand as a constant: a copy (the rule must not see later writes into
    the caller's array), or None for any other object."""
    if cnp.PyArray_CheckExact(o) and FG_F64C(o):
        return cnp.PyArray_NewCopy(<cnp.ndarray>o, cnp.NPY_CORDER)
    return None


cdef int check_code(int code, bint optional) except -1:
    """ValueError unless ``code`` is an elementwise op of the table (or -1 where ``optional``): the Python
    entry points take codes from their callers, and an unknown one would index past the table."""
    if optional and code == -1:
        return 0
    if not 0 <= code < N_OPS or code == OP_LEAF or code == OP_SUM or code == OP_DOT or code == OP_CUSTOM:
        raise ValueError(f"op code {code} is not an elementwise op of the op table")
    return 0


def _tensor_binop(int code, int kright, f64 sign, int kleft, x, z):
    """``x OP z`` for the binary op ``code`` of the op table; ``kright`` (``kleft``) is the op with a
    constant k that ``x OP number`` (``number OP x``) is, as ``sign * number`` (-1: none). A float64
    ndarray operand is a constant (copied). ValueError for a code that is not an elementwise op."""
    check_code(code, False)
    check_code(kright, True)
    check_code(kleft, True)
    return tensor_binop(code, kright, sign, kleft, x, z)


cdef object tensor_binop(int code, int kright, f64 sign, int kleft, object x, object z):
    """``_tensor_binop`` (the Tensor operators call this directly)."""
    cdef int mode
    cdef bint tz
    if type(x) is not _Tensor and type(z) is _Tensor and cnp.PyArray_CheckExact(x):
        a = constant_array(x)           # ndarray OP Tensor
        b = (<TensorBase>z)._data
        if a is not None and FG_F64C(b):
            mode = elem_mode(a, b)
            if mode >= 0:
                return elem_rule(<u8>code, 0.0, mode, a, b, None, (<TensorBase>z)._node)
        return _slow_binary(OP_NAMES[code], x, z)
    if type(x) is _Tensor:
        a = (<TensorBase>x)._data
        if FG_F64C(a):
            tz = type(z) is _Tensor
            if tz or cnp.PyArray_CheckExact(z):
                b = (<TensorBase>z)._data if tz else constant_array(z)
                if b is not None and FG_F64C(b):
                    mode = elem_mode(a, b)
                    if mode >= 0:
                        return elem_rule(<u8>code, 0.0, mode, a, b, (<TensorBase>x)._node,
                                         (<TensorBase>z)._node if tz else None)
            elif kright >= 0 and plain_number(z) and (type(z) is not int or -2**53 <= z <= 2**53):
                return elem_rule(<u8>kright, sign * <f64>z, ELEM_SAME, a, None, (<TensorBase>x)._node, None)
    elif type(z) is _Tensor and kleft >= 0 and plain_number(x) and (type(x) is not int or -2**53 <= x <= 2**53):
        b = (<TensorBase>z)._data
        if FG_F64C(b):
            return elem_rule(<u8>kleft, <f64>x, ELEM_SAME, b, None, (<TensorBase>z)._node, None)
    return _slow_binary(OP_NAMES[code], x, z)


def _tensor_unop(int code, x, f64 k=0.0):
    """Op ``code`` of one operand (and its constant ``k``) on the Tensor ``x``. ValueError for a code that
    is not an elementwise op."""
    check_code(code, False)
    return tensor_unop(code, x, k)


cdef object tensor_unop(int code, object x, f64 k):
    """``_tensor_unop`` (the Tensor methods call this directly)."""
    if type(x) is _Tensor:
        a = (<TensorBase>x)._data
        if FG_F64C(a):
            return elem_rule(<u8>code, k, ELEM_SAME, a, None, (<TensorBase>x)._node, None)
    return _slow_unary(OP_NAMES[code], x, k)


# ---- matmul of two matrices ----

cdef class MatmulRule(TensorRule):
    """``a @ b`` of two float64 matrices."""
    cdef int ia, ib
    cdef object a, b


def _tensor_matmul(x, z):
    """``x @ z``: two float64 Tensors of 2 dimensions take the fast path, anything else the general one."""
    return tensor_matmul(x, z)


cdef object tensor_matmul(object x, object z):
    """``_tensor_matmul`` (the Tensor operator calls this directly)."""
    cdef MatmulRule rule
    cdef int count = 0
    if type(x) is _Tensor and type(z) is _Tensor:
        a, b = (<TensorBase>x)._data, (<TensorBase>z)._data
        if (f64_matrix(a) and f64_matrix(b)
                and cnp.PyArray_DIMS(<cnp.ndarray>a)[1] == cnp.PyArray_DIMS(<cnp.ndarray>b)[0]):
            y = _np_matmul(a, b)
            na, nb = (<TensorBase>x)._node, (<TensorBase>z)._node
            if (na is None and nb is None) or not grad_enabled():
                return new_tensor(y, None)
            rule = <MatmulRule>MatmulRule.__new__(MatmulRule)
            rule.name = "matmul"
            rule.a, rule.b = a, b
            rule.ia = slot(na, &count)
            rule.ib = slot(nb, &count)
            return tensor_op(y, na, nb, rule)
    return _slow_matmul(x, z)


cdef int run_matmul_rule(i64 j, MatmulRule r, object g, dict adj, intp wk, bint keep_leaves,
                         intp* pending) except -1:
    cdef i64 pa = args_of(j)[r.ia] if r.ia >= 0 else -1
    cdef i64 pb = args_of(j)[r.ib] if r.ib >= 0 else -1
    if not (cnp.PyArray_Check(g) and cnp.PyArray_TYPE(<cnp.ndarray>g) == cnp.NPY_DOUBLE):
        g = np.asarray(g, dtype=np.float64)
    if pa >= 0:
        deliver(pa, _np_matmul(g, r.b.T), True, adj, wk, keep_leaves, pending)
    if pb >= 0:
        deliver(pb, _np_matmul(r.a.T, g), True, adj, wk, keep_leaves, pending)
    return 0


# ---- the sum or mean of every element ----

cdef class TotalRule(TensorRule):
    """``a.sum()`` or ``a.mean()`` over every element of a float64 C array."""
    cdef object a
    cdef f64 scale              # 1 for the sum, the count for the mean (the gradient is g / count)
    cdef bint mean


def _tensor_total(x, bint mean):
    """``x.sum()`` (``mean``: ``x.mean()``) over every axis."""
    cdef intp n
    cdef f64 total
    cdef TotalRule rule
    if type(x) is _Tensor:
        a = (<TensorBase>x)._data
        if FG_F64C(a) and fsize(a) > 0:
            n = fsize(a)
            total = f64_total(a)                            # a.sum(): NumPy's bits
            if mean:
                total = total / <f64>n
            y = cnp.PyArray_ZEROS(0, NULL, cnp.NPY_DOUBLE, 0)
            fptr(y)[0] = total
            na = (<TensorBase>x)._node
            if na is None or not grad_enabled():
                return new_tensor(y, None)
            rule = TotalRule.__new__(TotalRule)
            rule.name = "mean" if mean else "sum"
            rule.a, rule.scale, rule.mean = a, <f64>n, mean
            return tensor_op(y, na, None, rule)
    return _slow_sum(x, mean)


cdef int run_total_rule(i64 j, TotalRule r, object g, dict adj, intp wk, bint keep_leaves,
                        intp* pending) except -1:
    cdef i64 p = args_of(j)[0]
    cdef int kind = DEST_DROP
    cdef f64 c = <f64>float(np.asarray(g).reshape(()))
    if r.mean:
        c = c / r.scale
    d = tensor_dest(p, r.a, adj, keep_leaves, &kind)
    cdef f64* e = fptr(d)
    cdef intp s
    for s in range(fsize(d)):
        e[s] += c
    settle(p, kind, d, adj, wk, keep_leaves, pending)
    return 0


# ---- a dense layer: x @ w.T + b, one node (PyTorch's addmm) ----

cdef class LinearRule(TensorRule):
    """``x @ w.T + b`` for float64 ``x`` (N, in), ``w`` (out, in), ``b`` (out,) C-contiguous or None."""
    cdef int ix, iw, ib         # the node input of each operand, or -1 for a constant
    cdef object x, w, b


cdef inline bint f64_matrix(object a) noexcept:
    return (cnp.PyArray_Check(a) and cnp.PyArray_NDIM(<cnp.ndarray>a) == 2
            and cnp.PyArray_TYPE(<cnp.ndarray>a) == cnp.NPY_DOUBLE)


def _tensor_linear(x, w, b):
    """``x @ w.T + b`` (``b`` may be None) as one node when ``x`` (N, in) and ``w`` (out, in) are float64
    Tensors of two dimensions and ``b`` a float64 C-contiguous Tensor (out,); otherwise None (the caller
    composes the general ops, which also raise the shape errors)."""
    cdef LinearRule rule
    cdef intp h
    cdef int count = 0
    if type(x) is not _Tensor or type(w) is not _Tensor or (b is not None and type(b) is not _Tensor):
        return None
    xa, wa = (<TensorBase>x)._data, (<TensorBase>w)._data
    ba = (<TensorBase>b)._data if b is not None else None
    if not (f64_matrix(xa) and f64_matrix(wa)
            and cnp.PyArray_DIMS(<cnp.ndarray>xa)[1] == cnp.PyArray_DIMS(<cnp.ndarray>wa)[1]):
        return None
    h = cnp.PyArray_DIMS(<cnp.ndarray>wa)[0]
    if ba is not None and not (FG_F64C(ba) and cnp.PyArray_NDIM(<cnp.ndarray>ba) == 1 and fsize(ba) == h):
        return None
    y = _np_matmul(xa, wa.T)
    if ba is not None and h > 0:
        if not FG_F64W(y):
            y = np.ascontiguousarray(y)
        if fsize(y):            # + b on each row, in place: the op table's add over a row broadcast
            elem_blocks(OP_ADD, ELEM_ROW_B, fptr(y), fptr(ba), 0.0, fptr(y), fsize(y), h)
    nx, nw = (<TensorBase>x)._node, (<TensorBase>w)._node
    nb = (<TensorBase>b)._node if b is not None else None
    if (nx is None and nw is None and nb is None) or not grad_enabled():
        return new_tensor(y, None)
    rule = LinearRule.__new__(LinearRule)
    rule.name = "linear"
    rule.x, rule.w, rule.b = xa, wa, ba
    rule.ix = slot(nx, &count)
    rule.iw = slot(nw, &count)
    rule.ib = slot(nb, &count)
    return tensor_op(y, nx, nw, rule, nb)


cdef int run_linear_rule(i64 j, LinearRule r, object g, dict adj, intp wk, bint keep_leaves,
                         intp* pending) except -1:
    cdef i64 px = args_of(j)[r.ix] if r.ix >= 0 else -1
    cdef i64 pw = args_of(j)[r.iw] if r.iw >= 0 else -1
    cdef i64 pb = args_of(j)[r.ib] if r.ib >= 0 else -1
    cdef int kind = DEST_DROP
    cdef intp n, h, row, s
    cdef f64* d
    cdef const f64* e
    if not f64_matrix(g):
        g = np.asarray(g, dtype=np.float64)
    if px >= 0:
        deliver(px, _np_matmul(g, r.w), True, adj, wk, keep_leaves, pending)
    if pw >= 0:
        deliver(pw, _np_matmul(g.T, r.x), True, adj, wk, keep_leaves, pending)
    if pb >= 0:
        g = adjoint_f64c(g, g, "linear")
        db = tensor_dest(pb, r.b, adj, keep_leaves, &kind)
        d, e = fptr(db), fptr(g)
        n, h = fsize(g), fsize(db)
        if h > 0:                           # (a layer of no outputs has no bias gradient to sum)
            for row in range(0, n, h):      # column sums of g, row after row
                for s in range(h):
                    d[s] += e[row + s]
        settle(pb, kind, db, adj, wk, keep_leaves, pending)
    return 0


# ---- the mean cross-entropy of logits and class indices ----

cdef class CrossEntropyRule(TensorRule):
    """``cross_entropy(x, t)`` with the mean over rows: float64 logits (N, C), integer targets in [0, C)."""
    cdef object x               # the logits (the gradient's shape)
    cdef object e, s            # exp(x - row max) (N, C) and its row sums (N, 1)
    cdef object t               # the targets, an int64 C array (N,)
    cdef f64 scale              # 1 / N


cdef object _np_exp = np.exp
cdef object _np_log = np.log


def _tensor_cross_entropy(x, target, ignore_index):
    """``tensor_functional.cross_entropy(x, target)`` with the mean, no weight and no smoothing, as one node:
    ``x`` a float64 C-contiguous Tensor (N, C), N, C >= 1, ``target`` an integer ndarray (N,) of classes in
    [0, C) none of which is ``ignore_index``. The same NumPy calls for exp, the row sums, log and the total
    as the general path, and the same IEEE operations in the same order between them: the same bits. None
    for anything else (the caller then takes the general path, which checks and raises)."""
    cdef intp n, c, i, k
    cdef const i64* tp
    cdef const f64* row
    cdef f64* zp
    cdef f64 m, v
    cdef CrossEntropyRule rule
    if type(x) is not _Tensor or not cnp.PyArray_Check(target):
        return None
    a = (<TensorBase>x)._data
    if not (FG_F64C(a) and cnp.PyArray_NDIM(<cnp.ndarray>a) == 2 and cnp.PyArray_NDIM(<cnp.ndarray>target) == 1
            and (cnp.PyArray_ISINTEGER(<cnp.ndarray>target) and not cnp.PyArray_ISBOOL(<cnp.ndarray>target))):
        return None
    n, c = cnp.PyArray_DIMS(<cnp.ndarray>a)[0], cnp.PyArray_DIMS(<cnp.ndarray>a)[1]
    if n == 0 or c == 0 or cnp.PyArray_DIMS(<cnp.ndarray>target)[0] != n:
        return None
    t = np.ascontiguousarray(target, dtype=np.int64)   # a uint64 label >= 2**63 wraps negative: declined below
    tp = <const i64*>cnp.PyArray_DATA(<cnp.ndarray>t)
    if type(ignore_index) is not int:       # a bool, a NumPy integer: the general path's rules decide
        return None
    ignore = ignore_index
    for i in range(n):
        if tp[i] < 0 or tp[i] >= c or (0 <= ignore < c and tp[i] == ignore):
            return None
    # z = x - its row's max (NaN if the row has one, as NumPy's max)
    z = empty_as(a)
    zp = fptr(z)
    for i in range(n):
        row = fptr(a) + i * c
        m = row[0]
        for k in range(c):
            v = row[k]
            if v != v:
                m = v
                break
            if v > m:
                m = v
        for k in range(c):
            zp[i * c + k] = row[k] - m
    e = _np_exp(z)
    s = _np_add_reduce(e, 1, None, None, True)          # e.sum(axis=1, keepdims=True)
    log_s = _np_log(s)
    terms = cnp.PyArray_EMPTY(1, cnp.PyArray_DIMS(<cnp.ndarray>t), cnp.NPY_DOUBLE, 0)
    for i in range(n):
        fptr(terms)[i] = fptr(log_s)[i] - zp[i * c + tp[i]]
    cdef f64 scale = 1.0 / <f64>n
    y = cnp.PyArray_ZEROS(0, NULL, cnp.NPY_DOUBLE, 0)
    fptr(y)[0] = f64_total(terms) * scale
    na = (<TensorBase>x)._node
    if na is None or not grad_enabled():
        return new_tensor(y, None)
    rule = CrossEntropyRule.__new__(CrossEntropyRule)
    rule.name = "cross_entropy"
    rule.x, rule.e, rule.s, rule.t, rule.scale = a, e, s, t, scale
    return tensor_op(y, na, None, rule)


cdef int run_cross_entropy_rule(i64 j, CrossEntropyRule r, object g, dict adj, intp wk, bint keep_leaves,
                                intp* pending) except -1:
    """The general path's gradient, ``(e / s - onehot(t)) * (g * scale)``, added into the logits' adjoint."""
    cdef i64 p = args_of(j)[0]
    cdef int kind = DEST_DROP
    cdef f64 gs = <f64>float(np.asarray(g).reshape(())) * r.scale
    cdef intp n = cnp.PyArray_DIMS(<cnp.ndarray>r.e)[0], c = cnp.PyArray_DIMS(<cnp.ndarray>r.e)[1], i, k
    cdef const f64* e = fptr(r.e)
    cdef const f64* s = fptr(r.s)
    cdef const i64* t = <const i64*>cnp.PyArray_DATA(<cnp.ndarray>r.t)
    cdef f64 v
    d = tensor_dest(p, r.x, adj, keep_leaves, &kind)
    cdef f64* dp = fptr(d)
    for i in range(n):
        for k in range(c):
            v = e[i * c + k] / s[i]
            if k == t[i]:
                v = v - 1.0
            dp[i * c + k] += v * gs
    settle(p, kind, d, adj, wk, keep_leaves, pending)
    return 0
