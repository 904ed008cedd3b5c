"""Every Var operation against its closed form and central finite differences, including kinks and edges."""
import math

import pytest
from conftest import central_difference, value_and_grads

from fastgrad import _optable

inf = math.inf


def _sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


# name: (apply to a Var, closed-form value, closed-form derivative, points away from kinks)
UNARY = {
    "neg": (lambda v: -v, lambda x: -x, lambda x: -1.0, [-2.5, 0.0, 0.7, 3.0]),
    "abs": (abs, math.fabs, lambda x: math.copysign(1.0, x), [-2.5, -0.3, 0.7, 3.0]),
    "exp": (lambda v: v.exp(), math.exp, math.exp, [-3.0, -0.5, 0.0, 1.5, 5.0]),
    "log": (lambda v: v.log(), math.log, lambda x: 1.0 / x, [0.01, 0.5, 1.0, 2.5, 100.0]),
    "sqrt": (lambda v: v.sqrt(), math.sqrt, lambda x: 0.5 / math.sqrt(x), [0.01, 0.25, 2.0, 9.0]),
    "sin": (lambda v: v.sin(), math.sin, math.cos, [-2.0, -0.5, 0.0, 1.0, 3.0]),
    "cos": (lambda v: v.cos(), math.cos, lambda x: -math.sin(x), [-2.0, -0.5, 0.0, 1.0, 3.0]),
    "tanh": (lambda v: v.tanh(), math.tanh, lambda x: 1.0 - math.tanh(x) ** 2, [-3.0, -0.2, 0.0, 0.7, 4.0]),
    "sigmoid": (lambda v: v.sigmoid(), _sigmoid, lambda x: _sigmoid(x) * (1.0 - _sigmoid(x)),
                [-6.0, -1.0, 0.0, 2.0, 8.0]),
    "relu": (lambda v: v.relu(), lambda x: max(x, 0.0), lambda x: 1.0 if x > 0 else 0.0,
             [-2.0, -0.1, 0.1, 3.0]),
}
UNARY_CASES = [(name, x) for name, (_, _, _, points) in UNARY.items() for x in points]

# name: (apply to two operands, closed-form value, closed-form (d/da, d/db), points (a, b))
BINARY = {
    "add": (lambda a, b: a + b, lambda a, b: a + b, lambda a, b: (1.0, 1.0)),
    "sub": (lambda a, b: a - b, lambda a, b: a - b, lambda a, b: (1.0, -1.0)),
    "mul": (lambda a, b: a * b, lambda a, b: a * b, lambda a, b: (b, a)),
    "div": (lambda a, b: a / b, lambda a, b: a / b, lambda a, b: (1.0 / b, -a / b ** 2)),
    "pow": (lambda a, b: a ** b, math.pow, lambda a, b: (b * a ** (b - 1), a ** b * math.log(a))),
}
BINARY_POINTS = {
    "add": [(1.5, -2.0), (0.3, 0.7), (-1.25, 2.5)],
    "sub": [(1.5, -2.0), (0.3, 0.7), (-1.25, 2.5)],
    "mul": [(1.5, -2.0), (0.3, 0.7), (-1.25, 2.5)],
    "div": [(1.5, -2.0), (0.3, 0.7), (-1.25, 2.5)],
    "pow": [(1.5, 2.0), (0.3, 0.7), (2.5, -1.3), (0.9, 3.0)],
}
BINARY_CASES = [(name, a, b) for name, points in BINARY_POINTS.items() for a, b in points]


def _approx(x):
    return pytest.approx(x, rel=1e-13, abs=1e-15)


@pytest.mark.parametrize("name, x", UNARY_CASES)
def test_unary_op_matches_closed_form(fg, name, x):
    apply, value, derivative, _ = UNARY[name]
    y, (g,) = value_and_grads(fg, apply, x)
    assert y == _approx(value(x))
    assert g == _approx(derivative(x))
    assert type(y) is float and type(g) is float


@pytest.mark.parametrize("name, x", UNARY_CASES)
def test_unary_op_matches_finite_difference(fg, name, x):
    apply = UNARY[name][0]
    _, (g,) = value_and_grads(fg, apply, x)
    assert g == pytest.approx(central_difference(lambda t: apply(fg.Var(t)).data, x), rel=1e-6, abs=1e-8)


@pytest.mark.parametrize("name", [name for name in UNARY if name in _optable.PUBLIC_FUNCTIONS])
def test_module_function_matches_method(fg, name):
    x = 0.8
    function = getattr(fg, name)
    by_function, by_method = function(fg.Var(x)), UNARY[name][0](fg.Var(x))
    assert isinstance(by_function, fg.Var)
    assert by_function.data == by_method.data
    by_function.backward()
    by_method.backward()
    assert by_function.data == by_method.data
    assert type(function(x)) is float and function(x) == _approx(UNARY[name][1](x))


@pytest.mark.parametrize("name, a, b", BINARY_CASES)
def test_binary_op_matches_closed_form(fg, name, a, b):
    apply, value, derivatives = BINARY[name]
    y, grads = value_and_grads(fg, apply, a, b)
    assert y == _approx(value(a, b))
    assert grads == [_approx(d) for d in derivatives(a, b)]


@pytest.mark.parametrize("name, a, b", BINARY_CASES)
def test_binary_op_matches_finite_difference(fg, name, a, b):
    apply = BINARY[name][0]
    _, (ga, gb) = value_and_grads(fg, apply, a, b)
    assert ga == pytest.approx(central_difference(lambda t: apply(fg.Var(t), fg.Var(b)).data, a), rel=1e-6)
    assert gb == pytest.approx(central_difference(lambda t: apply(fg.Var(a), fg.Var(t)).data, b), rel=1e-6)


@pytest.mark.parametrize("name, a, b", BINARY_CASES)
def test_binary_op_with_a_constant_on_either_side(fg, name, a, b):
    apply, value, derivatives = BINARY[name]
    da, db = derivatives(a, b)
    y, (ga,) = value_and_grads(fg, lambda u: apply(u, b), a)  # Var op number
    assert y == _approx(value(a, b)) and ga == _approx(da)
    y, (gb,) = value_and_grads(fg, lambda v: apply(a, v), b)  # number op Var (reflected)
    assert y == _approx(value(a, b)) and gb == _approx(db)


@pytest.mark.parametrize("a, b", [(1.5, -2.0), (-0.3, 0.7), (2.0, 2.5)])
def test_maximum_minimum_route_the_gradient_to_the_winner(fg, a, b):
    y, (ga, gb) = value_and_grads(fg, fg.maximum, a, b)
    assert (y, ga, gb) == ((a, 1.0, 0.0) if a > b else (b, 0.0, 1.0))
    y, (ga, gb) = value_and_grads(fg, fg.minimum, a, b)
    assert (y, ga, gb) == ((a, 1.0, 0.0) if a < b else (b, 0.0, 1.0))
    y, (gb,) = value_and_grads(fg, lambda v: fg.maximum(a, v), b)  # a number on one side
    assert (y, gb) == (max(a, b), 0.0 if a > b else 1.0)


# ---- kinks and edges (docs/semantics.md, 1 and 2) ----

def test_relu_and_abs_have_zero_gradient_at_zero(fg):
    assert value_and_grads(fg, lambda v: v.relu(), 0.0) == (0.0, [0.0])
    assert value_and_grads(fg, abs, 0.0) == (0.0, [0.0])
    assert value_and_grads(fg, fg.abs, 0.0) == (0.0, [0.0])


def test_maximum_minimum_ties_split_the_gradient_evenly(fg):
    assert value_and_grads(fg, fg.maximum, 2.0, 2.0) == (2.0, [0.5, 0.5])
    assert value_and_grads(fg, fg.minimum, -1.5, -1.5) == (-1.5, [0.5, 0.5])
    assert value_and_grads(fg, lambda v: fg.maximum(v, 2.0), 2.0) == (2.0, [0.5])
    assert value_and_grads(fg, lambda v: fg.maximum(v, v), 3.0) == (3.0, [1.0])


def test_pow_zero_exponent_at_zero_is_one_with_zero_gradient(fg):
    assert value_and_grads(fg, lambda v: v ** 0, 0.0) == (1.0, [0.0])
    assert value_and_grads(fg, lambda v: v ** 0.0, 0.0) == (1.0, [0.0])
    assert value_and_grads(fg, lambda a, b: a ** b, 0.0, 0.0) == (1.0, [0.0, 0.0])
    assert value_and_grads(fg, lambda v: 0.0 ** v, 0.0) == (1.0, [0.0])


@pytest.mark.parametrize("y", [2.0, 3.0, 0.5])
def test_zero_base_has_zero_exponent_gradient(fg, y):
    value, (ga, gb) = value_and_grads(fg, lambda a, b: a ** b, 0.0, y)
    assert value == 0.0 and gb == 0.0
    if y > 1:
        assert ga == 0.0
    assert value_and_grads(fg, lambda v: 0.0 ** v, y) == (0.0, [0.0])  # constant base 0


def test_zero_to_a_negative_power_is_inf(fg):
    assert (fg.Var(0.0) ** -1).data == inf
    assert (fg.Var(0.0) ** fg.Var(-2.0)).data == inf
    value, (g,) = value_and_grads(fg, lambda v: 0.0 ** v, -1.0)
    assert value == inf and g == 0.0


def test_division_by_zero_gives_ieee_results(fg):
    assert (fg.Var(1.0) / fg.Var(0.0)).data == inf
    assert (fg.Var(-1.0) / 0.0).data == -inf
    assert (fg.Var(2.0) / 0).data == inf
    assert math.isnan((fg.Var(0.0) / fg.Var(0.0)).data)
    assert (1.0 / fg.Var(0.0)).data == inf
    assert (-3 / fg.Var(0.0)).data == -inf
    value, (ga, gb) = value_and_grads(fg, lambda a, b: a / b, 1.0, 0.0)
    assert value == inf and ga == inf and gb == -inf


def test_log_of_zero_is_minus_inf(fg):
    value, (g,) = value_and_grads(fg, lambda v: v.log(), 0.0)
    assert value == -inf and g == inf
    assert fg.log(0.0) == -inf
    assert math.isnan(fg.Var(-1.0).log().data)


def test_exp_overflow_is_inf_without_exception(fg):
    value, (g,) = value_and_grads(fg, lambda v: v.exp(), 1000.0)
    assert value == inf and g == inf
    assert fg.exp(1000.0) == inf
    assert value_and_grads(fg, lambda v: v.exp(), -1000.0) == (0.0, [0.0])


def test_pow_overflow_is_inf_without_exception(fg):
    assert (fg.Var(10.0) ** 400).data == inf
    assert (fg.Var(-10.0) ** 401).data == -inf
    assert (10.0 ** fg.Var(400.0)).data == inf
    assert (fg.Var(1e300) ** fg.Var(2.0)).data == inf


def test_negative_base_with_non_integer_exponent_is_nan(fg):
    assert math.isnan((fg.Var(-8.0) ** (1 / 3)).data)
    assert math.isnan((fg.Var(-8.0) ** fg.Var(0.5)).data)
    assert math.isnan(((-8.0) ** fg.Var(0.5)).data)
    value, (g,) = value_and_grads(fg, lambda v: v ** 0.5, -4.0)
    assert math.isnan(value) and math.isnan(g)


def test_negative_base_with_integer_exponent_is_real(fg):
    assert value_and_grads(fg, lambda v: v ** 3, -2.0) == (-8.0, [12.0])
    value, (ga, gb) = value_and_grads(fg, lambda a, b: a ** b, -2.0, 3.0)
    assert value == -8.0 and ga == 12.0
    assert math.isnan(gb)  # d/db = y * log(a): nan for a negative base


@pytest.mark.parametrize("x", [-1000.0, -800.0, -710.0, 710.0, 800.0, 1000.0])
def test_tanh_and_sigmoid_are_stable_at_large_inputs(fg, x):
    t, (gt,) = value_and_grads(fg, lambda v: v.tanh(), x)
    s, (gs,) = value_and_grads(fg, lambda v: v.sigmoid(), x)
    assert t == math.copysign(1.0, x) and gt == 0.0
    assert s == pytest.approx(1.0 if x > 0 else 0.0, abs=1e-300) and gs == pytest.approx(0.0, abs=1e-300)
    assert all(math.isfinite(u) for u in (t, gt, s, gs))


def test_sqrt_at_zero_and_below(fg):
    value, (g,) = value_and_grads(fg, lambda v: v.sqrt(), 0.0)
    assert value == 0.0 and g == inf
    assert math.isnan(fg.Var(-1.0).sqrt().data)
    assert math.isnan(fg.sqrt(-1.0))


def test_integer_operands_give_float64_results(fg):
    y, (g,) = value_and_grads(fg, lambda v: v ** 3 + 2 * v, 2)
    assert (y, g) == (12.0, 14.0)
    assert type(y) is float and type(g) is float
    assert (fg.Var(0.1) + 0.2).data == 0.30000000000000004  # float64 arithmetic
    assert (fg.Var(1) / 3).data == 1 / 3
