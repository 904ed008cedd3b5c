"""gradcheck: reverse AND forward mode against central differences; catches 0.05% errors, kinks, rules that
ignore their incoming gradient, and points where f or a derivative is not finite. gradgradcheck: second
derivatives (from jvp rules) against differences of the reverse-mode gradient (from backward rules)."""
import math

import pytest

import fastgrad as fg
from fastgrad.custom import custom_op
from fastgrad import transforms
from fastgrad.gradcheck import GradcheckError, GradcheckResult, gradcheck, gradgradcheck


def sin_with_error(backward_factor=1.0, jvp_factor=1.0):
    """sin as a custom op whose reverse / forward rules are off by the given factors."""
    return custom_op(math.sin, lambda g, x: (g * math.cos(x) * backward_factor,), name="sin_op",
                     jvp=lambda p, t: fg.cos(p[0]) * t[0] * jvp_factor)


@pytest.mark.parametrize("f, point", [
    (lambda x: x * x * x, 1.5),
    (lambda x, y: x * y.sin() + (x / y).exp(), (0.3, 1.7)),
    (lambda x, y: (x ** y, y.log() * x, fg.sqrt(x * x + y)), (1.2, 0.8)),
    (lambda x: fg.exp(10 * x), 1.0),          # large curvature: no false kink
    (lambda x: x ** 10, 3.0),
    (lambda x: 1 / x, 0.01),
    (lambda x: fg.sin(100 * x), 0.3),
    (lambda x: fg.tanh(x) + fg.sigmoid(x), -2.0),
    (lambda x: fg.relu(x) + abs(x), 0.5),     # away from the kink
    (lambda x, y: fg.maximum(x, y) * fg.minimum(x, y), (1.0, 2.0)),
    (lambda *xs: fg.dot(xs, xs[::-1]) + fg.sum(xs), (0.5, -1.0, 2.0)),
])
def test_correct_derivatives_pass(f, point):
    result = gradcheck(f, point)
    assert isinstance(result, GradcheckResult) and result
    assert result.checked == ("reverse", "forward") and result.skipped == {}


def test_inputs_may_be_vars_or_a_single_number():
    assert gradcheck(lambda x, y: x * y, [fg.Var(2.0), fg.Var(3.0)])
    assert gradcheck(fg.exp, 0.5)
    assert gradcheck(fg.exp, fg.Var(0.5))


def test_catches_reverse_mode_wrong_by_0_05_percent():
    op = sin_with_error(backward_factor=1.0005)
    with pytest.raises(GradcheckError) as info:
        gradcheck(lambda x: op(x) * 2, 0.7)
    e = info.value
    assert e.mode == "reverse" and e.input_index == 0 and e.output_index == 0
    expected = 2 * math.cos(0.7)
    assert math.isclose(e.numeric, expected, rel_tol=1e-8)
    assert math.isclose(e.analytic, expected * 1.0005, rel_tol=1e-12)
    message = str(e)
    assert "input 0" in message and repr(e.analytic) in message and repr(e.numeric) in message
    # PyTorch's default rtol=1e-3 would have passed it
    assert gradcheck(lambda x: op(x) * 2, 0.7, rtol=1e-3, check_forward=False)


def test_catches_forward_mode_wrong_by_0_05_percent():
    op = sin_with_error(jvp_factor=0.9995)
    with pytest.raises(GradcheckError, match="forward mode") as info:
        gradcheck(lambda x, y: op(x) * y, (0.7, 2.0))
    assert info.value.mode == "forward" and info.value.input_index == 0


def test_names_the_failing_input_and_output():
    op = sin_with_error(backward_factor=1.001)
    with pytest.raises(GradcheckError) as info:
        gradcheck(lambda x, y: (x * y, op(y)), (1.0, 2.0))
    e = info.value
    assert (e.input_index, e.output_index) == (1, 1)
    assert "input 1" in str(e) and "output 1" in str(e)


@pytest.mark.parametrize("f, point", [
    (fg.relu, 0.0),                                   # slopes 0 | 1
    (abs, 0.0),                                       # slopes -1 | 1 (central difference agrees with 0)
    (lambda x: fg.maximum(x, 1.0), 1.0),              # tie: 0.5 is a subgradient, not a derivative
    (lambda x, y: fg.minimum(x, y), (2.0, 2.0)),
])
def test_fails_at_kinks(f, point):
    with pytest.raises(GradcheckError, match="kink|central difference"):
        gradcheck(f, point)


def test_kink_message_gives_both_slopes():
    with pytest.raises(GradcheckError, match="kink") as info:
        gradcheck(abs, 0.0)
    assert "1.0" in str(info.value) and "-1.0" in str(info.value) and info.value.mode == "kink"


def test_validation():
    with pytest.raises(TypeError, match="callable"):
        gradcheck(3.0, 1.0)
    with pytest.raises(TypeError, match="input 1"):
        gradcheck(lambda x, y: x, (1.0, "2"))
    with pytest.raises(ValueError, match="eps"):
        gradcheck(fg.exp, 1.0, eps=0.0)
    with pytest.raises(ValueError, match="no inputs"):
        gradcheck(lambda: 1.0, ())


# --- review finding 1: a backward-only custom op is checked in reverse mode, and the result says so

def test_backward_only_custom_op_is_checked_and_forward_mode_reported_skipped():
    op = custom_op(math.sin, lambda g, x: (g * math.cos(x),), name="plain_sin")
    result = gradcheck(op, 0.3)
    assert result and result.checked == ("reverse",)
    assert result.skipped == {"forward": "custom op 'plain_sin' has no jvp rule"}
    assert "reverse mode checked" in str(result)
    assert "forward mode not checked: custom op 'plain_sin'" in str(result)
    assert "skipped={'forward'" in repr(result)


def test_wrong_backward_only_rule_fails_in_reverse_mode():
    op = custom_op(math.sin, lambda g, x: (g * math.cos(x) * 1.0005,), name="plain_sin")
    with pytest.raises(GradcheckError, match="reverse mode gives") as info:
        gradcheck(lambda x: op(x) * 2, 0.7)
    assert info.value.mode == "reverse" and info.value.input_index == 0


def test_check_forward_false_skips_forward_mode_on_purpose():
    op = sin_with_error(jvp_factor=0.9)                     # forward mode is wrong, and not looked at
    result = gradcheck(op, 0.7, check_forward=False)
    assert result.checked == ("reverse",) and result.skipped == {"forward": "check_forward=False"}


def test_result_is_truthy_and_says_what_was_checked():
    result = gradcheck(lambda x, y: (x * y, x + y), (1.0, 2.0), seed=7)
    assert bool(result) is True
    assert (result.num_inputs, result.num_outputs, result.seed) == (2, 2, 7)
    assert repr(result) == "GradcheckResult(checked=('reverse', 'forward'), skipped={})"
    assert str(result).startswith("gradcheck passed: reverse mode and forward mode checked at 2 input(s)")


# --- review finding 2: random cotangents and tangents catch a rule that ignores its incoming gradient

def ignores_gradient(jvp=None):
    """2x whose backward rule returns d/dx = 2 whatever the incoming gradient g (right only for g == 1)."""
    return custom_op(lambda x: 2 * x, lambda g, x: (2.0,), jvp=jvp, name="twice")


def test_vjp_of_a_bare_custom_op_passes_the_cotangent_to_its_rule():
    seen = []
    op = custom_op(lambda x: 2 * x, lambda g, x: seen.append(g) or (2 * g,))
    assert fg.vjp(op, 1.3)[1](0.25) == (0.5,) and seen == [0.25]


def test_backward_rule_ignoring_its_gradient_fails_on_a_bare_op():
    with pytest.raises(GradcheckError, match="random cotangent") as info:
        gradcheck(ignores_gradient(), 1.3)
    e = info.value
    assert e.mode == "reverse" and e.input_index == 0 and e.output_index is None
    (u,) = e.direction
    assert abs(u) != 1.0 and e.analytic == 2.0 and math.isclose(e.numeric, 2 * u, rel_tol=1e-8)
    assert f"{u:.6g}" in str(e)


@pytest.mark.parametrize("f, point", [
    (lambda op: lambda x: op(x) * 3, 1.3),                 # also wrong with the unit seed
    (lambda op: lambda x: op(x) + x, 1.3),                 # right with the unit seed: 2 + 1 == 3
    (lambda op: lambda x, y: (op(x), x * y), (1.3, 0.4)),  # right with each unit cotangent
])
def test_backward_rule_ignoring_its_gradient_fails_when_composed(f, point):
    op = ignores_gradient(jvp=lambda p, t: 2 * t[0])
    with pytest.raises(GradcheckError, match="reverse mode") as info:
        gradcheck(f(op), point)
    assert info.value.mode == "reverse" and info.value.input_index == 0


def test_backward_rule_using_the_absolute_value_of_its_gradient_fails():
    op = custom_op(lambda x: 2 * x, lambda g, x: (2 * abs(g),), name="abs_g")
    for seed in range(5):           # each check sees both signs of the cotangent, whatever the seed
        with pytest.raises(GradcheckError, match="random cotangent"):
            gradcheck(op, 1.3, seed=seed)


def test_random_directions_are_reproducible_and_follow_the_seed():
    def direction(seed):
        with pytest.raises(GradcheckError) as info:
            gradcheck(ignores_gradient(), 1.3, seed=seed)
        return info.value.direction
    assert direction(0) == direction(0)
    assert direction(0) != direction(1)


def test_forward_mode_is_checked_along_random_tangents(monkeypatch):
    # Every jvp rule is linearised through unit tangents today, so a tangent sweep that misuses its
    # tangent is simulated: it is right along each unit vector and wrong along any other.
    true_jvp = transforms._Trace.jvp

    def nonlinear_jvp(self, tangents):
        return [t * max(abs(v) for v in tangents) for t in true_jvp(self, tangents)]

    monkeypatch.setattr(transforms._Trace, "jvp", nonlinear_jvp)
    with pytest.raises(GradcheckError, match="random tangent") as info:
        gradcheck(lambda x, y: x * y, (1.0, 2.0))
    assert info.value.mode == "forward" and info.value.input_index is None and info.value.output_index == 0


# --- review finding 4: nan or inf at the point (or beside it) fails, saying where

@pytest.mark.parametrize("f, point, value", [
    (fg.sqrt, -1.0, "nan"),
    (lambda x: x * math.nan, 1.0, "nan"),     # nan derivative == nan difference used to pass
    (lambda x: x ** 0.5, -2.0, "nan"),
    (fg.log, 0.0, "-inf"),
    (fg.exp, 1000.0, "inf"),
])
def test_fails_where_f_is_not_finite(f, point, value):
    with pytest.raises(GradcheckError, match="not finite") as info:
        gradcheck(f, point)
    e = info.value
    assert e.mode == "nonfinite" and e.output_index == 0 and e.input_index is None
    assert f"f is {value} at the point ({point!r},)" in str(e)


def test_names_the_output_that_is_not_finite():
    with pytest.raises(GradcheckError, match=r"output 1 is nan at the point \(1.0, -1.0\)") as info:
        gradcheck(lambda x, y: (x * y, fg.log(y)), (1.0, -1.0))
    assert (info.value.mode, info.value.output_index) == ("nonfinite", 1)


@pytest.mark.parametrize("f, point, text", [
    (fg.sqrt, 0.0, "reverse mode gives inf, not a finite number"),
    (custom_op(math.sin, lambda g, x: (math.nan,), jvp=lambda p, t: fg.cos(p[0]) * t[0]), 0.5,
     "reverse mode gives nan"),
    (custom_op(math.sin, lambda g, x: (g * math.cos(x),), jvp=lambda p, t: t[0] * math.inf), 0.5,
     "forward mode gives inf"),
])
def test_fails_where_a_derivative_is_not_finite(f, point, text):
    with pytest.raises(GradcheckError, match=text) as info:
        gradcheck(f, point)
    e = info.value
    assert e.mode == "nonfinite" and (e.input_index, e.output_index) == (0, 0)
    assert not math.isfinite(e.analytic)


def test_fails_at_the_edge_of_the_domain():
    with pytest.raises(GradcheckError, match=r"f is nan at input 0 = -1e-06 .*edge of the domain") as info:
        gradcheck(lambda x: fg.sqrt(x + 1e-7), 0.0)
    assert info.value.mode == "nonfinite" and info.value.input_index == 0


# --- review finding 3: gradgradcheck compares second derivatives (jvp rules) with differences of the
# reverse-mode gradient (backward rules)

X0 = 0.7


def sin_with_jvp(jvp):
    return custom_op(math.sin, lambda g, x: (g * math.cos(x),), jvp=jvp, name="sin_op")


@pytest.mark.parametrize("f, point", [
    (fg.exp, 0.3),
    (fg.log, 1.7),
    (fg.sqrt, 2.5),
    (fg.sin, 0.4),
    (fg.cos, 0.4),
    (fg.tanh, -0.8),
    (fg.sigmoid, 0.6),
    (lambda x: fg.relu(x) * x, 0.5),                       # relu'' = 0 off the kink; (x relu x)'' = 2
    (lambda x: abs(x) * x, -0.7),
    (lambda x, y: x ** y, (1.3, 2.2)),                     # Var ** Var
    (lambda x: x ** 3.5 + 2.0 ** x, 1.2),                  # constant exponent, constant base
    (lambda x, y: x / y + 3.0 / x + x / 4.0, (1.5, -0.6)),   # Var / Var, number / Var, Var / number
    (lambda x, y: (1.0 - x) * (x - y) - y * 2.0, (0.5, 1.5)),
    (lambda x, y: fg.maximum(x * x, y) * y, (1.5, 0.4)),
    (lambda x, y: fg.minimum(x * y, y) * x, (1.5, 0.4)),
    (lambda *xs: fg.sum([x * x for x in xs]) * xs[0], (0.5, -1.0, 2.0)),
    (lambda *xs: fg.dot(xs, [x.exp() for x in xs]), (0.5, -1.0, 2.0)),
    (lambda x, y: (x * fg.sin(y), fg.exp(x * y) - y / x), (0.3, 1.7)),   # two outputs
    (lambda x: 1000.0 * x + 0.0005 * x * x, 0.7),          # f'' = 0.001 beside a gradient of 1000: rounding
])
def test_gradgradcheck_passes_correct_functions_of_every_op(f, point):
    result = gradgradcheck(f, point)
    assert result and result.checked == ("hessian",) and result.skipped == {}


def test_gradgradcheck_catches_a_jvp_rule_whose_second_derivative_is_off_by_0_1_percent():
    # The jvp rule is exact at X0, so first derivatives (both modes) are right there ...
    op = sin_with_jvp(lambda p, t: (fg.cos(p[0]) * (1 + 0.001 * (p[0] - X0))) * t[0])
    assert gradcheck(op, X0).checked == ("reverse", "forward")
    # ... but its derivative, the second derivative of sin, is off by 0.001 cos(X0) (0.12%).
    with pytest.raises(GradcheckError, match="forward-over-reverse gives") as info:
        gradgradcheck(op, X0)
    e = info.value
    assert (e.mode, e.input_index, e.second_input_index, e.output_index) == ("hessian", 0, 0, 0)
    assert math.isclose(e.analytic, -math.sin(X0) + 0.001 * math.cos(X0), rel_tol=1e-9)
    assert math.isclose(e.numeric, -math.sin(X0), rel_tol=1e-6)
    assert "d²/d(input 0) d(input 0) at input 0 = 0.7" in str(e)
    with pytest.raises(GradcheckError, match="output 0"):
        gradgradcheck(lambda x, y: (op(x) * y, x + y), (X0, 2.0))


def test_gradgradcheck_catches_a_jvp_rule_written_with_math_instead_of_fg():
    op = sin_with_jvp(lambda p, t: math.cos(p[0]) * t[0])    # a constant: its derivative is lost
    assert gradcheck(op, X0)
    with pytest.raises(GradcheckError) as info:
        gradgradcheck(op, X0)
    assert info.value.mode == "hessian" and info.value.analytic == 0.0


def test_gradgradcheck_names_both_inputs_of_a_wrong_mixed_derivative():
    x0 = 1.5
    mul_op = custom_op(lambda x, y: x * y, lambda g, x, y: (g * y, g * x), name="mul_op",
                       jvp=lambda p, t: t[0] * p[1] + t[1] * p[0] * (1 + 0.001 * (p[0] - x0)))
    with pytest.raises(GradcheckError, match=r"d²/d\(input 1\) d\(input 0\) at input 1 = 2.0, input 0 = 1.5"):
        gradgradcheck(mul_op, (x0, 2.0))


def test_gradgradcheck_passes_correct_custom_rules():
    assert gradgradcheck(sin_with_jvp(lambda p, t: fg.cos(p[0]) * t[0]), X0)

    class Hypot(fg.Function):
        forward = staticmethod(math.hypot)

        @staticmethod
        def backward(g, x, y):
            r = math.hypot(x, y)
            return (g * x / r, g * y / r)

        @staticmethod
        def jvp(p, t):
            r = fg.sqrt(p[0] * p[0] + p[1] * p[1])
            return (p[0] * t[0] + p[1] * t[1]) / r

    assert gradgradcheck(lambda x, y: Hypot.apply(x, y) * x, (0.6, -1.1))


def test_gradgradcheck_refuses_a_custom_op_without_jvp_rule():
    op = custom_op(math.sin, lambda g, x: (g * math.cos(x),), name="plain_sin")
    message = ("gradgradcheck: second derivatives of f cannot be computed, so they cannot be checked: "
               "custom op 'plain_sin' has no jvp rule")
    with pytest.raises(NotImplementedError, match=message):
        gradgradcheck(lambda x: op(x) * x, X0)


def test_gradgradcheck_catches_a_backward_rule_ignoring_its_gradient():
    op = custom_op(math.sin, lambda g, x: (math.cos(x),), jvp=lambda p, t: fg.cos(p[0]) * t[0])
    with pytest.raises(GradcheckError, match="random cotangent") as info:
        gradgradcheck(op, X0)
    e = info.value
    assert e.mode == "hessian" and e.input_index == 0 and e.output_index is None
    (u,), (v,) = e.direction
    assert math.isclose(e.analytic, -u * math.sin(X0) * v, rel_tol=1e-9)
    assert math.isclose(e.numeric, -math.sin(X0) * v, rel_tol=1e-6)


def test_gradgradcheck_fails_at_a_kink_of_the_gradient():
    with pytest.raises(GradcheckError, match="a kink in d/d\\(input 0\\), no second derivative") as info:
        gradgradcheck(lambda x: x * abs(x), 0.0)         # f' = 2|x|: central differences would give 0
    assert info.value.mode == "kink" and info.value.second_input_index == 0


@pytest.mark.parametrize("f, point, text", [
    (fg.log, -1.0, r"f is nan at the point \(-1.0,\)"),
    (fg.sqrt, 0.0, r"d/d\(input 0\) is inf at the point \(0.0,\)"),
    (lambda x: fg.sqrt(x + 1e-7) * x, 0.0, r"d/d\(input 0\) is nan at input 0 = -1e-06 .*edge of the domain"),
])
def test_gradgradcheck_fails_where_f_or_its_gradient_is_not_finite(f, point, text):
    with pytest.raises(GradcheckError, match=text) as info:
        gradgradcheck(f, point)
    assert info.value.mode == "nonfinite"


def test_gradgradcheck_validation():
    with pytest.raises(TypeError, match="gradgradcheck: f must be callable"):
        gradgradcheck(3.0, 1.0)
    with pytest.raises(ValueError, match="eps"):
        gradgradcheck(fg.exp, 1.0, eps=-1.0)
    with pytest.raises(ValueError, match="no inputs"):
        gradgradcheck(lambda: 1.0, [])
    assert fg.gradgradcheck is gradgradcheck and "gradgradcheck" in fg.__all__


def test_large_values_do_not_fail_a_correct_derivative_by_rounding():
    # f = x + 1e8: differences of f are only good to ~1e-2, the derivative is exactly 1
    assert fg.gradcheck(lambda x: x + 1e8, 0.3)
    assert fg.gradcheck(lambda x, y: (x * 1e9 + y, y * 3.0), (0.3, 0.2))
    op = fg.custom_op(lambda x: x * 1e8, lambda g, x: (1.0005e8 * g,), name="off")
    with pytest.raises(fg.GradcheckError):
        fg.gradcheck(op, 0.3)                        # a 0.05% error at a large value is still caught
