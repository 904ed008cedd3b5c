"""The engine's Tensor fast paths (float64 C-contiguous operands: elementwise ops of the op table, row
broadcasts, Python-number operands, 2-D matmul, whole-array sum/mean) against tensor.py's general paths,
which they must equal: the same values, the same gradients, the same errors."""
import gc
import threading

import numpy as np
import pytest

import fastgrad as fg
from fastgrad import _engine, tensor as T

RNG = np.random.default_rng(7)
BINARY = ["add", "sub", "mul", "div", "pow", "max", "min"]
OPERATOR = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
            "div": lambda a, b: a / b, "pow": lambda a, b: a ** b, "max": fg.tensor.maximum,
            "min": fg.tensor.minimum}


def _pair(shape_a, shape_b, op):
    lo = 0.5 if op == "pow" else -2.0          # pow: positive bases
    a = RNG.uniform(lo, 2.0, size=shape_a)
    b = RNG.uniform(0.5, 2.0, size=shape_b)
    if op in ("max", "min") and shape_a == shape_b:
        b.flat[::3] = a.flat[::3]             # ties split the gradient
    return a, b


def _grads(build, *arrays):
    """(value, gradients) of build(*tensors), seeded with fixed weights."""
    ts = [fg.Tensor(a, requires_grad=True) for a in arrays]
    y = build(*ts)
    w = np.linspace(-1.0, 1.5, y.data.size).reshape(y.shape)
    y.backward(w)
    return y.data, [t.grad for t in ts]


@pytest.mark.parametrize("op", BINARY)
@pytest.mark.parametrize("shapes", [((3, 4), (3, 4)), ((5, 4), (4,)), ((4,), (2, 3, 4)), ((), ())],
                         ids=["same", "row-b", "row-a", "0-d"])
def test_binary_fast_path_equals_the_general_path(op, shapes):
    a, b = _pair(*shapes, op)
    fast_y, fast_g = _grads(OPERATOR[op], a, b)
    slow_y, slow_g = _grads(lambda x, z: T._binary(op, x, z), a, b)
    assert np.array_equal(fast_y, slow_y)                    # the same kernels: the same bits
    assert fast_y.dtype == np.float64 and fast_y.shape == slow_y.shape
    for f, s, arr in zip(fast_g, slow_g, (a, b)):
        assert f.shape == arr.shape and f.dtype == np.float64
        if shapes[0] == shapes[1]:
            assert np.array_equal(f, s)
        else:   # the row's gradient: summed over rows in order (fast) or by NumPy's pairwise sum (general)
            np.testing.assert_allclose(f, s, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("k", [2.0, -3, 0.5, 0])
@pytest.mark.parametrize("form", ["t+k", "k+t", "t-k", "k-t", "t*k", "k*t", "t/k", "k/t", "t**k", "k**t"])
def test_number_operands_equal_the_general_path(form, k):
    if form in ("t/k", "k**t") and k == 0:
        k = 4.0                                  # no division by zero, no log(0)
    x = RNG.uniform(0.5, 2.0, size=(3, 5))
    build = {"t+k": lambda t: t + k, "k+t": lambda t: k + t, "t-k": lambda t: t - k, "k-t": lambda t: k - t,
             "t*k": lambda t: t * k, "k*t": lambda t: k * t, "t/k": lambda t: t / k, "k/t": lambda t: k / t,
             "t**k": lambda t: t ** k, "k**t": lambda t: abs(k) ** t}[form]
    kk = abs(k) if form == "k**t" else k
    general = {"t+k": ("add", 0), "k+t": ("add", 1), "t-k": ("sub", 0), "k-t": ("sub", 1),
               "t*k": ("mul", 0), "k*t": ("mul", 1), "t/k": ("div", 0), "k/t": ("div", 1),
               "t**k": ("pow", 0), "k**t": ("pow", 1)}[form]
    name, side = general
    fast_y, (fast_g,) = _grads(build, x)
    slow_y, (slow_g,) = _grads(lambda t: T._binary(name, t, kk) if side == 0 else T._binary(name, kk, t), x)
    assert np.array_equal(fast_y, slow_y)
    assert np.array_equal(fast_g, slow_g)


def test_matmul_and_totals_equal_the_general_path():
    a, b = RNG.standard_normal((6, 4)), RNG.standard_normal((4, 3))
    fast = _grads(lambda x, z: (x @ z), a, b)
    slow = _grads(lambda x, z: T._matmul(x, z), a, b)
    assert np.array_equal(fast[0], slow[0])
    for f, s in zip(fast[1], slow[1]):
        assert np.array_equal(f, s)
    for mean in (False, True):
        fast = _grads(lambda x, m=mean: x.mean() if m else x.sum(), a)
        slow = _grads(lambda x, m=mean: T._sum(x, None, False, m), a)
        assert fast[0].shape == () and fast[0].dtype == np.float64
        np.testing.assert_allclose(fast[0], slow[0], rtol=1e-15)
        assert np.array_equal(fast[1][0], slow[1][0])


def test_an_operand_used_twice_gets_both_contributions():
    x = RNG.uniform(0.5, 2.0, size=(4, 3))
    _, (g,) = _grads(lambda t: t * t, x)
    w = np.linspace(-1.0, 1.5, x.size).reshape(x.shape)
    assert np.array_equal(g, 2 * x * w)
    _, (g,) = _grads(lambda t: (lambda e: e + e * e)(t.exp()), x)
    np.testing.assert_allclose(g, w * (np.exp(x) + 2 * np.exp(2 * x)), rtol=1e-14)


def test_gradients_accumulate_in_one_reused_buffer():
    t = fg.Tensor(RNG.standard_normal((3, 3)), requires_grad=True)
    (t * 2.0).sum().backward()
    buf = t.grad
    (t * 3.0).sum().backward()
    assert t.grad is buf                              # added in place
    assert np.array_equal(buf, np.full((3, 3), 5.0))
    t.zero_grad()
    (t.tanh()).sum().backward()
    assert t.grad is buf and np.allclose(buf, 1 - np.tanh(t.data) ** 2)


def test_constants_frozen_leaves_and_no_grad():
    x = fg.Tensor(RNG.standard_normal((2, 3)), requires_grad=True)
    c = fg.Tensor(RNG.standard_normal((2, 3)))
    frozen = fg.Tensor(RNG.standard_normal((2, 3)), requires_grad=True)
    frozen._node.requires_grad_(False)
    (x * c + frozen * x).sum().backward()
    assert c.grad is None and frozen.grad is None
    assert np.array_equal(x.grad, c.data + frozen.data)
    gc.collect()
    before = _engine.memory_stats()["nodes_alive"]
    with fg.no_grad():
        y = ((x * c).exp() + x[0]) @ (x.reshape(3, 2) * 2.0)
        s = y.mean() + (x - 1.0).relu().sum()
    assert not y.requires_grad and not s.requires_grad
    assert _engine.memory_stats()["nodes_alive"] == before
    assert not (c * c).requires_grad                   # nothing requires grad: no node


def test_float32_and_odd_layouts_take_the_general_path():
    x32 = fg.Tensor(np.arange(6, dtype=np.float32).reshape(2, 3), requires_grad=True)
    y = x32 * 2.0 + x32
    assert y.dtype == np.float32
    y.sum().backward()
    assert x32.grad.dtype == np.float32 and np.array_equal(x32.grad, np.full((2, 3), 3.0, np.float32))
    base = RNG.standard_normal((4, 6))
    f = fg.Tensor(np.asfortranarray(base), requires_grad=True)   # Tensor() copies to C order
    g = fg.Tensor(base)
    g.data = np.asfortranarray(base)                   # an F-ordered payload, set by hand
    ro = base.copy()
    ro.setflags(write=False)
    h = fg.Tensor(ro)
    h.data = ro                                        # a read-only payload, never written
    out = (f * g + h) * h
    out.sum().backward()
    assert np.array_equal(f.grad, base * base)
    assert np.array_equal(ro, base)


def test_a_non_contiguous_adjoint_reaches_an_elementwise_rule():
    a, b, c = RNG.standard_normal((3, 4)), RNG.standard_normal((3, 4)), RNG.standard_normal((4, 3))
    ta, tb = fg.Tensor(a, requires_grad=True), fg.Tensor(b, requires_grad=True)
    ((ta * tb).transpose() * c).sum().backward()
    assert np.array_equal(ta.grad, c.T * b) and np.array_equal(tb.grad, c.T * a)


def test_shape_errors_come_from_the_general_path_when_the_op_is_built():
    a = fg.Tensor(np.ones((3, 4)), requires_grad=True)
    with pytest.raises(ValueError, match="do not broadcast"):
        a + fg.Tensor(np.ones((3,)))
    with pytest.raises(ValueError, match="inner sizes"):
        a @ fg.Tensor(np.ones((3, 4)))
    with pytest.raises(TypeError):
        a + "x"


def test_backward_under_constant_garbage_collection():
    """Every allocation in the rules may run the collector: the buffers in use stay referenced."""
    x = RNG.standard_normal((8, 5))
    ref = _grads(lambda t: ((t * t).tanh() + t.exp() * 0.5).sum(), x)
    old = gc.get_threshold()
    gc.set_threshold(1, 1, 1)
    try:
        got = _grads(lambda t: ((t * t).tanh() + t.exp() * 0.5).sum(), x)
    finally:
        gc.set_threshold(*old)
    assert np.array_equal(ref[1][0], got[1][0])


def test_threads_build_and_differentiate_their_own_graphs_exactly():
    x = RNG.standard_normal((16, 8))
    w = RNG.standard_normal((8, 4))
    b = RNG.standard_normal(4)

    def run():
        tx, tw, tb = (fg.Tensor(v, requires_grad=True) for v in (x, w, b))
        for _ in range(5):
            ((tx @ tw + tb).relu() * 0.5).mean().backward()
        return tx.grad.copy(), tw.grad.copy(), tb.grad.copy()
    expected = run()
    results = [None] * 4

    def worker(i):
        results[i] = run()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results:
        for got, want in zip(r, expected):
            assert np.array_equal(got, want)
    assert _engine._tensor_adjoints_held() == 0


@pytest.mark.parametrize("n, c", [(1, 1), (5, 3), (64, 10)])
def test_cross_entropy_common_case_equals_the_general_path(n, c):
    from fastgrad.tensor_functional import cross_entropy
    x = RNG.standard_normal((n, c)) * 5
    t = RNG.integers(0, c, size=n)
    fast_y, (fast_g,) = _grads(lambda z: cross_entropy(z, t), x)              # ndarray targets: the fast case
    slow_y, (slow_g,) = _grads(lambda z: cross_entropy(z, t.tolist()), x)     # a list: the general path
    assert np.array_equal(fast_y, slow_y) and np.array_equal(fast_g, slow_g)
    # what the fast case hands over to the general path: its errors and its other options
    with pytest.raises(IndexError, match="out of bounds"):
        cross_entropy(fg.Tensor(x, requires_grad=True), np.full(n, c))
    if c > 1 and n > 1:     # an ignored class present: the rows it labels leave the mean
        t2 = t.copy()
        t2[0], t2[1] = 0, 1
        got = cross_entropy(fg.Tensor(x), t2, ignore_index=0).item()
        rows = cross_entropy(fg.Tensor(x), t2, reduction="none").data
        assert got == pytest.approx(rows[t2 != 0].mean(), rel=1e-14)


@pytest.mark.parametrize("op", BINARY)
@pytest.mark.parametrize("shapes", [((3, 4), (3, 4)), ((5, 4), (4,)), ((4,), (2, 4))],
                         ids=["same", "row", "row-a"])
@pytest.mark.parametrize("array_first", [False, True])
def test_an_ndarray_operand_is_a_copied_constant(op, shapes, array_first):
    a, b = _pair(*shapes, op)
    const = b.copy() if not array_first else a.copy()
    if array_first:
        def fast(t):
            return OPERATOR[op](const, t)

        def slow(t):
            return T._binary(op, a.copy(), t)
        data = b
    else:
        def fast(t):
            return OPERATOR[op](t, const)

        def slow(t):
            return T._binary(op, t, b.copy())
        data = a
    ts = fg.Tensor(data, requires_grad=True)
    y = fast(ts)
    const[...] = 7.0                          # written after the op is built: the graph keeps its own copy
    w = np.linspace(-1.0, 1.5, y.data.size).reshape(y.shape)
    y.backward(w)
    ref_y, (ref_g,) = _grads(slow, data)
    assert np.array_equal(y.data, ref_y)
    np.testing.assert_allclose(ts.grad, ref_g, rtol=1e-13, atol=1e-13)


def test_numpy_float_scalars_are_numbers_and_max_min_take_the_fast_path():
    x = RNG.uniform(0.5, 2.0, size=(3, 4))
    for k in (np.float64(2.5), 2.5):
        fast_y, (fast_g,) = _grads(lambda t, k=k: (t * k) / k - k, x)
        def general(t, k=float(k)):
            return T._binary("sub", T._binary("div", T._binary("mul", t, k), k), k)
        slow_y, (slow_g,) = _grads(general, x)
        assert np.array_equal(fast_y, slow_y) and np.array_equal(fast_g, slow_g)
    t = fg.Tensor(x, requires_grad=True)
    for f in (fg.tensor.maximum, fg.tensor.minimum, fg.Tensor.maximum, fg.Tensor.minimum):
        assert type(_engine._tensor_rule(f(t, t * 0.5)._node)) is _engine.ElemRule


def test_which_path_builds_each_op():
    """The fast paths are taken where they should be (the equality tests above would pass on the general
    path too), and the general path where it must be."""
    t = fg.Tensor(RNG.standard_normal((3, 4)), requires_grad=True)
    w = fg.Tensor(RNG.standard_normal((2, 4)), requires_grad=True)
    row = fg.Tensor(RNG.standard_normal(4), requires_grad=True)
    fast = {"t * t": (t * t, _engine.ElemRule), "t + row": (t + row, _engine.ElemRule),
            "row - t": (row - t, _engine.ElemRule), "2.0 ** t": (2.0 ** t, _engine.ElemRule),
            "t * ndarray": (t * np.ones((3, 4)), _engine.ElemRule), "t.exp()": (t.exp(), _engine.ElemRule),
            "t @ w.T": (t @ w.T, _engine.MatmulRule), "t.sum()": (t.sum(), _engine.TotalRule),
            "t.mean()": (t.mean(), _engine.TotalRule),
            "linear": (_engine._tensor_linear(t, w, row[:2] * 1.0), _engine.LinearRule)}
    for name, (y, rule) in fast.items():
        assert type(_engine._tensor_rule(y._node)) is rule, name
    col = fg.Tensor(RNG.standard_normal((3, 1)), requires_grad=True)
    t32 = fg.Tensor(RNG.standard_normal((3, 4)).astype(np.float32), requires_grad=True)
    general = {"t * col": t * col, "t32 * t32": t32 * t32, "t.sum(axis=0)": t.sum(axis=0),
               "t[0]": t[0], "t.T": t.T}
    for name, y in general.items():
        assert type(_engine._tensor_rule(y._node)) is _engine.TensorRule, name
    assert _engine._tensor_rule(t._node) is None            # a leaf


@pytest.mark.parametrize("codes", [(999, -1, -1), (-1, -1, -1), (3, 250, -1), (3, -1, 38), (36, -1, -1)])
def test_the_entry_points_refuse_op_codes_outside_the_elementwise_table(codes):
    """The operators pass table codes; a caller of the private entry points with another code gets a
    ValueError, not a read past the table (boundschecks are off in the engine)."""
    t = fg.Tensor(np.ones((2, 2)), requires_grad=True)
    code, kright, kleft = codes
    with pytest.raises(ValueError, match="not an elementwise op"):
        _engine._tensor_binop(code, kright, 1.0, kleft, t, t)
    if kright == -1 and kleft == -1:
        with pytest.raises(ValueError, match="not an elementwise op"):
            _engine._tensor_unop(code, t)


def test_adjoints_held_is_a_count():
    held = _engine._tensor_adjoints_held()
    assert type(held) is int and held == 0          # an int (it once came back as an fg.sum Var)


def test_operator_methods_called_by_name_keep_operand_order():
    """The operators are C-API slots (one function takes both operand orders; fastgrad.Tensor inherits the
    slots themselves): called by name, __op__ and __rop__ still put self on their own side. (Powers are
    libm's ``pow``, as Python's ``**`` and the scalar engine compute them, not NumPy's: on a CPU with AVX-512,
    NumPy's own ``power`` differs from libm in the last bit for some inputs.)"""
    a = RNG.uniform(0.5, 2.0, size=(2, 3))
    libm_pow = np.vectorize(lambda x, y: float(x) ** float(y))
    t = fg.Tensor(a, requires_grad=True)
    m = RNG.normal(size=(3, 3))
    cases = [(t.__add__(2.0), a + 2.0), (t.__radd__(2.0), 2.0 + a), (t.__sub__(2.0), a - 2.0),
             (t.__rsub__(2.0), 2.0 - a), (t.__mul__(3.0), a * 3.0), (t.__rmul__(3.0), 3.0 * a),
             (t.__truediv__(2.0), a / 2.0), (t.__rtruediv__(2.0), 2.0 / a),
             (t.__pow__(2.0), libm_pow(a, 2.0)), (t.__rpow__(2.0), libm_pow(2.0, a)),
             (t.__matmul__(m), a @ m), (t.__rmatmul__(m[:2, :2]), m[:2, :2] @ a),
             (t.__rsub__(np.ones((2, 3))), 1.0 - a)]
    for got, want in cases:
        assert isinstance(got, fg.Tensor)
        np.testing.assert_array_equal(got.data, want)
    for bad in (lambda: t + "x", lambda: "x" - t, lambda: t.__add__("x"), lambda: t.__rsub__("x")):
        with pytest.raises(TypeError, match="unsupported Tensor operand: str"):
            bad()


def test_a_user_subclass_of_tensor_computes_the_same_values():
    class Mine(fg.Tensor):
        __slots__ = ()

    a = RNG.normal(size=(3, 4))
    x, y = Mine(a, requires_grad=True), fg.Tensor(a, requires_grad=True)
    for fx, fy in (((x * x + 2.0) - 1.0 / (x * x + 1.0)).sum(), ((y * y + 2.0) - 1.0 / (y * y + 1.0)).sum()),:
        fx.backward()
        fy.backward()
        np.testing.assert_allclose(fx.data, fy.data, rtol=1e-15)
    np.testing.assert_allclose(x.grad, y.grad, rtol=1e-15)


def test_register_refuses_a_class_whose_slots_it_cannot_share():
    class Overrides(_engine.TensorBase):
        def __add__(self, other):
            return 0

    class Deeper(fg.Tensor):
        pass

    for cls in (Overrides, Deeper, int, "Tensor"):
        with pytest.raises(TypeError):
            T._engine._tensor_register(cls, T._binary, T._unary, T._matmul, None)
    t = fg.Tensor(np.ones((2, 2)), requires_grad=True)     # the registration is unchanged: fast paths still
    assert type(_engine._tensor_rule((t * t)._node)) is _engine.ElemRule


def test_cross_entropy_takes_its_c_rule_with_the_general_paths_bits():
    from fastgrad.tensor_functional import cross_entropy
    x = RNG.standard_normal((6, 4)) * 3
    t = np.array([0, 3, 1, 2, 3, 0])
    y = cross_entropy(fg.Tensor(x, requires_grad=True), t)
    assert type(_engine._tensor_rule(y._node)) is _engine.CrossEntropyRule
    specials = x.copy()
    specials[1, 2], specials[2] = np.nan, [1000.0, -1000.0, 0.0, -0.0]
    specials[3], specials[4] = [np.inf, 0.0, 1.0, 2.0], [-np.inf] * 4
    for logits in (x, specials, x[:1, :1], np.full((3, 5), -1000.0)):
        labels = t[:logits.shape[0]] % logits.shape[1]
        for targets in (labels, labels.astype(np.uint8), labels.astype(np.int32)):
            fast_y, (fast_g,) = _grads(lambda z, t=targets: cross_entropy(z, t), logits)
            as_list = targets.tolist()                  # a list: the general path
            with np.errstate(invalid="ignore"):        # inf - inf in the general path's NumPy calls
                slow_y, (slow_g,) = _grads(lambda z, t=as_list: cross_entropy(z, t), logits)
            assert np.array_equal(fast_y, slow_y, equal_nan=True)
            assert np.array_equal(fast_g, slow_g, equal_nan=True)
    with fg.no_grad():
        assert cross_entropy(fg.Tensor(x, requires_grad=True), t)._node is None


def test_cross_entropy_leaves_what_it_cannot_take_to_the_general_path():
    from fastgrad.tensor_functional import cross_entropy
    x = fg.Tensor(RNG.standard_normal((3, 4)), requires_grad=True)
    assert _engine._tensor_cross_entropy(x, np.array([0, 1, 2]), -100) is not None
    for target, ignore in ((np.array([0, 1, 4]), -100), (np.array([0, -1, 2]), -100),
                           (np.array([0, 1]), -100),
                           (np.array([True, False, True]), -100), (np.array([0.0, 1.0, 2.0]), -100),
                           (np.array([[0, 1, 2]]), -100), (np.array([0, 1, 2]), 1), ([0, 1, 2], -100),
                           (np.array([0, 1, 2], dtype=np.uint64) + np.uint64(2**63), -100),
                           (np.array([0, 1, 2]), True), (np.array([0, 1, 2]), np.int64(1))):
        assert _engine._tensor_cross_entropy(x, target, ignore) is None
    f_ordered = fg.Tensor(np.ones((3, 4)))
    f_ordered.data = np.asfortranarray(RNG.standard_normal((3, 4)))     # Tensor() itself makes C copies
    for logits in (f_ordered, fg.Tensor(np.ones((3, 4), np.float32)), fg.Tensor(np.ones(4)),
                   fg.Tensor(np.ones((0, 4))), fg.Tensor(np.ones((3, 0))), np.ones((3, 4))):
        assert _engine._tensor_cross_entropy(logits, np.array([0, 1, 2]), -100) is None
    with pytest.raises(IndexError, match="out of bounds"):
        cross_entropy(x, np.array([0, 1, 4]))
    for ignore in (True, np.int64(1), 2**70, -2**70):          # the same answer as the general path
        assert np.array_equal(cross_entropy(x, np.array([0, 1, 2]), ignore_index=ignore).data,
                              cross_entropy(x, [0, 1, 2], ignore_index=ignore).data)


def test_a_cross_entropy_backward_inside_a_running_backward_is_exact():
    """Re-entrant: a rule's backward runs a backward through a cross_entropy C node of its own."""
    from fastgrad.tensor_functional import cross_entropy
    inner = fg.Tensor(RNG.standard_normal((3, 2)), requires_grad=True)
    labels = np.array([0, 1, 0])

    def rule(g):
        cross_entropy(inner, labels).backward()
        return (g,)

    x = fg.Tensor(RNG.standard_normal((3, 2)), requires_grad=True)
    cross_entropy(T._make("reenter", x.data.copy(), [x], rule), np.array([1, 0, 1])).backward()
    for got, data, target in ((inner.grad, inner.data, labels.tolist()), (x.grad, x.data, [1, 0, 1])):
        alone = fg.Tensor(data.copy(), requires_grad=True)
        cross_entropy(alone, target).backward()                  # the general path, on its own
        np.testing.assert_array_equal(got, alone.grad)


def test_cross_entropy_checks_label_smoothing_before_its_fast_case():
    from fastgrad.tensor_functional import cross_entropy
    x = fg.Tensor(RNG.standard_normal((2, 3)))
    for target in (np.array([0, 1]), [0, 1]):                  # the fast case and the general path alike
        for bad in (False, np.bool_(False), "0"):
            with pytest.raises(TypeError, match="label_smoothing must be a number"):
                cross_entropy(x, target, label_smoothing=bad)


def _bits(x):
    return np.asarray(x, dtype=np.float64).reshape(-1).view(np.int64).tolist()


@pytest.mark.parametrize("shape", [(), (0,), (1,), (7,), (8,), (9,), (100, 1), (16, 16), (129,), (3, 5, 7),
                                   (1000, 9), (70001,)])
def test_whole_array_totals_have_numpys_bits(shape):
    """sum() and mean() of a float64 C-contiguous Tensor add in C with NumPy's pairwise order: the bits of
    np.add.reduce (values spread over 60 binades, so every rounding shows), and of the C total turned off.
    On a NumPy whose summation differs, the import-time check leaves totals to NumPy: the same bits too."""
    a = RNG.standard_normal(shape) * np.exp2(RNG.integers(-30, 30, size=shape))
    t = fg.Tensor(a, requires_grad=True)
    want_sum, want_mean = np.add.reduce(a, None), np.add.reduce(a, None) / max(a.size, 1)
    got = [t.sum().data, t.mean().data] if a.size else [t.sum().data]
    assert _bits(got[0]) == _bits(want_sum)
    if a.size:
        assert _bits(got[1]) == _bits(want_mean)
    on = _engine._total_like_numpy()
    try:
        _engine._total_like_numpy(False)
        assert _bits(t.sum().data) == _bits(got[0])
    finally:
        _engine._total_like_numpy(on)
    if not on:
        pytest.skip(f"NumPy {np.__version__} sums in another order: its totals come from np.add.reduce")


@pytest.mark.parametrize("values", [[-0.0], [-0.0] * 9, [0.0, -0.0], [np.inf, -np.inf], [np.nan, 1.0],
                                    [np.inf] * 200, [5e-324] * 130, [1e308] * 3, [1.0, np.nan] * 70])
def test_whole_array_totals_of_ieee_edges_have_numpys_bits(values):
    a = np.array(values)
    with np.errstate(invalid="ignore", over="ignore"):
        want = np.add.reduce(a, None)
    assert _bits(fg.Tensor(a).sum().data) == _bits(want)


def test_the_total_check_refuses_a_summation_that_differs():
    """The import-time check compares against np.add.reduce: a NumPy that summed otherwise (here: in
    order) turns the C total off, and totals then come from NumPy itself."""
    a = np.linspace(-1.0, 1.0, 1000) ** 3 * 1e10 + 0.1
    try:
        assert _engine._check_total_like_numpy(lambda x, axis: sum(x.tolist())) is False
        assert not _engine._total_like_numpy()
        assert _bits(fg.Tensor(a).sum().data) == _bits(np.add.reduce(a, None))
        assert sum(a.tolist()) != np.add.reduce(a, None)      # the two summations differ on this array
    finally:
        _engine._check_total_like_numpy()


def test_the_c_total_is_on_for_the_numpy_versions_it_was_checked_against():
    """NumPy 1.22.0 and 2.4.6 were checked to sum in the order the C total follows; on those and the
    versions between them the import-time check must have turned it on (a broken C summation would turn
    it off: right results, but NumPy's call cost). A later NumPy may sum otherwise: its totals come from
    np.add.reduce, which the other tests check."""
    version = tuple(int(p) for p in np.__version__.split(".")[:2])
    if not (1, 22) <= version <= (2, 4):
        pytest.skip(f"NumPy {np.__version__}: not one of the versions the C total was checked against")
    assert _engine._total_like_numpy()
