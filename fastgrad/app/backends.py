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
- `CompiledBackend`: FusedBackend's model, loss and optimizer, the loss traced once by `fg.compile` and
  replayed in C (forward and backward) at every step: the same losses bit for bit;
- `BatchedBackend`: one point's hinge term traced once and replayed over the 100 points by `fg.vmap`
  (mean), the L2 term by a second, tiny `fg.compile`: the same losses to rounding (~1e-16);
- `NumpyBackend`: the same MLP, loss and update written by hand in NumPy (float64 arrays, the backward pass
  derived by hand): the floor a scalar engine is measured against;
- `TensorBackend`: NumpyBackend's batched step on `fg.Tensor` parameters (one matmul per layer over all
  points), differentiated by the engine, updated by `fastgrad.optim`: the same losses to rounding (~1e-16);
- `JaxBackend`: the NumPy step's math under `jax.jit` (float64), when `jax` is installed;
- `MicrogradBackend`: the `micrograd` package itself, when installed; `TorchBackend`: batched torch tensors.

The demo (`fastgrad.app.demo`) trains on them; the benchmark (`fastgrad.app.bench`) times them.
"""
from __future__ import annotations

import importlib.util
import math
import random
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

import fastgrad
from fastgrad import nn, optim
from fastgrad.data import make_moons
from fastgrad.nn import functional as F

__all__ = [
    "DEFAULT_LR",
    "L2",
    "NOISE",
    "N_POINTS",
    "BatchedBackend",
    "CompiledBackend",
    "EngineBackend",
    "FusedBackend",
    "JaxBackend",
    "MicrogradBackend",
    "NumpyBackend",
    "ScalarBackend",
    "TensorBackend",
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


class CompiledBackend(FusedBackend):
    """FusedBackend's model, loss and optimizer with the loss compiled by `fg.compile`: traced on the first
    step, then replayed in C, forward and backward, at every step. The scores come back as the tape's
    auxiliary results (floats), so the accuracy needs no graph. Its losses are FusedBackend's bit for bit."""

    name = "fg.compile (fastgrad.nn, replayed)"

    def __init__(self, weights: Weights, X: list[list[float]], y: list[int], steps: int,
                 optimizer: str = "sgd", lr: float = 1.0) -> None:
        super().__init__(weights, X, y, steps, optimizer, lr)
        self.X = np.array(X, dtype=np.float64)
        model, params, labels = self.model, self.params, list(y)

        def loss_and_scores(points: Any) -> tuple[Any, list[Any]]:
            # points: during the trace, a (100, 2) object array of leaf Vars; labels are trace constants
            scores = [model(x) for x in points]
            return F.hinge_loss(scores, labels) + L2 * fastgrad.dot(params, params), scores

        self.loss = fastgrad.compile(loss_and_scores)

    def train_step(self) -> tuple[Any, list[float]]:
        """zero_grad, one replay (forward and backward), update: (loss Var, scores as floats)."""
        self.optimizer.zero_grad()
        loss, scores = self.loss(self.X)
        self.optimizer.step()
        self.scheduler.step()
        return loss, scores

    def step(self) -> tuple[float, float]:
        loss, scores = self.train_step()
        return loss.data, accuracy(scores, self.y)

    def graph_nodes(self) -> int:
        """The nodes of the tape replayed per step (its inputs included): those of FusedBackend's graph."""
        return self.loss.tape(self.X).n


class BatchedBackend(FusedBackend):
    """FusedBackend's model and optimizer; the loss is one point's hinge term, `relu(1 - y·score)`, traced
    once and replayed over the 100 points by `fg.vmap(reduce="mean")`, plus the L2 term, which belongs to no
    sample: a second `fg.compile` (a tape of three nodes over the parameters), added to the mean.

    The per-point terms are FusedBackend's bit for bit (y = ±1, so y·score is exact); the gradients are
    summed over the points in another order, so the losses agree to rounding (~1e-16), not bit for bit.
    `threads`: fg.vmap's threads (default: the usable cores; 100 points are one block of 128 anyway)."""

    name = "fg.vmap (fastgrad.nn per point, batched)"

    def __init__(self, weights: Weights, X: list[list[float]], y: list[int], steps: int,
                 optimizer: str = "sgd", lr: float = 1.0, threads: int | None = None) -> None:
        super().__init__(weights, X, y, steps, optimizer, lr)
        self.X = np.array(X, dtype=np.float64)
        self.labels = np.array(y, dtype=np.float64)
        model, params = self.model, self.params

        def point_loss(x: Any, label: Any) -> tuple[Any, list[Any]]:
            score = model(x)
            return (1.0 - label * score).relu(), [score]

        self.point_loss = point_loss
        self.data_loss = fastgrad.vmap(point_loss, reduce="mean", threads=threads)
        self.penalty = fastgrad.compile(lambda: L2 * fastgrad.dot(params, params))

    def train_step(self) -> tuple[Any, list[float]]:
        """zero_grad, the batched replay and the penalty's (each forward and backward), update."""
        self.optimizer.zero_grad()
        data_loss, (scores,) = self.data_loss(self.X, self.labels)
        loss = fastgrad.Var(data_loss.data + self.penalty().data)  # the sum FusedBackend's graph computes
        self.optimizer.step()
        self.scheduler.step()
        return loss, scores.tolist()

    def step(self) -> tuple[float, float]:
        loss, scores = self.train_step()
        return loss.data, accuracy(scores, self.y)

    def graph_nodes(self) -> int:
        """The nodes of the eager graph of the same computation: every point's ops and inputs (x and its
        label), the parameters once, the penalty's ops, and the mean and the sum (3 nodes)."""
        point = fastgrad.compile(self.point_loss).tape(self.X[0], float(self.labels[0]))
        penalty = self.penalty.tape()
        n = len(self.X)
        per_point = point.n - point.nin + point.nargs
        return n * per_point + (point.nin - point.nargs) + (penalty.n - penalty.nin) + 3


class NumpyBackend:
    """The same MLP, loss and optimizer by hand in NumPy: float64 arrays, one matmul per layer over all
    points, the backward pass derived by hand. No autodiff: the floor for what a step costs in Python."""

    name = "numpy (hand-written forward + backward)"

    def __init__(self, weights: Weights, X: list[list[float]], y: list[int], steps: int,
                 optimizer: str = "sgd", lr: float = 1.0) -> None:
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {optimizer!r}")
        self.Ws = [np.array([w for w, _ in layer], dtype=np.float64) for layer in weights]  # (out, in)
        self.bs = [np.array([b for _, b in layer], dtype=np.float64) for layer in weights]  # (out,)
        self.X = np.array(X, dtype=np.float64)
        self.y = np.array(y, dtype=np.float64)
        self.optimizer, self.lr, self.steps, self.k = optimizer, lr, steps, 0
        self.m = [np.zeros_like(p) for p in (*self.Ws, *self.bs)]  # Adam's moments
        self.v = [np.zeros_like(p) for p in (*self.Ws, *self.bs)]

    def train_step(self) -> tuple[float, np.ndarray]:
        """Forward over all points, the hand-derived backward, the update: (loss, scores)."""
        Ws, bs, y, last = self.Ws, self.bs, self.y, len(self.Ws) - 1
        # forward, keeping what backward needs: each layer's input and pre-activation
        inputs, pre = [], []
        h = self.X
        for i, (W, b) in enumerate(zip(Ws, bs)):
            inputs.append(h)
            z = h @ W.T + b
            pre.append(z)
            h = z if i == last else np.maximum(z, 0.0)
        scores = h[:, 0]
        margins = 1.0 - y * scores
        params = [*Ws, *bs]
        loss = np.maximum(margins, 0.0).mean() + L2 * sum(float((p * p).sum()) for p in params)
        # backward: d loss / d score = -y / n where the margin is positive (relu'(0) = 0, as in fastgrad)
        dz = (np.where(margins > 0.0, -y, 0.0) / len(y))[:, None]
        dWs, dbs = [None] * len(Ws), [None] * len(bs)
        for i in range(last, -1, -1):
            dWs[i] = dz.T @ inputs[i] + 2.0 * L2 * Ws[i]
            dbs[i] = dz.sum(axis=0) + 2.0 * L2 * bs[i]
            if i:
                dz = (dz @ Ws[i]) * (pre[i - 1] > 0.0)
        self._update(params, [*dWs, *dbs])
        return float(loss), scores

    def _update(self, params: list[np.ndarray], grads: list[np.ndarray]) -> None:
        """In place: SGD, or Adam with PyTorch's formula; the learning rate on micrograd's schedule."""
        lr = self.lr * lr_factor(self.k, self.steps)
        self.k += 1
        if self.optimizer == "sgd":
            for p, g in zip(params, grads):
                p -= lr * g
            return
        beta1, beta2, eps, t = 0.9, 0.999, 1e-8, self.k
        step_size = lr / (1 - beta1 ** t)
        bc2_sqrt = (1 - beta2 ** t) ** 0.5
        for p, g, m, v in zip(params, grads, self.m, self.v):
            m += (1 - beta1) * (g - m)
            v *= beta2
            v += (1 - beta2) * g * g
            p -= step_size * m / (np.sqrt(v) / bc2_sqrt + eps)

    def step(self) -> tuple[float, float]:
        loss, scores = self.train_step()
        return loss, accuracy(scores.tolist(), self.y.tolist())

    def graph_nodes(self) -> None:
        return None  # no graph


class TensorBackend:
    """NumpyBackend's step on `fg.Tensor`s: `fastgrad.nn.MLP(tensor=True)` holding the weights (each layer a
    `Linear` whose weight W (out, in) and bias b (out,) are leaf Tensors, its forward one fused engine node
    `h @ W.T + b` over all 100 points), the same loss, hinge mean + L2 · Σ(p·p).sum(), the gradients the
    engine's, the update `fastgrad.optim` (SGD or Adam) on micrograd's schedule (`LambdaLR`). Its losses
    are NumpyBackend's to rounding (~1e-16): the sums run in another order."""

    name = "fastgrad Tensor (batched)"

    def __init__(self, weights: Weights, X: list[list[float]], y: list[int], steps: int,
                 optimizer: str = "sgd", lr: float = 1.0) -> None:
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {optimizer!r}")
        Tensor = fastgrad.Tensor
        sizes = layer_sizes(weights)
        self.model = nn.MLP(sizes[0], sizes[1:], rng=random.Random(0), tensor=True)
        for layer, layer_weights in zip(self.model.layers, weights):
            layer.weight.data[...] = [w for w, _ in layer_weights]      # (out, in)
            layer.bias.data[...] = [b for _, b in layer_weights]        # (out,)
        self.params = self.model.parameters()                           # [W0, b0, W1, b1, ...]
        self.X = Tensor(X)
        # NOTE: labels as a (100, 1) Tensor made once: a Tensor operand takes the engine's fast path, an
        # ndarray would be converted at every use
        self.labels = Tensor(np.array(y, dtype=np.float64)[:, None])
        self.y = y
        cls = optim.SGD if optimizer == "sgd" else optim.Adam
        self.optimizer = cls(self.params, lr=lr)
        self.scheduler = optim.lr_scheduler.LambdaLR(self.optimizer, lambda k: lr_factor(k, steps))

    def train_step(self) -> tuple[Any, Any]:
        """zero_grad, the batched forward, backward, update: (loss, scores), 0-d and (100, 1) Tensors."""
        self.optimizer.zero_grad()
        scores = self.model(self.X)
        loss = (1.0 - self.labels * scores).relu().mean() + L2 * sum((p * p).sum() for p in self.params)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        return loss, scores

    def step(self) -> tuple[float, float]:
        loss, scores = self.train_step()
        return loss.item(), accuracy(scores.data[:, 0].tolist(), self.y)

    def predict(self, points: Sequence[Sequence[float]]) -> list[float]:
        """The model's scores of these points (one batch, no graph built)."""
        with fastgrad.no_grad():
            return self.model(np.asarray(points, dtype=np.float64)).data[:, 0].tolist()


class JaxBackend:
    """NumpyBackend's step in JAX: the loss written once, its gradient by `jax.value_and_grad`, the whole
    step (forward, backward, update) under one `jax.jit`, float64. Needs `jax`; turns on JAX's float64 mode
    (`jax_enable_x64`) for the process."""

    name = "jax.jit (batched float64 arrays)"

    def __init__(self, weights: Weights, X: list[list[float]], y: list[int], steps: int,
                 optimizer: str = "sgd", lr: float = 1.0) -> None:
        import jax

        jax.config.update("jax_enable_x64", True)
        import jax.numpy as jnp

        if optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {optimizer!r}")
        self.jax = jax
        f64 = jnp.float64
        self.params = [(jnp.array([w for w, _ in layer], dtype=f64),
                        jnp.array([b for _, b in layer], dtype=f64)) for layer in weights]
        self.moments = jax.tree_util.tree_map(lambda p: (jnp.zeros_like(p), jnp.zeros_like(p)), self.params)
        self.X, self.y = jnp.array(X, dtype=f64), jnp.array(y, dtype=f64)
        self.optimizer, self.lr, self.steps, self.k = optimizer, lr, steps, 0
        last = len(weights) - 1

        def loss_fn(params: Any, X: Any, y: Any) -> tuple[Any, Any]:
            h = X
            for i, (W, b) in enumerate(params):
                h = h @ W.T + b
                if i != last:
                    h = jax.nn.relu(h)
            scores = h[:, 0]
            penalty = sum(jnp.sum(W * W) + jnp.sum(b * b) for W, b in params)
            return jnp.mean(jax.nn.relu(1.0 - y * scores)) + L2 * penalty, scores

        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

        def sgd(params: Any, moments: Any, X: Any, y: Any, lr: Any, t: Any) -> tuple[Any, ...]:
            (loss, scores), grads = grad_fn(params, X, y)
            return jax.tree_util.tree_map(lambda p, g: p - lr * g, params, grads), moments, loss, scores

        def adam(params: Any, moments: Any, X: Any, y: Any, lr: Any, t: Any) -> tuple[Any, ...]:
            (loss, scores), grads = grad_fn(params, X, y)
            beta1, beta2, eps = 0.9, 0.999, 1e-8
            step_size, bc2_sqrt = lr / (1 - beta1 ** t), jnp.sqrt(1 - beta2 ** t)
            flat_p, tree = jax.tree_util.tree_flatten(params)
            flat_g = tree.flatten_up_to(grads)
            flat_mv = tree.flatten_up_to(moments)
            new_p, new_mv = [], []
            for p, g, (m, v) in zip(flat_p, flat_g, flat_mv):
                m = m + (1 - beta1) * (g - m)
                v = v * beta2 + (1 - beta2) * g * g
                new_p.append(p - step_size * m / (jnp.sqrt(v) / bc2_sqrt + eps))
                new_mv.append((m, v))
            return tree.unflatten(new_p), tree.unflatten(new_mv), loss, scores

        self._step = jax.jit(sgd if optimizer == "sgd" else adam)

    def train_step(self) -> tuple[Any, Any]:
        """One jitted step, waited for (JAX dispatches asynchronously): (loss, scores) as JAX arrays."""
        lr = self.lr * lr_factor(self.k, self.steps)
        self.k += 1
        self.params, self.moments, loss, scores = self._step(self.params, self.moments, self.X, self.y,
                                                             lr, float(self.k))
        return self.jax.block_until_ready((loss, scores))

    def step(self) -> tuple[float, float]:
        loss, scores = self.train_step()
        return float(loss), accuracy(np.asarray(scores).tolist(), np.asarray(self.y).tolist())

    def graph_nodes(self) -> None:
        return None  # XLA's program, not a graph of nodes


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
NUMPY_NAME = "numpy, hand-written forward + backward"
TENSOR_NAME = "fastgrad Tensor (batched)"
TORCH_NAME = "torch (batched float64 tensors)"
COMPILED_NAME = "fg.compile step (fastgrad.nn traced, replayed)"
VMAP_NAME = "fg.vmap per-point loss (batched replay)"
JAX_NAME = "jax.jit (batched float64 arrays)"


def moons_step_implementations(weights: Weights, X: list[list[float]], y: list[int], steps: int
                               ) -> list[tuple[str, Callable[[], Any], int]]:
    """(name, factory, cost class) of every implementation of the moons step that can run here."""
    from fastgrad import reference

    impls: list[tuple[str, Callable[[], Any], int]] = [
        ("fastgrad.nn (one fused call per layer)", lambda: FusedBackend(weights, X, y, steps), 0),
        (COMPILED_NAME, lambda: CompiledBackend(weights, X, y, steps), 0),
        # one thread, as every implementation here (100 points are one block of fg.vmap's 128 anyway)
        (VMAP_NAME, lambda: BatchedBackend(weights, X, y, steps, threads=1), 0),
        ("fastgrad engine API (fg.dot, no nn)", lambda: EngineBackend(fastgrad, weights, X, y, steps), 0),
        ("fg.Value, micrograd-style per-scalar", lambda: ScalarBackend(weights, X, y, steps), 1),
        (REFERENCE_NAME, lambda: EngineBackend(reference, weights, X, y, steps), 2),
    ]
    if _importable("micrograd"):
        impls.append(("micrograd", lambda: MicrogradBackend(weights, X, y, steps), 2))
    impls.append((TENSOR_NAME, lambda: TensorBackend(weights, X, y, steps), 0))
    impls.append((NUMPY_NAME, lambda: NumpyBackend(weights, X, y, steps), 0))
    if _importable("torch"):
        impls.append((TORCH_NAME, lambda: TorchBackend(weights, X, y, steps), 0))
    if _importable("jax"):
        impls.append((JAX_NAME, lambda: JaxBackend(weights, X, y, steps), 0))
    return impls


def step_graph_nodes(loss: Any, backend: Any = None) -> int | None:
    """The nodes of one step's graph, leaves included: a backend's own count when it has one
    (`graph_nodes()`: a compiled tape's nodes; None for NumPy and JAX, which build no graph), fastgrad's
    (a Var's or a Tensor's) from `fastgrad.stats`, a Python engine's walked along `_prev`, torch's autograd
    nodes (one per tensor op, one per leaf parameter) along `grad_fn.next_functions`."""
    from fastgrad.app.workloads import walk_nodes

    if backend is not None and hasattr(backend, "graph_nodes"):
        return backend.graph_nodes()
    if isinstance(loss, fastgrad.Var):
        return fastgrad.stats(loss).nodes
    if isinstance(loss, fastgrad.Tensor):
        # NOTE: fastgrad.stats takes a Var; a Tensor's graph is the engine's, reached through its node
        return fastgrad.stats(loss._node).nodes
    if hasattr(loss, "grad_fn"):
        seen, stack = set(), [loss.grad_fn]
        while stack:
            fn = stack.pop()
            if fn is not None and fn not in seen:
                seen.add(fn)
                stack.extend(f for f, _ in fn.next_functions)
        return len(seen)
    return walk_nodes(loss)
