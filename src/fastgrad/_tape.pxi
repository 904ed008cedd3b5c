# Recording (included by _engine.pyx): what fg.compile keeps of a traced graph, and the trace guard.
#
# A trace runs the user's function eagerly. Every node it makes lands in segments activated after
# ``begin_trace()`` (segment numbers, ``seq``, only grow), so "made during the trace" is one comparison.
# ``record`` then walks back from the result: nodes of the trace become the tape's body, in creation order
# (a topological order); nodes made before it (parameters, or anything computed outside) become the tape's
# external inputs, read from the arena on every replay. The walk never goes below the trace's segments.

from cpython.pythread cimport PyThread_get_thread_ident

cdef unsigned long _tracing_thread = 0    # the thread running a trace (0: none)
cdef intp _tracing_depth = 0


cdef int trace_guard(str what) except -1:
    """Raise TraceError if the calling thread is tracing: ``what`` would read a value the tape cannot
    replay (a Python branch on a traced value is baked into the trace)."""
    if _tracing_depth > 0 and PyThread_get_thread_ident() == _tracing_thread:
        from fastgrad.tracing import TraceError
        raise TraceError(
            f"{what} on a Var inside fg.compile: a trace records operations on Vars, not Python decisions "
            "made on their values, so a replay would reuse the traced value. Use an op that branches in the "
            "graph (fg.relu, fg.maximum, fg.minimum, abs), or compute it outside the compiled function.")
    return 0


def _enter_trace():
    """Mark the calling thread as tracing (nested traces on the same thread are allowed); returns the
    segment number that separates nodes made from now on from older ones."""
    global _tracing_thread, _tracing_depth
    cdef unsigned long me = PyThread_get_thread_ident()
    if _tracing_depth > 0 and _tracing_thread != me:
        raise RuntimeError("fg.compile: another thread is tracing; trace one function at a time")
    _tracing_thread = me
    _tracing_depth += 1
    if A.tail < 0:
        return A.next_seq
    if A.seg[A.tail].fill > 0:
        new_tail()
    return A.seg[A.tail].seq


def _exit_trace():
    global _tracing_thread, _tracing_depth
    if _tracing_depth > 0:
        _tracing_depth -= 1
    if _tracing_depth == 0:
        _tracing_thread = 0


cdef inline bint traced(i64 j, i64 floor) noexcept nogil:
    return A.seg[j >> SEG_SHIFT].seq >= floor


cdef inline int take(i64 p, i64 floor, u32* mark, u32 ep, const u32* done, u32 done_ep, intp* pending,
                     list ext) except -1:
    """Reach node ``p``: a node of the trace becomes pending, an older one an external input (once)."""
    if mark[p] == ep or (done != NULL and done[p] == done_ep):
        return 0
    mark[p] = ep
    if traced(p, floor):
        pending[0] += 1
    else:
        ext.append(p)
    return 0


cdef intp scan(list roots, i64 floor, u32* mark, u32 ep, const u32* done, u32 done_ep, i64* order, intp n,
               list ext) except -1:
    """Append to ``order`` (from ``n`` on, newest first) every node made since segment number ``floor`` that
    ``roots`` depend on, except those an earlier scan took (stamped ``done_ep`` in ``done``); the older
    nodes they read go to ``ext``. Never walks below the trace's segments. Returns the new count."""
    cdef intp pending = 0, m, s
    cdef i64 j = -1, base, r
    cdef i64* arg
    cdef u8 op
    for o in roots:
        r = node_of(o, "the compiled function's result")
        take(r, floor, mark, ep, done, done_ep, &pending, ext)
        if traced(r, floor) and mark[r] == ep and (j < 0 or newer(r, j)):
            j = r
    while pending > 0:
        base = j & ~(<i64>SEG_MASK)
        while j >= base and pending > 0:
            if mark[j] == ep and traced(j, floor):
                pending -= 1
                order[n] = j
                n += 1
                op = A.op[j]
                if op == OP_CUSTOM:
                    rule = _custom_fns.get(j)
                    raise TypeError(
                        "fg.compile: the traced function uses a custom op "
                        f"({getattr(rule, '__qualname__', rule)!s}); its derivative is Python code, which a "
                        "replay cannot run. Call this function without fg.compile.")
                if is_nary(op):
                    arg = args_of(j)
                    for m in range(nary_slots(j)):
                        take(arg[m], floor, mark, ep, done, done_ep, &pending, ext)
                elif op != OP_LEAF:
                    take(A.p0[j], floor, mark, ep, done, done_ep, &pending, ext)
                    if A.p1[j] >= 0:
                        take(A.p1[j], floor, mark, ep, done, done_ep, &pending, ext)
            j -= 1
        if pending > 0:
            s = A.seg[base >> SEG_SHIFT].prev     # pending nodes are older, so there is an older segment
            if s < 0:
                raise RuntimeError("record(): a node's parent is not older than it (corrupt arena)")
            j = (<i64>s << SEG_SHIFT) + A.seg[s].fill - 1
    return n


def record(list outs, list args, i64 floor):
    """The tape of ``outs`` as traced since segment number ``floor``, with the leaf Vars ``args`` as its
    first inputs (in order, reached or not). ``outs[0]`` is the result that is backpropagated; the others
    are only evaluated: the nodes that only they need come after all of ``outs[0]``'s.

    Returns ``(op, a, b, k, operands, external, out_pos)``: per tape position ``op`` (uint8), parents
    ``a``, ``b`` (positions, -1: none; an n-ary node's first slot in ``operands`` and its arity) and constant
    ``k`` (a constant leaf's value); ``operands`` (int64 positions of the n-ary nodes' operands); ``external``
    (handles on the nodes made before the trace that it reads, in creation order: positions ``len(args)``
    onwards); ``out_pos`` (int64 positions of ``outs``). Positions ``len(args) + len(external)`` onwards are the body.
    """
    cdef i64 j
    cdef intp nargs = len(args), n = 0, n1, q, m, wk = -1, wk2 = -1, nbody, nin
    cdef i64* order = NULL
    cdef i64* pos = NULL
    cdef i64* arg
    cdef u8 op
    cdef list ext = []
    if not outs:
        raise ValueError("record(): no outputs")
    for q in range(nargs):
        j = node_of(args[q], "a traced argument")
        if A.op[j] != OP_LEAF or not traced(j, floor):
            raise ValueError("record(): the arguments must be leaves made during the trace")
    try:
        wk = acquire_walk()
        checked_realloc(<void**>&order, max(A.nlive * SEG_SIZE, 1), sizeof(i64))
        n = scan(outs[:1], floor, A.walk[wk].mark, A.walk[wk].epoch, NULL, 0, order, 0, ext)
        n1 = n
        if len(outs) > 1:
            wk2 = acquire_walk()
            n = scan(outs[1:], floor, A.walk[wk2].mark, A.walk[wk2].epoch, A.walk[wk].mark, A.walk[wk].epoch,
                     order, n, ext)
            release_walk(wk2)
            wk2 = -1
        release_walk(wk)
        wk = -1
        ext.sort(key=lambda i: (A.seg[i >> SEG_SHIFT].seq, i & SEG_MASK))
        # positions: the arguments, the external nodes, then the body in creation order (first what
        # outs[0] needs, then what only the others need)
        checked_realloc(<void**>&pos, max(A.cslot * SEG_SIZE, 1), sizeof(i64))
        nin = nargs + len(ext)
        is_arg = set()
        for q in range(nargs):
            pos[(<Var>args[q]).idx] = q
            is_arg.add((<Var>args[q]).idx)
        for q in range(len(ext)):
            pos[<i64>ext[q]] = nargs + q
        body = [order[q] for q in range(n1 - 1, -1, -1) if order[q] not in is_arg]
        body += [order[q] for q in range(n - 1, n1 - 1, -1) if order[q] not in is_arg]
        nbody = len(body)
        for q in range(nbody):
            pos[<i64>body[q]] = nin + q
        tot = nin + nbody
        op_a = np.zeros(tot, dtype=np.uint8)       # inputs are leaves
        a_a = np.full(tot, -1, dtype=np.int64)
        b_a = np.full(tot, -1, dtype=np.int64)
        k_a = np.zeros(tot, dtype=np.float64)
        operands = []
        for q in range(nbody):
            j = body[q]
            op = A.op[j]
            op_a[nin + q] = op
            if op == OP_LEAF:
                k_a[nin + q] = A.value[j]
            elif is_nary(op):
                arg = args_of(j)
                a_a[nin + q] = len(operands)
                b_a[nin + q] = A.p1[j]
                operands.extend([pos[arg[m]] for m in range(nary_slots(j))])
            else:
                a_a[nin + q] = pos[A.p0[j]]
                b_a[nin + q] = pos[A.p1[j]] if A.p1[j] >= 0 else -1
                k_a[nin + q] = A.aux[j]
        out_pos = np.array([pos[node_of(o, "the compiled function's result")] for o in outs], dtype=np.int64)
    finally:
        if wk2 >= 0:
            release_walk(wk2)
        if wk >= 0:
            release_walk(wk)
        free(order)
        free(pos)
    return (op_a, a_a, b_a, k_a, np.array(operands, dtype=np.int64), [handle(<i64>i) for i in ext], out_pos)


def _is_tracing():
    """Is the calling thread inside a trace?"""
    return _tracing_depth > 0 and PyThread_get_thread_ident() == _tracing_thread
