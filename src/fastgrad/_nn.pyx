"""Fused kernels of fastgrad.nn: a dense layer's rows built in one call.

They build ordinary engine nodes (fused 'dot', 'add' and an activation per row) through the engine's
exported functions, so everything else (sweeps, lifetime, inspection) treats them like any other node.
"""
from libc.stdlib cimport free, malloc

from fastgrad._engine cimport Arena, Var, arena, grad_enabled, new_nary, new_node, node_index, operand
from fastgrad._ops cimport OP_ADD, OP_DOT, OP_LEAF, OP_RELU, OP_SIGMOID, OP_TANH, op_value
from fastgrad._types cimport f64, i64, u8, intp

_ACTIVATIONS = {None: OP_LEAF, "linear": OP_LEAF, "relu": OP_RELU, "tanh": OP_TANH, "sigmoid": OP_SIGMOID}


cdef int leaf_row(object row, intp n, i64* out, intp r) except -1:
    """The node indices of ``row`` (weight row ``r``, or the bias when ``r`` is -1), a list or tuple of
    ``n`` leaf Vars, into ``out``. Runs no Python code unless it raises, so the indices stay valid until the
    caller next lets Python run."""
    cdef intp k
    cdef i64 j
    cdef object o
    cdef const u8* op = arena().op        # stable here: nothing in this loop makes nodes
    if type(row) is not list and type(row) is not tuple:
        if not isinstance(row, (list, tuple)):
            raise TypeError(f"affine: {row_name(r)} must be a list or tuple of Vars, got {type(row).__name__}")
        row = list(row)     # a subclass: its __getitem__ could run Python code
    if len(row) != n:
        raise ValueError(f"affine: {row_name(r)} has {len(row)} entries, expected {n}")
    for k in range(n):
        o = (<list>row)[k] if type(row) is list else (<tuple>row)[k]
        if type(o) is not Var and not isinstance(o, Var):
            raise TypeError(f"affine: {row_name(r)} holds {type(o).__name__}, expected leaf Vars")
        j = node_index(<Var>o)
        if op[j] != OP_LEAF:
            raise ValueError(f"affine: {row_name(r)} holds a Var that is not a leaf")
        out[k] = j
    return 0


cdef str row_name(intp r):
    return "the bias" if r < 0 else f"weight row {r}"


def affine(rows, bias, xs, activation=None):
    """One dense layer for one input row: ``act(dot(rows[r], xs) + bias[r])`` for every row r, in ONE call.

    ``rows``: ``nout`` lists of ``len(xs)`` leaf Vars (the weights); ``bias``: a list of ``nout`` leaf
    Vars, or None. Both are read on every call, so the layer always uses the Vars its lists hold now
    (whatever was assigned into them). ``xs``: Vars or numbers. Each row is a fused 'dot' node, an 'add' node
    for the bias and an activation node; only the last gets a handle.
    """
    cdef list items = list(xs)
    if not isinstance(rows, (list, tuple)):
        raise TypeError(f"affine: rows must be a list or tuple of lists of Vars, got {type(rows).__name__}")
    cdef intp nin = len(items), nout = len(rows), r, k
    cdef bint has_bias = bias is not None
    if activation not in _ACTIVATIONS:
        raise ValueError(f"affine: unknown activation {activation!r}")
    cdef u8 act = _ACTIVATIONS[activation]
    cdef i64* W = <i64*>malloc(max(nout * nin + nout, 1) * sizeof(i64))    # weights, then biases
    cdef i64* arg = <i64*>malloc(max(2 * nin, 1) * sizeof(i64))
    cdef list keep = []      # handles on leaves made from numbers, alive until referenced
    cdef list out = [None] * nout
    cdef Var v
    cdef i64 j
    cdef f64 y
    cdef bint recording
    cdef Arena* A = arena()     # its arrays move when nodes are made: always read through A
    try:
        if W == NULL or arg == NULL:
            raise MemoryError()
        # NOTE: everything that can run Python code (making handles may run the GC and its finalizers,
        # converting inputs makes leaves) happens BEFORE the parameters' indices are read: from then on
        # only C runs, so no finalizer can drop a parameter whose index is in hand.
        for r in range(nout):
            out[r] = Var.__new__(Var)
        for k in range(nin):
            arg[2 * k + 1] = operand(items[k], keep, "affine")
        for r in range(nout):
            leaf_row(rows[r], nin, W + r * nin, r)
        if has_bias:
            leaf_row(bias, nout, W + nout * nin, -1)
        recording = grad_enabled()
        j = -1
        for r in range(nout):
            y = 0.0
            for k in range(nin):
                arg[2 * k] = W[r * nin + k]
                y += A.value[W[r * nin + k]] * A.value[arg[2 * k + 1]]
            if recording:
                j = new_nary(OP_DOT, arg, 2 * nin, nin, y)
            if has_bias:
                y = y + A.value[W[nout * nin + r]]
                if recording:
                    j = new_node(OP_ADD, j, W[nout * nin + r], 0.0, y)
            if act != OP_LEAF:
                y = op_value(act, y, 0.0, 0.0)
                if recording:
                    j = new_node(act, j, -1, 0.0, y)
            if not recording:       # fg.no_grad: one leaf per row (no unreferenced intermediates)
                j = new_node(OP_LEAF, -1, -1, 0.0, y)
            v = <Var>out[r]
            v.idx = j
            A.refc[j] += 1
    finally:
        free(W)
        free(arg)
    return out
