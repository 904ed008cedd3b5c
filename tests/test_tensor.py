"""fg.Tensor (issue 10, first increment): values against NumPy and the scalar engine, gradients against
central differences, broadcasting, dtypes, odd memory layouts, errors, no_grad and lifetime."""
import gc
import threading

import numpy as np
import pytest

import fastgrad as fg
from tensor_checks import check_grads, numeric_grad  # noqa: F401  (tests/tensor_checks.py)
from fastgrad import _engine, _optable

RNG = np.random.default_rng(0)


UNARY = [op for op in _optable.OPS if op.form == _optable.UNARY]


@pytest.mark.parametrize("op", UNARY, ids=lambda op: op.name)
def test_every_unary_op_matches_the_scalar_engine_and_finite_differences(op):
    lo, hi = op.domain
    x = RNG.uniform(lo, hi, size=(3, 4))
    method = op.method or op.dunder
    t = fg.Tensor(x)
    y = getattr(t, method)()
    scalar = np.array([[getattr(fg.Var(float(v)), method)().data for v in row] for row in x])
    assert np.array_equal(y.data, scalar)        # the op table's kernels: the same bits
    check_grads(lambda a: getattr(a, method)(), x)


@pytest.mark.parametrize("name, fn", [("add", np.add), ("sub", np.subtract), ("mul", np.multiply),
                                      ("div", np.divide)])
@pytest.mark.parametrize("shapes", [((3, 4), (3, 4)), ((3, 4), (4,)), ((3, 1), (1, 4)), ((2, 3, 4), (3, 1)),
                                    ((), (2, 3))])
def test_binary_ops_broadcast_and_reduce_gradients_to_each_shape(name, fn, shapes):
    a = RNG.uniform(0.5, 2.0, size=shapes[0])
    b = RNG.uniform(0.5, 2.0, size=shapes[1])
    op = {"add": lambda x, y: x + y, "sub": lambda x, y: x - y, "mul": lambda x, y: x * y,
          "div": lambda x, y: x / y}[name]
    out = op(fg.Tensor(a), fg.Tensor(b))
    assert np.array_equal(out.data, fn(a, b))
    check_grads(op, a, b)


def test_reflected_operators_with_numbers_and_arrays():
    a = RNG.uniform(0.5, 2.0, size=(2, 3))
    t = fg.Tensor(a)
    for got, want in [(2.0 + t, 2.0 + a), (2.0 - t, 2.0 - a), (2.0 * t, 2.0 * a), (2.0 / t, 2.0 / a),
                      (a - t, a - a), (t ** 2, a ** 2), (2.0 ** t, 2.0 ** a), (-t, -a), (abs(-t), a)]:
        assert isinstance(got, fg.Tensor)
        np.testing.assert_allclose(got.data, want, rtol=1e-15)
    check_grads(lambda x: 3.0 / x + x ** 3 - 2.0 ** x, a)
    check_grads(lambda x, y: x ** y, a, RNG.uniform(0.5, 2.0, size=(2, 3)))


@pytest.mark.parametrize("sa, sb", [((3, 4), (4, 5)), ((4,), (4, 5)), ((3, 4), (4,)), ((4,), (4,))])
def test_matmul(sa, sb):
    a, b = RNG.normal(size=sa), RNG.normal(size=sb)
    out = fg.Tensor(a) @ fg.Tensor(b)
    np.testing.assert_allclose(out.data, a @ b, rtol=1e-14)
    assert out.shape == (a @ b).shape
    check_grads(lambda x, y: x @ y, a, b)


@pytest.mark.parametrize("axis", [None, 0, 1, -1, (0, 2)])
@pytest.mark.parametrize("keepdims", [False, True])
def test_sum_and_mean(axis, keepdims):
    a = RNG.normal(size=(2, 3, 4))
    for name in ("sum", "mean"):
        out = getattr(fg.Tensor(a), name)(axis=axis, keepdims=keepdims)
        np.testing.assert_allclose(out.data, getattr(a, name)(axis=axis, keepdims=keepdims), rtol=1e-14)
        check_grads(lambda x, name=name: getattr(x, name)(axis=axis, keepdims=keepdims), a)


def test_reshape_transpose_and_indexing():
    a = RNG.normal(size=(2, 3, 4))
    check_grads(lambda x: x.reshape(4, 6), a)
    check_grads(lambda x: x.reshape((6, -1)).T, a)
    check_grads(lambda x: x.transpose(1, 2, 0), a)
    check_grads(lambda x: x[1], a)
    check_grads(lambda x: x[:, 1:, ::2], a)
    np.testing.assert_array_equal(fg.Tensor(a).transpose(2, 0, 1).data, a.transpose(2, 0, 1))


def test_repeated_indices_accumulate():
    t = fg.Tensor(np.arange(4.0), requires_grad=True)
    t[np.array([0, 0, 3, 0])].sum().backward()
    np.testing.assert_array_equal(t.grad, [3.0, 0.0, 0.0, 1.0])


def test_an_mlp_step_matches_numpy_by_hand():
    x = RNG.normal(size=(8, 3))
    W1, b1 = RNG.normal(size=(3, 5)), RNG.normal(size=5)
    W2 = RNG.normal(size=(5, 1))
    ts = [fg.Tensor(p, requires_grad=True) for p in (W1, b1, W2)]
    h = (fg.Tensor(x) @ ts[0] + ts[1]).tanh()
    loss = ((h @ ts[2]) ** 2).mean()
    loss.backward()
    # by hand
    hh = np.tanh(x @ W1 + b1)
    out = hh @ W2
    g_out = 2 * out / out.size
    gW2 = hh.T @ g_out
    gh = g_out @ W2.T * (1 - hh ** 2)
    np.testing.assert_allclose(ts[2].grad, gW2, rtol=1e-12)
    np.testing.assert_allclose(ts[0].grad, x.T @ gh, rtol=1e-12)
    np.testing.assert_allclose(ts[1].grad, gh.sum(0), rtol=1e-12)
    assert loss.item() == pytest.approx(float((out ** 2).mean()), rel=1e-15)


def test_gradients_accumulate_and_zero_grad_reuses_the_buffer():
    t = fg.Tensor([1.0, 2.0], requires_grad=True)
    assert t.grad is None
    (t * 3.0).sum().backward()
    buffer = t.grad
    (t * 3.0).sum().backward()
    np.testing.assert_array_equal(t.grad, [6.0, 6.0])
    t.zero_grad()
    assert t.grad is buffer and not t.grad.any()
    (t * t).sum().backward()
    assert t.grad is buffer
    np.testing.assert_array_equal(t.grad, [2.0, 4.0])


def test_a_var_and_a_tensor_meet():
    v = fg.Var(2.0)
    t = fg.Tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = (t * v + v).sum()
    assert isinstance(y, fg.Tensor)
    y.backward()
    np.testing.assert_array_equal(t.grad, [2.0, 2.0, 2.0])
    assert v.grad == 6.0 + 3.0


def test_float32_is_kept():
    a = RNG.normal(size=(3, 3)).astype(np.float32)
    t = fg.Tensor(a, requires_grad=True)
    out = (t.exp() * t + 1.0).sum()
    assert t.dtype == np.float32 and out.dtype == np.float32
    out.backward()
    assert t.grad.dtype == np.float32
    mixed = fg.Tensor(a) + fg.Tensor(a.astype(np.float64))
    assert mixed.dtype == np.float64


def test_odd_layouts_are_read_and_never_modified():
    base = RNG.normal(size=(4, 6))
    layouts = [np.asfortranarray(base), base[:, ::2], np.broadcast_to(base[0], (4, 6))]
    ro = base.copy()
    ro.setflags(write=False)
    layouts.append(ro)
    for arr in layouts:
        before = np.array(arr, copy=True)
        t = fg.Tensor(arr, requires_grad=True)
        ((t * 2.0).sum() + (fg.Tensor(arr) * t).sum()).backward()
        np.testing.assert_array_equal(arr, before)
        np.testing.assert_allclose(t.grad, 2.0 + np.asarray(arr))


def test_no_grad_builds_nothing():
    t = fg.Tensor([1.0, 2.0], requires_grad=True)
    before = _engine.memory_stats()["nodes_alive"]
    with fg.no_grad():
        y = (t * t).exp().sum()
    assert not y.requires_grad
    assert _engine.memory_stats()["nodes_alive"] == before
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.backward()


def test_constants_build_no_node():
    before = _engine.memory_stats()["nodes_alive"]
    y = (fg.Tensor([1.0, 2.0]) * 3.0).sum()
    assert not y.requires_grad and y.item() == 9.0
    assert _engine.memory_stats()["nodes_alive"] == before


def test_a_dropped_graph_frees_its_nodes_and_gradient_buffers():
    gc.collect()
    before = _engine.memory_stats()["nodes_alive"]
    for _ in range(200):
        t = fg.Tensor(RNG.normal(size=(4, 4)), requires_grad=True)
        ((t @ t).tanh().sum() * 2.0).backward()
        del t
    gc.collect()
    assert _engine.memory_stats()["nodes_alive"] == before


def test_threads_get_exact_results():
    a = RNG.normal(size=(5, 5))
    ref = fg.Tensor(a, requires_grad=True)
    (ref @ ref).tanh().sum().backward()
    results, errors = [], []

    def work():
        for _ in range(50):
            t = fg.Tensor(a, requires_grad=True)
            (t @ t).tanh().sum().backward()
            if not np.array_equal(t.grad, ref.grad):
                errors.append("mismatch")
        results.append(True)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == [] and len(results) == 4


# ---- errors ----

@pytest.mark.parametrize("data", [np.array([1, 2]), [True, False], np.arange(3, dtype=np.int32)])
def test_integer_data_cannot_require_grad(data):
    with pytest.raises(TypeError, match="float"):
        fg.Tensor(data, requires_grad=True)
    assert fg.Tensor(data).dtype == np.float64


@pytest.mark.parametrize("data", [np.array([1j]), ["a"], np.array([1.0], dtype=np.float16), None])
def test_non_real_data_is_refused(data):
    with pytest.raises(TypeError):
        fg.Tensor(data)


def test_shape_errors_raise_when_the_op_is_built():
    a, b = fg.Tensor(np.ones((2, 3)), requires_grad=True), fg.Tensor(np.ones((4,)))
    with pytest.raises(ValueError, match="do not broadcast"):
        a + b
    with pytest.raises(ValueError, match="inner sizes"):
        a @ fg.Tensor(np.ones((2, 2)))
    with pytest.raises(ValueError, match="1-D or 2-D"):
        fg.Tensor(np.ones((2, 2, 2))) @ a
    with pytest.raises(ValueError, match="out of range"):
        a.sum(axis=2)
    with pytest.raises(TypeError, match="axis"):
        a.sum(axis=1.5)
    with pytest.raises(TypeError, match="unsupported"):
        a + "x"


def test_backward_errors():
    t = fg.Tensor(np.ones((2, 2)), requires_grad=True)
    with pytest.raises(RuntimeError, match="scalar output"):
        (t * 2.0).backward()
    (t * 2.0).backward(np.ones((2, 2)))
    np.testing.assert_array_equal(t.grad, 2.0 * np.ones((2, 2)))
    with pytest.raises(ValueError, match="shape"):
        (t * 2.0).backward(np.ones(3))
    with pytest.raises(RuntimeError, match="does not require grad"):
        fg.Tensor([1.0]).backward()
    with pytest.raises(ValueError, match="one element"):
        t.item()


def test_leaf_tensors_pickle_and_deepcopy_with_their_gradient():
    import copy
    import pickle
    t = fg.Tensor([1.0, 2.0], requires_grad=True)
    (t * t).sum().backward()
    for u in (pickle.loads(pickle.dumps(t)), copy.deepcopy(t)):
        assert u.requires_grad and u is not t
        np.testing.assert_array_equal(u.data, t.data)
        np.testing.assert_array_equal(u.grad, t.grad)
        (u * 3.0).sum().backward()
        np.testing.assert_array_equal(u.grad, t.grad + 3.0)
    plain = pickle.loads(pickle.dumps(fg.Tensor([1.0])))
    assert not plain.requires_grad
    with pytest.raises(TypeError, match="leaf"):
        pickle.dumps(t * 2.0)


def test_an_optimizer_over_tensors_survives_pickling():
    import pickle
    t = fg.Tensor([1.0, -2.0], requires_grad=True)
    opt = fg.optim.Adam([t], lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        (t * t).sum().backward()
        opt.step()
    opt2 = pickle.loads(pickle.dumps(opt))
    (t2,) = opt2.param_groups[0]["params"]
    for o, p in ((opt, t), (opt2, t2)):
        o.zero_grad()
        (p * p).sum().backward()
        o.step()
    np.testing.assert_array_equal(t2.data, t.data)


def test_a_one_element_tensor_is_never_a_plain_number_to_the_scalar_engine():
    t = fg.Tensor([2.0], requires_grad=True)
    v = fg.Var(3.0)
    y = v * t                      # Var.__mul__ declines; Tensor.__rmul__ keeps the graph
    assert isinstance(y, fg.Tensor)
    y.sum().backward()
    assert t.grad.tolist() == [3.0] and v.grad == 2.0
    for fn in (fg.exp, lambda x: fg.maximum(x, 1.0), lambda x: fg.Var(1.0) < x):
        with pytest.raises(TypeError):
            fn(t)
    with pytest.raises(TypeError):
        fg.Var(t)


def test_a_rule_that_raises_leaves_no_adjoint_behind():
    t = fg.Tensor([1.0, 2.0], requires_grad=True)
    a = t * 2.0
    bad = fg.Tensor._result(a.data.copy(), _engine.custom(0.0, [a._node], _engine.TensorRule(
        "bad", lambda g: 1 / 0)))
    loss = (bad + a * 3.0).sum()          # a's adjoint is pending when bad's rule raises
    with pytest.raises(ZeroDivisionError):
        loss.backward()
    assert _engine._tensor_adjoints_held() == 0
    del loss, bad, a
    u = fg.Tensor([1.0, 2.0], requires_grad=True)
    ((u * 2.0) * 3.0).sum().backward()      # new nodes may reuse the freed indices
    np.testing.assert_array_equal(u.grad, [6.0, 6.0])


def test_the_engines_tensor_entry_points_refuse_what_is_not_theirs():
    v = fg.Var(1.0)
    with pytest.raises(TypeError, match="not a tensor node"):
        _engine._tensor_backward(v * 2.0, np.ones(()))
    with pytest.raises(TypeError, match="not a tensor node"):
        _engine._tensor_backward(v, np.ones(()))
    assert v.grad == 0.0 and _engine._tensor_adjoints_held() == 0
    with pytest.raises(ValueError, match="leaf"):
        _engine._tensor_leaf(v * 2.0, np.float64)
    with pytest.raises(ValueError, match="not a tensor leaf"):
        _engine._set_tensor_grad(v, np.ones(()))
    with pytest.raises(RuntimeError, match="never initialised"):
        _engine._tensor_grad(fg.Var.__new__(fg.Var))
    with pytest.raises(ValueError, match="not an elementwise op"):
        from fastgrad import _elementwise
        _elementwise.value(0, np.ones(2), None, 0.0, np.empty(2))
    with pytest.raises(ValueError, match="elements"):
        _elementwise.value(14, np.ones(2), None, 0.0, np.empty(3))
    t = fg.Tensor([1.0, float("nan")], requires_grad=True)
    (t.exp() * t).sum().backward()                       # NaN flows, as IEEE says
    assert np.isnan(t.grad[1]) and t.grad[0] == pytest.approx(2 * np.e)
    wrong = fg.Tensor._result(np.ones(2), _engine.custom(0.0, [t._node], _engine.TensorRule(
        "wrong", lambda g: (g, g))))
    with pytest.raises(ValueError, match="2 gradients for 1 inputs"):
        wrong.sum().backward()
    assert _engine._tensor_adjoints_held() == 0


def test_data_setter_takes_float_arrays_only():
    t = fg.Tensor(np.ones(3), requires_grad=True)
    for bad, what in (([1.0, 2.0, 3.0], "list"), (np.arange(3), "dtype int64"), (None, "NoneType"),
                      (np.float64(1.0), "float64"), (np.ones(3, dtype=complex), "dtype complex128"),
                      (2.0, "float")):
        with pytest.raises(TypeError, match=f"Tensor.data takes a float64 or float32 ndarray, got {what}"):
            t.data = bad
        np.testing.assert_array_equal(t.data, np.ones(3))          # unchanged
    f32 = np.zeros(3, dtype=np.float32)
    t.data = f32
    assert t.data is f32 and t.dtype == np.float32


def test_results_hold_arrays_even_where_numpy_gives_scalars():
    a, b = RNG.normal(size=4), RNG.normal(size=4)
    for y in (fg.Tensor(a) @ fg.Tensor(b), fg.Tensor(a, requires_grad=True) @ fg.Tensor(b),
              fg.Tensor(a.astype(np.float32)).sum(), fg.Tensor(a)[1]):
        assert type(y.data) is np.ndarray and y.data.ndim == 0
