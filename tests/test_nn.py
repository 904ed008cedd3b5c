"""fastgrad.nn: shapes, fused neurons, parameters, state dicts, repr; micrograd's own nn.py on fg.Value."""
import math
import pickle
import random

import pytest

import fastgrad
from fastgrad import nn, reference
from fastgrad._engine import tape


def _relu(x):
    return max(x, 0.0)


# ---- shapes and parameter counts ----

@pytest.mark.parametrize("nin,nouts,count", [
    (2, [16, 16, 1], 337),  # micrograd's moons model: 2*16+16 + 16*16+16 + 16+1
    (3, [4, 4, 1], 41),
    (1, [1], 2),
    (5, [3], 18),
])
def test_mlp_parameter_count(nin, nouts, count):
    model = nn.MLP(nin, nouts)
    assert len(model.parameters()) == count
    assert model.num_parameters() == count
    assert len(list(model.named_parameters())) == count


def test_output_shapes_follow_micrograd():
    assert isinstance(nn.MLP(2, [16, 16, 1])([0.5, -0.5]), fastgrad.Var)
    out = nn.MLP(2, [8, 3])([0.5, -0.5])
    assert isinstance(out, list) and len(out) == 3
    assert isinstance(nn.Layer(3, 1)([1.0, 2.0, 3.0]), fastgrad.Var)
    assert len(nn.Layer(3, 4)([1.0, 2.0, 3.0])) == 4
    # one output is a bare Var for all three (and a Neuron), micrograd's convention
    assert isinstance(nn.Linear(3, 1)([1.0, 2.0, 3.0]), fastgrad.Var)
    assert len(nn.Linear(3, 2)([1.0, 2.0, 3.0])) == 2


def test_neuron_init_is_microgradss_uniform_and_zero_bias():
    n = nn.Neuron(1000, rng=random.Random(0))
    assert all(-1.0 <= w.data <= 1.0 for w in n.w) and n.b.data == 0.0
    assert min(w.data for w in n.w) < -0.9 and max(w.data for w in n.w) > 0.9
    again = nn.Neuron(1000, rng=random.Random(0))
    assert [w.data for w in n.w] == [w.data for w in again.w]


def test_linear_init_bound_is_one_over_sqrt_fan_in():
    layer = nn.Linear(16, 8, rng=random.Random(1))
    bound = 1 / math.sqrt(16)
    assert all(abs(p.data) <= bound for p in layer.parameters())
    assert len(layer.weight) == 8 and len(layer.weight[0]) == 16 and len(layer.bias) == 8


# ---- the fused neuron ----

@pytest.mark.parametrize("activation,f", [
    ("relu", _relu),
    ("tanh", math.tanh),
    ("sigmoid", lambda s: 1 / (1 + math.exp(-s))),
    ("linear", lambda s: s),
])
def test_neuron_value_and_gradient(activation, f):
    n = nn.Neuron(3, activation=activation, rng=random.Random(3))
    n.b.data = 0.25
    x = [fastgrad.Var(v) for v in (0.5, -1.0, 2.0)]
    s = sum(w.data * xi.data for w, xi in zip(n.w, x)) + 0.25
    y = n(x)
    assert y.data == pytest.approx(f(s), abs=1e-15)
    y.backward()
    h = 1e-6
    slope = (f(s + h) - f(s - h)) / (2 * h)
    assert [w.grad for w in n.w] == pytest.approx([slope * xi.data for xi in x], abs=1e-8)
    assert n.b.grad == pytest.approx(slope, abs=1e-8)
    assert [xi.grad for xi in x] == pytest.approx([slope * w.data for w in n.w], abs=1e-8)


def test_a_neurons_weighted_sum_is_one_fused_node():
    n = nn.Neuron(16, nonlin=False)
    x = [fastgrad.Var(0.1 * i) for i in range(16)]
    y = n(x)
    assert y.op == "dot"
    interior = [entry for entry in tape(y) if entry[1] != "leaf"]
    assert len(interior) == 1
    layer_out = nn.Layer(16, 4)(x)
    assert [v.op for v in layer_out] == ["relu"] * 4
    # a layer row: one fused dot over all 16 inputs, the bias, the activation
    for v in layer_out:
        assert [entry[1] for entry in tape(v) if entry[1] != "leaf"] == ["dot", "add", "relu"]


def test_rebinding_parameters_or_neurons_is_seen_by_the_fused_rows():
    n = nn.Neuron(2, nonlin=False)
    n.b = fastgrad.Var(5.0)
    n.w = [fastgrad.Var(1.0), fastgrad.Var(2.0)]
    assert n([1.0, 1.0]).data == 8.0
    assert n.parameters()[-1] is n.b
    layer = nn.Layer(2, 2, nonlin=False)
    layer.neurons[1].w = [fastgrad.Var(3.0), fastgrad.Var(4.0)]
    assert layer([1.0, 1.0])[1].data == 7.0
    layer.neurons = [n, n]
    assert [v.data for v in layer([1.0, 1.0])] == [8.0, 8.0]


def test_activation_choice_and_errors():
    model = nn.MLP(2, [3, 1], activation="tanh")
    assert [layer.neurons[0].activation for layer in model.layers] == ["tanh", "linear"]
    assert nn.Neuron(2, nonlin=False).activation == "linear"
    with pytest.raises(ValueError, match="unknown activation"):
        nn.Neuron(2, activation="gelu")
    with pytest.raises(ValueError):
        nn.Layer(-1, 2)


def test_mlp_matches_the_same_network_written_by_hand():
    model = nn.MLP(2, [3, 1], rng=random.Random(7))
    x = [0.3, -0.8]
    h = [_relu(sum(w.data * xi for w, xi in zip(n.w, x)) + n.b.data) for n in model.layers[0].neurons]
    (out,) = model.layers[1].neurons
    expected = sum(w.data * hi for w, hi in zip(out.w, h)) + out.b.data
    assert model(x).data == pytest.approx(expected, abs=1e-15)


# ---- PyTorch-style modules ----

def test_linear_and_sequential():
    rng = random.Random(2)
    net = nn.Sequential(nn.Linear(2, 3, rng=rng), nn.ReLU(), nn.Linear(3, 1, bias=False, rng=rng))
    x = [0.5, -1.5]
    l1, l2 = net[0], net[2]
    h = [_relu(sum(w.data * xi for w, xi in zip(row, x)) + b.data) for row, b in zip(l1.weight, l1.bias)]
    expected = sum(w.data * hi for w, hi in zip(l2.weight[0], h))
    y = net(x)  # Linear(3, 1): one output, a bare Var
    assert y.data == pytest.approx(expected, abs=1e-15)
    assert len(net) == 3 and list(net)[1].__class__ is nn.ReLU
    names = [name for name, _ in net.named_parameters()]
    assert names[0] == "0.weight.0.0" and names[6] == "0.bias.0" and names[-1] == "2.weight.0.2"
    assert list(net.state_dict()) == ["0.weight", "0.bias", "2.weight"]


def test_activation_modules_are_elementwise():
    xs = [fastgrad.Var(-1.0), fastgrad.Var(2.0)]
    assert [v.data for v in nn.ReLU()(xs)] == [0.0, 2.0]
    assert nn.Tanh()(xs[1]).data == pytest.approx(math.tanh(2.0))
    assert nn.Sigmoid()(0.0).data == 0.5
    assert nn.Identity()(xs) is xs


# ---- parameters, zero_grad, state dicts ----

def test_named_parameters_and_order():
    model = nn.MLP(2, [2, 1])
    names = [name for name, _ in model.named_parameters()]
    assert names[:3] == ["layers.0.neurons.0.w.0", "layers.0.neurons.0.w.1", "layers.0.neurons.0.b"]
    assert [p for _, p in model.named_parameters()] == model.parameters()
    first = model.layers[0].neurons[0]
    assert model.parameters()[:3] == [*first.w, first.b]  # micrograd's order: w..., b


def test_zero_grad():
    model = nn.MLP(2, [3, 1])
    model([1.0, 2.0]).backward()
    assert any(p.grad != 0.0 for p in model.parameters())
    model.zero_grad()
    assert all(p.grad == 0.0 for p in model.parameters())


def test_state_dict_holds_plain_floats_with_shapes():
    sd = nn.MLP(2, [3, 1]).state_dict()
    assert list(sd)[:2] == ["layers.0.neurons.0.w", "layers.0.neurons.0.b"]
    assert all(type(v) is float for v in sd["layers.0.neurons.0.w"])
    assert type(sd["layers.0.neurons.0.b"]) is float
    linear = nn.Linear(3, 2).state_dict()
    assert len(linear["weight"]) == 2 and all(len(row) == 3 for row in linear["weight"])


def test_state_dict_round_trip():
    a, b = nn.MLP(2, [4, 4, 1], rng=random.Random(1)), nn.MLP(2, [4, 4, 1], rng=random.Random(2))
    params_b = b.parameters()
    result = b.load_state_dict(a.state_dict())
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert b.parameters() == params_b  # loaded in place: an optimizer over b keeps working
    assert [p.data for p in b.parameters()] == [p.data for p in a.parameters()]
    assert b([0.1, 0.2]).data == a([0.1, 0.2]).data


def _values(model):
    return [p.data for p in model.parameters()]


@pytest.mark.parametrize("corrupt,match", [
    (lambda sd: sd.pop("layers.1.neurons.0.b"), "Missing key"),
    (lambda sd: sd.update(extra=1.0), "Unexpected key"),
    (lambda sd: sd.update({"layers.0.neurons.0.w": [1.0, 2.0, 3.0]}), "size mismatch"),
    (lambda sd: sd.update({"layers.0.neurons.1.b": [1.0]}), "size mismatch"),
    (lambda sd: sd.update({"layers.0.neurons.1.b": "1.0"}), "not a real number"),
    (lambda sd: sd.update({"layers.0.neurons.1.w": [[1.0], [2.0, 3.0]]}), "not a real number"),
])
def test_strict_loading_rejects_and_leaves_the_model_unchanged(corrupt, match):
    model = nn.MLP(2, [2, 1], rng=random.Random(0))
    sd = nn.MLP(2, [2, 1], rng=random.Random(1)).state_dict()
    corrupt(sd)
    before = _values(model)
    with pytest.raises(RuntimeError, match=match):
        model.load_state_dict(sd)
    assert _values(model) == before


def test_non_strict_loading_reports_keys_but_still_checks_shapes():
    model = nn.MLP(2, [2, 1], rng=random.Random(0))
    sd = nn.MLP(2, [2, 1], rng=random.Random(1)).state_dict()
    sd.pop("layers.1.neurons.0.b")
    sd["extra"] = 0.0
    result = model.load_state_dict(sd, strict=False)
    assert result.missing_keys == ["layers.1.neurons.0.b"] and result.unexpected_keys == ["extra"]
    assert model.layers[0].neurons[0].w[0].data == sd["layers.0.neurons.0.w"][0]
    sd["layers.0.neurons.0.b"] = [0.0, 0.0]
    with pytest.raises(RuntimeError, match="size mismatch"):
        model.load_state_dict(sd, strict=False)


def test_model_pickles():
    model = nn.MLP(2, [4, 1], activation="tanh")
    twin = pickle.loads(pickle.dumps(model))
    assert _values(twin) == _values(model)
    assert twin([0.3, 0.4]).data == model([0.3, 0.4]).data
    twin([0.3, 0.4]).backward()      # the twin's layers read the twin's own parameters
    assert any(p.grad != 0.0 for p in twin.parameters())
    assert all(p.grad == 0.0 for p in model.parameters())


def test_repr():
    assert repr(nn.Neuron(2)) == "ReLUNeuron(2)"
    assert repr(nn.Neuron(2, nonlin=False)) == "LinearNeuron(2)"
    assert repr(nn.Layer(2, 16)) == "Layer(2, 16, activation='relu')"
    text = repr(nn.MLP(2, [16, 16, 1]))
    assert text.splitlines() == [
        "MLP(",
        "  (layers.0): Layer(2, 16, activation='relu')",
        "  (layers.1): Layer(16, 16, activation='relu')",
        "  (layers.2): Layer(16, 1, activation='linear')",
        ")",
    ]
    assert repr(nn.Linear(2, 3)) == "Linear(in_features=2, out_features=3, bias=True)"
    assert repr(nn.Sequential(nn.Linear(2, 3), nn.ReLU())).splitlines()[1:3] == [
        "  (0): Linear(in_features=2, out_features=3, bias=True)", "  (1): ReLU()"]
    assert repr(nn.MSELoss()) == "MSELoss(reduction='mean')"


def test_a_custom_module_finds_its_parameters():
    class Affine(nn.Module):
        def __init__(self):
            self.scale = fastgrad.Var(2.0)
            self.shift = [fastgrad.Var(1.0), fastgrad.Var(-1.0)]
            self.inner = nn.Linear(2, 2)
            self._cache = [fastgrad.Var(9.0)]  # private: not a parameter
            self.size = 2

        def forward(self, x):
            return [self.scale * v + s for v, s in zip(self.inner(x), self.shift)]

    m = Affine()
    assert list(m.state_dict()) == ["scale", "shift", "inner.weight", "inner.bias"]
    assert len(m.parameters()) == 1 + 2 + 4 + 2
    assert len(m([1.0, 2.0])) == 2


# ---- micrograd's own nn.py, written out here, on fg.Value ----

def micrograd_nn(Value):
    """karpathy/micrograd's nn.py, verbatim but for the Value class it is given."""

    class Module:

        def zero_grad(self):
            for p in self.parameters():
                p.grad = 0

        def parameters(self):
            return []

    class Neuron(Module):

        def __init__(self, nin, nonlin=True):
            self.w = [Value(random.uniform(-1, 1)) for _ in range(nin)]
            self.b = Value(0)
            self.nonlin = nonlin

        def __call__(self, x):
            act = sum((wi * xi for wi, xi in zip(self.w, x)), self.b)
            return act.relu() if self.nonlin else act

        def parameters(self):
            return self.w + [self.b]

    class Layer(Module):

        def __init__(self, nin, nout, **kwargs):
            self.neurons = [Neuron(nin, **kwargs) for _ in range(nout)]

        def __call__(self, x):
            out = [n(x) for n in self.neurons]
            return out[0] if len(out) == 1 else out

        def parameters(self):
            return [p for n in self.neurons for p in n.parameters()]

    class MLP(Module):

        def __init__(self, nin, nouts):
            sz = [nin] + nouts
            self.layers = [Layer(sz[i], sz[i + 1], nonlin=i != len(nouts) - 1) for i in range(len(nouts))]

        def __call__(self, x):
            for layer in self.layers:
                x = layer(x)
            return x

        def parameters(self):
            return [p for layer in self.layers for p in layer.parameters()]

    return MLP


def _micrograd_training(Value, steps=30):
    """micrograd's demo loop on 30 moons points; returns the losses and the final accuracy."""
    from fastgrad.data import make_moons

    X, y = make_moons(30, noise=0.1, random_state=0)
    y = [2 * int(t) - 1 for t in y]
    random.seed(1337)
    model = micrograd_nn(Value)(2, [16, 16, 1])
    losses = []
    for k in range(steps):
        inputs = [list(map(Value, row)) for row in X.tolist()]
        scores = list(map(model, inputs))
        data_loss = sum((1 + -yi * si).relu() for yi, si in zip(y, scores)) * (1.0 / len(y))
        total = data_loss + 1e-4 * sum(p * p for p in model.parameters())
        model.zero_grad()
        total.backward()
        for p in model.parameters():
            p.data -= (1.0 - 0.9 * k / steps) * p.grad
        losses.append(total.data)
    acc = sum((si.data > 0) == (yi > 0) for yi, si in zip(y, map(model, X.tolist()))) / len(y)
    return losses, acc


def test_micrograds_nn_trains_on_fg_value():
    losses, acc = _micrograd_training(fastgrad.Value)
    assert losses[-1] < 0.2 * losses[0]
    assert acc >= 0.95
    ref_losses, ref_acc = _micrograd_training(reference.Value)
    assert losses == pytest.approx(ref_losses, rel=1e-12, abs=1e-12)
    assert acc == ref_acc


@pytest.mark.parametrize("clone", ["pickle", "deepcopy"])
def test_a_copied_model_never_reuses_the_originals_node_indices(clone):
    import copy
    import pickle

    model = nn.MLP(3, [4, 2], rng=random.Random(1))
    x = [0.1, -0.2, 0.3]
    before = [v.data for v in model(x)]        # the layers now cache the original's node indices
    twin = pickle.loads(pickle.dumps(model)) if clone == "pickle" else copy.deepcopy(model)
    del model                                   # free the original's parameters ...
    filler = [fastgrad.Var(9.0) for _ in range(200)]   # ... and reuse their slots for other leaves
    assert [v.data for v in twin(x)] == before
    assert all(v.data == 9.0 for v in filler)


def test_a_var_assigned_into_a_layers_lists_is_used_from_the_next_call():
    lin = nn.Linear(2, 1)
    lin([1.0, 1.0])
    old = lin.weight[0][0]
    lin.weight[0][0] = fastgrad.Var(100.0)            # once, the cached index kept using `old`
    y = lin([1.0, 1.0])  # Linear(2, 1): a bare Var
    assert y.data == 100.0 + lin.weight[0][1].data + lin.bias[0].data
    y.backward()
    assert lin.weight[0][0].grad == 1.0 and old.grad == 0.0
    layer = nn.Layer(2, 3)
    layer([1.0, 2.0])
    layer.neurons[0].w[1] = fastgrad.Var(50.0)
    other = nn.Layer(2, 1)
    layer.neurons[2] = other.neurons[0]               # an existing neuron: no new parameters were made
    out = layer([1.0, 2.0])
    n0 = layer.neurons[0]
    assert out[0].data == max(0.0, n0.w[0].data + 2.0 * 50.0 + n0.b.data)
    assert out[2].data == other([1.0, 2.0]).data
    neuron = nn.Neuron(2, nonlin=False)
    neuron.w[0] = fastgrad.Var(7.0)
    assert neuron([1.0, 0.0]).data == 7.0 + neuron.b.data
