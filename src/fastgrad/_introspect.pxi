# Introspection (included by _engine.pyx): what transforms, graph tables and optimizers read.

cdef tuple parents_of(i64 j):
    cdef u8 op = A.op[j]
    cdef i64* arg
    if op == OP_LEAF:
        return ()
    if is_nary(op):
        arg = args_of(j)
        return tuple([arg[m] for m in range(nary_slots(j))])
    if A.p1[j] >= 0:
        return (A.p0[j], A.p1[j])
    return (A.p0[j],)


def tape(y):
    """Every node ``y`` depends on, oldest first, ``y`` last: a list of
    (handle, op name, parent positions in this list, constant aux)."""
    cdef i64 o = node_of(y, "tape()"), j
    cdef i64* order = NULL
    cdef intp n, q, wk = -1
    checked_realloc(<void**>&order, A.nlive * SEG_SIZE, sizeof(i64))
    try:
        wk = acquire_walk()
        n = collect(&o, 1, A.walk[wk].mark, A.walk[wk].epoch, order)
        release_walk(wk)
        wk = -1
        nodes = [order[q] for q in range(n - 1, -1, -1)]
    finally:
        if wk >= 0:
            release_walk(wk)
        free(order)
    position = {j: q for q, j in enumerate(nodes)}
    return [(handle(j), OP_NAMES[A.op[j]], tuple([position[p] for p in parents_of(j)]), A.aux[j])
            for j in nodes]


def partials(v):
    """The local derivatives of node ``v`` w.r.t. each of its parents (in ``tape`` order)."""
    cdef i64 j = node_of(v, "partials()")
    cdef f64 d0, d1
    cdef u8 op = A.op[j]
    cdef i64* arg
    if op == OP_LEAF:
        return ()
    if op == OP_SUM:
        return (1.0,) * A.p1[j]
    if op == OP_DOT:
        arg = args_of(j)
        out = []
        for m in range(A.p1[j]):
            out.append(A.value[arg[2 * m + 1]])
            out.append(A.value[arg[2 * m]])
        return tuple(out)
    if op == OP_CUSTOM:
        raise NotImplementedError("partials(): a custom op has no local derivative table")
    local_partials(j, &d0, &d1)
    if A.p1[j] >= 0:
        return (d0, d1)
    return (d0,)


def param_index(params):
    """int64 node indices of a sequence of leaf Vars (for optimizers' C loops)."""
    params = list(params)
    out = np.empty(len(params), dtype=np.int64)
    for k, p in enumerate(params):
        if not isinstance(p, Var):
            raise TypeError(f"parameters must be Var, got {type(p).__name__}")
        if A.op[idx_of(<Var>p)] != OP_LEAF:
            raise ValueError("can't optimize a non-leaf Var")
        out[k] = idx_of(<Var>p)
    return out


def same_nodes(params, const i64[::1] index not None):
    """Does ``params`` hold, in order, Vars on exactly the nodes ``index``? (An optimizer's check, each step,
    that the parameter list it indexed has not been edited and no parameter re-initialised.)"""
    cdef list items = params if type(params) is list else list(params)
    cdef intp n = len(items), k
    if n != index.shape[0]:
        return False
    for k in range(n):
        o = items[k]
        if not isinstance(o, Var) or (<Var>o).idx != index[k]:
            return False
    return True


def memory_stats():
    """Arena bookkeeping: segment size, live and pooled segments, allocated and live node slots, and the
    micrograd extras held (labels and constructor children, one entry per node that has them)."""
    return {
        "segment_size": SEG_SIZE,
        "segments_live": A.nlive,
        "segments_free": A.nfree,
        "nodes_capacity": A.cslot * SEG_SIZE,
        "nodes_live_upper": A.nlive * SEG_SIZE,
        "nodes_alive": A.nalive,
        "walk_records": A.nwalk,
        "micrograd_extras": _n_meta,
    }


def _walks_busy():
    """Debugging aid: for each walk record, whether a running walk holds it."""
    return [bool(A.walk[k].busy) for k in range(A.nwalk)]


cdef bint live_leaf(i64 i) noexcept:
    """Is ``i`` the index of a leaf node that is still referenced?"""
    return 0 <= i < A.cslot * SEG_SIZE and A.seg[i >> SEG_SHIFT].live and \
        (i & SEG_MASK) < A.seg[i >> SEG_SHIFT].fill and A.refc[i] > 0 and A.op[i] == OP_LEAF




def _alive_nodes():
    """Debugging aid: (index, op name, value, reference count) of every node not yet freed."""
    out = []
    cdef intp s
    cdef i64 i
    for s in range(A.nslot):
        if A.seg[s].live:
            for i in range(<i64>s << SEG_SHIFT, (<i64>s << SEG_SHIFT) + A.seg[s].fill):
                if A.refc[i] > 0:
                    out.append((i, OP_NAMES[A.op[i]], A.value[i], A.refc[i]))
    return out
