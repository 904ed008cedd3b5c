# The sweeps over the arena (included by _engine.pyx): reverse (backward, grad), collection, tangents,
# forward-over-reverse. Every derivative comes from the op table (_ops.pxd) through local_partials.

cdef inline void local_partials(i64 i, f64* d0, f64* d1) noexcept nogil:
    """d value[i] / d parent: ``d0`` for p0, ``d1`` for p1 (0 for a unary op), from the op table.

    The only door to first derivatives: the reverse sweep, the tangent sweep and graph inspection all read
    them here."""
    cdef i64 q = A.p1[i]
    op_partials(A.op[i], A.value[A.p0[i]], A.value[q] if q >= 0 else 0.0, A.aux[i], A.value[i], d0, d1)


cdef inline void local_partials2(i64 i, f64* h00, f64* h01, f64* h11) noexcept nogil:
    """Second derivatives of value[i] w.r.t. its parents, from the op table."""
    cdef i64 q = A.p1[i]
    op_partials2(A.op[i], A.value[A.p0[i]], A.value[q] if q >= 0 else 0.0, A.aux[i], A.value[i],
                 h00, h01, h11)


# ---------------------------------------------------------------------------------------------------
# the reverse sweep (backward)
# ---------------------------------------------------------------------------------------------------

cdef inline void acc(i64 p, f64 c, const u8* op, const f64* aux, f64* grad, u32* mark, f64* adj, u32 epoch,
                     bint keep_leaves, bint check_frozen, intp* pending) noexcept nogil:
    """Add ``c`` to the adjoint of ``p``: leaves accumulate into ``grad`` (when ``keep_leaves``; frozen
    leaves take nothing, tested only with ``check_frozen``); any other node starts fresh in ``adj`` at its
    first contribution in this walk and is then pending."""
    if keep_leaves and op[p] == OP_LEAF:
        if not check_frozen or aux[p] != FROZEN:
            grad[p] += c
    elif mark[p] == epoch:
        adj[p] += c
    else:
        mark[p] = epoch
        adj[p] = c
        pending[0] += 1


cdef i64 sweep_reverse(i64 i, u32* mark, f64* adj, u32 epoch, bint keep_leaves,
                       intp* pending_io) noexcept nogil:
    """See ``sweep_body``. Until a leaf has ever been frozen, the sweep runs without the frozen test (a
    load and a compare per leaf contribution, 10% of a backward over leaf-heavy graphs)."""
    if _any_frozen:
        return sweep_body(<u32>0, i, mark, adj, epoch, keep_leaves, pending_io)
    return sweep_body(<u8>0, i, mark, adj, epoch, keep_leaves, pending_io)


# the two compiled versions of sweep_body: u8 without the frozen test, u32 with it (a fused type, so that
# the test is decided at compile time in each, not per contribution)
ctypedef fused FrozenTest:
    u8
    u32


cdef i64 sweep_body(FrozenTest tag, i64 i, u32* mark, f64* adj, u32 epoch, bint keep_leaves,
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
    cdef const f64* aux = A.aux
    cdef f64* grad = A.grad
    cdef intp pending = pending_io[0]
    cdef bint check_frozen = FrozenTest is u32
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
                        acc(arg[m], g, op, aux, grad, mark, adj, epoch, keep_leaves, check_frozen, &pending)
                elif o == OP_DOT:
                    arg = args_of(j)
                    n = p1[j]
                    for m in range(n):
                        acc(arg[2 * m], g * value[arg[2 * m + 1]], op, aux, grad, mark, adj, epoch, keep_leaves,
                            check_frozen, &pending)
                        acc(arg[2 * m + 1], g * value[arg[2 * m]], op, aux, grad, mark, adj, epoch, keep_leaves,
                            check_frozen, &pending)
                elif o != OP_LEAF:
                    local_partials(j, &d0, &d1)
                    acc(p0[j], g * d0, op, aux, grad, mark, adj, epoch, keep_leaves, check_frozen, &pending)
                    if p1[j] >= 0:
                        acc(p1[j], g * d1, op, aux, grad, mark, adj, epoch, keep_leaves, check_frozen, &pending)
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
    if isinstance(fn, TensorRule):
        return run_tensor_rule(j, <TensorRule>fn, wk, keep_leaves, pending)
    cdef intp n = <intp>A.p1[j], m
    grads = tuple(fn(A.walk[wk].adj[j]))
    if len(grads) != n:
        raise ValueError(f"custom op backward returned {len(grads)} gradients for {n} inputs")
    values = [as_float(c, "a custom op's gradient") for c in grads]
    # the rule may have created nodes (arena and walk arrays moved) or started walks (A.walk moved)
    cdef Walk* w = &A.walk[wk]
    for m in range(n):
        acc(args_of(j)[m], <f64>values[m], A.op, A.aux, A.grad, w.mark, w.adj, w.epoch, keep_leaves, True,
            pending)
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
        if A.aux[out] != FROZEN:
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
        # a rule that raised leaves the array adjoints of the tensor nodes still pending: a later walk
        # holding this record must not find them (node indices are reused)
        if wk < len(_walk_tensor_adj):
            (<dict>_walk_tensor_adj[wk]).clear()
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


