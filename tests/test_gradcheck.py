"""gradcheck: reverse AND forward mode against central differences; catches 0.05% errors, kinks, rules that
ignore their incoming gradient, and points where f or a derivative is not finite."""
import math

import pytest

import fastgrad as fg
from fastgrad.custom import custom_op
from fastgrad import transforms
from fastgrad.gradcheck import GradcheckError, GradcheckResult, gradcheck


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
