"""nn layers with Tensor parameters (`tensor=True`): batches in, Tensors out, and the very numbers of the
scalar layers they mirror (same draws, same outputs, same gradients, same training)."""
import copy
import gc
import pickle
import random

import numpy as np
import pytest

import fastgrad as fg
from fastgrad import _engine, nn, optim
from fastgrad.tensor_functional import cross_entropy

RNG = np.random.default_rng(3)


def _scalar_arrays(model, field="data"):
    """(weight, bias) arrays of each layer of a scalar MLP: values, or gradients with field="grad"."""
    return [(np.array([[getattr(w, field) for w in n.w] for n in layer.neurons]),
             np.array([getattr(n.b, field) for n in layer.neurons])) for layer in model.layers]


def _scalar_grads(model):
    return _scalar_arrays(model, "grad")


def test_linear_draws_the_same_values_as_the_scalar_linear():
    a = nn.Linear(5, 3, rng=random.Random(4))
    b = nn.Linear(5, 3, rng=random.Random(4), tensor=True)
    assert isinstance(b.weight, fg.Tensor) and b.weight.shape == (3, 5) and b.bias.shape == (3,)
    assert np.array_equal(b.weight.data, [[w.data for w in row] for row in a.weight])
    assert np.array_equal(b.bias.data, [v.data for v in a.bias])
    bound = 1 / np.sqrt(5)
    assert np.all(np.abs(b.weight.data) <= bound)
    assert nn.Linear(5, 3, bias=False, tensor=True).bias is None


@pytest.mark.parametrize("init", ["micrograd", "pytorch"])
@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_mlp_on_a_batch_equals_the_scalar_mlp_on_each_row(init, activation):
    scalar = nn.MLP(3, [6, 5, 2], rng=random.Random(9), init=init, activation=activation)
    batch = nn.MLP(3, [6, 5, 2], rng=random.Random(9), init=init, activation=activation, tensor=True)
    for (w, b), layer in zip(_scalar_arrays(scalar), batch.layers):
        assert np.array_equal(w, layer.weight.data) and np.array_equal(b, layer.bias.data)
    X = RNG.standard_normal((7, 3))
    out = batch(X)
    assert isinstance(out, fg.Tensor) and out.shape == (7, 2)
    rows = [scalar(list(x)) for x in X]
    np.testing.assert_allclose(out.data, [[v.data for v in r] for r in rows], rtol=1e-13, atol=1e-14)
    weights = RNG.standard_normal((7, 2))
    (out * weights).sum().backward()
    fg.sum([v * float(c) for r, cs in zip(rows, weights) for v, c in zip(r, cs)]).backward()
    for (gw, gb), layer in zip(_scalar_grads(scalar), batch.layers):
        np.testing.assert_allclose(layer.weight.grad, gw, rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(layer.bias.grad, gb, rtol=1e-12, atol=1e-13)


def test_adam_training_on_tensors_follows_the_scalar_model():
    X = RNG.standard_normal((12, 4))
    y = RNG.integers(0, 3, size=12)
    scalar = nn.MLP(4, [8, 3], rng=random.Random(2), init="pytorch")
    batch = nn.MLP(4, [8, 3], rng=random.Random(2), init="pytorch", tensor=True)
    opt_s, opt_b = optim.Adam(scalar.parameters(), lr=0.01), optim.Adam(batch.parameters(), lr=0.01)
    for _ in range(5):
        opt_b.zero_grad()
        loss_b = cross_entropy(batch(X), y)
        loss_b.backward()
        opt_b.step()
        opt_s.zero_grad()
        loss_s = nn.functional.cross_entropy([scalar(list(x)) for x in X], list(y))
        loss_s.backward()
        opt_s.step()
        assert abs(loss_b.item() - loss_s.data) < 1e-12
    for (w, b), layer in zip(_scalar_arrays(scalar), batch.layers):
        np.testing.assert_allclose(layer.weight.data, w, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(layer.bias.data, b, rtol=1e-12, atol=1e-12)


def test_module_api_on_tensor_parameters():
    model = nn.MLP(3, [4, 2], rng=random.Random(0), tensor=True)
    params = model.parameters()
    assert [p.shape for p in params] == [(4, 3), (4,), (2, 4), (2,)]
    assert model.num_parameters() == 3 * 4 + 4 + 4 * 2 + 2
    assert [k for k, _ in model.named_parameters()] == ["layers.0.weight", "layers.0.bias", "layers.1.weight",
                                                        "layers.1.bias"]
    state = model.state_dict()
    assert all(isinstance(v, np.ndarray) for v in state.values())
    state["layers.0.weight"][0, 0] = 123.0            # a copy: the model is untouched
    assert model.layers[0].weight.data[0, 0] != 123.0
    other = nn.MLP(3, [4, 2], rng=random.Random(1), tensor=True)
    data = other.layers[1].weight.data
    other.load_state_dict(model.state_dict())
    assert other.layers[1].weight.data is data          # in place
    for p, q in zip(model.parameters(), other.parameters()):
        assert np.array_equal(p.data, q.data)
    bad = model.state_dict()
    bad["layers.0.bias"] = np.zeros(5)
    with pytest.raises(RuntimeError, match="size mismatch for layers.0.bias"):
        other.load_state_dict(bad)
    model(RNG.standard_normal((5, 3))).sum().backward()
    assert all(p.grad is not None and np.any(p.grad != 0) for p in params)
    model.zero_grad()
    assert all(np.all(p.grad == 0) for p in params)
    clone = pickle.loads(pickle.dumps(model))
    deep = copy.deepcopy(model)
    X = RNG.standard_normal((2, 3))
    assert np.array_equal(clone(X).data, model(X).data) and np.array_equal(deep(X).data, model(X).data)


def test_a_frozen_tensor_layer_gets_no_gradient_and_no_update():
    model = nn.Sequential(nn.Linear(3, 4, tensor=True), nn.Tanh(), nn.Linear(4, 1, tensor=True))
    model[0].requires_grad_(False)
    assert not model[0].weight.requires_grad and len(model.parameters()) == 4
    opt = optim.SGD(model.parameters(), lr=0.1)
    before = model[0].weight.data.copy()
    model(RNG.standard_normal((6, 3))).mean().backward()
    assert model[0].weight.grad is None and model[2].weight.grad is not None
    opt.step()
    assert np.array_equal(model[0].weight.data, before)
    model[0].requires_grad_(True)
    model(RNG.standard_normal((6, 3))).mean().backward()
    assert model[0].weight.grad is not None


def test_batches_in_no_grad_build_no_nodes():
    model = nn.MLP(4, [8, 3], tensor=True)
    X = RNG.standard_normal((10, 4))
    model(X)        # warm
    gc.collect()
    before = _engine.memory_stats()["nodes_alive"]
    with fg.no_grad():
        out = model(X)
    assert not out.requires_grad and out.shape == (10, 3)
    assert _engine.memory_stats()["nodes_alive"] == before


def test_errors_name_the_layer():
    layer = nn.Linear(4, 3, tensor=True)
    with pytest.raises(ValueError, match=r"Linear\(in_features=4.*rows of 4 features.*shape \(2, 5\)"):
        layer(np.ones((2, 5)))
    with pytest.raises(ValueError, match="expects rows of 4 features"):
        layer(np.ones((2, 2, 4)))
    with pytest.raises(TypeError, match="takes a batch of rows"):
        layer([["a", "b", "c", "d"]])
    with pytest.raises(TypeError, match="build Linear or MLP with tensor=True"):
        nn.Linear(4, 3)(np.ones((2, 4)))
    with pytest.raises(TypeError, match="build Linear or MLP with tensor=True"):
        nn.MLP(4, [3])(fg.Tensor(np.ones((2, 4))))
    with pytest.raises(TypeError, match="tensor must be a bool"):
        nn.Linear(4, 3, tensor=1)
    with pytest.raises(TypeError, match="tensor must be a bool"):
        nn.MLP(4, [3], tensor="yes")


def test_one_row_and_float32_batches():
    layer = nn.Linear(3, 2, tensor=True)
    x = RNG.standard_normal(3)
    y1 = layer(x)
    assert y1.shape == (2,)
    np.testing.assert_allclose(y1.data, layer.weight.data @ x + layer.bias.data, rtol=1e-14)
    x32 = fg.Tensor(RNG.standard_normal((4, 3)).astype(np.float32))
    y = layer(x32)                      # float64 parameters: a float64 result, through the general ops
    assert y.dtype == np.float64 and y.shape == (4, 2)
    np.testing.assert_allclose(y.data, x32.data.astype(float) @ layer.weight.data.T + layer.bias.data,
                               rtol=1e-6)
    y.sum().backward()
    np.testing.assert_allclose(layer.bias.grad, [4.0, 4.0])


def test_nn_functional_losses_and_loss_modules_take_tensors():
    from fastgrad import tensor_functional as tf
    from fastgrad.nn import functional as F
    logits = RNG.standard_normal((6, 4))
    labels = RNG.integers(0, 4, size=6)
    values, targets = RNG.standard_normal((6, 3)), RNG.standard_normal((6, 3))
    bits = (RNG.random((6, 3)) > 0.5).astype(float)
    cases = [
        (lambda t: F.cross_entropy(t, labels, label_smoothing=0.1), lambda t: tf.cross_entropy(
            t, labels, label_smoothing=0.1), logits),
        (lambda t: nn.CrossEntropyLoss(reduction="sum")(t, labels),
         lambda t: tf.cross_entropy(t, labels, reduction="sum"), logits),
        (lambda t: F.mse_loss(t, targets), lambda t: tf.mse_loss(t, targets), values),
        (lambda t: nn.MSELoss()(t, targets), lambda t: tf.mse_loss(t, targets), values),
        (lambda t: nn.BCEWithLogitsLoss(pos_weight=2.0)(t, bits),
         lambda t: tf.binary_cross_entropy_with_logits(t, bits, pos_weight=2.0), values),
    ]
    for via_nn, direct, data in cases:
        a, b = fg.Tensor(data, requires_grad=True), fg.Tensor(data, requires_grad=True)
        la, lb = via_nn(a), direct(b)
        assert isinstance(la, fg.Tensor) and np.array_equal(la.data, lb.data)
        la.backward()
        lb.backward()
        assert np.array_equal(a.grad, b.grad)
    # the losses written for Vars say where Tensor losses are, instead of failing on the shapes
    t = fg.Tensor(values, requires_grad=True)
    for loss in (F.l1_loss, F.huber_loss, F.smooth_l1_loss, F.binary_cross_entropy):
        with pytest.raises(TypeError, match="fastgrad.tensor_functional"):
            loss(t, targets)
    with pytest.raises(TypeError, match="fastgrad.tensor_functional"):
        F.nll_loss(fg.Tensor(logits), labels)
    with pytest.raises(TypeError, match="fastgrad.tensor_functional"):
        nn.L1Loss()(t, targets)


def test_dropout_on_a_tensor():
    x = fg.Tensor(RNG.standard_normal((50, 40)), requires_grad=True)
    drop = nn.Dropout(0.25, rng=5)
    y = drop(x)
    kept = y.data != 0
    assert 0.7 < kept.mean() < 0.8                           # about 1 - p kept
    np.testing.assert_allclose(y.data[kept], x.data[kept] / 0.75, rtol=1e-15)
    y.sum().backward()
    np.testing.assert_allclose(x.grad, kept / 0.75, rtol=1e-15)
    again = nn.Dropout(0.25, rng=5)(x)
    assert np.array_equal(again.data, y.data)               # the same seed, the same mask
    assert not np.array_equal(drop(x).data, y.data)         # the next call, a new mask
    drop.eval()
    assert drop(x) is x
    assert np.all(nn.Dropout(1.0)(x).data == 0)


@pytest.mark.parametrize("n_in, n_out, rows", [(3, 0, 2), (0, 2, 3), (3, 2, 0)])
def test_empty_layers_and_batches(n_in, n_out, rows):
    layer = nn.Linear(n_in, n_out, tensor=True)
    x = fg.Tensor(np.ones((rows, n_in)), requires_grad=True)
    y = layer(x)
    assert y.shape == (rows, n_out)
    y.backward(np.ones((rows, n_out)))
    assert x.grad.shape == (rows, n_in) and np.all(x.grad == 0)
    assert layer.weight.grad.shape == (n_out, n_in) and np.all(layer.weight.grad == 0)
    assert layer.bias.grad.shape == (n_out,) and np.all(layer.bias.grad == rows)
