"""Functional transforms: grad, value_and_grad, vjp, jvp, jacobian, hessian, hvp — fast (C sweeps) and
differentiable (graph-building) paths, nesting, kinks, and JAX-style argument validation."""
import math
import random

import numpy as np
import pytest
from conftest import DIFFERENTIABLE, call, n_operands

import fastgrad as fg
from fastgrad import _engine, _optable, _symbolic
from fastgrad.custom import custom_op
from fastgrad.gradcheck import gradcheck
from fastgrad.transforms import grad, hessian, hvp, jacfwd, jacobian, jacrev, jvp, value_and_grad, vjp


def close(a, b, rtol=1e-10, atol=1e-12):
    return math.isclose(float(a), float(b), rel_tol=rtol, abs_tol=atol)


def assert_allclose(a, b, rtol=1e-10, atol=1e-12):
    np.testing.assert_allclose(np.asarray(a, dtype=float), np.asarray(b, dtype=float), rtol=rtol, atol=atol)


def floats(tree):
    """A nested structure of Vars/floats as a float array (for comparisons)."""
    if isinstance(tree, (tuple, list)):
        return np.array([floats(t) for t in tree], dtype=float)
    if isinstance(tree, np.ndarray) and tree.dtype == object:
        return np.array([floats(t) for t in tree.ravel()], dtype=float).reshape(tree.shape)
    return np.asarray(float(tree))


# ---------------------------------------------------------------------------------------------------------
# Random graphs over every op (operands kept in each op's domain, values moderate)
# ---------------------------------------------------------------------------------------------------------

def _inside(op, v):
    """v mapped smoothly into the op's smooth domain (identity for ops smooth everywhere we sample)."""
    lo, hi = op.domain
    if (lo, hi) == (-2.5, 2.5):
        return v
    return lo + (hi - lo) * fg.sigmoid(v)


def _apply(kind, a, b, c):
    """The op `kind` of the table on operands built from a, b (and c: a constant, or a third operand)."""
    op = _optable.BY_NAME[kind]
    if kind == "sum":
        return fg.sum([a, b, c])
    if kind == "dot":
        return fg.dot([a, b], [b, c])
    k = op.k_values[len(op.k_values) // 2] if op.k_values else c
    return call(fg, op, [_inside(op, a), _inside(op, b)][:op.arity], k)


KINDS = [op.name for op in DIFFERENTIABLE]
BINARY_KINDS = {op.name for op in DIFFERENTIABLE if op.form in (_optable.BINARY, _optable.NARY)}


def random_function(seed, n_in, n_nodes=25, n_out=1):
    """A deterministic random expression graph f(*xs) -> scalar or tuple over every op kind.

    Each node applies an op to the previous node and a random earlier node or input (unary ops get the
    second one added after), so the graph is deep and every input matters; every result is squashed
    smoothly (r / sqrt(1 + r^2) keeps values moderate without flattening the derivatives).
    """
    rng = random.Random(seed)
    plan = []
    for k in range(n_nodes):
        n = n_in + k
        other = rng.randrange(n_in) if rng.random() < 0.5 else rng.randrange(n)
        plan.append((rng.choice(KINDS), n - 1, other, rng.uniform(0.5, 2.0), rng.uniform(-0.6, 0.6)))

    def f(*xs):
        vals = list(xs)
        for kind, i, j, c, mix in plan:
            r = _apply(kind, vals[i], vals[j], c)
            r = r / fg.sqrt(1.0 + r * r) * 2.0
            if kind not in BINARY_KINDS:
                r = r + mix * vals[j]
            vals.append(r)
        outs = [vals[-1 - 2 * k] for k in range(n_out)]
        return outs[0] if n_out == 1 else tuple(outs)

    return f


def random_point(seed, n):
    rng = random.Random(1000 + seed)
    return [rng.uniform(-1.5, 1.5) for _ in range(n)]


# ---------------------------------------------------------------------------------------------------------
# grad / value_and_grad
# ---------------------------------------------------------------------------------------------------------

def test_grad_of_polynomial_returns_float():
    g = grad(lambda x: 3 * x ** 3 - 2 * x + 1)(2.0)
    assert type(g) is float and g == 34.0


def test_grad_accepts_ints_numpy_scalars_and_zero_d_arrays():
    f = grad(lambda x: x * x)
    assert f(3) == 6.0 and f(np.float64(3.0)) == 6.0 and f(np.array(3.0)) == 6.0 and f(np.int32(3)) == 6.0


def test_grad_argnums_tuple_and_negative():
    def f(x, y, z):
        return x * y ** 2 + z

    assert grad(f, argnums=(0, 1))(2.0, 3.0, 1.0) == (9.0, 12.0)
    assert grad(f, argnums=-1)(2.0, 3.0, 1.0) == 1.0
    assert grad(f, argnums=(2, 0))(2.0, 3.0, 1.0) == (1.0, 9.0)


def test_grad_passes_other_arguments_and_kwargs_through():
    def f(x, scale, data=()):
        return scale * sum(x * d for d in data)

    assert grad(f)(2.0, 3.0, data=[1.0, 2.0]) == 9.0


def test_grad_of_structured_arguments():
    g = grad(lambda p: p["w"] * p["b"][0] + p["b"][1] ** 2)({"w": 2.0, "b": [3.0, 4.0]})
    assert g == {"w": 3.0, "b": [2.0, 8.0]}


def test_grad_of_numpy_array_argument():
    x = np.array([1.0, -2.0, 3.0])
    g = grad(lambda v: fg.sum([t * t for t in v]))(x)
    assert isinstance(g, np.ndarray) and g.dtype == np.float64
    assert_allclose(g, 2 * x)


def test_grad_of_constant_and_unconnected_outputs_is_zero():
    assert grad(lambda x: 5.0)(1.0) == 0.0
    other = fg.Var(2.0)
    assert grad(lambda x: other * 3)(1.0) == 0.0


def test_grad_does_not_touch_any_dot_grad():
    w = fg.Var(2.0)
    assert grad(lambda x: w * x * x)(3.0) == 12.0
    assert w.grad == 0.0


def test_value_and_grad_and_has_aux():
    value, g = value_and_grad(lambda x: x.exp())(0.0)
    assert value == 1.0 and g == 1.0
    (value, aux), g = value_and_grad(lambda x: (x * x, {"half": x / 2}), has_aux=True)(3.0)
    assert value == 9.0 and g == 6.0 and aux == {"half": 1.5} and type(aux["half"]) is float
    g, aux = grad(lambda x: (x * x, "note"), has_aux=True)(3.0)
    assert g == 6.0 and aux == "note"


def test_grad_with_var_argument_is_a_differentiable_var():
    x = fg.Var(3.0)
    g = grad(lambda y: y ** 3)(x)
    assert isinstance(g, fg.Var) and close(g.data, 27.0)
    g.backward()
    assert close(x.grad, 18.0)


# ---------------------------------------------------------------------------------------------------------
# Nesting: higher order and no perturbation confusion
# ---------------------------------------------------------------------------------------------------------

def test_nested_grad_no_perturbation_confusion():
    assert grad(lambda x: x * grad(lambda y: x * y)(x))(5.0) == 10.0
    # Siskind & Pearlmutter: d/dx [x * d/dy (x + y)] = 1, not 2
    assert grad(lambda x: x * grad(lambda y: x + y)(1.0))(1.0) == 1.0
    assert grad(lambda x: x * grad(lambda y: x + y)(x))(1.0) == 1.0


def test_nested_jvp_no_perturbation_confusion():
    def inner(x):
        return jvp(lambda y: x * y, (2.0,), (1.0,))[1]  # = x

    assert jvp(lambda x: x * inner(x), (3.0,), (1.0,))[1] == 6.0


def test_fourth_derivative_of_gaussian_at_zero_is_12():
    def d(x):
        return fg.exp(-x * x)

    for _ in range(4):
        d = grad(d)
    assert d(0.0) == 12.0


def test_higher_derivatives_match_closed_forms():
    def nth(f, n):
        for _ in range(n):
            f = grad(f)
        return f

    x = 0.7
    assert close(nth(fg.sin, 5)(x), math.cos(x))
    assert close(nth(fg.log, 3)(x), 2 / x ** 3)
    assert close(nth(lambda t: t ** 5, 3)(x), 60 * x ** 2)
    assert close(nth(lambda t: fg.exp(2 * t), 6)(x), 64 * math.exp(2 * x))
    assert close(nth(lambda t: 1 / t, 4)(x), 24 / x ** 5)
    assert close(nth(fg.tanh, 2)(x), -2 * math.tanh(x) * (1 - math.tanh(x) ** 2))
    assert close(nth(fg.sqrt, 2)(x), -0.25 * x ** -1.5)
    assert close(nth(lambda t: 2.0 ** t, 3)(x), math.log(2) ** 3 * 2 ** x)


def test_nested_grad_closing_over_outer_variable():
    # d/dw [d/dx w x^2 at x=3] = d/dw 6w = 6
    assert grad(lambda w: grad(lambda x: w * x * x)(3.0))(2.0) == 6.0
    # mixed partial of x^2 y^3 at (3, 2): 6 x * 3 y^2 ... d/dx d/dy = 6x y^2 = 72
    assert grad(lambda x: grad(lambda y: x ** 2 * y ** 3)(2.0))(3.0) == 72.0


def test_second_derivative_via_jvp_of_grad_and_grad_of_jvp():
    def f(x):
        return x.sin() * x ** 3

    def fpp(x):
        return -math.sin(x) * x ** 3 + 6 * x ** 2 * math.cos(x) + 6 * x * math.sin(x)

    x0 = 1.3
    assert close(jvp(grad(f), (x0,), (1.0,))[1], fpp(x0))
    assert close(grad(lambda x: jvp(f, (x,), (1.0,))[1])(x0), fpp(x0))
    assert close(grad(lambda x: vjp(f, x)[1](1.0)[0])(x0), fpp(x0))


def test_differentiate_jvp_with_respect_to_the_tangent():
    def f(x):
        return x ** 3

    assert grad(lambda t: jvp(f, (2.0,), (t,))[1])(1.0) == 12.0


def test_third_order_hessian_nesting():
    # d/dx of the Hessian of x^4 y: H_xx = 12 x^2 y -> 24 x y
    def f(x, y):
        return x ** 4 * y

    def h_xx(x):
        return hessian(f, argnums=(0, 1))(x, 2.0)[0][0]

    assert close(grad(h_xx)(1.5), 24 * 1.5 * 2.0)


def test_nested_transform_on_long_chain_has_no_recursion_limit():
    def f(x):
        for _ in range(3000):
            x = fg.sin(x) * 0.5 + x * 0.5
        return x

    second = grad(grad(f))(0.3)
    h = 1e-4
    numeric = (grad(f)(0.3 + h) - grad(f)(0.3 - h)) / (2 * h)
    assert close(second, numeric, rtol=1e-6, atol=1e-9)


def test_tracing_depth_is_restored_after_an_exception():
    def bad(x):
        raise KeyError("boom")

    with pytest.raises(KeyError):
        grad(bad)(1.0)
    assert _symbolic.depth() == 0


# ---------------------------------------------------------------------------------------------------------
# jvp / vjp
# ---------------------------------------------------------------------------------------------------------

def test_jvp_matches_closed_form():
    def f(x, y):
        return (x * y.sin(), x ** 2 + y)

    value, tangent = jvp(f, (2.0, 0.5), (1.0, -1.0))
    assert close(value[0], 2 * math.sin(0.5)) and value[1] == 4.5
    assert close(tangent[0], math.sin(0.5) - 2 * math.cos(0.5))
    assert tangent[1] == 3.0
    assert all(type(t) is float for t in tangent)


def test_jvp_runs_the_engine_tangent_sweep(monkeypatch):
    calls = []
    real = _engine.jvp
    monkeypatch.setattr(_engine, "jvp", lambda *a: calls.append(1) or real(*a))
    assert jvp(lambda x: x * x, (3.0,), (1.0,)) == (9.0, 6.0)
    assert calls == [1]


def test_vjp_multiple_outputs_and_cotangents():
    def f(x, y):
        return (x * y, x + 2 * y)

    value, pullback = vjp(f, 3.0, 4.0)
    assert value == (12.0, 11.0)
    assert pullback((1.0, 0.0)) == (4.0, 3.0)
    assert pullback((0.0, 1.0)) == (1.0, 2.0)
    assert pullback((2.0, 3.0)) == (11.0, 12.0)


def test_vjp_has_aux():
    value, pullback, aux = vjp(lambda x: (x * x, x + 1), 3.0, has_aux=True)
    assert value == 9.0 and aux == 4.0 and pullback(1.0) == (6.0,)


def test_vjp_with_var_cotangent_is_differentiable():
    # d/dc [c * f'(x)] = f'(x)
    _, pullback = vjp(lambda x: x ** 3, 2.0)
    assert grad(lambda c: pullback(c)[0])(1.0) == 12.0


# ---------------------------------------------------------------------------------------------------------
# jacobian
# ---------------------------------------------------------------------------------------------------------

def test_jacobian_modes_agree_with_closed_form():
    def f(x, y):
        return (x * y, x.exp(), y / x)

    expected = [[3.0, 2.0], [math.exp(2.0), 0.0], [-3.0 / 4.0, 0.5]]
    for mode in ("auto", "fwd", "rev"):
        assert_allclose(jacobian(f, argnums=(0, 1), mode=mode)(2.0, 3.0), expected)
    assert_allclose(jacfwd(f, (0, 1))(2.0, 3.0), expected)
    assert_allclose(jacrev(f, (0, 1))(2.0, 3.0), expected)


def test_jacobian_auto_uses_forward_mode_when_inputs_are_fewer(monkeypatch):
    counts = {"jvp": 0, "grad": 0}
    real_jvp, real_grad = _engine.jvp, _engine.grad

    def spy_jvp(*a):
        counts["jvp"] += 1
        return real_jvp(*a)

    def spy_grad(*a):
        counts["grad"] += 1
        return real_grad(*a)

    monkeypatch.setattr(_engine, "jvp", spy_jvp)
    monkeypatch.setattr(_engine, "grad", spy_grad)
    jacobian(lambda x: (x, x * 2, x * 3, x * 4))(1.0)  # 1 input, 4 outputs: 1 forward sweep
    assert counts == {"jvp": 1, "grad": 0}
    jacobian(lambda x, y, z: x * y * z, argnums=(0, 1, 2))(1.0, 2.0, 3.0)  # 3 inputs, 1 output: 1 reverse
    assert counts == {"jvp": 1, "grad": 1}


def test_jacobian_of_arrays_has_out_shape_plus_in_shape():
    A = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    def f(v):
        return np.array([fg.dot(list(row), list(v)) for row in A], dtype=object)

    for mode in ("fwd", "rev"):
        J = jacobian(f, mode=mode)(np.array([1.0, 1.0, 1.0]))
        assert isinstance(J, np.ndarray) and J.shape == (2, 3) and J.dtype == np.float64
        assert_allclose(J, A)


def test_jacobian_scalar_to_scalar_is_a_float():
    assert jacobian(lambda x: x * x)(3.0) == 6.0


@pytest.mark.parametrize("seed", range(12))
def test_forward_equals_reverse_on_random_graphs(seed):
    f = random_function(seed, n_in=3, n_nodes=30, n_out=2)
    x = random_point(seed, 3)
    J_fwd = jacobian(f, argnums=(0, 1, 2), mode="fwd")(*x)
    J_rev = jacobian(f, argnums=(0, 1, 2), mode="rev")(*x)
    assert_allclose(J_fwd, J_rev, rtol=1e-10, atol=1e-12)
    assert gradcheck(f, x)  # and both against central differences


@pytest.mark.parametrize("seed", range(12))
def test_differentiable_path_equals_fast_path_on_random_graphs(seed):
    f = random_function(seed, n_in=3, n_nodes=25, n_out=2)
    x = random_point(seed, 3)
    fast = jacobian(f, argnums=(0, 1, 2), mode="rev")(*x)
    for mode in ("fwd", "rev"):
        symbolic = jacobian(f, argnums=(0, 1, 2), mode=mode)(*[fg.Var(v) for v in x])
        assert all(isinstance(v, fg.Var) for row in symbolic for v in row)
        assert_allclose(floats(symbolic), fast, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("seed", range(12))
def test_symbolic_hessian_equals_engine_hvp_on_random_graphs(seed):
    f = random_function(seed, n_in=3, n_nodes=20)
    x = random_point(seed, 3)
    fast = hessian(f, argnums=(0, 1, 2))(*x)                              # _engine.hvp (C)
    symbolic = hessian(f, argnums=(0, 1, 2))(*[fg.Var(v) for v in x])     # graph-building rules
    assert_allclose(floats(symbolic), fast, rtol=1e-9, atol=1e-11)
    assert_allclose(fast, np.transpose(fast), rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("seed", range(6))
def test_third_derivatives_on_random_graphs_are_symmetric_and_match_differences(seed):
    f = random_function(seed, n_in=3, n_nodes=15)
    x = random_point(seed, 3)
    argnums = (0, 1, 2)
    T = floats(jacobian(hessian(f, argnums), argnums)(*x))     # d/dx_k H_ij: three nested transforms
    assert T.shape == (3, 3, 3)
    assert_allclose(T, np.transpose(T, (1, 0, 2)), rtol=1e-8, atol=1e-10)
    assert_allclose(T, np.transpose(T, (0, 2, 1)), rtol=1e-8, atol=1e-10)
    h = 1e-5
    for k in range(3):
        up, down = list(x), list(x)
        up[k] += h
        down[k] -= h
        numeric = (np.array(hessian(f, argnums)(*up)) - np.array(hessian(f, argnums)(*down))) / (2 * h)
        assert_allclose(T[:, :, k], numeric, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------
# Kinks: forward == reverse, on both paths
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("f, expected", [
    (fg.relu, 0.0),
    (abs, 0.0),
    (lambda x: fg.maximum(x, 0.0), 0.5),
    (lambda x: fg.minimum(x, 0.0), 0.5),
    (lambda x: fg.maximum(x, x), 1.0),
])
def test_kinks_forward_equals_reverse(f, expected):
    assert grad(f)(0.0) == expected
    assert jvp(f, (0.0,), (1.0,))[1] == expected
    assert jacobian(f, mode="fwd")(0.0) == expected
    assert float(grad(f)(fg.Var(0.0))) == expected
    assert float(jvp(f, (fg.Var(0.0),), (1.0,))[1]) == expected


def test_maximum_tie_splits_gradient_in_both_modes():
    def f(x, y):
        return fg.maximum(x, y)

    assert grad(f, argnums=(0, 1))(1.0, 1.0) == (0.5, 0.5)
    assert jacobian(f, argnums=(0, 1), mode="fwd")(1.0, 1.0) == (0.5, 0.5)
    assert tuple(map(float, grad(f, argnums=(0, 1))(fg.Var(1.0), fg.Var(1.0)))) == (0.5, 0.5)


# ---------------------------------------------------------------------------------------------------------
# Hessians and Hessian-vector products
# ---------------------------------------------------------------------------------------------------------

def poly(x, y, z):
    return x ** 2 * y + y ** 3 * z - 2 * x * z ** 2 + 5 * x * y * z + 7


def poly_hessian(x, y, z):
    return np.array([
        [2 * y, 2 * x + 5 * z, -4 * z + 5 * y],
        [2 * x + 5 * z, 6 * y * z, 3 * y ** 2 + 5 * x],
        [-4 * z + 5 * y, 3 * y ** 2 + 5 * x, -4 * x],
    ])


@pytest.mark.parametrize("point", [(1.0, 2.0, 3.0), (-0.5, 0.25, 2.0), (0.0, 0.0, 0.0)])
def test_hessian_of_polynomial_matches_closed_form(point):
    H = hessian(poly, argnums=(0, 1, 2))(*point)
    assert_allclose(H, poly_hessian(*point), rtol=1e-12, atol=1e-12)
    H_sym = hessian(poly, argnums=(0, 1, 2))(*[fg.Var(p) for p in point])
    assert_allclose(floats(H_sym), poly_hessian(*point), rtol=1e-12, atol=1e-12)
    H_jac = jacobian(grad(poly, argnums=(0, 1, 2)), argnums=(0, 1, 2))(*point)
    assert_allclose(H_jac, poly_hessian(*point), rtol=1e-12, atol=1e-12)


def test_hessian_of_quadratic_form_on_array():
    A = np.array([[2.0, 1.0, 0.0], [1.0, 3.0, -1.0], [0.0, -1.0, 4.0]])
    def f(v):
        return 0.5 * fg.sum([A[i, j] * v[i] * v[j] for i in range(3) for j in range(3)])

    H = hessian(f)(np.array([0.3, -0.2, 0.9]))
    assert isinstance(H, np.ndarray) and H.shape == (3, 3)
    assert_allclose(H, A, rtol=1e-12)


def test_hessian_of_univariate_is_a_float():
    assert hessian(lambda x: x ** 4)(2.0) == 48.0


def test_hvp_matches_hessian_times_vector():
    point, v = (1.0, 2.0, 3.0), (0.5, -1.0, 2.0)
    hv = hvp(poly, point, v)
    assert isinstance(hv, tuple) and all(type(t) is float for t in hv)
    assert_allclose(hv, poly_hessian(*point) @ np.array(v), rtol=1e-12)
    hv_sym = hvp(poly, tuple(fg.Var(p) for p in point), v)
    assert_allclose(floats(hv_sym), poly_hessian(*point) @ np.array(v), rtol=1e-12)


def test_hessian_does_not_touch_dot_grad():
    x = fg.Var(1.0)
    hessian(lambda t: t ** 3 * x)(2.0)
    assert x.grad == 0.0


# ---------------------------------------------------------------------------------------------------------
# _symbolic's table vs the engine's table, op by op
# ---------------------------------------------------------------------------------------------------------

def _make_op(name, args, k):
    """A node of the given table op over Var args (k: the constant of the *c ops, or the parameter)."""
    node = call(fg, _optable.BY_NAME[name], args, k)
    assert node.op == name
    return node


DIFFERENTIABLE_OPS = [op.name for op in DIFFERENTIABLE]


def test_symbolic_rules_cover_exactly_the_engine_ops():
    assert set(_symbolic.RULES) == set(DIFFERENTIABLE_OPS)


def _points(name, rng):
    op = _optable.BY_NAME[name]
    lo, hi = op.domain
    xs = [rng.uniform(lo, hi) for _ in range(n_operands(op))]
    k = rng.choice(op.k_values) if op.k_values else rng.uniform(0.3, 3.0)
    return xs, k


@pytest.mark.parametrize("op", DIFFERENTIABLE_OPS)
def test_symbolic_partials_match_engine_partials(op):
    rng = random.Random(op)
    special = _optable.BY_NAME[op].special
    cases = [_points(op, rng) for _ in range(25)] + [(list(xs), _points(op, rng)[1]) for xs in special]
    for xs, k in cases:
        args = [fg.Var(x) for x in xs]
        node = _make_op(op, args, k)
        handle, name, parents, aux = _engine.tape(node)[-1]
        assert name == op
        expected = _engine.partials(node)
        got = _symbolic.local_partials(op, args, node, aux)
        assert len(got) == len(expected), (op, xs)
        for g, e in zip(got, expected):
            assert close(float(g), e, rtol=1e-12, atol=1e-14), (op, xs, k, float(g), e)


@pytest.mark.parametrize("op", DIFFERENTIABLE_OPS)
def test_symbolic_second_derivatives_match_engine_hvp(op):
    """The rules' own derivatives (what nesting differentiates) against the engine's second-partials."""
    rng = random.Random("second-" + op)
    for _ in range(10):
        xs, k = _points(op, rng)

        def f(*vs, k=k):
            return _make_op(op, list(vs), k)

        argnums = tuple(range(len(xs)))
        fast = hessian(f, argnums)(*xs)
        symbolic = hessian(f, argnums)(*[fg.Var(x) for x in xs])
        assert_allclose(floats(symbolic), fast, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------------------------------------
# Validation (as JAX)
# ---------------------------------------------------------------------------------------------------------

def test_jvp_primals_and_tangents_must_be_tuples_or_lists():
    with pytest.raises(TypeError, match="tuples or lists"):
        jvp(lambda x: x, 1.0, 1.0)
    with pytest.raises(TypeError, match="tuples or lists"):
        jvp(lambda x: x, (1.0,), 1.0)


def test_jvp_primals_and_tangents_of_different_structure():
    with pytest.raises(TypeError, match="same tree structure"):
        jvp(lambda x, y: x * y, (1.0, 2.0), (1.0,))
    with pytest.raises(TypeError, match="same tree structure"):
        jvp(lambda x: x[0], ((1.0, 2.0),), ([1.0, 2.0],))
    with pytest.raises(TypeError, match="same tree structure"):
        hvp(lambda x, y: x * y, (1.0, 2.0), ((1.0, 2.0),))


def test_jvp_tangent_shapes_must_match():
    with pytest.raises(ValueError, match="shapes"):
        jvp(lambda v: v[0], (np.zeros(2),), (np.zeros(3),))


def test_bad_argument_types():
    with pytest.raises(TypeError, match="str"):
        grad(lambda x: x)("1.0")
    with pytest.raises(TypeError, match="complex"):
        grad(lambda x: x)(1j)
    with pytest.raises(TypeError, match="NoneType"):
        jvp(lambda x: x, (None,), (1.0,))
    with pytest.raises(TypeError, match="tangent"):
        jvp(lambda x: x, (1.0,), ("a",))


def test_argnums_validation():
    with pytest.raises(TypeError, match="argnums"):
        grad(lambda x: x, argnums="0")
    with pytest.raises(TypeError, match="argnums"):
        grad(lambda x: x, argnums=1.0)
    with pytest.raises(TypeError, match="positional arguments"):
        grad(lambda x: x, argnums=1)(1.0)
    with pytest.raises(TypeError, match="positional arguments"):
        jacobian(lambda x, y: x, argnums=(0, 2))(1.0, 2.0)
    with pytest.raises(ValueError, match="twice"):
        grad(lambda x, y: x, argnums=(0, 0))(1.0, 2.0)


def test_grad_requires_scalar_output():
    with pytest.raises(TypeError, match="scalar-output"):
        grad(lambda x: (x, x))(1.0)
    with pytest.raises(TypeError, match="scalar-output"):
        hessian(lambda x: [x])(1.0)
    with pytest.raises(TypeError, match="scalar-output"):
        hvp(lambda x: (x, x), (1.0,), (1.0,))


def test_function_output_must_be_numbers_or_vars():
    with pytest.raises(TypeError, match="function output"):
        grad(lambda x: "x")(1.0)


def test_not_callable_and_bad_mode():
    with pytest.raises(TypeError, match="callable"):
        grad(3.0)
    with pytest.raises(TypeError, match="callable"):
        jvp(None, (1.0,), (1.0,))
    with pytest.raises(ValueError, match="mode"):
        jacobian(lambda x: x, mode="forward")


def test_has_aux_requires_a_pair():
    with pytest.raises(TypeError, match="has_aux"):
        grad(lambda x: x, has_aux=True)(1.0)


def test_vjp_cotangent_structure_must_match_output():
    _, pullback = vjp(lambda x: (x, 2 * x), 1.0)
    with pytest.raises(TypeError, match="structure"):
        pullback(1.0)
    with pytest.raises(TypeError, match="structure"):
        pullback((1.0, 2.0, 3.0))
    with pytest.raises(TypeError):
        pullback(("a", 1.0))


# ---------------------------------------------------------------------------------------------------------
# Lifetime: the graphs a transform records are freed when it returns (no reference cycles)
# ---------------------------------------------------------------------------------------------------------

def test_transforms_free_their_graphs_without_the_cyclic_gc():
    import gc

    def f(x, y):
        return fg.sin(x * y) + x ** 3 * y

    def work():
        grad(grad(f))(0.3, 0.7)
        jvp(f, (0.3, 0.7), (1.0, 0.5))
        hessian(f, (0, 1))(0.3, 0.7)
        hessian(f, (0, 1))(fg.Var(0.3), fg.Var(0.7))
        vjp(f, 0.3, 0.7)[1](1.0)
        jacobian(f, (0, 1), mode="fwd")(fg.Var(0.3), 0.7)
        hessian(lambda t: sine(t) * t)(0.4)

    sine = custom_op(math.sin, lambda g, t: (g * math.cos(t),), jvp=lambda p, d: fg.cos(p[0]) * d[0])
    for _ in range(50):
        work()
    gc.collect()
    gc.disable()
    try:
        before = _engine.memory_stats()
        for _ in range(1000):
            work()
        after = _engine.memory_stats()
    finally:
        gc.enable()
    assert after["nodes_capacity"] == before["nodes_capacity"]
    assert after["segments_live"] <= before["segments_live"] + 1


@pytest.mark.parametrize("wrap", [lambda w: w, lambda w: [w], lambda w: (w,), lambda w: {"w": w}])
def test_a_var_inside_a_container_argument_keeps_the_result_differentiable(wrap):
    w = fg.Var(3.0)

    def f(x, ws):
        inner = ws if isinstance(ws, fg.Var) else (ws["w"] if isinstance(ws, dict) else ws[0])
        return x * x * inner

    g = fg.grad(f)(2.0, wrap(w))
    assert isinstance(g, fg.Var) and g.data == 12.0
    g.backward()
    assert w.grad == 4.0                     # d/dw (2·x·w) at x = 2


def test_forward_mode_stays_in_c_when_a_custom_op_does_not_depend_on_the_inputs(monkeypatch):
    cube = fg.custom_op(lambda t: t ** 3, lambda g, t: (3 * t * t * g,))
    k = cube(fg.Var(2.0))                     # a constant for the transforms below

    def f(x):
        return fg.sin(x) * x * k

    def no_python_sweep(*args, **kwargs):
        raise AssertionError("the Python forward sweep ran")

    monkeypatch.setattr(_symbolic, "forward", no_python_sweep)
    x = 0.7
    assert fg.jvp(f, (x,), (1.0,))[1] == pytest.approx((math.cos(x) * x + math.sin(x)) * 8.0, rel=1e-12)
    assert fg.hessian(f)(x) == pytest.approx((-math.sin(x) * x + 2 * math.cos(x)) * 8.0, rel=1e-12)
