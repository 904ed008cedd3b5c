"""The graph engine: typed node arrays in recycled segments, the sweeps over them, and the Var handle.

Nodes live in one arena of struct-of-arrays (op, parents, value, aux, grad, refc), cut into fixed-size
segments. A node's index is ``slot << SEG_SHIFT | offset``. Live segments form a list in activation order,
and a node is only ever created after its parents, so walking the live list backwards, each segment from its
last node down, is a reverse topological order: backward needs no recursion, no sort and no hash set.

Lifetime. Every node counts its references: the Var handles on it plus the consumers built on it. When a
count falls to zero the node is freed and its parents lose a reference, iteratively (the work list is
threaded through the freed nodes themselves, so freeing never allocates and never recurses). A segment
whose nodes are all freed goes back to a pool (the tail segment is reset in place). So a graph is freed as
soon as no handle reaches it, with no reference cycles for the GC, and a warm training loop reuses pooled
segments without allocating.

Walks and threads. The arena is interpreter-wide mutable state (node creation may ``realloc`` it), so every
sweep runs with the GIL held, even though the sweep loops themselves touch no Python object (they are
``nogil``). Every walk (backward, a private reverse sweep, a collection) holds a walk record of its own: its
visit marks and adjoints. A walk paused in a custom op's Python rule is therefore never disturbed by another
walk, nested in that rule or run by another thread (docs/engine.md, "Walks").
"""
cimport cython
from cpython.float cimport PyFloat_AS_DOUBLE, PyFloat_Check
from cpython.long cimport PyLong_AsDouble, PyLong_Check
cimport libc.math as cm
from libc.math cimport NAN
from libc.stdint cimport SIZE_MAX
from libc.stdlib cimport calloc, free, malloc, realloc
from libc.string cimport memcpy, memset

import numbers

import numpy as np

from fastgrad._types cimport f64, i64, u8, u32, intp

OP_NAMES = (
    "leaf", "add", "sub", "mul", "div", "pow", "addc", "mulc", "divc", "rsubc", "rdivc", "powc", "rpowc",
    "neg", "abs", "exp", "log", "sqrt", "sin", "cos", "tanh", "sigmoid", "relu", "max", "min",
    "sum", "dot", "custom",
)
assert len(OP_NAMES) == N_OPS

cdef Arena A
A.tail = -1
A.free_head = -1

cdef enum:
    MAX_WALKS = 64        # walks running at once (nested in custom rules, or paused in other threads)

# custom-op callbacks: node index -> backward callable; dropped when the node is freed
cdef dict _custom_fns = {}


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


cdef i64 new_node(u8 op, i64 a, i64 b, f64 k, f64 y) except -1:
    """Append a node to the tail segment; ``a``/``b`` are parents (-1: none). Returns its index."""
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
    """Append an n-ary node (SUM, DOT, CUSTOM) over ``n`` operand indices; p1 holds ``arity``."""
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
        # a segment is released only once all its nodes are processed, so the p0/p1/arg still needed
        # by nodes on the work list stay intact
        s = <intp>(i >> SEG_SHIFT)
        A.nalive -= 1
        A.seg[s].alive -= 1
        if A.seg[s].alive == 0:
            release(s)


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


# ---------------------------------------------------------------------------------------------------
# the op table: forward value, first partials, second partials — one case per op, in op-code order
# ---------------------------------------------------------------------------------------------------

@cython.cdivision(True)
cdef inline f64 sigmoid_value(f64 a) noexcept nogil:
    cdef f64 e
    if a >= 0:
        return 1.0 / (1.0 + cm.exp(-a))
    e = cm.exp(a)
    return e / (1.0 + e)


@cython.cdivision(True)
cdef f64 eval_op(u8 op, f64 a, f64 b, f64 k) noexcept nogil:
    """Forward value of a unary/binary op on parent values ``a``, ``b`` and constant ``k`` (IEEE rules)."""
    if op == OP_ADD:
        return a + b
    elif op == OP_SUB:
        return a - b
    elif op == OP_MUL:
        return a * b
    elif op == OP_DIV:
        return a / b
    elif op == OP_POW:
        return cm.pow(a, b)
    elif op == OP_ADDC:
        return a + k
    elif op == OP_MULC:
        return a * k
    elif op == OP_DIVC:
        return a / k
    elif op == OP_RSUBC:
        return k - a
    elif op == OP_RDIVC:
        return k / a
    elif op == OP_POWC:
        # NOTE: libm's pow even for squares: Python's x ** 2 calls pow, which differs from x * x in about
        # 0.1% of cases (glibc's pow is not always correctly rounded), and values must match Python's.
        return cm.pow(a, k)
    elif op == OP_RPOWC:
        return cm.pow(k, a)
    elif op == OP_NEG:
        return -a
    elif op == OP_ABS:
        return cm.fabs(a)
    elif op == OP_EXP:
        return cm.exp(a)
    elif op == OP_LOG:
        return cm.log(a)
    elif op == OP_SQRT:
        return cm.sqrt(a)
    elif op == OP_SIN:
        return cm.sin(a)
    elif op == OP_COS:
        return cm.cos(a)
    elif op == OP_TANH:
        return cm.tanh(a)
    elif op == OP_SIGMOID:
        return sigmoid_value(a)
    elif op == OP_RELU:
        return a if a > 0 or a != a else 0.0
    elif op == OP_MAX:
        return a if a >= b or a != a else b
    elif op == OP_MIN:
        return a if a <= b or a != a else b
    return NAN


cdef inline f64 sign(f64 a) noexcept nogil:
    return 1.0 if a > 0 else (-1.0 if a < 0 else 0.0)


@cython.cdivision(True)
cdef inline void local_partials(i64 i, f64* d0, f64* d1) noexcept nogil:
    """d value[i] / d parent: ``d0`` for p0, ``d1`` for p1 (unary ops leave ``d1`` at 0).

    The only place first derivatives live: the reverse sweep, the tangent sweep and graph inspection all
    read them from here. Kinks take the minimum-norm subgradient (relu'(0) = abs'(0) = 0), max/min ties split
    evenly, and x**0, 0**y have gradient 0, never NaN.
    """
    cdef u8 op = A.op[i]
    cdef f64 a = A.value[A.p0[i]], y = A.value[i], k = A.aux[i], b = 0.0
    if A.p1[i] >= 0:
        b = A.value[A.p1[i]]
    d1[0] = 0.0
    if op == OP_ADD:
        d0[0] = 1.0; d1[0] = 1.0
    elif op == OP_SUB:
        d0[0] = 1.0; d1[0] = -1.0
    elif op == OP_MUL:
        d0[0] = b; d1[0] = a
    elif op == OP_DIV:
        d0[0] = 1.0 / b; d1[0] = -y * d0[0]
    elif op == OP_POW:
        d0[0] = 0.0 if b == 0 else b * cm.pow(a, b - 1.0)
        d1[0] = 0.0 if a == 0 else y * cm.log(a)
    elif op == OP_ADDC:
        d0[0] = 1.0
    elif op == OP_MULC:
        d0[0] = k
    elif op == OP_DIVC:
        d0[0] = 1.0 / k
    elif op == OP_RSUBC:
        d0[0] = -1.0
    elif op == OP_RDIVC:
        d0[0] = -y / a
    elif op == OP_POWC:
        # NOTE: squares and reciprocals skip libm's pow (the common cases, and pow costs ~20 ns)
        if k == 2:
            d0[0] = 2.0 * a
        elif k == -1:
            d0[0] = -y * y
        else:
            d0[0] = 0.0 if k == 0 else k * cm.pow(a, k - 1.0)
    elif op == OP_RPOWC:
        d0[0] = 0.0 if k == 0 else y * cm.log(k)
    elif op == OP_NEG:
        d0[0] = -1.0
    elif op == OP_ABS:
        d0[0] = sign(a)
    elif op == OP_EXP:
        d0[0] = y
    elif op == OP_LOG:
        d0[0] = 1.0 / a
    elif op == OP_SQRT:
        d0[0] = 0.5 / y
    elif op == OP_SIN:
        d0[0] = cm.cos(a)
    elif op == OP_COS:
        d0[0] = -cm.sin(a)
    elif op == OP_TANH:
        d0[0] = 1.0 - y * y
    elif op == OP_SIGMOID:
        d0[0] = y * (1.0 - y)
    elif op == OP_RELU:
        d0[0] = 1.0 if a > 0 else 0.0
    elif op == OP_MAX:
        d0[0] = 1.0 if a > b else (0.0 if a < b else 0.5)
        d1[0] = 1.0 - d0[0]
    elif op == OP_MIN:
        d0[0] = 1.0 if a < b else (0.0 if a > b else 0.5)
        d1[0] = 1.0 - d0[0]
    else:
        d0[0] = NAN


@cython.cdivision(True)
cdef void local_partials2(i64 i, f64* h00, f64* h01, f64* h11) noexcept nogil:
    """Second derivatives of value[i]: d²/dp0², d²/dp0 dp1, d²/dp1² (zero where the op is piecewise linear)."""
    cdef u8 op = A.op[i]
    cdef f64 a = A.value[A.p0[i]], y = A.value[i], k = A.aux[i], b = 0.0, la
    if A.p1[i] >= 0:
        b = A.value[A.p1[i]]
    h00[0] = 0.0; h01[0] = 0.0; h11[0] = 0.0
    if op == OP_MUL:
        h01[0] = 1.0
    elif op == OP_DIV:
        h01[0] = -1.0 / (b * b); h11[0] = 2.0 * y / (b * b)
    elif op == OP_POW:
        if b != 0 and b != 1:
            h00[0] = b * (b - 1.0) * cm.pow(a, b - 2.0)
        if a != 0:
            la = cm.log(a)
            h01[0] = cm.pow(a, b - 1.0) * (1.0 + b * la)
            h11[0] = y * la * la
    elif op == OP_RDIVC:
        h00[0] = 2.0 * y / (a * a)
    elif op == OP_POWC:
        if k != 0 and k != 1:
            h00[0] = k * (k - 1.0) * cm.pow(a, k - 2.0)
    elif op == OP_RPOWC:
        if k != 0:
            h00[0] = y * cm.log(k) * cm.log(k)
    elif op == OP_EXP:
        h00[0] = y
    elif op == OP_LOG:
        h00[0] = -1.0 / (a * a)
    elif op == OP_SQRT:
        h00[0] = -0.25 / (y * y * y)
    elif op == OP_SIN or op == OP_COS:
        h00[0] = -y
    elif op == OP_TANH:
        h00[0] = -2.0 * y * (1.0 - y * y)
    elif op == OP_SIGMOID:
        h00[0] = y * (1.0 - y) * (1.0 - 2.0 * y)


# ---------------------------------------------------------------------------------------------------
# the reverse sweep (backward)
# ---------------------------------------------------------------------------------------------------

cdef inline void acc(i64 p, f64 c, const u8* op, f64* grad, u32* mark, f64* adj, u32 epoch,
                     bint keep_leaves, intp* pending) noexcept nogil:
    """Add ``c`` to the adjoint of ``p``: leaves accumulate into ``grad`` (when ``keep_leaves``); any other
    node starts fresh in ``adj`` at its first contribution in this walk and is then pending."""
    if keep_leaves and op[p] == OP_LEAF:
        grad[p] += c
    elif mark[p] == epoch:
        adj[p] += c
    else:
        mark[p] = epoch
        adj[p] = c
        pending[0] += 1


cdef i64 sweep_reverse(i64 i, u32* mark, f64* adj, u32 epoch, bint keep_leaves,
                       intp* pending_io) noexcept nogil:
    """Pull adjoints from node ``i`` downwards through every marked node, until none is pending.

    With ``keep_leaves`` (``backward()``), each processed node's final adjoint is also published as its
    ``.grad``. Returns -1 when done, or the index of a custom node, whose Python rule the caller runs before
    resuming at ``prev_index`` of it (the custom node is already counted off ``pending``).
    """
    # NOTE: the arena cannot move inside this loop (no Python runs), so its arrays are read into locals:
    # the compiler then keeps them in registers instead of reloading the globals after every store.
    cdef const u8* op = A.op
    cdef const i64* p0 = A.p0
    cdef const i64* p1 = A.p1
    cdef const f64* value = A.value
    cdef f64* grad = A.grad
    cdef intp pending = pending_io[0]
    cdef i64 base, j, n, m
    cdef i64* arg
    cdef f64 g, d0, d1
    cdef u8 o
    cdef intp s
    while i >= 0:
        base = i & ~(<i64>SEG_MASK)
        j = i
        while j >= base:
            if mark[j] == epoch:
                o = op[j]
                pending -= 1
                g = adj[j]
                if keep_leaves:
                    grad[j] = g
                if o == OP_CUSTOM:
                    pending_io[0] = pending
                    return j
                if o == OP_SUM:
                    arg = args_of(j)
                    for m in range(p1[j]):
                        acc(arg[m], g, op, grad, mark, adj, epoch, keep_leaves, &pending)
                elif o == OP_DOT:
                    arg = args_of(j)
                    n = p1[j]
                    for m in range(n):
                        acc(arg[2 * m], g * value[arg[2 * m + 1]], op, grad, mark, adj, epoch, keep_leaves,
                            &pending)
                        acc(arg[2 * m + 1], g * value[arg[2 * m]], op, grad, mark, adj, epoch, keep_leaves,
                            &pending)
                elif o != OP_LEAF:
                    local_partials(j, &d0, &d1)
                    acc(p0[j], g * d0, op, grad, mark, adj, epoch, keep_leaves, &pending)
                    if p1[j] >= 0:
                        acc(p1[j], g * d1, op, grad, mark, adj, epoch, keep_leaves, &pending)
                if pending == 0:
                    pending_io[0] = 0
                    return -1
            j -= 1
        s = A.seg[i >> SEG_SHIFT].prev
        i = -1 if s < 0 else (<i64>s << SEG_SHIFT) + A.seg[s].fill - 1
    pending_io[0] = pending
    return -1


cdef int run_custom(i64 j, intp wk, bint keep_leaves, intp* pending) except -1:
    """Run the Python reverse rule of custom node ``j`` and accumulate what it returns into its inputs."""
    fn = _custom_fns[j]
    cdef intp n = <intp>A.p1[j], m
    grads = tuple(fn(A.walk[wk].adj[j]))
    if len(grads) != n:
        raise ValueError(f"custom op backward returned {len(grads)} gradients for {n} inputs")
    values = [as_float(c, "a custom op's gradient") for c in grads]
    # the rule may have created nodes (arena and walk arrays moved) or started walks (A.walk moved)
    cdef Walk* w = &A.walk[wk]
    for m in range(n):
        acc(args_of(j)[m], <f64>values[m], A.op, A.grad, w.mark, w.adj, w.epoch, keep_leaves, pending)
    return 0


cdef int reverse_pass(i64 out, f64 seed, intp wk, bint keep_leaves) except -1:
    """Backpropagate ``seed`` from ``out`` with walk record ``wk`` (held by the caller).

    ``keep_leaves``: this is ``backward()``: leaves accumulate into ``.grad`` and every reached interior
    node's ``.grad`` is set. Otherwise adjoints stay in the walk's ``adj``, where every reached node, leaves
    included, starts fresh (``mark == epoch`` says which). The root is pinned for the whole pass, so what
    it reaches stays alive even if a custom rule drops every handle on it.
    """
    cdef intp pending = 1
    cdef i64 j
    cdef Walk* w = &A.walk[wk]
    if keep_leaves and A.op[out] == OP_LEAF:
        A.grad[out] += seed
        return 0
    w.mark[out] = w.epoch
    w.adj[out] = seed
    A.refc[out] += 1
    try:
        j = sweep_reverse(out, w.mark, w.adj, w.epoch, keep_leaves, &pending)
        while j >= 0:
            run_custom(j, wk, keep_leaves, &pending)
            w = &A.walk[wk]
            j = -1 if pending == 0 else sweep_reverse(prev_index(j), w.mark, w.adj, w.epoch, keep_leaves,
                                                      &pending)
    finally:
        drop(out)
    return 0


# ---------------------------------------------------------------------------------------------------
# transform sweeps: collect (reachability), tangents (forward mode), forward-over-reverse
# ---------------------------------------------------------------------------------------------------

cdef inline void visit(i64 p, u32* mark, u32 walk, intp* pending) noexcept nogil:
    if mark[p] != walk:
        mark[p] = walk
        pending[0] += 1


cdef intp collect(const i64* out, intp nout, u32* mark, u32 walk, i64* order) except -1:
    """Write every node the outputs depend on into ``order``, newest first, stamping each with ``walk`` in
    ``mark``; returns how many. ``order`` must have room for every node of the live segments.
    """
    cdef intp pending = 0, n = 0, k, m
    cdef i64 i = -1, j, base
    cdef i64* arg
    cdef u8 op
    cdef intp s
    for k in range(nout):
        visit(out[k], mark, walk, &pending)
        if i < 0 or newer(out[k], i):
            i = out[k]
    while i >= 0 and pending > 0:
        base = i & ~(<i64>SEG_MASK)
        j = i
        while j >= base and pending > 0:
            if mark[j] == walk:
                pending -= 1
                order[n] = j
                n += 1
                op = A.op[j]
                if is_nary(op):
                    arg = args_of(j)
                    for m in range(nary_slots(j)):
                        visit(arg[m], mark, walk, &pending)
                elif op != OP_LEAF:
                    visit(A.p0[j], mark, walk, &pending)
                    if A.p1[j] >= 0:
                        visit(A.p1[j], mark, walk, &pending)
            j -= 1
        s = A.seg[i >> SEG_SHIFT].prev
        i = -1 if s < 0 else (<i64>s << SEG_SHIFT) + A.seg[s].fill - 1
    return n


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


cdef i64 dependent_custom(const i64* order, intp n, const i64* pos, u8* dep) noexcept nogil:
    """Propagate ``dep`` (set beforehand on the inputs' positions) in creation order: does a node depend
    on an input? Returns the first custom node that does (its derivative is Python's), or -1."""
    cdef intp q, m, at
    cdef i64 j
    cdef i64* arg
    cdef u8 op
    for q in range(n - 1, -1, -1):
        j = order[q]
        at = n - 1 - q
        op = A.op[j]
        if dep[at] or op == OP_LEAF:
            continue
        if is_nary(op):
            arg = args_of(j)
            for m in range(nary_slots(j)):
                dep[at] |= dep[pos[arg[m]]]
        else:
            dep[at] = dep[pos[A.p0[j]]] | (dep[pos[A.p1[j]]] if A.p1[j] >= 0 else 0)
        if dep[at] and op == OP_CUSTOM:
            return j
    return -1


cdef void tangent_sweep(const i64* order, intp n, const i64* pos, f64* T, intp kd) noexcept nogil:
    """Push ``kd`` tangents per node in creation order; T[pos[j]*kd + r] is node j's r-th tangent.

    ``T`` starts zeroed with the inputs' rows seeded; every collected node adds what flows in from its
    parents through ``local_partials`` (the table the reverse sweep reads). Custom nodes are skipped: the
    caller has checked that none depends on an input, so their tangent is zero.
    """
    cdef intp q, r, m, pa, pb
    cdef i64 j, w, x
    cdef i64* arg
    cdef f64 d0, d1, vw, vx
    cdef f64* t
    cdef u8 op
    for q in range(n - 1, -1, -1):
        j = order[q]
        op = A.op[j]
        if op == OP_LEAF or op == OP_CUSTOM:
            continue
        t = T + (n - 1 - q) * kd
        if op == OP_SUM:
            arg = args_of(j)
            for m in range(A.p1[j]):
                pa = pos[arg[m]] * kd
                for r in range(kd):
                    t[r] += T[pa + r]
        elif op == OP_DOT:
            arg = args_of(j)
            for m in range(A.p1[j]):
                w = arg[2 * m]
                x = arg[2 * m + 1]
                vw = A.value[w]
                vx = A.value[x]
                pa = pos[w] * kd
                pb = pos[x] * kd
                for r in range(kd):
                    t[r] += vx * T[pa + r] + vw * T[pb + r]
        else:
            local_partials(j, &d0, &d1)
            pa = pos[A.p0[j]] * kd
            for r in range(kd):
                t[r] += d0 * T[pa + r]
            if A.p1[j] >= 0:
                pb = pos[A.p1[j]] * kd
                for r in range(kd):
                    t[r] += d1 * T[pb + r]


cdef void adjoint_sweep(const i64* order, intp n, const i64* pos, const f64* T, intp kd,
                        f64* a, f64* at) noexcept nogil:
    """Pull adjoints ``a`` (and, when ``kd`` > 0, their tangents ``at``: forward-over-reverse) over the
    collected nodes, newest first. ``a``/``at`` start zeroed with the output seeded.
    at[pos*kd + r] = d/dε of the adjoint along tangent direction r of ``T``. Custom nodes are skipped:
    none depends on an input, so nothing they would pass down can reach one.
    """
    cdef intp q, r, m, pa, pb, qa
    cdef i64 j, w, x
    cdef i64* arg
    cdef f64 g, d0, d1, h00, h01, h11, ta, tb, vw, vx
    cdef const f64* gt
    cdef u8 op
    for q in range(n):
        j = order[q]
        op = A.op[j]
        if op == OP_LEAF or op == OP_CUSTOM:
            continue
        qa = n - 1 - q
        g = a[qa]
        gt = at + qa * kd
        if op == OP_SUM:
            arg = args_of(j)
            for m in range(A.p1[j]):
                pa = pos[arg[m]]
                a[pa] += g
                for r in range(kd):
                    at[pa * kd + r] += gt[r]
        elif op == OP_DOT:
            arg = args_of(j)
            for m in range(A.p1[j]):
                w = arg[2 * m]
                x = arg[2 * m + 1]
                vw = A.value[w]
                vx = A.value[x]
                pa = pos[w]
                pb = pos[x]
                a[pa] += g * vx
                a[pb] += g * vw
                for r in range(kd):
                    at[pa * kd + r] += gt[r] * vx + g * T[pb * kd + r]
                    at[pb * kd + r] += gt[r] * vw + g * T[pa * kd + r]
        else:
            local_partials(j, &d0, &d1)
            pa = pos[A.p0[j]]
            pb = pos[A.p1[j]] if A.p1[j] >= 0 else -1
            a[pa] += g * d0
            if pb >= 0:
                a[pb] += g * d1
            if kd > 0:
                local_partials2(j, &h00, &h01, &h11)
                for r in range(kd):
                    ta = T[pa * kd + r]
                    tb = T[pb * kd + r] if pb >= 0 else 0.0
                    at[pa * kd + r] += gt[r] * d0 + g * (h00 * ta + h01 * tb)
                    if pb >= 0:
                        at[pb * kd + r] += gt[r] * d1 + g * (h01 * ta + h11 * tb)


cdef class _Scratch:
    """Per-call buffers of a transform sweep (never shared between calls or threads); freed on dealloc."""
    cdef i64* order     # order[q]: q-th collected node, newest first
    cdef i64* pos       # pos[j]: position of collected node j in creation order (dense over the arena)
    cdef f64* T         # T[pos*kd + r]: tangents
    cdef f64* a         # a[pos]: adjoints
    cdef f64* at        # at[pos*kd + r]: adjoint tangents
    cdef intp n         # collected nodes
    cdef intp kd        # tangent directions
    cdef intp wk        # the walk record holding the marks of the collected nodes (-1: none yet)
    cdef u32 walk       # stamp of the collected nodes in it

    def __cinit__(self):
        self.wk = -1

    def __dealloc__(self):
        if self.wk >= 0:
            release_walk(self.wk)
        free(self.order)
        free(self.pos)
        free(self.T)
        free(self.a)
        free(self.at)

    cdef int zeroed(self, f64** buf, intp count) except -1:
        checked_realloc(<void**>buf, count if count > 0 else 1, sizeof(f64))
        memset(buf[0], 0, <size_t>count * sizeof(f64))
        return 0

    cdef intp position(self, object v) except -2:
        """Position of Var ``v`` in the compact buffers, or -1 when the outputs do not depend on it."""
        cdef i64 j = idx_of(<Var>v)
        return self.pos[j] if A.walk[self.wk].mark[j] == self.walk else -1


cdef i64 node_of(object v, str what) except -1:
    if not isinstance(v, Var):
        raise TypeError(f"{what} must be Var, got {type(v).__name__}")
    return idx_of(<Var>v)


cdef _Scratch prepare(list outs, list ins, intp kd):
    """Collect what ``outs`` depend on and lay out the compact buffers for forward-mode sweeps.

    Inputs are seeds, not barriers: a tangent flows on through an input that depends on another one, as
    the adjoint of ``grad`` does (PyTorch's autograd.grad semantics). Raises NotImplementedError if a custom
    op (whose derivative is Python's) depends on an input.
    """
    cdef _Scratch sc = _Scratch()
    cdef intp nout = len(outs), k, q
    cdef i64 j
    cdef u8* dep = NULL
    sc.wk = acquire_walk()
    sc.walk = A.walk[sc.wk].epoch
    sc.kd = kd
    cdef i64* outidx = <i64*>malloc(max(nout, 1) * sizeof(i64))
    if outidx == NULL:
        raise MemoryError()
    try:
        for k in range(nout):
            outidx[k] = node_of(outs[k], "outputs")
        checked_realloc(<void**>&sc.order, A.nlive * SEG_SIZE, sizeof(i64))
        sc.n = collect(outidx, nout, A.walk[sc.wk].mark, sc.walk, sc.order)
    finally:
        free(outidx)
    checked_realloc(<void**>&sc.pos, A.cslot * SEG_SIZE, sizeof(i64))
    for q in range(sc.n):
        sc.pos[sc.order[q]] = sc.n - 1 - q
    dep = <u8*>calloc(max(sc.n, 1), 1)
    if dep == NULL:
        raise MemoryError()
    try:
        for v in ins:
            k = sc.position(v) if isinstance(v, Var) else node_of(v, "inputs")
            if k >= 0:
                dep[k] = 1
        j = dependent_custom(sc.order, sc.n, sc.pos, dep)
    finally:
        free(dep)
    if j >= 0:
        rule = _custom_fns.get(j)
        raise NotImplementedError(
            "fastgrad: forward mode and second derivatives cannot pass through a custom op whose "
            f"derivative is Python code ({getattr(rule, '__qualname__', rule)!s}) when it depends on the inputs")
    sc.zeroed(&sc.T, sc.n * kd)
    return sc


def jvp(outs, ins, tangents):
    """Forward mode: d outs along ``tangents`` of ``ins``, by one tangent sweep in C.

    ``tangents``: one per input (returns one float per output), or a 2-d (k, n) block of k directions,
    all pushed in the same sweep (returns k lists).
    """
    outs, ins = list(outs), list(ins)
    cdef double[:, ::1] Tm = np.ascontiguousarray(np.atleast_2d(np.asarray(tangents, dtype=np.float64)))
    cdef intp kd = Tm.shape[0], k, r, p
    if Tm.shape[1] != len(ins):
        raise ValueError(f"jvp: {len(ins)} inputs but tangents of length {Tm.shape[1]}")
    cdef _Scratch sc = prepare(outs, ins, kd)
    for k in range(len(ins)):
        p = sc.position(ins[k])
        if p >= 0:
            for r in range(kd):
                sc.T[p * kd + r] += Tm[r, k]
    tangent_sweep(sc.order, sc.n, sc.pos, sc.T, kd)
    rows = [[sc.T[sc.position(v) * kd + r] for v in outs] for r in range(kd)]
    return rows if np.ndim(tangents) == 2 else rows[0]


def hvp(out, ins, V):
    """Forward-over-reverse: (gradient of ``out`` w.r.t. ``ins``, H @ v for each row v of ``V``).

    All ``k`` directions travel in one tangent sweep and one adjoint sweep. No ``.grad`` is touched.
    """
    ins = list(ins)
    cdef double[:, ::1] Vm = np.ascontiguousarray(np.atleast_2d(np.asarray(V, dtype=np.float64)))
    cdef intp kd = Vm.shape[0], n = len(ins), k, r, p
    if Vm.shape[1] != n:
        raise ValueError(f"hvp: {n} inputs but directions of length {Vm.shape[1]}")
    cdef _Scratch sc = prepare([out], ins, kd)
    for k in range(n):
        p = sc.position(ins[k])
        if p >= 0:
            for r in range(kd):
                sc.T[p * kd + r] += Vm[r, k]
    tangent_sweep(sc.order, sc.n, sc.pos, sc.T, kd)
    sc.zeroed(&sc.a, sc.n)
    sc.zeroed(&sc.at, sc.n * kd)
    sc.a[sc.n - 1] = 1.0
    adjoint_sweep(sc.order, sc.n, sc.pos, sc.T, kd, sc.a, sc.at)
    grad = np.zeros(n)
    HV = np.zeros((kd, n))
    for k in range(n):
        p = sc.position(ins[k])
        if p >= 0:
            grad[k] = sc.a[p]
            for r in range(kd):
                HV[r, k] = sc.at[p * kd + r]
    return grad, HV


def grad(out, ins, seed=1.0):
    """``seed`` · d ``out`` / d ``ins`` by one reverse sweep into a private buffer: no ``.grad`` is touched.

    The seed enters the sweep (a custom op's rule sees it as its incoming gradient), never multiplied in
    afterwards, so a rule that ignores its gradient gives a wrong vjp that checks can catch."""
    ins = list(ins)
    cdef i64 o = node_of(out, "output"), j
    cdef intp n = len(ins), k, wk
    cdef f64 c = as_float(seed, "grad seed")
    cdef double[::1] result = np.zeros(n)
    cdef i64[::1] idx = np.empty(n, dtype=np.int64)
    for k in range(n):
        idx[k] = node_of(ins[k], "inputs")
    wk = acquire_walk()
    try:
        reverse_pass(o, c, wk, False)
        for k in range(n):
            j = idx[k]
            if A.walk[wk].mark[j] == A.walk[wk].epoch:
                result[k] = A.walk[wk].adj[j]
    finally:
        release_walk(wk)
    return result.base


# ---------------------------------------------------------------------------------------------------
# Var: the handle
# ---------------------------------------------------------------------------------------------------

_Real = numbers.Real
_ndarray = np.ndarray


cdef int as_real(object o, f64* out) except -1:
    """Store ``o`` as a float64 and return 1 if it is a real number (int, float, bool, NumPy real scalar,
    0-d real array, numbers.Real); return 0 otherwise (the operator then returns NotImplemented)."""
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
    return 0


cdef f64 as_float(object o, str what) except? -1.0:
    """``o`` as a float64 if it is a real number (see ``as_real``), else TypeError naming ``what``."""
    cdef f64 x
    if not as_real(o, &x):
        raise TypeError(f"{what} must be a real number, got {type(o).__name__}")
    return x


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
    cdef f64 y = eval_op(op, A.value[a], A.value[b] if b >= 0 else 0.0, k)
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


cdef inline i64 operand(object o, list keep, str fname) except -1:
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
        v = Var.__new__(Var)
        v.idx = new_nary(op, arg, width * n, n, y)
        A.refc[v.idx] += 1
    finally:
        free(arg)
    return v


def _rebuild_leaf(data, grad):
    cdef Var v = make_leaf(data)
    A.grad[v.idx] = grad
    return v


@cython.freelist(256)
cdef class Var:
    """A float64 scalar in the graph: a thin handle on one engine node.

    Arithmetic builds new nodes; ``backward()`` fills ``.grad``. Leaves (made by ``Var(x)``) accumulate
    gradients across ``backward()`` calls until zeroed; interior nodes get a fresh gradient on each pass.
    ``.data`` and ``.grad`` are settable (micrograd style). If ``.data`` of a leaf is changed between the
    forward computation and ``backward()``, backward uses the NEW value in the local derivatives of the
    leaf's consumers, while the consumers' own values stay as computed (as PyTorch's ``.data``).
    """
    __array_ufunc__ = None   # NumPy defers to Var's reflected operators; never an object array

    def __cinit__(self):
        self.idx = -1

    def __init__(self, data):
        cdef f64 x
        if isinstance(data, Var):
            raise TypeError("Var() takes a real number; use v.detach() to copy a Var")
        if not as_real(data, &x):
            raise TypeError(f"Var() takes a real number, got {type(data).__name__}")
        if self.idx >= 0:
            drop(self.idx)
            self.idx = -1
        self.idx = new_node(OP_LEAF, -1, -1, 0.0, x)
        A.refc[self.idx] += 1

    def __dealloc__(self):
        if self.idx >= 0:
            drop(self.idx)

    # -- state ---------------------------------------------------------------------------------------
    @property
    def data(self):
        """The forward value (float)."""
        return A.value[idx_of(self)]

    @data.setter
    def data(self, x):
        cdef f64 k
        if not as_real(x, &k):
            raise TypeError(f"data must be a real number, got {type(x).__name__}")
        A.value[idx_of(self)] = k

    @property
    def grad(self):
        """The gradient from the last backward() (leaves: accumulated since the last zeroing)."""
        return A.grad[idx_of(self)]

    @grad.setter
    def grad(self, x):
        cdef f64 k
        if not as_real(x, &k):
            raise TypeError(f"grad must be a real number, got {type(x).__name__}")
        A.grad[idx_of(self)] = k

    @property
    def is_leaf(self):
        return A.op[idx_of(self)] == OP_LEAF

    @property
    def op(self):
        """Name of the op that made this node ('leaf' for user-made values)."""
        return OP_NAMES[A.op[idx_of(self)]]

    def item(self):
        return A.value[idx_of(self)]

    def detach(self):
        """A new leaf with the same value, outside the graph."""
        return make_leaf(A.value[idx_of(self)])

    def backward(self, gradient=1.0):
        """Backpropagate from this node: d self / d leaf is added to every leaf's ``.grad``."""
        cdef f64 seed = as_float(gradient, "backward() gradient")
        cdef i64 i = idx_of(self)
        cdef intp wk = acquire_walk()
        try:
            reverse_pass(i, seed, wk, True)
        finally:
            release_walk(wk)

    def zero_grad(self):
        A.grad[idx_of(self)] = 0.0

    def draw(self, path=None, **kwargs):
        """Render the graph of this value with Graphviz (needs the ``graph`` extra)."""
        from fastgrad.inspection import draw
        return draw(self, path, **kwargs)

    # -- binary operators: Var ∘ Var, Var ∘ k, k ∘ Var --------------------------------------------------
    def __add__(Var self, other):
        cdef f64 k
        if isinstance(other, Var):
            return make(OP_ADD, idx_of(self), idx_of(<Var>other), 0.0)
        if as_real(other, &k):
            return make(OP_ADDC, idx_of(self), -1, k)
        return NotImplemented

    def __radd__(Var self, other):
        cdef f64 k
        if as_real(other, &k):
            return make(OP_ADDC, idx_of(self), -1, k)
        return NotImplemented

    def __sub__(Var self, other):
        cdef f64 k
        if isinstance(other, Var):
            return make(OP_SUB, idx_of(self), idx_of(<Var>other), 0.0)
        if as_real(other, &k):
            return make(OP_ADDC, idx_of(self), -1, -k)
        return NotImplemented

    def __rsub__(Var self, other):
        cdef f64 k
        if as_real(other, &k):
            return make(OP_RSUBC, idx_of(self), -1, k)
        return NotImplemented

    def __mul__(Var self, other):
        cdef f64 k
        if isinstance(other, Var):
            return make(OP_MUL, idx_of(self), idx_of(<Var>other), 0.0)
        if as_real(other, &k):
            return make(OP_MULC, idx_of(self), -1, k)
        return NotImplemented

    def __rmul__(Var self, other):
        cdef f64 k
        if as_real(other, &k):
            return make(OP_MULC, idx_of(self), -1, k)
        return NotImplemented

    @cython.cdivision(True)
    def __truediv__(Var self, other):
        cdef f64 k
        if isinstance(other, Var):
            return make(OP_DIV, idx_of(self), idx_of(<Var>other), 0.0)
        if as_real(other, &k):
            return make(OP_DIVC, idx_of(self), -1, k)
        return NotImplemented

    def __rtruediv__(Var self, other):
        cdef f64 k
        if as_real(other, &k):
            return make(OP_RDIVC, idx_of(self), -1, k)
        return NotImplemented

    def __pow__(Var self, other, mod):
        cdef f64 k
        if mod is not None:
            return NotImplemented
        if isinstance(other, Var):
            return make(OP_POW, idx_of(self), idx_of(<Var>other), 0.0)
        if as_real(other, &k):
            return make(OP_POWC, idx_of(self), -1, k)
        return NotImplemented

    def __rpow__(Var self, other, mod):
        cdef f64 k
        if mod is not None:
            return NotImplemented
        if as_real(other, &k):
            return make(OP_RPOWC, idx_of(self), -1, k)
        return NotImplemented

    # -- unary ----------------------------------------------------------------------------------------
    def __neg__(self):
        return make(OP_NEG, idx_of(self), -1, 0.0)

    def __pos__(self):
        return self

    def __abs__(self):
        return make(OP_ABS, idx_of(self), -1, 0.0)

    def exp(self):
        return make(OP_EXP, idx_of(self), -1, 0.0)

    def log(self):
        return make(OP_LOG, idx_of(self), -1, 0.0)

    def sqrt(self):
        return make(OP_SQRT, idx_of(self), -1, 0.0)

    def sin(self):
        return make(OP_SIN, idx_of(self), -1, 0.0)

    def cos(self):
        return make(OP_COS, idx_of(self), -1, 0.0)

    def tanh(self):
        return make(OP_TANH, idx_of(self), -1, 0.0)

    def sigmoid(self):
        return make(OP_SIGMOID, idx_of(self), -1, 0.0)

    def relu(self):
        return make(OP_RELU, idx_of(self), -1, 0.0)

    # -- plain Python values: comparisons, conversions, hashing ------------------------------------------
    def __richcmp__(Var self, other, int opcode):
        cdef f64 a = A.value[idx_of(self)], b
        if isinstance(other, Var):
            b = A.value[idx_of(<Var>other)]
        elif not as_real(other, &b):
            return NotImplemented
        if opcode == 0:
            return a < b
        if opcode == 1:
            return a <= b
        if opcode == 2:
            return a == b
        if opcode == 3:
            return a != b
        if opcode == 4:
            return a > b
        return a >= b

    def __hash__(self):
        return object.__hash__(self)

    def __bool__(self):
        return A.value[idx_of(self)] != 0

    def __float__(self):
        return A.value[idx_of(self)]

    def __int__(self):
        return int(A.value[idx_of(self)])

    def __format__(self, spec):
        return format(A.value[idx_of(self)], spec)

    def __repr__(self):
        if self.idx < 0:
            return f"<uninitialised {type(self).__name__}>"
        return f"Var(data={A.value[self.idx]!r}, grad={A.grad[self.idx]!r})"

    def __reduce__(self):
        if A.op[idx_of(self)] != OP_LEAF:
            raise TypeError("only leaf Vars can be pickled (its graph is not saved); "
                            "pickle v.detach() or float(v)")
        return (_rebuild_leaf, (A.value[idx_of(self)], A.grad[idx_of(self)]))

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        if A.op[idx_of(self)] != OP_LEAF:
            raise TypeError("only leaf Vars can be deep-copied; use v.detach()")
        return _rebuild_leaf(A.value[idx_of(self)], A.grad[idx_of(self)])


# ---------------------------------------------------------------------------------------------------
# functions: fg.exp(v) ..., maximum/minimum, fused dot and sum, custom ops
# ---------------------------------------------------------------------------------------------------

cdef object unary(u8 op, object x):
    cdef f64 k
    if isinstance(x, Var):
        return make(op, idx_of(<Var>x), -1, 0.0)
    if as_real(x, &k):
        return eval_op(op, k, 0.0, 0.0)
    raise TypeError(f"{OP_NAMES[op]}: expected Var or a real number, got {type(x).__name__}")


def exp(x):
    """e**x (Var → Var, number → float; overflow gives inf)."""
    return unary(OP_EXP, x)


def log(x):
    """Natural log (log(0) = -inf, negative → nan)."""
    return unary(OP_LOG, x)


def sqrt(x):
    return unary(OP_SQRT, x)


def sin(x):
    return unary(OP_SIN, x)


def cos(x):
    return unary(OP_COS, x)


def tanh(x):
    return unary(OP_TANH, x)


def sigmoid(x):
    """1 / (1 + e**-x), computed without overflow."""
    return unary(OP_SIGMOID, x)


def relu(x):
    """max(x, 0); relu'(0) = 0."""
    return unary(OP_RELU, x)


def abs(x):
    """|x|; abs'(0) = 0."""
    return unary(OP_ABS, x)


cdef object extremum(u8 op, object a, object b):
    cdef f64 ka, kb
    if not isinstance(a, Var) and not isinstance(b, Var):
        if as_real(a, &ka) and as_real(b, &kb):
            return eval_op(op, ka, kb, 0.0)
    cdef Var u = constant_or_var(a, OP_NAMES[op])
    cdef Var v = constant_or_var(b, OP_NAMES[op])
    return make(op, idx_of(u), idx_of(v), 0.0)


def maximum(a, b):
    """Elementwise max of two values; a tie splits the gradient evenly."""
    return extremum(OP_MAX, a, b)


def minimum(a, b):
    """Elementwise min of two values; a tie splits the gradient evenly."""
    return extremum(OP_MIN, a, b)


def dot(ws, xs):
    """sum_k ws[k] * xs[k] as ONE node (Vars or numbers); its derivative is one C loop."""
    cdef list w = ws if type(ws) is list else list(ws)
    cdef list x = xs if type(xs) is list else list(xs)
    if len(w) != len(x):
        raise ValueError(f"dot: sequences of different lengths ({len(w)} and {len(x)})")
    if not w:
        return make_leaf(0.0)
    return make_nary(OP_DOT, w, x)


def sum(vs):
    """sum_k vs[k] as ONE node (Vars or numbers)."""
    cdef list items = vs if type(vs) is list else list(vs)
    if not items:
        return make_leaf(0.0)
    return make_nary(OP_SUM, items, None)


def custom(value, inputs, backward):
    """A node of value ``value`` over ``inputs`` whose reverse rule is ``backward(g) -> grads``."""
    cdef f64 y
    if not callable(backward):
        raise TypeError("custom: backward must be callable")
    if not as_real(value, &y):
        raise TypeError(f"custom: value must be a real number, got {type(value).__name__}")
    cdef list items = list(inputs)
    cdef intp n = len(items), m
    cdef i64* arg = <i64*>malloc(max(n, 1) * sizeof(i64))
    if arg == NULL:
        raise MemoryError()
    cdef Var v
    try:
        for m in range(n):
            arg[m] = node_of(items[m], "custom inputs")
        v = Var.__new__(Var)
        v.idx = new_nary(OP_CUSTOM, arg, n, n, y)
        A.refc[v.idx] += 1
    finally:
        free(arg)
    _custom_fns[v.idx] = backward
    return v


# ---------------------------------------------------------------------------------------------------
# introspection (library use: transforms, graph tables, optimizers)
# ---------------------------------------------------------------------------------------------------

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


def memory_stats():
    """Arena bookkeeping: segment size, live and pooled segments, allocated and live node slots."""
    return {
        "segment_size": SEG_SIZE,
        "segments_live": A.nlive,
        "segments_free": A.nfree,
        "nodes_capacity": A.cslot * SEG_SIZE,
        "nodes_live_upper": A.nlive * SEG_SIZE,
        "nodes_alive": A.nalive,
        "walk_records": A.nwalk,
    }


def _walks_busy():
    """Debugging aid: for each walk record, whether a running walk holds it."""
    return [bool(A.walk[k].busy) for k in range(A.nwalk)]


cdef bint live_leaf(i64 i) noexcept:
    """Is ``i`` the index of a leaf node that is still referenced?"""
    return 0 <= i < A.cslot * SEG_SIZE and A.seg[i >> SEG_SHIFT].live and \
        (i & SEG_MASK) < A.seg[i >> SEG_SHIFT].fill and A.refc[i] > 0 and A.op[i] == OP_LEAF


_ACTIVATIONS = {None: OP_LEAF, "linear": OP_LEAF, "relu": OP_RELU, "tanh": OP_TANH, "sigmoid": OP_SIGMOID}


def affine(const i64[:, ::1] W, const i64[::1] b, xs, activation=None):
    """One dense layer for one input row: ``act(dot(W[r], xs) + b[r])`` for every row r, in ONE call.

    ``W`` (nout, nin) and ``b`` (nout,) or (0,) hold node indices of leaf parameters (from
    ``param_index``; the caller keeps those Vars alive). ``xs``: Vars or numbers. Each row is a fused
    'dot' node, an 'add' node for the bias and an activation node; only the last gets a handle.
    """
    cdef intp nout = W.shape[0], nin = W.shape[1], r, k
    cdef list items = list(xs)
    if len(items) != nin:
        raise ValueError(f"affine: expected {nin} inputs, got {len(items)}")
    if b.shape[0] != 0 and b.shape[0] != nout:
        raise ValueError(f"affine: {nout} rows but {b.shape[0]} biases")
    if activation not in _ACTIVATIONS:
        raise ValueError(f"affine: unknown activation {activation!r}")
    cdef u8 act = _ACTIVATIONS[activation]
    for r in range(nout):
        for k in range(nin):
            if not live_leaf(W[r, k]):
                raise ValueError("affine: W holds an index that is not a live leaf")
        if b.shape[0] and not live_leaf(b[r]):
            raise ValueError("affine: b holds an index that is not a live leaf")
    cdef i64* arg = <i64*>malloc(max(2 * nin, 1) * sizeof(i64))
    if arg == NULL:
        raise MemoryError()
    cdef list keep = []      # handles on leaves made from numbers, alive until referenced
    cdef list out = [None] * nout
    cdef Var v
    cdef i64 j
    cdef f64 y
    try:
        for k in range(nin):
            arg[2 * k + 1] = operand(items[k], keep, "affine")
        for r in range(nout):
            # NOTE: the handle exists before its nodes (allocation may run the GC; see make()).
            v = Var.__new__(Var)
            y = 0.0
            for k in range(nin):
                arg[2 * k] = W[r, k]
                y += A.value[W[r, k]] * A.value[arg[2 * k + 1]]
            j = new_nary(OP_DOT, arg, 2 * nin, nin, y)
            if b.shape[0]:
                y = y + A.value[b[r]]
                j = new_node(OP_ADD, j, b[r], 0.0, y)
            if act != OP_LEAF:
                j = new_node(act, j, -1, 0.0, eval_op(act, y, 0.0, 0.0))
            v.idx = j
            A.refc[j] += 1
            out[r] = v
    finally:
        free(arg)
    return out


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
