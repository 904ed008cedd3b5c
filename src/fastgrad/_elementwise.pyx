"""Elementwise kernels for Tensors, from the op table: each op's value and partials are the very expressions
the scalar engine compiles (``_ops.pxd``), run over contiguous float64 arrays. So a Tensor op's values are
bit-identical to the same op on each element as a ``Var``."""
cimport cython
from fastgrad._ops cimport N_OPS, OP_CUSTOM, OP_DOT, OP_LEAF, OP_SUM, op_adjoint_block, op_value_block
from fastgrad._types cimport f64, intp, u8


cdef int check_op(int op) except -1:
    if not 0 <= op < N_OPS or op == OP_LEAF or op == OP_SUM or op == OP_DOT or op == OP_CUSTOM:
        raise ValueError(f"op code {op} is not an elementwise op")
    return 0


cdef int check_len(intp n, intp m, str what) except -1:
    if m != n:
        raise ValueError(f"{what} has {m} elements, expected {n}")
    return 0


@cython.boundscheck(False)
@cython.wraparound(False)
def value(int op, const f64[::1] a not None, const f64[::1] b, f64 k, f64[::1] out not None):
    """``out[s] = value(a[s], b[s], k)``; ``b`` is None for an op of one operand."""
    check_op(op)
    cdef intp n = a.shape[0]
    check_len(n, out.shape[0], "out")
    if b is not None:
        check_len(n, b.shape[0], "b")
    if n == 0:
        return
    with nogil:
        op_value_block(<u8>op, &a[0], &b[0] if b is not None else &a[0], k, &out[0], n)


@cython.boundscheck(False)
@cython.wraparound(False)
def adjoint(int op, const f64[::1] a not None, const f64[::1] b, f64 k, const f64[::1] y not None,
            const f64[::1] g not None, f64[::1] ga not None, f64[::1] gb):
    """``ga[s] += g[s]·dy/da`` and (two operands) ``gb[s] += g[s]·dy/db``, at the values ``a``, ``b``, ``y``."""
    check_op(op)
    cdef intp n = a.shape[0]
    for arr, what in ((y, "y"), (g, "g"), (ga, "ga")):
        check_len(n, arr.shape[0], what)
    if b is not None:
        check_len(n, b.shape[0], "b")
        if gb is None:
            raise ValueError("gb is needed with b")
        check_len(n, gb.shape[0], "gb")
    if n == 0:
        return
    with nogil:
        op_adjoint_block(<u8>op, &a[0], &b[0] if b is not None else &a[0], k, &y[0], &g[0], &ga[0],
                         &gb[0] if b is not None else &ga[0], n)
