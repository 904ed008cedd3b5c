"""The comparison backends: the same two-moons training step on every engine, from the same weights.

micrograd's recipe: 100 points of `make_moons(noise=0.1)`, labels ±1, `MLP(2, [16, 16, 1])`, the max-margin
(hinge) loss plus 1e-4 · L2 on every parameter, full-batch SGD with the learning rate falling linearly from
1.0 to 0.1 (`lr · (1 - 0.9·k/steps)` at step k) over 100 steps. A seed s seeds both the data
(`make_moons(random_state=s)`) and the weights (`random.Random(s)`: uniform(-1, 1), zero biases, as
micrograd does).

- `FusedBackend`: `fastgrad.nn.MLP` (one fused call per layer) + `fastgrad.optim` (C update loop);
- `EngineBackend(engine)`: a tiny MLP written against an engine module's `Var`/`dot`/`sum`: with
  `fastgrad.reference`, whose `dot`/`sum` are per-scalar Python loops, it is the pure-Python baseline;
- `ScalarBackend(Value)`: micrograd's own `nn.py` code (per-scalar `sum(wi*xi ...)`), here on `fg.Value`;
- `MicrogradBackend`: the `micrograd` package itself, when installed; `TorchBackend`: batched torch tensors.

The demo (`fastgrad.app.demo`) trains on them; the benchmark (`fastgrad.app.bench`) times them.
"""
from __future__ import annotations

import importlib.util
import math
import random
from collections.abc import Callable, Sequence
from typing import Any

import fastgrad
from fastgrad import nn, optim
from fastgrad.data import make_moons
from fastgrad.nn import functional as F

__all__ = [
    "DEFAULT_LR",
    "L2",
    "NOISE",
    "N_POINTS",
    "EngineBackend",
    "FusedBackend",
    "MicrogradBackend",
    "ScalarBackend",
    "TorchBackend",
    "initial_weights",
    "lr_factor",
    "moons",
    "moons_step_implementations",
]

N_POINTS = 100
NOISE = 0.1
L2 = 1e-4  # weight of the L2 penalty on all parameters
DEFAULT_LR = {"sgd": 1.0, "adam": 0.05}
OPTIMIZERS = tuple(DEFAULT_LR)

Weights = list  # per layer, per neuron: (list of weights, bias), as plain floats


def moons(seed: int, n: int = N_POINTS, noise: float = NOISE) -> tuple[list[list[float]], list[int]]:
    """The data set: points as lists of floats and labels as -1/+1 ints."""
    X, y = make_moons(n, noise=noise, random_state=seed)
    return X.tolist(), [2 * int(t) - 1 for t in y]


def lr_factor(k: int, steps: int) -> float:
    """micrograd's schedule: 1.0 at step 0 falling linearly by 0.9 over `steps` steps."""
    return 1.0 - 0.9 * k / steps


def accuracy(scores: Sequence[float], y: Sequence[int]) -> float:
    return sum((s > 0) == (t > 0) for s, t in zip(scores, y)) / len(y)


# ---------------------------------------------------------------------------------------------------
# backends: each trains the same model from the same weights. train_step() is the benchmarked step
# (zero_grad, forward over all points, backward, update) and returns (loss, scores); step() also
# computes the accuracy and returns plain floats.
# ---------------------------------------------------------------------------------------------------

class _Backend:
    name: str
    y: list[int]

    def train_step(self) -> tuple[Any, list[Any]]:
        raise NotImplementedError

    def step(self) -> tuple[float, float]:
        loss, scores = self.train_step()
        return loss.data, accuracy([s.data for s in scores], self.y)


class FusedBackend(_Backend):
    """fastgrad.nn + fastgrad.optim: each layer built in one engine call (a fused dot per neuron), the
    update in one C loop."""

    name = "fastgrad.nn (fused)"

    def __init__(self, weights: Weights, X: list[list[float]], y: list[int], steps: int,
                 optimizer: str = "sgd", lr: float = 1.0) -> None:
        self.model = mlp_from_weights(weights)
        self.params = self.model.parameters()
        # NOTE: inputs become leaves once, reused by every step (a float in a dot would be a new leaf per use)
        self.inputs = [[fastgrad.Var(a) for a in row] for row in X]
        self.y = y
        cls = optim.SGD if optimizer == "sgd" else optim.Adam
        self.optimizer = cls(self.params, lr=lr)
        self.scheduler = optim.lr_scheduler.LambdaLR(self.optimizer, lambda k: lr_factor(k, steps))

    def train_step(self) -> tuple[Any, list[Any]]:
        """zero_grad, forward over every point, backward, update: (loss, scores)."""
        self.optimizer.zero_grad()
        scores = [self.model(x) for x in self.inputs]
        loss = F.hinge_loss(scores, self.y) + L2 * fastgrad.dot(self.params, self.params)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        return loss, scores

    def predict(self, points: Sequence[Sequence[float]]) -> list[float]:
        return [self.model(p).data for p in points]


def layer_sizes(weights: Weights) -> list[int]:
    """[nin, n1, n2, ...] of the MLP that the weights describe."""
    return [len(weights[0][0][0])] + [len(layer) for layer in weights]


def mlp_from_weights(weights: Weights) -> nn.MLP:
    """A fastgrad.nn.MLP holding the given weights."""
    sizes = layer_sizes(weights)
    model = nn.MLP(sizes[0], sizes[1:], rng=random.Random(0))
    for layer, layer_weights in zip(model.layers, weights):
        for neuron, (w, b) in zip(layer.neurons, layer_weights):
            for p, value in zip(neuron.w, w):
                p.data = value
            neuron.b.data = b
    return model


def initial_weights(nin: int, hidden: Sequence[int], seed: int) -> Weights:
    """The weights of `fastgrad.nn.MLP(nin, [*hidden, 1], rng=random.Random(seed))`, as plain floats."""
    model = nn.MLP(nin, [*hidden, 1], rng=random.Random(seed))
    return [[([p.data for p in n.w], n.b.data) for n in layer.neurons] for layer in model.layers]


class PythonUpdate:
    """The optimizer of the per-scalar backends, in plain Python: SGD, or Adam with PyTorch's formula."""

    def __init__(self, params: list[Any], optimizer: str, lr: float, steps: int) -> None:
        self.params, self.optimizer, self.lr, self.steps, self.k = params, optimizer, lr, steps, 0
        self.m = [0.0] * len(params)
        self.v = [0.0] * len(params)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = 0.0

    def step(self) -> None:
        lr = self.lr * lr_factor(self.k, self.steps)
        self.k += 1
        if self.optimizer == "sgd":
            for p in self.params:
                p.data -= lr * p.grad
            return
        beta1, beta2, eps, t = 0.9, 0.999, 1e-8, self.k
        step_size = lr / (1 - beta1 ** t)
        bc2_sqrt = (1 - beta2 ** t) ** 0.5
        m, v = self.m, self.v
        for i, p in enumerate(self.params):
            g = p.grad
            m[i] = m[i] + (1 - beta1) * (g - m[i])
            v[i] = v[i] * beta2 + (1 - beta2) * g * g
            p.data = p.data + -step_size * m[i] / (math.sqrt(v[i]) / bc2_sqrt + eps)


class EngineBackend(_Backend):
    """A tiny MLP written once against an engine module (`Var`, `dot`, `sum`, `.relu()`): with
    `fastgrad.reference` it is the pure-Python baseline (per-scalar nodes inside `dot` and `sum`)."""

    def __init__(self, engine: Any, weights: Weights, X: list[list[float]], y: list[int], steps: int,
                 optimizer: str = "sgd", lr: float = 1.0, name: str | None = None) -> None:
        self.engine = engine
        self.name = name or engine.__name__
        Var = engine.Var
        # rows [b, w0, w1, ...] per neuron, so that a neuron is dot(row, [1, x0, x1, ...])
        self.layers = [[[Var(b), *(Var(v) for v in w)] for w, b in layer] for layer in weights]
        self.params = [p for layer in self.layers for row in layer for p in (*row[1:], row[0])]
        self.one = Var(1.0)
        self.inputs = [[Var(a) for a in row] for row in X]
        self.y = y
        self.update = PythonUpdate(self.params, optimizer, lr, steps)

    def forward(self, x: list[Any]) -> Any:
        dot, last = self.engine.dot, len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            xb = [self.one, *x]
            x = [dot(row, xb) for row in layer]
            if i != last:
                x = [v.relu() for v in x]
        return x[0]

    def train_step(self) -> tuple[Any, list[Any]]:
        e = self.engine
        self.update.zero_grad()
        scores = [self.forward(x) for x in self.inputs]
        terms = [(1.0 - s).relu() if t > 0 else (s + 1.0).relu() for s, t in zip(scores, self.y)]
        loss = e.sum(terms) * (1.0 / len(terms)) + L2 * e.dot(self.params, self.params)
        loss.backward()
        self.update.step()
        return loss, scores


class ScalarMLP:
    """micrograd's nn.py over any Value class: per-scalar nodes, `sum((wi*xi ...), b)` in every neuron."""

    def __init__(self, Value: Any, weights: Weights) -> None:
        self.layers = [[([Value(v) for v in w], Value(b)) for w, b in layer] for layer in weights]

    def __call__(self, x: list[Any]) -> Any:
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            out = [sum((wi * xi for wi, xi in zip(w, x)), b) for w, b in layer]
            x = [v.relu() for v in out] if i != last else out
        return x[0] if len(x) == 1 else x

    def parameters(self) -> list[Any]:
        return [p for layer in self.layers for w, b in layer for p in (*w, b)]


class ScalarBackend(_Backend):
    """micrograd's demo loop, verbatim in spirit, on a Value class (default `fastgrad.Value`)."""

    def __init__(self, weights: Weights, X: list[list[float]], y: list[int], steps: int,
                 optimizer: str = "sgd", lr: float = 1.0, Value: Any = None, name: str | None = None) -> None:
        self.Value = Value or fastgrad.Value
        self.name = name or "fg.Value, micrograd-style"
        self.model = self._model(weights)
        self.params = self.model.parameters()
        self.X, self.y = X, y
        self.update = PythonUpdate(self.params, optimizer, lr, steps)

    def _model(self, weights: Weights) -> Any:
        return ScalarMLP(self.Value, weights)

    def train_step(self) -> tuple[Any, list[Any]]:
        Value = self.Value
        inputs = [list(map(Value, row)) for row in self.X]
        scores = list(map(self.model, inputs))
        losses = [(1 + -yi * si).relu() for yi, si in zip(self.y, scores)]
        data_loss = sum(losses) * (1.0 / len(losses))
        reg_loss = L2 * sum(p * p for p in self.params)
        total = data_loss + reg_loss
        self.update.zero_grad()
        total.backward()
        self.update.step()
        return total, scores


class MicrogradBackend(ScalarBackend):
    """The `micrograd` package itself (its nn.MLP and Value), with our weights copied in."""

    def __init__(self, weights: Weights, X: list[list[float]], y: list[int], steps: int,
                 optimizer: str = "sgd", lr: float = 1.0) -> None:
        from micrograd.engine import Value

        super().__init__(weights, X, y, steps, optimizer, lr, Value=Value, name="micrograd")

    def _model(self, weights: Weights) -> Any:
        from micrograd.nn import MLP

        sizes = layer_sizes(weights)
        model = MLP(sizes[0], sizes[1:])
        flat = [v for layer in weights for w, b in layer for v in (*w, b)]
        for p, value in zip(model.parameters(), flat):
            p.data = value
        return model


class TorchBackend:
    """PyTorch, batched float64 tensors (the whole data set in one matmul per layer) — for reference only."""

    name = "torch (batched tensors)"

    def __init__(self, weights: Weights, X: list[list[float]], y: list[int], steps: int,
                 optimizer: str = "sgd", lr: float = 1.0) -> None:
        import torch

        self.torch = torch
        dt = torch.float64
        self.Ws = [torch.tensor([w for w, _ in layer], dtype=dt, requires_grad=True) for layer in weights]
        self.bs = [torch.tensor([b for _, b in layer], dtype=dt, requires_grad=True) for layer in weights]
        self.params = [p for pair in zip(self.Ws, self.bs) for p in pair]
        self.X = torch.tensor(X, dtype=dt)
        self.y = torch.tensor(y, dtype=dt)
        cls = torch.optim.SGD if optimizer == "sgd" else torch.optim.Adam
        self.optimizer = cls(self.params, lr=lr)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda k: lr_factor(k, steps))

    def train_step(self) -> tuple[Any, Any]:
        torch = self.torch
        self.optimizer.zero_grad()
        h = self.X
        for i, (W, b) in enumerate(zip(self.Ws, self.bs)):
            h = h @ W.T + b
            if i != len(self.Ws) - 1:
                h = torch.relu(h)
        scores = h[:, 0]
        loss = torch.relu(1 - self.y * scores).mean() + L2 * sum((p * p).sum() for p in self.params)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        return loss, scores

    def step(self) -> tuple[float, float]:
        loss, scores = self.train_step()
        return loss.item(), ((self.y > 0) == (scores > 0)).double().mean().item()


def _importable(name: str) -> bool:

    return importlib.util.find_spec(name) is not None


def _have_matplotlib() -> bool:
    return _importable("matplotlib")


# ---------------------------------------------------------------------------------------------------
# the benchmark of one training step (used by `python -m fastgrad bench`)
# ---------------------------------------------------------------------------------------------------

MOONS_WORKLOAD = "moons step (100 pts, MLP 2-16-16-1)"
REFERENCE_NAME = "fastgrad.reference (pure Python)"


def moons_step_implementations(weights: Weights, X: list[list[float]], y: list[int], steps: int
                               ) -> list[tuple[str, Callable[[], Any], int]]:
    """(name, factory, cost class) of every implementation of the moons step that can run here."""
    from fastgrad import reference

    impls: list[tuple[str, Callable[[], Any], int]] = [
        ("fastgrad.nn (one fused call per layer)", lambda: FusedBackend(weights, X, y, steps), 0),
        ("fastgrad engine API (fg.dot, no nn)", lambda: EngineBackend(fastgrad, weights, X, y, steps), 0),
        ("fg.Value, micrograd-style per-scalar", lambda: ScalarBackend(weights, X, y, steps), 1),
        (REFERENCE_NAME, lambda: EngineBackend(reference, weights, X, y, steps), 2),
    ]
    if _importable("micrograd"):
        impls.append(("micrograd", lambda: MicrogradBackend(weights, X, y, steps), 2))
    if _importable("torch"):
        impls.append(("torch (batched float64 tensors)", lambda: TorchBackend(weights, X, y, steps), 0))
    return impls


def step_graph_nodes(loss: Any) -> int:
    """The nodes of one step's graph, leaves included: fastgrad's from `fastgrad.stats`, a Python engine's
    walked along `_prev`, torch's autograd nodes (one per tensor op, one per leaf parameter) along
    `grad_fn.next_functions`."""
    from fastgrad.app.workloads import walk_nodes

    if isinstance(loss, fastgrad.Var):
        return fastgrad.stats(loss).nodes
    if hasattr(loss, "grad_fn"):
        seen, stack = set(), [loss.grad_fn]
        while stack:
            fn = stack.pop()
            if fn is not None and fn not in seen:
                seen.add(fn)
                stack.extend(f for f, _ in fn.next_functions)
        return len(seen)
    return walk_nodes(loss)
