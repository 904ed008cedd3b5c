# The node arena (included by _engine.pyx): arrays, segments, walk records, lifetime.

# ---------------------------------------------------------------------------------------------------
# memory: one checked realloc helper, segments, nodes
# ---------------------------------------------------------------------------------------------------

cdef int checked_realloc(void** ptr, intp n, size_t size) except -1:
    """Resize ``*ptr`` to ``n`` items of ``size`` bytes. Raises MemoryError and leaves ``*ptr`` intact."""
    if n < 0 or <size_t>n > SIZE_MAX // size:
        raise MemoryError(f"fastgrad: cannot allocate {n} items of {size} bytes")
    cdef void* p = realloc(ptr[0], <size_t>n * size)
    if p == NULL and n > 0:
        raise MemoryError(f"fastgrad: out of memory allocating {n} items of {size} bytes")
    ptr[0] = p
    return 0


cdef int grow_arena() except -1:
    """Double the slot capacity: the segment table and every node array."""
    cdef intp cslot = 4 if A.cslot == 0 else 2 * A.cslot
    cdef intp n = cslot * SEG_SIZE, k
    # WARNING: every pointer into the node arrays is invalid after this; code keeps indices, never pointers.
    checked_realloc(<void**>&A.seg, cslot, sizeof(Segment))
    checked_realloc(<void**>&A.op, n, sizeof(u8))
    checked_realloc(<void**>&A.refc, n, sizeof(u32))
    checked_realloc(<void**>&A.p0, n, sizeof(i64))
    checked_realloc(<void**>&A.p1, n, sizeof(i64))
    checked_realloc(<void**>&A.value, n, sizeof(f64))
    checked_realloc(<void**>&A.aux, n, sizeof(f64))
    checked_realloc(<void**>&A.grad, n, sizeof(f64))
    for k in range(A.nwalk):
        size_walk(&A.walk[k], A.cslot * SEG_SIZE, n)
    A.cslot = cslot
    return 0


# ---------------------------------------------------------------------------------------------------
# walks: the private marks and adjoints of every running graph walk
# ---------------------------------------------------------------------------------------------------

cdef int size_walk(Walk* w, intp old_n, intp n) except -1:
    """Resize a walk record's arrays from ``old_n`` to ``n`` entries; the new marks are 0 (never an epoch)."""
    checked_realloc(<void**>&w.mark, n if n > 0 else 1, sizeof(u32))
    if n > old_n:
        memset(w.mark + old_n, 0, <size_t>(n - old_n) * sizeof(u32))
    checked_realloc(<void**>&w.adj, n if n > 0 else 1, sizeof(f64))
    return 0


cdef intp acquire_walk() except -1:
    """Hand out a free walk record (a new one when every record is held) with a fresh epoch; returns its
    number. The caller releases it with ``release_walk`` when the walk ends, even on an exception.

    WARNING: ``A.walk`` moves when a record is added, and a record's arrays move when the arena grows: code
    that calls into Python keeps the number, never a pointer, and re-reads the arrays afterwards.
    """
    cdef intp k, n = A.cslot * SEG_SIZE
    cdef Walk* w
    for k in range(A.nwalk + 1):
        if k == A.nwalk or not A.walk[k].busy:
            break
    if k == A.nwalk:
        if k == MAX_WALKS:
            raise RuntimeError(f"fastgrad: more than {MAX_WALKS} graph walks at once (backward passes nested "
                               "in custom op rules, or paused in other threads)")
        checked_realloc(<void**>&A.walk, k + 1, sizeof(Walk))
        w = &A.walk[k]
        w.mark = NULL
        w.adj = NULL
        w.epoch = 0
        w.busy = False
        size_walk(w, 0, n)
        A.nwalk = k + 1
    w = &A.walk[k]
    w.busy = True
    w.epoch += 1
    if w.epoch == 0:       # wrap-around: clear every stale stamp once
        memset(w.mark, 0, <size_t>n * sizeof(u32))
        w.epoch = 1
    return k


cdef inline void release_walk(intp k) noexcept:
    A.walk[k].busy = False


cdef intp new_tail() except -1:
    """Activate a segment (pooled if any, else a new slot) as the tail of the live list."""
    cdef intp s
    cdef Segment* seg
    if A.free_head >= 0:
        s = A.free_head
        A.free_head = A.seg[s].next
        A.nfree -= 1
    else:
        if A.nslot == A.cslot:
            grow_arena()
        s = A.nslot
        A.nslot += 1
        seg = &A.seg[s]
        seg.arg = NULL
        seg.carg = 0
    seg = &A.seg[s]
    seg.seq = A.next_seq
    A.next_seq += 1
    seg.fill = 0
    seg.alive = 0
    seg.narg = 0
    seg.live = True
    seg.prev = A.tail
    seg.next = -1
    if A.tail >= 0:
        A.seg[A.tail].next = s
    A.tail = s
    A.nlive += 1
    return s


cdef inline bint grad_off() noexcept nogil:
    """Is the calling thread inside ``no_grad`` (operations make frozen leaves, not graph nodes)?"""
    return fastgrad_grad_off_threads != 0 and fastgrad_grad_off != 0


cdef bint grad_enabled() noexcept nogil:
    """``not grad_off()``, for the other compiled modules (the flag is this module's own)."""
    return not grad_off()


cdef i64 new_node(u8 op, i64 a, i64 b, f64 k, f64 y) except -1:
    """Append a node to the tail segment; ``a``/``b`` are parents (-1: none). Returns its index.

    Inside ``no_grad`` an operation's node is a leaf holding its value (no parents).
    WARNING: then ``a`` and ``b`` gain no reference: a caller that chains nodes without handles (``affine``)
    must not make unreferenced intermediates inside ``no_grad``; they would never be freed."""
    if op != OP_LEAF and grad_off():
        op = OP_LEAF
        a = -1
        b = -1
        k = 0.0
    cdef intp s = A.tail
    if s < 0 or A.seg[s].fill == SEG_SIZE:
        s = new_tail()
    cdef i64 i = (<i64>s << SEG_SHIFT) + A.seg[s].fill
    A.seg[s].fill += 1
    A.seg[s].alive += 1
    A.nalive += 1
    # NOTE: no mark to reset: a recycled slot's stale stamps are older than every running walk's epoch
    # (what a walk marks is reachable from its pinned roots, so it stays alive until the walk ends).
    A.op[i] = op
    A.refc[i] = 0
    A.p0[i] = a
    A.p1[i] = b
    A.aux[i] = k
    A.value[i] = y
    A.grad[i] = 0.0
    if a >= 0:
        A.refc[a] += 1
    if b >= 0:
        A.refc[b] += 1
    return i


cdef i64 new_nary(u8 op, const i64* arg, intp n, intp arity, f64 y) except -1:
    """Append an n-ary node (SUM, DOT, CUSTOM) over ``n`` operand indices; p1 holds ``arity``.
    Inside ``no_grad``: a leaf (see ``new_node``)."""
    if grad_off():
        return new_node(OP_LEAF, -1, -1, 0.0, y)
    cdef i64 i = new_node(op, -1, -1, 0.0, y)
    A.p1[i] = arity
    attach_args(i, arg, n)
    return i


cdef int attach_args(i64 i, const i64* arg, intp n) except -1:
    """Store the ``n`` operand indices of n-ary node ``i`` in its segment's side array; each gains a ref."""
    cdef intp s = <intp>(i >> SEG_SHIFT), k
    cdef Segment* seg = &A.seg[s]
    cdef intp cap = seg.carg
    if seg.narg + n > cap:
        cap = 64 if cap == 0 else cap
        while cap < seg.narg + n:
            cap *= 2
        checked_realloc(<void**>&seg.arg, cap, sizeof(i64))
        seg.carg = cap
    A.p0[i] = seg.narg
    for k in range(n):
        seg.arg[seg.narg + k] = arg[k]
    seg.narg += n
    for k in range(n):
        A.refc[arg[k]] += 1
    return 0


cdef inline i64* args_of(i64 i) noexcept nogil:
    """The operand indices of n-ary node ``i`` (valid until its segment's side array grows)."""
    return A.seg[i >> SEG_SHIFT].arg + A.p0[i]


cdef inline bint is_nary(u8 op) noexcept nogil:
    """Does an op keep its operands in the side array (not in p0/p1)? (A custom op may have none.)"""
    return op == OP_SUM or op == OP_DOT or op == OP_CUSTOM


cdef inline i64 nary_slots(i64 i) noexcept nogil:
    """How many side-array slots n-ary node ``i`` uses: a dot node two per pair, the others one each."""
    return A.p1[i] * (2 if A.op[i] == OP_DOT else 1)


cdef void release(intp s) noexcept:
    """Every node of segment ``s`` is freed: reset it if it is the tail, else return it to the pool."""
    cdef Segment* seg = &A.seg[s]
    seg.narg = 0
    seg.fill = 0
    if s == A.tail:
        return
    if seg.prev >= 0:
        A.seg[seg.prev].next = seg.next
    A.seg[seg.next].prev = seg.prev      # a non-tail segment always has a newer one
    seg.live = False
    seg.next = A.free_head
    A.free_head = s
    A.nlive -= 1
    A.nfree += 1


cdef inline void push(i64* head, i64 i) noexcept:
    # WARNING: node i is dead: its aux slot now holds the work-list link (memcpy: no aliasing games).
    memcpy(&A.aux[i], head, sizeof(i64))
    head[0] = i


cdef void drop(i64 i) noexcept:
    """One reference to node ``i`` is gone: free it, and iteratively every node only it kept alive."""
    cdef i64 head = -1, p, m
    cdef i64* arg
    cdef intp s
    cdef u8 op
    A.refc[i] -= 1
    if A.refc[i] != 0:
        return
    push(&head, i)
    while head >= 0:
        i = head
        memcpy(&head, &A.aux[i], sizeof(i64))
        op = A.op[i]
        if is_nary(op):
            arg = args_of(i)
            for m in range(nary_slots(i)):
                p = arg[m]
                A.refc[p] -= 1
                if A.refc[p] == 0:
                    push(&head, p)
            if op == OP_CUSTOM and _custom_fns is not None:
                _custom_fns.pop(i, None)
        elif op != OP_LEAF:
            p = A.p0[i]
            A.refc[p] -= 1
            if A.refc[p] == 0:
                push(&head, p)
            p = A.p1[i]
            if p >= 0:
                A.refc[p] -= 1
                if A.refc[p] == 0:
                    push(&head, p)
        if _n_meta != 0:
            forget_meta(i)
        if _n_tensor != 0 and op == OP_LEAF:
            forget_tensor(i)
        # a segment is released only once all its nodes are processed, so the p0/p1/arg still needed
        # by nodes on the work list stay intact
        s = <intp>(i >> SEG_SHIFT)
        A.nalive -= 1
        A.seg[s].alive -= 1
        if A.seg[s].alive == 0:
            release(s)


cdef void forget_meta(i64 i) noexcept:
    """Drop freed node ``i``'s micrograd extras (label, constructor children), if it had any.
    (Releasing the children's handles may free more nodes: ``drop`` is re-entrant, see ``_custom_fns``.)"""
    global _n_meta
    if _labels.pop(i, None) is not None:
        _n_meta -= 1
    if _given.pop(i, None) is not None:
        _n_meta -= 1


cdef Arena* arena() noexcept:
    """The arena itself, for the other compiled modules (its arrays move when it grows: re-read them)."""
    return &A


cdef f64* value_ptr() noexcept:
    return A.value


cdef f64* grad_ptr() noexcept:
    return A.grad


cdef inline i64 prev_index(i64 i) noexcept nogil:
    """The node created just before ``i`` among live segments, or -1."""
    if (i & SEG_MASK) != 0:
        return i - 1
    cdef intp s = A.seg[i >> SEG_SHIFT].prev
    if s < 0:
        return -1
    return (<i64>s << SEG_SHIFT) + A.seg[s].fill - 1


cdef inline bint newer(i64 i, i64 j) noexcept nogil:
    """Was node ``i`` created after node ``j``?"""
    cdef i64 si = A.seg[i >> SEG_SHIFT].seq, sj = A.seg[j >> SEG_SHIFT].seq
    return si > sj or (si == sj and (i & SEG_MASK) > (j & SEG_MASK))


