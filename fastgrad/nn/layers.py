"""Layers: micrograd's `Neuron`, `Layer`, `MLP`; PyTorch's `Linear`, `Dropout`, activation modules and the
containers `Sequential`, `ModuleList`, `ModuleDict`.

A neuron's weighted sum is ONE fused engine node, computed and differentiated in a C loop (micrograd builds
it from 2·nin binary nodes, `sum((wi*xi ...), b)`). A lone `Neuron` calls `dot([b, w0, ...], [1, x0, ...])`;
`Layer` and `Linear` build all their rows in one engine call (`_engine.affine`: per row a fused dot, the bias
and the activation), which reads the parameter Vars from the layer's lists at every call: a Var assigned into
`weight[r][k]` or `w[k]` is used from the next call on.

Inputs and outputs (one rule for every layer): a layer takes one sample, a list or tuple of Vars or numbers
(any other iterable is listed first; a single Var or number is one input). It returns a list of Vars, except
that ONE output is returned as the bare Var, by `Neuron`, `Layer(n, 1)`, `Linear(n, 1)` and
`MLP(..., [..., 1])` alike: micrograd code depends on it (`loss = (1 - y * model(x)).relu()`), and a Var
supports the arithmetic and `.backward()` a PyTorch user does on a one-element output. Since a bare Var is
also accepted as one input, `Sequential(Linear(2, 1), Tanh(), Linear(1, 3))` chains. (PyTorch's
`Linear(n, 1)` returns a tensor of shape (1,) instead.)

Errors are in the user's terms: a wrong input count or a non-number input names the layer by its repr and
says what it got (`Linear(in_features=4, out_features=3, bias=True) expects 4 inputs, got 2`); the engine's
own messages are only re-worded, never shown with its internal names.
"""
from __future__ import annotations

import math
import numbers
import operator
import random
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Union

import numpy as np

from fastgrad import _engine
from fastgrad._engine import Var, dot
from fastgrad._nn import affine
from fastgrad.tensor import Tensor
from fastgrad.nn import functional as F
from fastgrad.nn.module import Module

__all__ = [
    "ACTIVATIONS",
    "MLP",
    "Dropout",
    "Identity",
    "Layer",
    "Linear",
    "ModuleDict",
    "ModuleList",
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


# ---- a layer's inputs, and its errors in the user's terms ----

def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _name(layer: Module) -> str:
    """The layer's repr for an error message, or its class name if even that fails (broken attributes)."""
    try:
        return repr(layer)
    except Exception:
        return type(layer).__name__


def _is_number(x: Any) -> bool:
    """Does the engine take `x` as an operand (a Var, or a real number it converts)?"""
    if isinstance(x, Var):
        return True
    try:
        Var(x)
    except TypeError:
        return False
    return True


def _inputs(layer: Module, x: Any, nin: int) -> Sequence[Any]:
    """`x`, which is not a list or tuple, as a list of inputs: a Var or a real number is one input, another
    iterable is listed. TypeError naming the layer for anything else (strings are never taken apart)."""
    if isinstance(x, (list, tuple)):
        return x
    if isinstance(x, Var):
        return [x]
    if isinstance(x, Tensor) or (isinstance(x, np.ndarray) and x.ndim >= 2):
        raise TypeError(f"{_name(layer)} holds scalar Var parameters and takes one sample (a list of "
                        f"{_plural(nin, 'input')}); for a batch (a 2-D array or Tensor of rows) build "
                        f"Linear or MLP with tensor=True")
    if not isinstance(x, (str, bytes)):
        try:
            return list(x)
        except TypeError:
            if _is_number(x):
                return [x]
    raise TypeError(f"{_name(layer)} takes a list of {_plural(nin, 'input')} (Vars or numbers), "
                    f"got {type(x).__name__}")


def _layer_error(layer: Module, exc: Exception, x: Sequence[Any], nin: int,
                 params: Callable[[str], str] | None = None) -> Exception:
    """The engine's error `exc`, from a call of `layer` on the inputs `x`, in the user's terms: a wrong
    input count (ValueError) or a non-number input (TypeError), named by the layer; otherwise the layer's
    parameters are at fault, and the engine's message is kept without its internal prefix, re-worded by
    `params` if given."""
    if len(x) != nin:
        return ValueError(f"{_name(layer)} expects {_plural(nin, 'input')}, got {len(x)}")
    for i, v in enumerate(x):
        if not _is_number(v):
            hint = ""
            if isinstance(v, Iterable) and not isinstance(v, (str, bytes)):
                hint = " (a layer takes one sample, a flat list: call it on each row of a batch)"
            return TypeError(f"{_name(layer)}: input {i} is a {type(v).__name__}, expected a Var or a real "
                             f"number{hint}")
    message = str(exc)
    for prefix in ("affine: ", "dot: "):
        if message.startswith(prefix):
            message = message[len(prefix):]
    if params is not None:
        message = params(message)
    return type(exc)(f"{_name(layer)}: {message}")


class Neuron(Module):
    """`act(w · x + b)` with `nin` weights drawn from uniform(-1, 1) and a zero bias (micrograd's init).

    `nonlin=False` (micrograd's switch) or `activation="linear"` gives the plain weighted sum.
    `rng`: a `random.Random` for the weights (default: the `random` module's global generator).
    Called on `nin` inputs, returns one Var. ValueError for a wrong input count, TypeError for an input that
    is not a Var or a real number (both naming the neuron).
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
        """micrograd's flag: does the neuron apply a nonlinearity (its activation is not 'linear')?"""
        return self.activation != "linear"

    def forward(self, x: Sequence[Scalar]) -> Var:
        """`act(w · x + b)` for one sample `x` of `nin` Vars or numbers."""
        if type(x) is not list and type(x) is not tuple:
            x = _inputs(self, x, len(self.w))
        try:
            act = dot([self.b, *self.w], [_ONE, *x])
        except (TypeError, ValueError) as exc:
            raise _layer_error(self, exc, x, len(self.w)) from None
        f = ACTIVATIONS[self.activation]
        return act if f is None else f(act)

    def __repr__(self) -> str:
        return f"{_NEURON_NAMES[self.activation]}Neuron({len(self.w)})"


class Layer(Module):
    """`nout` neurons reading the same `nin` inputs; returns a list of `nout` Vars, or the Var itself when
    `nout == 1` (micrograd's convention, shared by `Linear` and `MLP`). Every neuron applies the first
    neuron's activation. ValueError for a wrong input count, TypeError for an input that is not a Var or a
    real number (both naming the layer)."""

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
        """The `nout` neurons' outputs for one sample `x` of `nin` inputs (a bare Var when `nout == 1`)."""
        # NOTE: the hot loop of every model: the whole layer in one engine call; the checks cost nothing
        # unless the engine refuses the call
        if self.__dict__.get("_token") is not _Generation.current:
            self._gather()
        if type(x) is not list and type(x) is not tuple:
            x = _inputs(self, x, self.nin)
        try:
            out = affine(self._rows, self._bias, x, self._act)
        except (TypeError, ValueError) as exc:
            raise _layer_error(self, exc, x, self.nin, _neuron_terms) from None
        return out[0] if len(out) == 1 else out

    def __repr__(self) -> str:
        act = self.neurons[0].activation if self.neurons else "linear"
        return f"Layer({self.nin}, {len(self.neurons)}, activation={act!r})"


def _neuron_terms(message: str) -> str:
    """An engine message about a Layer's parameter lists, in terms of its neurons."""
    if message.startswith("weight row "):
        r, _, rest = message[len("weight row "):].partition(" ")
        return f"neuron {r}'s w {rest}"
    return message.replace("the bias", "the neurons' b", 1)


class MLP(Module):
    """micrograd's multi-layer perceptron: `MLP(2, [16, 16, 1])` is 2 → 16 → 16 → 1 with the hidden
    activation (default relu) on every layer but the last, which is linear. 337 parameters for that shape.

    Returns what its last layer returns: a list of Vars, or the bare Var for one output (`[..., 1]`), as
    `Layer` and `Linear` do. `nouts` must be a list (or tuple) of non-negative ints: `MLP(2, 3)` is a
    TypeError that says so, `MLP(2, [])` a ValueError.

    `init`: how the parameters start. "micrograd" (the default, for compatibility): uniform(-1, 1) for
    every weight and bias. "pytorch": PyTorch's `nn.Linear` default, uniform(-1/√nin, 1/√nin) per layer
    of `nin` inputs. Change to it (or to Kaiming) for wide layers: with uniform(-1, 1) a 64-input layer's
    sums have a standard deviation of √(64/3) ≈ 4.6 for unit-size inputs, which saturates tanh and slows
    learning. A function `init(weight, bias)` is called per layer with the layer's weight matrix (a list
    of rows of Vars, one row per neuron) and its biases (a list of Vars), e.g. `lambda w, b:
    (nn.init.kaiming_uniform_(w, nonlinearity="relu"), nn.init.zeros_(b))`. "pytorch" draws from `rng` (a
    `random.Random`) where given; a function draws as it likes.
    """

    def __init__(
        self, nin: int, nouts: Sequence[int], *, activation: str = "relu", rng: random.Random | None = None,
        init: str | Callable[[list[list[Var]], list[Var]], Any] = "micrograd", tensor: bool = False,
    ) -> None:
        _check_size(nin, "nin")
        if not isinstance(tensor, bool):
            raise TypeError(f"MLP's tensor must be a bool, got {type(tensor).__name__}")
        if not (callable(init) or isinstance(init, str)):
            raise TypeError(f"MLP's init must be 'micrograd', 'pytorch' or a function (weight, bias), "
                            f"got {type(init).__name__}")
        if isinstance(init, str) and init not in ("micrograd", "pytorch"):
            raise ValueError(f"MLP's init must be 'micrograd', 'pytorch' or a function (weight, bias), "
                             f"got {init!r}")
        if not isinstance(nouts, (list, tuple)):
            raise TypeError(f"MLP's layer sizes must be a list of ints, one per layer (MLP({nin!r}, "
                            f"[16, 16, 1]) is {nin!r} -> 16 -> 16 -> 1), "
                            f"got {type(nouts).__name__} {nouts!r}")
        if not nouts:
            raise ValueError("MLP's layer sizes must list at least one layer, got []")
        for n in nouts:
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise ValueError(f"MLP's layer sizes must be non-negative ints, got {list(nouts)!r}")
        sizes = [nin, *nouts]
        activation = _check_activation(activation)
        if tensor:      # the values Layer's neurons draw, in their order: uniform(-1, 1) weights, zero biases
            uniform = (rng or random).uniform
            self.layers = [Linear._of(np.array([uniform(-1, 1) for _ in range(n_in * n_out)], dtype=float
                                               ).reshape(n_out, n_in), np.zeros(n_out))
                           for n_in, n_out in zip(sizes, sizes[1:])]
            self.activation = activation
        else:
            self.layers = [
                Layer(sizes[i], sizes[i + 1], nonlin=i != len(nouts) - 1, activation=activation, rng=rng)
                for i in range(len(nouts))
            ]
        if init != "micrograd":
            for layer in self.layers:
                if tensor:
                    weight, bias = layer.weight, layer.bias
                else:
                    weight, bias = [n.w for n in layer.neurons], [n.b for n in layer.neurons]
                if callable(init):
                    init(weight, bias)
                    continue
                # PyTorch's Linear: uniform(-1/√fan_in, 1/√fan_in) for weights and biases
                nin_layer = layer.in_features if tensor else layer.nin
                bound = 1.0 / math.sqrt(nin_layer) if nin_layer else 0.0
                uniform = (rng or random).uniform
                if tensor:
                    weight.data[...] = [[uniform(-bound, bound) for _ in row] for row in weight.data]
                    bias.data[...] = [uniform(-bound, bound) for _ in bias.data]
                    continue
                for row in weight:
                    for w in row:
                        w.data = uniform(-bound, bound)
                for b in bias:
                    b.data = uniform(-bound, bound)

    def forward(self, x: Any) -> Any:
        """The network's output for one sample `x` of `nin` inputs; with `tensor=True`, the Tensor of
        outputs (N, nouts[-1]) for a batch `x` of N rows (a 2-D array or Tensor)."""
        activation = self.__dict__.get("activation")
        if activation is None:
            for layer in self.layers:
                x = layer.forward(x)
            return x
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer.forward(x)
            if i < last and activation != "linear":
                x = getattr(x, activation)()
        return x


class Linear(Module):
    """PyTorch's `y = W x + b`: `weight` is `out_features` rows of `in_features` Vars, `bias` a list of
    `out_features` Vars; both drawn from uniform(-1/√in, 1/√in) as PyTorch does.

    Returns a list of `out_features` Vars, or the bare Var when `out_features == 1` (the rule `Layer` and
    `MLP` follow; PyTorch gives a one-element tensor). ValueError for a wrong input count, TypeError for an
    input that is not a Var or a real number (both naming the layer).
    """

    def __init__(
        self, in_features: int, out_features: int, bias: bool = True, *, rng: random.Random | None = None,
        tensor: bool = False,
    ) -> None:
        self.in_features = _check_size(in_features, "in_features")
        self.out_features = _check_size(out_features, "out_features")
        if not isinstance(tensor, bool):
            raise TypeError(f"Linear's tensor must be a bool, got {type(tensor).__name__}")
        uniform = (rng or random).uniform
        bound = 1.0 / math.sqrt(in_features) if in_features else 0.0
        if tensor:      # the same draws in the same order as the Vars below
            w = np.array([[uniform(-bound, bound) for _ in range(in_features)] for _ in range(out_features)],
                         dtype=float).reshape(out_features, in_features)
            self.weight: Any = Tensor(w, requires_grad=True)
            self.bias: Any = (Tensor(np.array([uniform(-bound, bound) for _ in range(out_features)],
                                              dtype=float), requires_grad=True) if bias else None)
            return
        self.weight = [[Var(uniform(-bound, bound)) for _ in range(in_features)] for _ in range(out_features)]
        self.bias = [Var(uniform(-bound, bound)) for _ in range(out_features)] if bias else None

    @classmethod
    def _of(cls, weight: np.ndarray, bias: np.ndarray | None) -> Linear:
        """A Tensor-parameter Linear holding copies of these arrays (weight (out, in), bias (out,))."""
        layer = cls.__new__(cls)
        layer.in_features, layer.out_features = weight.shape[1], weight.shape[0]
        layer.weight = Tensor(weight, requires_grad=True)
        layer.bias = Tensor(bias, requires_grad=True) if bias is not None else None
        return layer

    def forward(self, x: Any) -> Any:
        """`W x + b` for one sample `x` of `in_features` inputs (a bare Var when `out_features == 1`). With
        Tensor parameters (`tensor=True`): the Tensor `x @ W.T + b` for a batch `x` of rows (N, in_features),
        a 2-D array or Tensor, or (out_features,) for one row given as a 1-D one."""
        if isinstance(self.weight, Tensor):
            return self._batch(x)
        # NOTE: no cache: the engine reads the Vars `weight` and `bias` hold at every call
        if type(x) is not list and type(x) is not tuple:
            x = _inputs(self, x, self.in_features)
        try:
            out = affine(self.weight, self.bias, x)
        except (TypeError, ValueError) as exc:
            raise _layer_error(self, exc, x, self.in_features) from None
        return out[0] if len(out) == 1 else out

    def _batch(self, x: Any) -> Tensor:
        """The Tensor-parameter forward: one fused engine node for float64 batches."""
        if not isinstance(x, Tensor):
            try:
                x = Tensor(x)
            except TypeError as exc:
                raise TypeError(f"{_name(self)} takes a batch of rows (a 2-D array or Tensor of real "
                                f"numbers): {exc}") from None
        # the common case first, checked in C: a float64 batch whose rows fit the weight
        y = _engine._tensor_linear(x, self.weight, self.bias)
        if y is not None:
            return y
        if x.ndim not in (1, 2) or (x.shape[-1] if x.ndim else 0) != self.in_features:
            raise ValueError(f"{_name(self)} expects rows of {_plural(self.in_features, 'feature')} (a batch "
                             f"of shape (N, {self.in_features})), got shape {x.shape}")
        if x.ndim == 1:
            return self._batch(x.reshape(1, self.in_features)).reshape(self.out_features)
        y = x @ self.weight.T       # float32 and other layouts (the fused node declined): the general ops
        if self.bias is not None:
            y = y + self.bias
        return y

    def extra_repr(self) -> str:
        bias = self.bias is not None
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={bias}"


class _Indexed(Module):
    """Modules in a list, kept as the attributes "0", "1", ... themselves, so the generic attribute walk (and
    with it parameters, zero_grad, state_dict, train/eval, repr, pickle and deepcopy) sees them with no
    override. The list operations of `Sequential` and `ModuleList`; every change renumbers the attributes.
    """

    def _items(self) -> list[Module]:
        """The modules in order: the attributes named by an index."""
        return [m for name, m in vars(self).items() if name.isdecimal()]

    def _store(self, modules: list[Module]) -> None:
        """Replace the indexed attributes by `modules`, numbered from 0 (after the other attributes)."""
        state = vars(self)
        for name in [name for name in state if name.isdecimal()]:
            del state[name]
        for i, m in enumerate(modules):
            state[str(i)] = m

    def _checked(self, modules: Any, what: str) -> list[Module]:
        """`modules` as a list, TypeError unless it is an iterable of Modules."""
        if not isinstance(modules, Iterable):
            raise TypeError(f"{type(self).__name__}.{what} takes an iterable of Modules, "
                            f"got {type(modules).__name__}")
        modules = list(modules)
        for m in modules:
            _check_module(self, m)
        return modules

    def _index(self, index: Any, n: int) -> int:
        """`index` as a position in 0..n-1 (negative counts from the end); TypeError, IndexError."""
        try:
            i = operator.index(index)
        except TypeError:
            raise TypeError(f"{type(self).__name__} indices must be integers or slices, "
                            f"got {type(index).__name__}") from None
        if not -n <= i < n:
            raise IndexError(f"index {i} is out of range for a {type(self).__name__} of length {n}")
        return i % n

    def _new(self, modules: list[Module]) -> _Indexed:
        raise NotImplementedError

    def __getitem__(self, index: int | slice) -> Any:
        """The module at `index`, or a new container of the same kind holding a slice (the same modules)."""
        items = self._items()
        if isinstance(index, slice):
            return self._new(items[index])
        return items[self._index(index, len(items))]

    def __setitem__(self, index: int | slice, module: Any) -> None:
        """Replace the module at `index` (a Module), or a slice of them (an iterable of Modules)."""
        items = self._items()
        if isinstance(index, slice):
            items[index] = self._checked(module, "__setitem__")
        else:
            items[self._index(index, len(items))] = _check_module(self, module)
        self._store(items)

    def __delitem__(self, index: int | slice) -> None:
        """Remove the module at `index`, or a slice of them; the rest are renumbered from 0."""
        items = self._items()
        if isinstance(index, slice):
            del items[index]
        else:
            del items[self._index(index, len(items))]
        self._store(items)

    def __len__(self) -> int:
        return len(self._items())

    def __iter__(self) -> Iterator[Module]:
        return iter(self._items())

    def append(self, module: Module) -> Any:
        """Add `module` at the end, as child `str(len(self))`; returns self. TypeError unless a Module."""
        setattr(self, str(len(self)), _check_module(self, module))
        return self

    def extend(self, modules: Iterable[Module]) -> Any:
        """Add the modules of an iterable at the end; returns self. TypeError (and no change) unless every
        item is a Module."""
        self._store(self._items() + self._checked(modules, "extend"))
        return self

    def insert(self, index: int, module: Module) -> None:
        """Insert `module` before position `index`, as `list.insert` does (out-of-range indices clamp)."""
        _check_module(self, module)
        try:
            i = operator.index(index)
        except TypeError:
            raise TypeError(f"{type(self).__name__}.insert: index must be an int, "
                            f"got {type(index).__name__}") from None
        items = self._items()
        items.insert(i, module)
        self._store(items)

    def pop(self, index: int = -1) -> Module:
        """Remove the module at `index` (default the last) and return it. IndexError if out of range."""
        items = self._items()
        module = items.pop(self._index(index, len(items)))
        self._store(items)
        return module


def _check_module(container: Module, module: Any) -> Module:
    if not isinstance(module, Module):
        raise TypeError(f"{type(container).__name__} takes Modules, got {type(module).__name__}")
    return module


class Sequential(_Indexed):
    """Modules applied in order; children are named "0", "1", ... as in PyTorch.

    `Sequential(m0, m1, ...)`; indexing gives a module, slicing a new Sequential of the same modules;
    `append`, `extend`, `insert`, `pop`, item assignment and `del` change it in place. TypeError for
    anything that is not a Module.

    NOTE: the children are the attributes "0", "1", ... themselves, so the generic attribute walk (and with
    it parameters, zero_grad, state_dict, repr, pickle and deepcopy) sees them with no override.
    """

    def __init__(self, *modules: Module) -> None:
        for i, m in enumerate(modules):
            setattr(self, str(i), _check_module(self, m))

    def _new(self, modules: list[Module]) -> Sequential:
        return Sequential(*modules)

    def forward(self, x: Any) -> Any:
        """Each module applied to the previous one's output, starting from `x`."""
        for m in self._items():
            x = m(x)
        return x


# NOTE: the ModuleList reprs under way in this thread: a child that refers back to its ancestor list prints
# as "ModuleList(...)" instead of recursing forever
_repr_open = threading.local()


class ModuleList(_Indexed):
    """PyTorch's `ModuleList`: modules held in a list, registered as children "0", "1", ... (so their
    parameters train, save and load), and not called in any order: it has no `forward`.

    `ModuleList(iterable=None)`; indexing, slicing (a new ModuleList of the same modules), `len`, `iter`,
    `append`, `extend`, `insert`, `pop`, item assignment, `del` and `+=` behave as on a list. TypeError for
    anything that is not a Module. The repr compresses runs of equal children as PyTorch does
    (`(0-2): 3 x Linear(...)`).
    """

    def __init__(self, modules: Iterable[Module] | None = None) -> None:
        if modules is not None:
            self._store(self._checked(modules, "__init__"))

    def _new(self, modules: list[Module]) -> ModuleList:
        return ModuleList(modules)

    def __iadd__(self, modules: Iterable[Module]) -> ModuleList:
        return self.extend(modules)

    def __add__(self, other: Iterable[Module]) -> ModuleList:
        """A new ModuleList of this one's modules followed by `other`'s."""
        return ModuleList(self._items() + self._checked(other, "__add__"))

    def __repr__(self) -> str:
        """PyTorch's ModuleList repr: one line per run of children with equal reprs, `(i-j): n x child`."""
        open_ids = _repr_open.__dict__.setdefault("ids", set())
        if id(self) in open_ids:
            return f"{type(self).__name__}(...)"
        open_ids.add(id(self))
        try:
            reprs = [repr(m) for m in self._items()]
        finally:
            open_ids.discard(id(self))
        if not reprs:
            return f"{type(self).__name__}()"
        lines = []
        start = 0
        for i in range(1, len(reprs) + 1):
            if i < len(reprs) and reprs[i] == reprs[start]:
                continue
            text = reprs[start].replace("\n", "\n  ")
            if i - 1 == start:
                lines.append(f"  ({start}): {text}")
            else:
                lines.append(f"  ({start}-{i - 1}): {i - start} x {text}")
            start = i
        return f"{type(self).__name__}(\n" + "\n".join(lines) + "\n)"


class ModuleDict(Module):
    """PyTorch's `ModuleDict`: modules held in a dict, registered as children named by their keys (so
    `blocks["enc"]`'s weight is the state-dict entry "enc.weight" of the dict); it has no `forward`.

    `ModuleDict(modules=None)` takes a mapping or an iterable of (key, module) pairs; keys keep their
    insertion order. The mapping interface: `d[key]`, `d[key] = module`, `del d[key]`, `len`, `iter` (the
    keys), `in`, `keys`, `values`, `items`, `get`, `update`, `pop`, `clear`. Keys must be non-empty strings
    without "." (TypeError for other types, ValueError for those strings: keys become parameter names), and
    values Modules (TypeError).

    NOTE: the modules live in a private dict, not in attributes (a key such as "train" must not hide the
    method); `named_children` lists them, then any children held in public attributes.
    """

    def __init__(self, modules: Mapping[str, Module] | Iterable[tuple[str, Module]] | None = None) -> None:
        if modules is not None:
            self.update(modules)

    def _entries(self) -> dict[str, Module]:
        entries = self.__dict__.get("_modules")
        if entries is None:  # a subclass whose __init__ did not call ours
            entries = self.__dict__["_modules"] = {}
        return entries

    def named_children(self) -> Iterator[tuple[str, Module]]:
        """(key, module) for every entry, in insertion order, then the children of public attributes."""
        yield from list(self._entries().items())
        yield from Module.named_children(self)

    def _check(self, key: Any, module: Any) -> None:
        if not isinstance(key, str):
            raise TypeError(f"ModuleDict keys must be strings, got {type(key).__name__} {key!r}")
        if not key or "." in key:
            raise ValueError(f"ModuleDict keys must be non-empty and contain no '.' (they become parameter "
                             f"names), got {key!r}")
        _check_module(self, module)

    def __getitem__(self, key: str) -> Module:
        return self._entries()[key]

    def __setitem__(self, key: str, module: Module) -> None:
        self._check(key, module)
        self._entries()[key] = module

    def __delitem__(self, key: str) -> None:
        del self._entries()[key]

    def __len__(self) -> int:
        return len(self._entries())

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries())

    def __contains__(self, key: object) -> bool:
        return key in self._entries()

    def keys(self) -> Any:
        """The keys, in insertion order (a live view)."""
        return self._entries().keys()

    def values(self) -> Any:
        """The modules, in insertion order (a live view)."""
        return self._entries().values()

    def items(self) -> Any:
        """(key, module) pairs, in insertion order (a live view)."""
        return self._entries().items()

    def get(self, key: str, default: Any = None) -> Any:
        """The module under `key`, or `default`."""
        return self._entries().get(key, default)

    def pop(self, key: str) -> Module:
        """Remove the entry `key` and return its module; KeyError if absent."""
        return self._entries().pop(key)

    def clear(self) -> None:
        """Remove every entry."""
        self._entries().clear()

    def update(self, modules: Mapping[str, Module] | Iterable[tuple[str, Module]]) -> None:
        """Add or replace entries from a mapping or an iterable of (key, module) pairs. Everything is checked
        before anything is written: TypeError or ValueError leaves the dict unchanged."""
        if isinstance(modules, (Mapping, ModuleDict)):
            pairs = list(modules.items())
        elif isinstance(modules, Iterable) and not isinstance(modules, (str, bytes, Module)):
            pairs = []
            for i, pair in enumerate(modules):
                if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                    raise TypeError(f"ModuleDict.update: item {i} must be a (key, module) pair, "
                                    f"got {type(pair).__name__}")
                pairs.append(tuple(pair))
        else:
            raise TypeError(f"ModuleDict.update takes a mapping or an iterable of (key, module) pairs, "
                            f"got {type(modules).__name__}")
        for key, module in pairs:
            self._check(key, module)
        self._entries().update(pairs)


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
        """Returns ``x`` unchanged."""
        return x


class Dropout(Module):
    """PyTorch's inverted dropout: in training mode each element is zeroed with probability `p` and the
    others are scaled by 1 / (1 - p), so the expected value is unchanged; in evaluation mode
    (`model.eval()`) and when `p == 0` it returns its input itself; `p == 1` gives zeros.

    `rng`: an int seed or a `random.Random`; the module draws its masks from its own generator (one
    `random()` per element, dropped when below `p`), so the same seed gives the same masks. Default: a
    generator seeded by the operating system.

    Takes a Var, a real number, or a list or tuple (nested or not) of them; returns the same structure as
    lists. Each output is `x * (1 / (1 - p))` or `x * 0.0`: a Var for a Var, whose gradient is that
    factor, and a float for a number. A Tensor gets one mask, drawn by a NumPy generator seeded from the
    module's generator (so the same seed gives the same masks), and returns `x * mask` as a Tensor.
    Raises ValueError for `p` outside [0, 1] (PyTorch's message), TypeError for a
    `p` or `rng` of the wrong type and for an element that is not a Var or a real number.
    """

    def __init__(self, p: float = 0.5, *, rng: int | random.Random | None = None) -> None:
        if isinstance(p, bool) or not isinstance(p, numbers.Real):
            raise TypeError(f"Dropout: p must be a number between 0 and 1, got {type(p).__name__} {p!r}")
        if not 0.0 <= p <= 1.0:  # NOTE: also refuses nan
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
        self.p = float(p)
        if rng is None or (isinstance(rng, int) and not isinstance(rng, bool)):
            self._rng = random.Random(rng)
        elif isinstance(rng, random.Random):
            self._rng = rng
        else:
            raise TypeError(f"Dropout: rng must be an int seed or a random.Random, got {type(rng).__name__}")

    def forward(self, x: Any) -> Any:
        """`x` with dropout applied (training mode, 0 < p), or `x` itself."""
        if not isinstance(x, Tensor):
            _check_dropout_input(x)
        p = self.p
        if not self.training or p == 0.0:
            return x
        scale = 1.0 / (1.0 - p) if p < 1.0 else 0.0
        if isinstance(x, Tensor):   # one mask array, from a NumPy generator seeded by the module's own
            mask = np.random.default_rng(self._rng.getrandbits(64)).random(x.shape) >= p
            return x * (mask * scale)
        draw = self._rng.random

        def drop(v: Any) -> Any:
            if isinstance(v, (list, tuple)):
                return [drop(u) for u in v]
            return v * (scale if draw() >= p else 0.0)

        return drop(x)

    def extra_repr(self) -> str:
        """`p=0.5`: PyTorch's text without its `inplace=False` (fastgrad has no in-place ops)."""
        return f"p={self.p}"


def _check_dropout_input(x: Any) -> None:
    """TypeError unless `x` is a Var, a real number, or a (nested) list or tuple of them."""
    stack = [((), x)]
    while stack:
        where, v = stack.pop()
        if isinstance(v, (list, tuple)):
            stack.extend(((*where, i), u) for i, u in enumerate(v))
        elif not isinstance(v, (Var, numbers.Real)):
            at = f" at {list(where)}" if where else ""
            raise TypeError(f"Dropout takes a Var, a number or a list of them, got {type(v).__name__}{at}")
