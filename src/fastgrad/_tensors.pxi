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


def _tensor_adjoints_held():
    """How many array adjoints the walk records hold (0 whenever no walk runs)."""
    return sum(len(d) for d in _walk_tensor_adj)


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
    grads = rule.backward(g)
    cdef intp n = <intp>A.p1[j], m
    if len(grads) != n:
        raise ValueError(f"tensor op {rule.name}: backward returned {len(grads)} gradients for {n} inputs")
    cdef i64 p
    cdef Walk* w
    for m in range(n):
        gm = grads[m]
        if gm is None:
            continue
        p = args_of(j)[m]     # re-read: the rule may have grown the side arrays
        if p in _tensor_grads:              # a tensor leaf
            if keep_leaves and A.aux[p] != FROZEN:
                accumulate_leaf(p, gm)
            continue
        w = &A.walk[wk]
        if A.op[p] == OP_CUSTOM and type(_custom_fns.get(p)) is TensorRule:
            if p in adj:
                adj[p] = adj[p] + gm
            else:
                adj[p] = gm
            acc(p, 0.0, A.op, A.aux, A.grad, w.mark, w.adj, w.epoch, keep_leaves, True, pending)
        else:                               # a Var operand (a 0-d tensor meets a scalar): a number
            acc(p, float(np.sum(gm)), A.op, A.aux, A.grad, w.mark, w.adj, w.epoch, keep_leaves, True, pending)
    return 0


def _tensor_backward(Var root, seed):
    """Backpropagate the array ``seed`` from tensor node ``root``: tensor leaves' gradients accumulate."""
    cdef i64 i = idx_of(root)
    cdef intp wk
    if i in _tensor_grads:                  # the root is a leaf
        if A.aux[i] != FROZEN:
            accumulate_leaf(i, seed)
        return
    if A.op[i] != OP_CUSTOM or type(_custom_fns.get(i)) is not TensorRule:
        raise TypeError("_tensor_backward: the root is not a tensor node")
    wk = acquire_walk()
    try:
        tensor_adj(wk)[i] = seed
        reverse_pass(i, 0.0, wk, True)      # clears the walk's array adjoints when it ends, raising or not
    finally:
        release_walk(wk)
