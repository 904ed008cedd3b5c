"""Grad mode: evaluation without a graph (`no_grad`), and turning recording back on (`enable_grad`).

As in PyTorch, grad mode belongs to the calling thread. Inside `fg.no_grad()` no operation records a graph
node: each result is a new leaf holding the value (`.data` reads as usual; `is_leaf` is True and nothing is
referenced, so it is a constant to any later graph). Unlike PyTorch, such results keep `requires_grad` True:
only `requires_grad_(False)` freezes a leaf. So scoring a data set costs the arithmetic and the handles, not
the graph: no parents are referenced and every result is freed as soon as it is dropped.

    with fg.no_grad():
        accuracy = sum(model(x).data > 0 for x in xs) / len(xs)

    @fg.no_grad()
    def evaluate(model, xs): ...

What is not affected: `Var(x)` still makes an ordinary leaf (a model built inside `no_grad` trains normally);
`backward()` on a graph built earlier still works inside `no_grad`; the function transforms (`fg.grad`,
`fg.jacobian`, ...) and the tracing of `fg.compile`/`fg.vmap` turn recording on for their own work, as
`torch.func` does, because their result is a derivative, not a graph. A compiled function called inside
`no_grad` replays forward only: parameters' gradients are left alone.
"""
from __future__ import annotations

import functools
import inspect
import threading
from typing import Any, Callable, TypeVar

from fastgrad import _engine

__all__ = ["enable_grad", "is_grad_enabled", "no_grad", "set_grad_enabled"]

F = TypeVar("F", bound=Callable[..., Any])


def is_grad_enabled() -> bool:
    """True when operations in the calling thread record graph nodes (the default); False inside
    `no_grad()` or `set_grad_enabled(False)`."""
    return bool(_engine._is_grad_enabled())


class _GradMode:
    """A context manager and decorator that sets grad mode to `_mode` and restores the previous mode on
    exit. One instance may be entered again (nested, or by several threads): each thread keeps its own
    stack of previous modes."""

    _mode = True

    def __init__(self) -> None:
        self._saved = threading.local()

    def __enter__(self) -> None:
        stack = self._saved.__dict__.setdefault("stack", [])
        stack.append(_engine._set_grad_enabled(self._mode))

    def __exit__(self, *exc: Any) -> None:
        _engine._set_grad_enabled(self._saved.stack.pop())

    def __call__(self, fn: F) -> F:
        """Use as a decorator: `fn` runs in this grad mode (each call enters a fresh context)."""
        if not callable(fn):
            raise TypeError(f"{type(self).__name__}() decorates a function, got {type(fn).__name__}")
        if any(test(fn) for test in (inspect.isgeneratorfunction, inspect.isasyncgenfunction,
                                     inspect.iscoroutinefunction)):
            raise TypeError(f"{type(self).__name__}() cannot decorate a generator or coroutine function (the "
                            "body runs after the call returns); use `with` inside it")
        make = self._fresh

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with make():
                return fn(*args, **kwargs)
        return wrapper  # type: ignore[return-value]

    def _fresh(self) -> _GradMode:
        return type(self)()

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class no_grad(_GradMode):
    """Context manager and decorator: inside, operations record nothing (results are frozen leaves).

    Thread-local, as PyTorch's `torch.no_grad`; nests with `enable_grad` and `set_grad_enabled`.
    """

    _mode = False


class enable_grad(_GradMode):
    """Context manager and decorator: turn recording on inside a `no_grad` region."""

    _mode = True


class set_grad_enabled(_GradMode):
    """`set_grad_enabled(mode)`: as a function call, sets the calling thread's grad mode; as a context
    manager (`with fg.set_grad_enabled(False): ...`), sets it for the block and restores the previous mode
    after. Raises TypeError unless `mode` is a bool."""

    def __init__(self, mode: bool) -> None:
        if not isinstance(mode, bool):
            raise TypeError(f"set_grad_enabled() takes a bool, got {type(mode).__name__}")
        super().__init__()
        self._mode = mode
        # as PyTorch: the call itself switches the mode; `with` restores the mode found before the call
        self._prev = _engine._set_grad_enabled(mode)

    def __enter__(self) -> None:
        self._saved.__dict__.setdefault("stack", []).append(self._prev)

    def __call__(self, fn: F) -> F:
        # as a decorator it must not leave the mode switched: undo what the constructor did
        _engine._set_grad_enabled(self._prev)
        return super().__call__(fn)

    def _fresh(self) -> _GradMode:
        return _Switch(self._mode)

    def __repr__(self) -> str:
        return f"set_grad_enabled({self._mode})"


class _Switch(_GradMode):
    """What `set_grad_enabled(mode)` enters per call when used as a decorator."""

    def __init__(self, mode: bool) -> None:
        super().__init__()
        self._mode = mode


def _grad_on(fn: F) -> F:
    """Internal decorator: the transforms and tracing record graph nodes whatever the caller's grad mode."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        prev = _engine._set_grad_enabled(True)
        try:
            return fn(*args, **kwargs)
        finally:
            _engine._set_grad_enabled(prev)
    return wrapper  # type: ignore[return-value]
