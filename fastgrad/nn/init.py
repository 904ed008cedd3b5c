"""Parameter initialisation with PyTorch's formulas (`torch.nn.init`), in place on `Var`s.

Every function takes a `Var`, a list of Vars or a nested list of them (a matrix: `Linear.weight` is
`out_features` rows of `in_features` Vars), writes `.data` of each Var and returns its argument:

    fg.nn.init.kaiming_uniform_(layer.weight, nonlinearity="relu", generator=random.Random(0))
    fg.nn.init.zeros_(layer.bias)

- `uniform_(x, a, b)`, `normal_(x, mean, std)`, `constant_(x, val)`, `zeros_`, `ones_`: element by element,
  for any nesting.
- `xavier_uniform_` / `xavier_normal_`: std = gain·√(2 / (fan_in + fan_out)); uniform bound = √3·std.
- `kaiming_uniform_` / `kaiming_normal_`: std = gain / √fan, fan = fan_in (default) or fan_out (`mode`),
  gain = `calculate_gain(nonlinearity, a)`; uniform bound = √3·std.
- `calculate_gain(nonlinearity, param)`: 1 (linear, conv*, sigmoid), 5/3 (tanh), √2 (relu),
  √(2 / (1 + negative_slope²)) (leaky_relu, slope `param`, default 0.01), 3/4 (selu).

Fans need a matrix: rows are outputs, columns inputs, so fan_in = number of columns and fan_out = number of
rows (deeper nests multiply both by the product of the remaining sizes, PyTorch's receptive field). A Var or a
flat list has fewer than 2 dimensions: ValueError, as in PyTorch. Randomness comes from `generator` (a
`random.Random`, for reproducibility) or else the `random` module's global generator; values are drawn
row by row.
"""
from __future__ import annotations

import math
import numbers
import random
from typing import Any, TypeVar

from fastgrad._engine import Var

__all__ = [
    "calculate_gain",
    "constant_",
    "kaiming_normal_",
    "kaiming_uniform_",
    "normal_",
    "ones_",
    "uniform_",
    "xavier_normal_",
    "xavier_uniform_",
    "zeros_",
]

T = TypeVar("T")

_LINEAR = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d")


# ---- the argument: a Var, or nested lists of Vars ----

def _flatten(tensor: Any, what: str = "a Var or a (nested) list of Vars") -> list[Var]:
    """The Vars of `tensor` in row-major order (iteratively: any depth). TypeError, saying the argument
    must be `what`, for anything but Vars in lists/tuples."""
    if isinstance(tensor, Var):
        return [tensor]
    if not isinstance(tensor, (list, tuple)):
        raise TypeError(f"expected {what}, got {type(tensor).__name__}")
    out: list[Var] = []
    stack = [iter(tensor)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, Var):
                out.append(item)
            elif isinstance(item, (list, tuple)):
                stack.append(iter(item))
                break
            else:
                raise TypeError(f"expected {what}, found a {type(item).__name__}")
        else:
            stack.pop()
    return out


def _shape(tensor: Any) -> tuple[int, ...]:
    """The sizes of a rectangular nest of lists: () for a Var, (n,) for a list, (rows, cols) for a matrix.

    Raises ValueError for a ragged nest (rows of different lengths, or Vars mixed with lists)."""
    shape: list[int] = []
    level: list[Any] = [tensor]
    while level and all(isinstance(x, (list, tuple)) for x in level):
        sizes = {len(x) for x in level}
        if len(sizes) != 1:
            raise ValueError(f"the rows must all have the same length, got lengths {sorted(sizes)}")
        shape.append(sizes.pop())
        level = [item for x in level for item in x]
    if any(isinstance(x, (list, tuple)) for x in level):
        raise ValueError("the nested lists are ragged: Vars and lists at the same depth")
    return tuple(shape)


def _fill(tensor: T, values: Any) -> T:
    """Write `values` (an iterable of floats, one per Var in row-major order) into `tensor`'s Vars."""
    for var, value in zip(_flatten(tensor), values):
        var.data = value
    return tensor


def _rng(generator: random.Random | None) -> Any:
    if generator is None:
        return random
    if not isinstance(generator, random.Random):
        raise TypeError(f"generator must be a random.Random, got {type(generator).__name__}")
    return generator


def _real(name: str, value: Any) -> float:
    if isinstance(value, (bool, str, bytes)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    return float(value)


def _fans(tensor: Any) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight matrix whose rows are outputs (PyTorch's `(out, in, *kernel)` layout)."""
    shape = _shape(tensor)
    if len(shape) < 2:
        what = "a single Var" if not shape else f"a flat list of {shape[0]} Vars"
        raise ValueError(
            f"fan_in and fan_out cannot be computed for {what} (fewer than 2 dimensions): fan-based "
            "initialisation needs a weight matrix, a list of rows (out_features rows of in_features Vars)"
        )
    receptive_field = math.prod(shape[2:])
    return shape[1] * receptive_field, shape[0] * receptive_field


# ---- element by element ----

def uniform_(tensor: T, a: float = 0.0, b: float = 1.0, generator: random.Random | None = None) -> T:
    """Fill with values drawn from U(a, b); returns `tensor`. Raises ValueError if a > b."""
    a, b = _real("a", a), _real("b", b)
    if not a <= b:
        raise ValueError(f"uniform_ needs a <= b, got a={a}, b={b}")
    draw = _rng(generator).uniform
    n = len(_flatten(tensor))
    return _fill(tensor, (draw(a, b) for _ in range(n)))


def normal_(tensor: T, mean: float = 0.0, std: float = 1.0, generator: random.Random | None = None) -> T:
    """Fill with values drawn from N(mean, std²); returns `tensor`. Raises ValueError if std < 0."""
    mean, std = _real("mean", mean), _real("std", std)
    if not std >= 0.0:
        raise ValueError(f"normal_ needs std >= 0, got {std}")
    draw = _rng(generator).normalvariate
    n = len(_flatten(tensor))
    return _fill(tensor, (draw(mean, std) for _ in range(n)))


def constant_(tensor: T, val: float) -> T:
    """Set every Var to `val`; returns `tensor`."""
    val = _real("val", val)
    for var in _flatten(tensor):
        var.data = val
    return tensor


def zeros_(tensor: T) -> T:
    """Set every Var to 0.0; returns `tensor`."""
    return constant_(tensor, 0.0)


def ones_(tensor: T) -> T:
    """Set every Var to 1.0; returns `tensor`."""
    return constant_(tensor, 1.0)


# ---- gains and fans ----

def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """The recommended gain for an activation: 1 for "linear" (and the conv names) and "sigmoid", 5/3 for
    "tanh", √2 for "relu", √(2 / (1 + slope²)) for "leaky_relu" (`param` = negative slope, default 0.01),
    3/4 for "selu".

    Raises ValueError for another name, or a slope that is not an int or float.
    """
    if nonlinearity in _LINEAR or nonlinearity == "sigmoid":
        return 1
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            slope = 0.01
        elif isinstance(param, numbers.Real) and not isinstance(param, bool):
            slope = param
        else:
            raise ValueError(f"negative_slope {param!r} is not a number")
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"unsupported nonlinearity {nonlinearity!r}: use one of {', '.join(_LINEAR)}, sigmoid, "
                     "tanh, relu, leaky_relu, selu")


def _fan(tensor: Any, mode: str) -> int:
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan_in, fan_out = _fans(tensor)
    return fan_in if mode == "fan_in" else fan_out


def _empty(tensor: Any) -> bool:
    return not _flatten(tensor)


def xavier_uniform_(tensor: T, gain: float = 1.0, generator: random.Random | None = None) -> T:
    """Glorot/Xavier: fill a weight matrix from U(-bound, bound), bound = gain·√(6 / (fan_in + fan_out)).

    Returns `tensor`; ValueError for fewer than 2 dimensions."""
    fan_in, fan_out = _fans(tensor)
    if _empty(tensor):
        return tensor
    std = _real("gain", gain) * math.sqrt(2.0 / float(fan_in + fan_out))
    bound = math.sqrt(3.0) * std
    return uniform_(tensor, -bound, bound, generator)


def xavier_normal_(tensor: T, gain: float = 1.0, generator: random.Random | None = None) -> T:
    """Glorot/Xavier: fill a weight matrix from N(0, std²), std = gain·√(2 / (fan_in + fan_out)).

    Returns `tensor`; ValueError for fewer than 2 dimensions."""
    fan_in, fan_out = _fans(tensor)
    if _empty(tensor):
        return tensor
    std = _real("gain", gain) * math.sqrt(2.0 / float(fan_in + fan_out))
    return normal_(tensor, 0.0, std, generator)


def kaiming_uniform_(tensor: T, a: float = 0, mode: str = "fan_in", nonlinearity: str = "leaky_relu",
                     generator: random.Random | None = None) -> T:
    """He/Kaiming: fill a weight matrix from U(-bound, bound), bound = gain·√(3 / fan), with
    gain = calculate_gain(nonlinearity, a) and fan = fan_in or fan_out (`mode`).

    `a` is leaky_relu's negative slope. Returns `tensor`; ValueError for fewer than 2 dimensions, an
    unknown mode or nonlinearity."""
    fan = _fan(tensor, mode)
    gain = calculate_gain(nonlinearity, a)
    if _empty(tensor):
        return tensor
    std = gain / math.sqrt(fan)
    bound = math.sqrt(3.0) * std
    return uniform_(tensor, -bound, bound, generator)


def kaiming_normal_(tensor: T, a: float = 0, mode: str = "fan_in", nonlinearity: str = "leaky_relu",
                    generator: random.Random | None = None) -> T:
    """He/Kaiming: fill a weight matrix from N(0, std²), std = gain / √fan, with
    gain = calculate_gain(nonlinearity, a) and fan = fan_in or fan_out (`mode`).

    Returns `tensor`; ValueError for fewer than 2 dimensions, an unknown mode or nonlinearity."""
    fan = _fan(tensor, mode)
    gain = calculate_gain(nonlinearity, a)
    if _empty(tensor):
        return tensor
    std = gain / math.sqrt(fan)
    return normal_(tensor, 0.0, std, generator)
