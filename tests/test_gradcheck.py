"""gradcheck: reverse AND forward mode against central differences; catches 0.05% errors and kinks."""
import math

import pytest

import fastgrad as fg
from fastgrad.custom import custom_op
from fastgrad.gradcheck import GradcheckError, gradcheck


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
    assert gradcheck(f, point) is True


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


def test_custom_op_without_jvp_rule_needs_check_forward_false():
    op = custom_op(math.sin, lambda g, x: (g * math.cos(x),), name="plain_sin")
    with pytest.raises(NotImplementedError, match="'plain_sin'"):
        gradcheck(op, 0.3)
    assert gradcheck(op, 0.3, check_forward=False)
