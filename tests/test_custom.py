"""Custom ops: forward/backward rules as one node; exceptions propagate; forward mode and nesting need a
jvp rule and otherwise raise NotImplementedError naming the op."""
import math

import pytest

import fastgrad as fg
from fastgrad.custom import CustomOp, Function, custom_op
from fastgrad.transforms import grad, hessian, hvp, jacobian, jvp, vjp


def cube_backward(g, x):
    return (3 * x ** 2 * g,)


cube = custom_op(lambda x: x ** 3, cube_backward, name="cube")


@custom_op(backward=lambda g, x, y: (g * y, g * x))
def times(x, y):
    """x * y as one custom node."""
    return x * y


def test_custom_op_forward_value_and_backward():
    x = fg.Var(2.0)
    y = cube(x)
    assert isinstance(y, fg.Var) and y.data == 8.0 and y.op == "custom"
    (y * 2).backward()
    assert x.grad == 24.0


def test_decorator_form_and_metadata():
    assert isinstance(times, CustomOp) and times.name == "times"
    assert times.__doc__ == "x * y as one custom node."
    a, b = fg.Var(3.0), fg.Var(4.0)
    z = times(a, b) + a
    z.backward()
    assert (z.data, a.grad, b.grad) == (15.0, 5.0, 3.0)
    assert "times" in repr(times)


def test_plain_numbers_give_plain_float():
    assert cube(2.0) == 8.0 and type(cube(2)) is float


def test_mixed_var_and_number_inputs():
    a = fg.Var(3.0)
    z = times(a, 5.0)
    z.backward()
    assert z.data == 15.0 and a.grad == 5.0


def test_grad_and_vjp_run_the_python_backward():
    assert grad(lambda x: cube(x) * x)(2.0) == 32.0   # d/dx x^4
    value, pullback = vjp(lambda x, y: times(x, y), 3.0, 4.0)
    assert value == 12.0 and pullback(2.0) == (8.0, 6.0)


class BackwardFailure(Exception):
    pass


def test_exception_in_backward_propagates_unchanged():
    def bad_backward(g, x):
        raise BackwardFailure("bad rule")

    op = custom_op(lambda x: 2 * x, bad_backward, name="bad")
    x = fg.Var(1.0)
    y = op(x) * 3
    with pytest.raises(BackwardFailure, match="bad rule"):
        y.backward()
    with pytest.raises(BackwardFailure, match="bad rule"):
        grad(lambda t: op(t))(1.0)


def test_backward_returning_the_wrong_number_of_gradients():
    op = custom_op(lambda x, y: x + y, lambda g, x, y: (g,), name="short")
    with pytest.raises(ValueError, match="'short'.*1 gradients for 2 inputs"):
        op(fg.Var(1.0), fg.Var(2.0)).backward()


def test_single_input_backward_may_return_a_number():
    op = custom_op(lambda x: 5 * x, lambda g, x: 5 * g, name="five")
    assert grad(op)(1.0) == 5.0


def test_forward_must_return_a_number():
    op = custom_op(lambda x: "x", lambda g, x: (g,), name="strange")
    with pytest.raises(TypeError, match="'strange'"):
        op(fg.Var(1.0))


def test_construction_errors():
    with pytest.raises(TypeError, match="backward"):
        custom_op(lambda x: x)
    with pytest.raises(TypeError, match="backward"):
        custom_op()
    with pytest.raises(TypeError, match="callable"):
        custom_op(lambda x: x, 3)
    with pytest.raises(TypeError, match="input 0"):
        cube("2")


@pytest.mark.parametrize("transform", [
    lambda: jvp(cube, (2.0,), (1.0,)),
    lambda: jacobian(cube, mode="fwd")(2.0),
    lambda: hessian(cube)(2.0),
    lambda: hvp(cube, (2.0,), (1.0,)),
    lambda: grad(grad(cube))(2.0),
    lambda: grad(cube)(fg.Var(2.0)),
])
def test_without_jvp_rule_forward_mode_and_nesting_raise_naming_the_op(transform):
    with pytest.raises(NotImplementedError, match="'cube'"):
        transform()


def test_custom_op_created_outside_and_not_depending_on_inputs_is_fine():
    c = cube(fg.Var(2.0))     # a constant for the transforms below
    assert jvp(lambda x: x * c, (3.0,), (1.0,)) == (24.0, 8.0)
    assert hessian(lambda x: x * x * c)(1.0) == 16.0


def sin_op():
    op = custom_op(math.sin, lambda g, x: (g * math.cos(x),), name="my_sin",
                   jvp=lambda primals, tangents: fg.cos(primals[0]) * tangents[0])
    return op


def test_with_jvp_rule_forward_mode_works():
    my_sin = sin_op()
    value, tangent = jvp(my_sin, (0.5,), (2.0,))
    assert value == math.sin(0.5) and math.isclose(tangent, 2 * math.cos(0.5), rel_tol=1e-15)
    assert math.isclose(jacobian(lambda x: (my_sin(x), x), mode="fwd")(0.5)[0], math.cos(0.5))


def test_with_jvp_rule_hessian_hvp_and_nesting_work():
    my_sin = sin_op()
    x0 = 0.7
    assert math.isclose(hessian(my_sin)(x0), -math.sin(x0), rel_tol=1e-14)
    assert math.isclose(hvp(lambda x: my_sin(x) * x, (x0,), (1.0,))[0],
                        2 * math.cos(x0) - x0 * math.sin(x0), rel_tol=1e-14)
    third = grad(grad(grad(my_sin)))(x0)
    assert isinstance(third, float) and math.isclose(third, -math.cos(x0), rel_tol=1e-14)
    g = grad(my_sin)(fg.Var(x0))
    assert isinstance(g, fg.Var) and math.isclose(g.data, math.cos(x0))


def test_defjvp_decorator_and_two_input_rule():
    op = custom_op(lambda x, y: x * y, lambda g, x, y: (g * y, g * x), name="prod")

    @op.defjvp
    def prod_jvp(primals, tangents):
        x, y = primals
        dx, dy = tangents
        return dx * y + x * dy

    H = hessian(lambda x, y: op(x, y) * x, argnums=(0, 1))(2.0, 3.0)   # x^2 y
    assert H == ((6.0, 4.0), (4.0, 0.0))


def test_function_class_form():
    class Square(Function):
        @staticmethod
        def forward(x):
            return x * x

        @staticmethod
        def backward(g, x):
            return (2 * x * g,)

    x = fg.Var(3.0)
    y = Square.apply(x)
    y.backward()
    assert y.data == 9.0 and x.grad == 6.0
    assert Square.apply(4.0) == 16.0
    with pytest.raises(NotImplementedError, match="'Square'"):
        jvp(Square.apply, (1.0,), (1.0,))

    class SquareWithJvp(Square):
        @staticmethod
        def jvp(primals, tangents):
            return 2 * primals[0] * tangents[0]

    assert jvp(SquareWithJvp.apply, (3.0,), (1.0,)) == (9.0, 6.0)
    assert hessian(SquareWithJvp.apply)(3.0) == 2.0
