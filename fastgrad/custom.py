"""Custom ops: Python forward and backward rules as one graph node (as torch.autograd.Function).

    def cube_backward(g, x):            # g: d loss / d output; x: the input's value
        return (3 * x ** 2 * g,)        # one gradient per input
    cube = fg.custom_op(lambda x: x ** 3, cube_backward)

    @fg.custom_op(backward=cube_backward)   # the same, as a decorator
    def cube(x):
        return x ** 3

Applied to Vars, the op makes ONE node whose reverse rule is `backward`, called inside the engine's sweep;
an exception raised there propagates out of `backward()` / `fg.grad` unchanged. Applied to plain numbers it
just returns ``forward(*numbers)``.

Reverse mode needs nothing more. Forward mode (`fg.jvp`, `fg.jacobian(mode='fwd')`), Hessians and nested
transforms need the op's derivative as something they can push tangents through: give a jvp rule,
``jvp(primals, tangents) -> output tangent``, written with fastgrad operations (``fg.cos(x)``, not
``math.cos(x)``) so that it can itself be differentiated. Without one they raise NotImplementedError naming
the op.
"""
from __future__ import annotations

import functools
import numbers
from typing import Any, Callable, Optional, Sequence, Tuple

import fastgrad as fg
from fastgrad import _engine, _symbolic

__all__ = ["custom_op", "CustomOp", "Function"]


class CustomOp:
    """A callable op from a forward rule, a backward rule and (optionally) a jvp rule."""

    def __init__(self, forward: Callable[..., float], backward: Callable[..., Any],
                 jvp: Optional[Callable[[Tuple[Any, ...], Tuple[Any, ...]], Any]] = None,
                 name: Optional[str] = None):
        if not callable(forward):
            raise TypeError(f"custom_op: forward must be callable, got {forward!r}")
        if not callable(backward):
            raise TypeError(f"custom_op: backward must be callable, got {backward!r}")
        if jvp is not None and not callable(jvp):
            raise TypeError(f"custom_op: jvp must be callable, got {jvp!r}")
        self.forward = forward
        self.backward = backward
        self.jvp = jvp
        self.name = name or getattr(forward, "__name__", None) or "custom_op"
        functools.update_wrapper(self, forward, updated=())

    def __repr__(self) -> str:
        return f"<fastgrad custom op {self.name!r}{' with jvp rule' if self.jvp else ''}>"

    def defjvp(self, rule: Callable[[Tuple[Any, ...], Tuple[Any, ...]], Any]) -> Callable:
        """Decorator: set the jvp rule ``rule(primals, tangents) -> output tangent``."""
        if not callable(rule):
            raise TypeError(f"custom op {self.name!r}: jvp rule must be callable, got {rule!r}")
        self.jvp = rule
        return rule

    def __call__(self, *inputs: Any) -> Any:
        values = _symbolic.values_of(inputs, f"custom op {self.name!r}")
        value = self.forward(*values)
        if isinstance(value, fg.Var) or not isinstance(value, numbers.Real):
            raise TypeError(f"custom op {self.name!r}: forward must return a real number (it is called with "
                            f"floats), got {type(value).__name__}")
        value = float(value)
        if not any(isinstance(x, fg.Var) for x in inputs):
            return value
        nodes = [x if isinstance(x, fg.Var) else fg.Var(v) for x, v in zip(inputs, values)]
        node = _engine.custom(value, nodes, self._reverse_rule(tuple(values)))
        _symbolic.record_custom(_symbolic.CustomCall(self, node))
        return node

    def _reverse_rule(self, values: Tuple[float, ...]) -> Callable[[float], Tuple[float, ...]]:
        """The engine's callback: g -> one float per input. User exceptions propagate untouched."""
        backward, name, n = self.backward, self.name, len(values)

        def reverse_rule(g: float) -> Tuple[float, ...]:
            grads = backward(g, *values)
            if isinstance(grads, (numbers.Real, fg.Var)) and n == 1:
                grads = (grads,)
            try:
                grads = tuple(float(x) if isinstance(x, fg.Var) else _engine.real(x) for x in grads)
            except TypeError:
                raise TypeError(f"custom op {name!r}: backward must return a sequence of {n} real numbers "
                                f"(never strings), got {grads!r:.80}") from None
            if len(grads) != n:
                raise ValueError(f"custom op {name!r}: backward returned {len(grads)} gradients "
                                 f"for {n} inputs")
            return grads

        return reverse_rule

    def symbolic_partials(self, args: Sequence[Any]) -> Tuple[Any, ...]:
        """d output / d input_k as expressions (for `_symbolic`): the jvp rule along each unit tangent."""
        if self.jvp is None:
            raise NotImplementedError(
                f"custom op {self.name!r} has no jvp rule: forward mode (jvp, jacobian(mode='fwd')), "
                f"Hessians and nested transforms cannot differentiate through it; give one with "
                f"fg.custom_op(forward, backward, jvp=...) or @{self.name}.defjvp")
        n = len(args)
        primals = tuple(args)
        partials = []
        for k in range(n):
            t = self.jvp(primals, tuple(1.0 if i == k else 0.0 for i in range(n)))
            if not (isinstance(t, fg.Var) or isinstance(t, numbers.Real)):
                raise TypeError(f"custom op {self.name!r}: jvp rule must return a number or a Var, "
                                f"got {type(t).__name__}")
            partials.append(t if isinstance(t, fg.Var) else float(t))
        return tuple(partials)


def custom_op(forward: Optional[Callable[..., float]] = None, backward: Optional[Callable[..., Any]] = None,
              *, jvp: Optional[Callable] = None, name: Optional[str] = None) -> Any:
    """Make a custom op: ``custom_op(forward, backward)`` or ``@custom_op(backward=...)`` on the forward.

    forward(*inputs: float) -> float
    backward(g: float, *inputs: float) -> sequence of floats, one per input (a number for one input)
    jvp(primals: tuple, tangents: tuple) -> output tangent (optional; enables forward mode and nesting)
    """
    if forward is None:
        if backward is None:
            raise TypeError("custom_op needs a backward rule: custom_op(forward, backward) or "
                            "@custom_op(backward=...)")
        return lambda fn: CustomOp(fn, backward, jvp, name)
    if backward is None:
        raise TypeError(f"custom_op({getattr(forward, '__name__', forward)!r}) needs a backward rule")
    return CustomOp(forward, backward, jvp, name)


class Function:
    """Class form of a custom op (as torch.autograd.Function): static ``forward(*inputs)``,
    ``backward(g, *inputs)`` and optionally ``jvp(primals, tangents)``; use ``MyOp.apply(x, y)``."""

    @staticmethod
    def forward(*inputs: float) -> float:
        """The op's value at the input values (floats); returns a float. Subclasses define it; here it raises
        NotImplementedError."""
        raise NotImplementedError("subclasses of fastgrad.Function define a static forward")

    @staticmethod
    def backward(g: float, *inputs: float) -> Sequence[float]:
        """One gradient per input, ``g`` times d output / d input, at the input values. Subclasses define it;
        here it raises NotImplementedError."""
        raise NotImplementedError("subclasses of fastgrad.Function define a static backward")

    jvp: Optional[Callable] = None

    @classmethod
    def apply(cls, *inputs: Any) -> Any:
        """Apply the op to Vars or numbers."""
        op = cls.__dict__.get("_fastgrad_op")
        if op is None:
            op = CustomOp(cls.forward, cls.backward, cls.jvp, name=cls.__name__)
            cls._fastgrad_op = op
        return op(*inputs)
