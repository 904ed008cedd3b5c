"""Layers: micrograd's `Neuron`, `Layer`, `MLP`, and PyTorch's `Linear`, `Sequential` and activation modules.

A neuron's weighted sum is ONE fused engine node, computed and differentiated in a C loop (micrograd builds
it from 2·nin binary nodes, `sum((wi*xi ...), b)`). A lone `Neuron` calls `dot([b, w0, ...], [1, x0, ...])`;
`Layer` and `Linear` build all their rows in one engine call (`_engine.affine`: per row a fused dot, the bias
and the activation), which reads the parameter Vars from the layer's lists at every call: a Var assigned into
`weight[r][k]` or `w[k]` is used from the next call on.
"""
from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Union

from fastgrad._engine import Var, dot
from fastgrad._nn import affine
from fastgrad.nn import functional as F
from fastgrad.nn.module import Module

__all__ = [
    "ACTIVATIONS",
    "MLP",
    "Identity",
    "Layer",
    "Linear",
    "Neuron",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "Tanh",
]

Scalar = Union[Var, float]

# name -> the Var method applied to a neuron's sum (None: linear)
ACTIVATIONS: dict[str, Callable[[Var], Var] | None] = {
    "relu": Var.relu,
    "tanh": Var.tanh,
    "sigmoid": Var.sigmoid,
    "linear": None,
}
_NEURON_NAMES = {"relu": "ReLU", "tanh": "Tanh", "sigmoid": "Sigmoid", "linear": "Linear"}

# NOTE: the constant 1 that multiplies the bias in every fused row. One shared leaf: a plain 1.0 would make
# the engine create a new constant leaf in every dot call. (Its own .grad accumulates and is never read.)
_ONE = Var(1.0)


class _Generation:
    """Identity token of the current parameter binding. Rebinding a neuron's parameters anywhere replaces it,
    and a Layer gathers its neurons' parameter lists again when its token is not the current one.

    NOTE: a token is compared by identity, so a pickled or deep-copied layer (whose token is a copy) can never
    reuse node indices from another process or another set of parameters.
    """

    current: "_Generation"

    @classmethod
    def bump(cls) -> None:
        cls.current = cls()


_Generation.bump()


def _bumping(name: str) -> Callable[..., Any]:
    """A list method that also tells the layers to look at their neurons again."""
    method = getattr(list, name)

    def mutator(self: list, *args: Any) -> Any:
        result = method(self, *args)
        _Generation.bump()
        return result

    mutator.__name__ = name
    return mutator


class _Neurons(list):
    """A Layer's `neurons`: a plain list whose every change (item assignment, append, ...) is noticed."""

    for _name in ("__setitem__", "__delitem__", "__iadd__", "__imul__", "append", "extend", "insert", "pop",
                  "remove", "clear", "sort", "reverse"):
        locals()[_name] = _bumping(_name)
    del _name

    def __reduce__(self) -> Any:
        return (list, (list(self),))      # pickles and copies as a plain list; Layer wraps it again


def _check_activation(activation: str | None) -> str:
    name = "linear" if activation is None else activation
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}: use one of {', '.join(map(repr, ACTIVATIONS))}")
    return name


def _check_size(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{what} must be a non-negative int, got {value!r}")
    return value


class Neuron(Module):
    """`act(w · x + b)` with `nin` weights drawn from uniform(-1, 1) and a zero bias (micrograd's init).

    `nonlin=False` (micrograd's switch) or `activation="linear"` gives the plain weighted sum.
    `rng`: a `random.Random` for the weights (default: the `random` module's global generator).
    """

    def __init__(
        self, nin: int, nonlin: bool = True, *, activation: str = "relu", rng: random.Random | None = None
    ) -> None:
        nin = _check_size(nin, "nin")
        uniform = (rng or random).uniform
        self.activation = _check_activation(activation if nonlin else "linear")
        self.w = [Var(uniform(-1, 1)) for _ in range(nin)]
        self.b = Var(0.0)

    # NOTE: a Layer caches its neurons' `w` lists and `b` Vars; rebinding either tells it to look again.
    # (Items assigned into `w` need no notice: the cached list is `w` itself.)
    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        if name in ("w", "b"):
            _Generation.bump()

    @property
    def nonlin(self) -> bool:
        return self.activation != "linear"

    def forward(self, x: Sequence[Scalar]) -> Var:
        act = dot([self.b, *self.w], [_ONE, *x])
        f = ACTIVATIONS[self.activation]
        return act if f is None else f(act)

    def __repr__(self) -> str:
        return f"{_NEURON_NAMES[self.activation]}Neuron({len(self.w)})"


class Layer(Module):
    """`nout` neurons reading the same `nin` inputs; returns a list, or the Var itself when `nout == 1`
    (micrograd's convention). Every neuron applies the first neuron's activation."""

    def __init__(self, nin: int, nout: int, **kwargs: Any) -> None:
        _check_size(nout, "nout")
        self.neurons = [Neuron(nin, **kwargs) for _ in range(nout)]
        self.nin = nin

    # NOTE: the neurons' weight lists and biases are cached, and gathered again when a neuron's `w` or `b`
    # is rebound or the `neurons` list changes (the generation token): `neurons` is kept as a `_Neurons`
    # list, which reports its own changes. Nothing is checked per call.
    def __setattr__(self, name: str, value: Any) -> None:
        if name == "neurons" and isinstance(value, list) and type(value) is not _Neurons:
            value = _Neurons(value)
        object.__setattr__(self, name, value)
        if name == "neurons":
            _Generation.bump()

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if type(self.__dict__.get("neurons")) is list:
            object.__setattr__(self, "neurons", _Neurons(self.neurons))

    def _gather(self) -> None:
        neurons = self.neurons
        object.__setattr__(self, "_rows", [n.w for n in neurons])
        object.__setattr__(self, "_bias", [n.b for n in neurons])
        object.__setattr__(self, "_act", neurons[0].activation if neurons else "linear")
        object.__setattr__(self, "_token", _Generation.current)

    def forward(self, x: Sequence[Scalar]) -> Var | list[Var]:
        # NOTE: the hot loop of every model: the whole layer in one engine call
        if self.__dict__.get("_token") is not _Generation.current:
            self._gather()
        out = affine(self._rows, self._bias, x, self._act)
        return out[0] if len(out) == 1 else out

    def __repr__(self) -> str:
        act = self.neurons[0].activation if self.neurons else "linear"
        return f"Layer({self.nin}, {len(self.neurons)}, activation={act!r})"


class MLP(Module):
    """micrograd's multi-layer perceptron: `MLP(2, [16, 16, 1])` is 2 → 16 → 16 → 1 with the hidden
    activation (default relu) on every layer but the last, which is linear. 337 parameters for that shape."""

    def __init__(
        self, nin: int, nouts: Sequence[int], *, activation: str = "relu", rng: random.Random | None = None
    ) -> None:
        sizes = [nin, *nouts]
        activation = _check_activation(activation)
        self.layers = [
            Layer(sizes[i], sizes[i + 1], nonlin=i != len(nouts) - 1, activation=activation, rng=rng)
            for i in range(len(nouts))
        ]

    def forward(self, x: Sequence[Scalar]) -> Var | list[Var]:
        for layer in self.layers:
            x = layer.forward(x)
        return x


class Linear(Module):
    """PyTorch's `y = W x + b`: `weight` is `out_features` rows of `in_features` Vars, `bias` a list of
    `out_features` Vars; both drawn from uniform(-1/√in, 1/√in) as PyTorch does. Returns a list of Vars."""

    def __init__(
        self, in_features: int, out_features: int, bias: bool = True, *, rng: random.Random | None = None
    ) -> None:
        self.in_features = _check_size(in_features, "in_features")
        self.out_features = _check_size(out_features, "out_features")
        uniform = (rng or random).uniform
        bound = 1.0 / math.sqrt(in_features) if in_features else 0.0
        self.weight = [[Var(uniform(-bound, bound)) for _ in range(in_features)] for _ in range(out_features)]
        self.bias = [Var(uniform(-bound, bound)) for _ in range(out_features)] if bias else None

    def forward(self, x: Sequence[Scalar]) -> list[Var]:
        # NOTE: no cache: the engine reads the Vars `weight` and `bias` hold at every call
        return affine(self.weight, self.bias, x)

    def extra_repr(self) -> str:
        bias = self.bias is not None
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={bias}"


class Sequential(Module):
    """Modules applied in order; children are named "0", "1", ... as in PyTorch.

    NOTE: the children are the attributes "0", "1", ... themselves, so the generic attribute walk (and with
    it parameters, zero_grad, state_dict, repr, pickle and deepcopy) sees them with no override.
    """

    def __init__(self, *modules: Module) -> None:
        for i, m in enumerate(modules):
            if not isinstance(m, Module):
                raise TypeError(f"Sequential takes Modules, got {type(m).__name__}")
            setattr(self, str(i), m)

    def _layers(self) -> list[Module]:
        """The children in order: the attributes named by an index."""
        return [m for name, m in vars(self).items() if name.isdecimal()]

    def __getitem__(self, index: int | slice) -> Module:
        if isinstance(index, slice):
            return Sequential(*self._layers()[index])
        return self._layers()[index]

    def __len__(self) -> int:
        return len(self._layers())

    def __iter__(self) -> Iterator[Module]:
        return iter(self._layers())

    def forward(self, x: Any) -> Any:
        for m in self._layers():
            x = m(x)
        return x


class _Elementwise(Module):
    """An activation (from fastgrad.nn.functional) applied to a Var or to each Var of a list."""

    fn: Callable[[Any], Any]

    def forward(self, x: Any) -> Any:
        return type(self).fn(x)


class ReLU(_Elementwise):
    """max(x, 0) elementwise."""

    fn = staticmethod(F.relu)


class Tanh(_Elementwise):
    """tanh(x) elementwise."""

    fn = staticmethod(F.tanh)


class Sigmoid(_Elementwise):
    """1 / (1 + exp(-x)) elementwise."""

    fn = staticmethod(F.sigmoid)


class Identity(Module):
    """Returns its input."""

    def forward(self, x: Any) -> Any:
        return x
