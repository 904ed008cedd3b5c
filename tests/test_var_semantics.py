"""Graph semantics of Var (docs/semantics.md): worked examples, shared subexpressions, accumulation,
protocols."""
import builtins
import decimal
import fractions
import math
import operator
import pickle

import numpy as np
import pytest
from conftest import value_and_grads

import fastgrad

approx = pytest.approx


# ---- worked examples ----

def test_affine_power_example(fg):
    y, (ga, gx, gb, gc) = value_and_grads(fg, lambda a, x, b, c: (a * x + b) ** c, 1.0, 2.0, 3.0, 4.0)
    assert y == 625.0
    assert (ga, gx, gb) == (approx(1000.0), approx(500.0), approx(500.0))  # c (ax+b)^(c-1) * (x, a, 1)
    assert gc == approx(625.0 * math.log(5.0), rel=1e-14)


@pytest.mark.parametrize("x", [-0.7, 0.5, 1.3])
def test_sqrt_of_exp_square_plus_square(fg, x):
    y, (g,) = value_and_grads(fg, lambda v: ((v * v).exp() + v * v).sqrt(), x)
    f = math.sqrt(math.exp(x * x) + x * x)
    assert y == approx(f, rel=1e-14)
    assert g == approx(x * (math.exp(x * x) + 1.0) / f, rel=1e-13)


def test_sqrt_times_log_plus_inverse_square(fg):
    x = 1.2
    y, (g,) = value_and_grads(fg, lambda v: 3 * v.sqrt() * (v.log() + 1 / v ** 2), x)
    assert y == approx(3 * math.sqrt(x) * (math.log(x) + x ** -2), rel=1e-14)
    expected = 3 * (0.5 / math.sqrt(x) * (math.log(x) + x ** -2) + math.sqrt(x) * (1 / x - 2 * x ** -3))
    assert g == approx(expected, rel=1e-13)


@pytest.mark.parametrize("x1, x2", [(1.5, 0.5), (-0.8, 2.0)])
def test_two_variable_polynomial_sin_log(fg, x1, x2):
    y, (g1, g2) = value_and_grads(fg, lambda a, b: a ** 4 * b + a.sin() + b.log(), x1, x2)
    assert y == approx(x1 ** 4 * x2 + math.sin(x1) + math.log(x2), rel=1e-14)
    assert g1 == approx(4 * x1 ** 3 * x2 + math.cos(x1), rel=1e-13)
    assert g2 == approx(x1 ** 4 + 1 / x2, rel=1e-13)


def test_product_of_sums(fg):
    assert value_and_grads(fg, lambda x, y: (x + y) * (y + 1), 2.0, 3.0) == (20.0, [4.0, 9.0])


def test_quadratic_has_zero_gradient_at_its_vertex(fg):
    assert value_and_grads(fg, lambda x: x ** 2 + 2 * x + 3, -1.0) == (2.0, [0.0])


# ---- shared subexpressions ----

def test_operand_used_twice_gets_both_gradients(fg):
    assert value_and_grads(fg, lambda a: a + a, 1.5) == (3.0, [2.0])
    assert value_and_grads(fg, lambda x: x * x * x, 3.0) == (27.0, [27.0])


def test_doubled_twice_has_gradient_four(fg):
    def f(a):
        b = a + a
        return b + b
    assert value_and_grads(fg, f, -2.0) == (-8.0, [4.0])


def test_diamond_sums_both_paths(fg):
    def f(a):
        b, c = a * 2, a + 1  # d = 2a (a + 1), dd/da = 4a + 2
        return b * c
    assert value_and_grads(fg, f, 3.0) == (24.0, [14.0])


# ---- accumulation across backward() calls ----

def test_backward_twice_adds_exactly_twice_into_leaves(fg):
    a, b = fg.Var(1.5), fg.Var(-0.5)
    c = a * b  # an interior node with three consumers
    y = c * c + c.exp() + c.tanh()
    y.backward()
    first = (a.grad, b.grad, c.grad)
    y.backward()
    assert (a.grad, b.grad) == (2 * first[0], 2 * first[1])
    assert c.grad == first[2]  # interior grads start fresh: never re-propagated stale
    assert y.grad == 1.0


def test_leaf_gradient_accumulates_until_zeroed(fg):
    x = fg.Var(2.0)
    assert x.grad == 0.0 and type(x.grad) is float
    (x * 3).backward()
    assert x.grad == 3.0
    (x * x).backward()
    assert x.grad == 7.0
    x.grad = 0.0
    (x * 5).backward()
    assert x.grad == 5.0


def test_intermediate_reused_across_steps_keeps_its_gradient(fg):
    w = fg.Var(0.5)
    c = w * 2  # built once, outside the loop
    for step in range(1, 6):
        x = float(step)
        w.grad = 0.0
        loss = (c * x - 1) ** 2
        loss.backward()
        assert c.grad == 2 * (c.data * x - 1) * x
        assert w.grad == 2 * c.grad


def test_sum_of_many_vars(fg):
    values = [((i * 7919) % 1000) / 997.0 - 0.5 for i in range(10 ** 5)]
    vs = [fg.Var(v) for v in values]
    s = fg.sum(vs)
    s.backward()
    assert s.data == approx(builtins.sum(values), rel=1e-12)
    assert all(v.grad == 1.0 for v in vs)


def test_sum_of_many_vars_with_a_python_loop(fg):
    vs = [fg.Var(i / 10 ** 5) for i in range(10 ** 5)]
    total = vs[0]
    for v in vs[1:]:
        total = total + v  # a chain 10^5 nodes deep
    total.backward()
    assert total.data == approx((10 ** 5 - 1) / 2, rel=1e-12)
    assert all(v.grad == 1.0 for v in vs)


def test_sum_and_dot_of_vars_and_numbers(fg):
    a, b, c = fg.Var(1.5), fg.Var(-2.0), fg.Var(0.25)
    s = fg.sum([a, 2.0, b, c, a])
    s.backward()
    assert s.data == 3.25 and (a.grad, b.grad, c.grad) == (2.0, 1.0, 1.0)
    for v in (a, b, c):
        v.grad = 0.0
    d = fg.dot([a, 3.0, c], [b, c, 4.0])
    d.backward()
    assert d.data == 1.5 * -2.0 + 3.0 * 0.25 + 0.25 * 4.0
    assert (a.grad, b.grad, c.grad) == (-2.0, 1.5, 3.0 + 4.0)


def test_empty_sum_and_dot_are_zero_leaves(fg):
    for v in (fg.sum([]), fg.dot([], [])):
        assert v.data == 0.0 and v.is_leaf


# ---- the Var object ----

def test_leaves_and_interior_nodes(fg):
    a = fg.Var(1.0)
    b = a * 2
    assert a.is_leaf and not b.is_leaf
    d = b.detach()
    assert d.is_leaf and d.data == 2.0
    (d * 3).backward()
    assert d.grad == 3.0 and a.grad == 0.0  # no gradient flows through detach


def test_augmented_assignment_makes_a_new_node(fg):
    a = fg.Var(1.0)
    b = a
    b += 1
    assert b is not a and a.data == 1.0 and b.data == 2.0
    b *= a
    b.backward()
    assert a.grad == 3.0  # d/da (a + 1) a = 2a + 1


def test_value_is_an_alias_of_var(fg):
    assert fg.Value is fg.Var
    assert isinstance(fg.Value(1.0) + 1, fg.Var)


def test_data_and_grad_are_settable_floats(fg):
    p = fg.Var(3)
    assert type(p.data) is float
    (p * p).backward()
    p.data -= 0.1 * p.grad  # micrograd's update
    p.grad = 0.0
    assert p.data == approx(2.4) and p.grad == 0.0


@pytest.mark.parametrize("bad", ["a", "1.0", None, [1.0], (1.0,), 1j, {}])
@pytest.mark.parametrize("op", [operator.add, operator.sub, operator.mul, operator.truediv, operator.pow])
def test_bad_operand_is_a_type_error_in_both_orders(fg, bad, op):
    v = fg.Var(2.0)
    with pytest.raises(TypeError):
        op(v, bad)
    with pytest.raises(TypeError):
        op(bad, v)


@pytest.mark.parametrize("bad", ["a", "1.0", None, [1.0], 1j])
def test_bad_value_is_a_type_error(fg, bad):
    with pytest.raises(TypeError):
        fg.Var(bad)
    with pytest.raises(TypeError):
        fg.exp(bad)
    v = fg.Var(1.0)
    with pytest.raises(TypeError):
        v += bad


@pytest.mark.parametrize("scalar", [np.float64(1.5), np.float32(1.5), np.int64(3)])
def test_numpy_scalars_work_on_both_sides(fg, scalar):
    k = float(scalar)
    for y, expected, grad in [(lambda v: v * scalar, 2.0 * k, k), (lambda v: scalar * v, 2.0 * k, k),
                              (lambda v: scalar - v, k - 2.0, -1.0), (lambda v: v / scalar, 2.0 / k, 1.0 / k),
                              (lambda v: scalar ** v, k ** 2.0, k ** 2.0 * math.log(k))]:
        value, (g,) = value_and_grads(fg, y, 2.0)
        assert value == approx(expected, rel=1e-15) and g == approx(grad, rel=1e-14)
        assert type(value) is float


def test_numpy_values_become_float64_leaves(fg):
    assert fg.Var(np.float32(0.1)).data == float(np.float32(0.1))
    assert fg.Var(np.int64(7)).data == 7.0
    v = fg.Var(np.array(2.5))  # a 0-d array
    assert v.data == 2.5 and type(v.data) is float


def test_numpy_arrays_never_become_object_arrays(fg):
    v = fg.Var(2.0)
    with pytest.raises(TypeError):
        np.array([1.0, 2.0]) + v
    with pytest.raises(TypeError):
        v + np.array([1.0, 2.0])
    with pytest.raises(TypeError):
        np.array([1.0, 2.0]) * v


def test_comparisons_compare_values_and_give_plain_bools(fg):
    a, b = fg.Var(2.0), fg.Var(3.0)
    results = [a < b, a <= b, b > a, b >= a, a != b, a == fg.Var(2.0), a == 2, a < 2.5, 3 > a, 1.0 <= a,
               np.float64(2.0) == a]
    assert all(r is True or r is np.True_ for r in results)
    assert (a > b) is False and (a == b) is False and (a == "2.0") is False and (a != "2.0") is True
    with pytest.raises(TypeError):
        _ = a < "3"


def test_bool_float_and_identity_hash(fg):
    assert bool(fg.Var(0.0)) is False and bool(fg.Var(-0.5)) is True
    assert float(fg.Var(2.5)) == 2.5 and type(float(fg.Var(2.5))) is float
    a, b = fg.Var(1.0), fg.Var(1.0)
    assert a == b and len({a, b}) == 2  # equal values, distinct nodes
    assert hash(a) == hash(a) and {a: "a", b: "b"}[b] == "b"


def test_repr_shows_data_and_grad(fg):
    v = fg.Var(2.0)
    assert repr(v) == "Var(data=2.0, grad=0.0)"
    (v * 3).backward()
    assert repr(v) == "Var(data=2.0, grad=3.0)"
    assert repr(fg.Value(-1)) == "Var(data=-1.0, grad=0.0)"


def test_pickled_leaf_keeps_data_and_grad(fg):
    v = fg.Var(1.25)
    (v * v).backward()
    restored = pickle.loads(pickle.dumps(v))
    assert isinstance(restored, fg.Var) and restored is not v
    assert (restored.data, restored.grad) == (1.25, 2.5) and restored.is_leaf
    with pytest.raises(TypeError):
        pickle.dumps(v * 4)  # the graph is never saved: an interior node must be detached first
    assert pickle.loads(pickle.dumps((v * 4).detach())).data == 5.0


def test_op_names_follow_the_contract():
    Var = fastgrad.Var
    a, b = Var(1.0), Var(2.0)
    ops = {"leaf": a, "add": a + b, "sub": a - b, "mul": a * b, "div": a / b, "pow": a ** b, "addc": a + 2,
           "mulc": a * 2, "divc": a / 2, "rsubc": 2 - a, "rdivc": 2 / a, "powc": a ** 2, "rpowc": 2 ** a,
           "neg": -a,
           "abs": abs(a), "exp": a.exp(), "log": a.log(), "sqrt": a.sqrt(), "sin": a.sin(), "cos": a.cos(),
           "tanh": a.tanh(), "sigmoid": a.sigmoid(), "relu": a.relu(), "max": fastgrad.maximum(a, b),
           "min": fastgrad.minimum(a, b), "sum": fastgrad.sum([a, b]), "dot": fastgrad.dot([a], [b])}
    assert {name: v.op for name, v in ops.items()} == {name: name for name in ops}


# ---- micrograd's own engine tests (karpathy/micrograd test/test_engine.py), expected values by hand ----

def test_micrograd_sanity_check(fg):
    x = fg.Value(-4.0)
    z = 2 * x + 2 + x
    q = z.relu() + z * x
    h = (z * z).relu()
    y = h + q + q * x
    y.backward()
    assert y.data == -20.0  # z = -10, q = 40, h = 100
    assert x.grad == 46.0  # dh/dx + dq/dx (1 + x) + q = -60 - 22 (-3) + 40


def test_micrograd_more_ops(fg):
    a = fg.Value(-4.0)
    b = fg.Value(2.0)
    c = a + b
    d = a * b + b ** 3
    c += c + 1
    c += 1 + c + (-a)
    d += d * 2 + (b + a).relu()
    d += 3 * d + (b - a).relu()
    e = c - d
    f = e ** 2
    g = f / 2.0
    g += 10.0 / f
    g.backward()
    # c = 3a + 4b + 3 = -1, d = 12 (ab + b^3) + (b - a) = 6, e = -7, dg/de = e - 20 / e^3 = -2381/343
    assert g.data == approx(24.5 + 10 / 49, rel=1e-14)
    assert a.grad == approx(-20 * -2381 / 343, rel=1e-13)  # de/da = 3 - (12 b - 1)
    assert b.grad == approx(-93 * -2381 / 343, rel=1e-13)  # de/db = 4 - (12 (a + 3 b^2) + 1)


# ---- forward values are bit-identical to the same expression on Python floats ----

def _same_float(a, b):
    return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1.0, a) == math.copysign(1.0, b))


def test_division_by_a_number_is_ieee_division(fg):
    # x / k used to be x * (1/k): 0.3 / 0.1 gave 3.0, and a subnormal divisor overflowed to inf
    assert (fg.Var(0.3) / 0.1).data == 0.3 / 0.1 == 2.9999999999999996
    assert (fg.Var(1e-300) / 1e-310).data == 1e-300 / 1e-310
    rng = np.random.default_rng(5)
    xs = rng.standard_normal(2000) * 10.0 ** rng.integers(-5, 6, 2000)
    ks = rng.standard_normal(2000) * 10.0 ** rng.integers(-5, 6, 2000)
    for x, k in zip(xs.tolist(), ks.tolist()):
        assert _same_float((fg.Var(x) / k).data, x / k), (x, k)
    v = fg.Var(2.0)
    (v / 4.0).backward()
    assert v.grad == 0.25


def test_division_by_zero_constant_follows_ieee(fg):
    assert (fg.Var(1.0) / 0.0).data == math.inf
    assert (fg.Var(-1.0) / 0.0).data == -math.inf
    assert (fg.Var(1.0) / -0.0).data == -math.inf
    assert math.isnan((fg.Var(0.0) / 0.0).data)


def test_square_by_a_constant_matches_python_pow(fg):
    # libm's pow(x, 2) differs from x * x in about 0.1% of cases; Python's x ** 2 calls pow
    x = 0.11109723203201692
    assert x ** 2 != x * x
    assert (fg.Var(x) ** 2).data == x ** 2
    rng = np.random.default_rng(6)
    for x in (rng.standard_normal(3000) * 10.0 ** rng.integers(-8, 9, 3000)).tolist():
        for k in (2, 3, -1, 0.5, -2):
            assert _same_float((fg.Var(x) ** k).data, math.pow(x, k) if x > 0 or float(k).is_integer()
                               else math.nan), (x, k)


class _Meters:
    """A user's number type: not numbers.Real, but it converts itself with __float__."""

    def __init__(self, x):
        self.x = x

    def __float__(self):
        return float(self.x)


@pytest.mark.parametrize("number", [decimal.Decimal("1.5"), _Meters(1.5), fractions.Fraction(3, 2),
                                    np.float32(1.5), np.array(1.5), True])
def test_anything_with_float_is_a_real_operand(fg, number):
    v = fg.Var(2.0)
    assert (v * number).data == 2.0 * float(number)
    assert (number * v).data == float(number) * 2.0
    assert fg.Var(number).data == float(number)


@pytest.mark.parametrize("bad", ["2", b"2", bytearray(b"2"), 1 + 2j, np.complex128(1.0), np.array([1.5]),
                                 np.array("2")])
def test_strings_complex_and_arrays_are_never_numbers(fg, bad):
    v = fg.Var(2.0)
    with pytest.raises(TypeError):
        v * bad
    with pytest.raises(TypeError):
        fg.Var(bad)
    if fg is fastgrad:
        y = v * 3.0
        with pytest.raises(TypeError, match="real number"):
            y.backward(bad)
        with pytest.raises(TypeError):
            v.data = bad


def test_a_custom_backward_returning_strings_is_refused():
    op = fastgrad.custom_op(lambda x: 2 * x, lambda g, x: ("1.5",), name="stringy")
    x = fastgrad.Var(1.0)
    with pytest.raises(TypeError, match="never strings"):
        op(x).backward()
    op2 = fastgrad.custom_op(lambda x: 2 * x, lambda g, x: (decimal.Decimal("2") * decimal.Decimal(g),))
    y = fastgrad.Var(1.0)
    op2(y).backward()
    assert y.grad == 2.0
