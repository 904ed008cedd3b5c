"""fastgrad.nn containers: Sequential, and Modules kept in list, tuple and dict attributes, are seen by every
method of Module through its one walk (named_children); shared modules count once; deep nests walk."""
import copy
import itertools
import pickle
import random

import pytest

import fastgrad
from fastgrad import nn, optim


class Model(nn.Module):
    """A Sequential body and a Linear head: the shape that used to train only its head."""

    def __init__(self, seed=0):
        rng = random.Random(seed)
        self.body = nn.Sequential(nn.Linear(3, 4, rng=rng), nn.Tanh(), nn.Linear(4, 4, rng=rng), nn.Tanh())
        self.head = nn.Linear(4, 1, rng=rng)

    def forward(self, x):
        return self.head(self.body(x))  # Linear(4, 1): a bare Var


class Blocks(nn.Module):
    """Linear layers kept in a container attribute of the given kind."""

    def __init__(self, kind, seed=0):
        rng = random.Random(seed)
        enc, dec = nn.Linear(2, 3, rng=rng), nn.Linear(3, 1, rng=rng)
        self.blocks = {"enc": enc, "dec": dec} if kind == "dict" else kind([enc, dec])

    def forward(self, x):
        enc, dec = self.blocks.values() if isinstance(self.blocks, dict) else self.blocks
        return dec(enc(x))  # Linear(3, 1): a bare Var


X = [[0.5, -1.0, 2.0], [-0.3, 0.8, 0.1], [1.5, 0.2, -0.7]]


def _loss(model, xs=X):
    return sum(model(x) ** 2 for x in xs)


def _values(model):
    return [p.data for p in model.parameters()]


def _linear_vars(model):
    """Every parameter Var of a Model, listed by hand from its three Linear layers."""
    return [v for lin in (model.body[0], model.body[2], model.head)
            for v in [*(u for row in lin.weight for u in row), *lin.bias]]


# ---- Sequential ----

def test_sequential_parameters_are_its_layers_parameters():
    seq = nn.Sequential(nn.Linear(4, 3))
    assert len(seq.parameters()) == 4 * 3 + 3
    assert seq.num_parameters() == 15
    assert seq.parameters() == [v for row in seq[0].weight for v in row] + seq[0].bias
    assert [name for name, _ in seq.named_children()] == ["0"]
    assert list(seq.children()) == [seq[0]]
    assert list(seq.modules()) == [seq, seq[0]]


def test_a_model_holding_a_sequential_trains_every_parameter():
    model = Model()
    params = model.parameters()
    assert len(params) == (3 * 4 + 4) + (4 * 4 + 4) + (4 + 1)
    assert params == _linear_vars(model)
    opt = optim.SGD(params, lr=0.1)
    before = _values(model)
    _loss(model).backward()
    assert all(p.grad != 0.0 for p in params)
    opt.step()
    assert all(a != b for a, b in zip(before, _values(model)))
    model.zero_grad()
    assert all(p.grad == 0.0 for p in _linear_vars(model))


def test_optimizer_zero_grad_reaches_the_sequential_body():
    model = Model()
    opt = optim.Adam(model.parameters(), lr=0.01)
    _loss(model).backward()
    opt.zero_grad()
    assert all(p.grad == 0.0 for p in _linear_vars(model))


def test_sequential_names_follow_pytorch():
    model = Model()
    assert list(model.state_dict()) == [
        "body.0.weight", "body.0.bias", "body.2.weight", "body.2.bias", "head.weight", "head.bias"]
    assert [name for name, _ in model.named_modules()] == [
        "", "body", "body.0", "body.1", "body.2", "body.3", "head"]
    names = [name for name, _ in model.named_parameters()]
    assert names[0] == "body.0.weight.0.0" and names[-1] == "head.bias.0"
    assert [p for _, p in model.named_parameters()] == model.parameters()


def test_nested_sequential():
    rng = random.Random(3)
    inner = nn.Sequential(nn.Linear(2, 2, rng=rng), nn.Tanh())
    net = nn.Sequential(inner, nn.Sequential(nn.Linear(2, 1, rng=rng)))
    assert list(net.state_dict()) == ["0.0.weight", "0.0.bias", "1.0.weight", "1.0.bias"]
    assert len(net.parameters()) == 6 + 3
    assert [type(m).__name__ for m in net.modules()] == [
        "Sequential", "Sequential", "Linear", "Tanh", "Sequential", "Linear"]
    y = net([1.0, -2.0])
    y.backward()
    assert any(p.grad != 0.0 for p in inner.parameters())
    net.zero_grad()
    assert all(p.grad == 0.0 for p in inner.parameters())
    assert repr(net).splitlines() == [
        "Sequential(",
        "  (0): Sequential(",
        "    (0): Linear(in_features=2, out_features=2, bias=True)",
        "    (1): Tanh()",
        "  )",
        "  (1): Sequential(",
        "    (0): Linear(in_features=2, out_features=1, bias=True)",
        "  )",
        ")",
    ]


def test_sequential_indexing_and_errors():
    layers = [nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1)]
    seq = nn.Sequential(*layers)
    assert len(seq) == 3 and list(seq) == layers
    assert seq[0] is layers[0] and seq[-1] is layers[2]
    tail = seq[1:]
    assert isinstance(tail, nn.Sequential) and list(tail) == layers[1:]
    assert len(nn.Sequential()) == 0 and nn.Sequential().parameters() == []
    with pytest.raises(IndexError):
        seq[3]
    with pytest.raises(TypeError, match="Sequential takes Modules"):
        nn.Sequential(nn.Linear(2, 2), 3)


# ---- list, tuple and dict attributes ----

@pytest.mark.parametrize("kind", [list, tuple, "dict"])
def test_modules_in_a_container_attribute_are_children(kind):
    model = Blocks(kind)
    keys = ["enc", "dec"] if kind == "dict" else ["0", "1"]
    assert [name for name, _ in model.named_children()] == [f"blocks.{k}" for k in keys]
    assert list(model.children()) == [model.blocks[k] if kind == "dict" else model.blocks[int(k)]
                                      for k in keys]
    assert len(list(model.modules())) == 3
    assert list(model.state_dict()) == [f"blocks.{k}.{p}" for k in keys for p in ("weight", "bias")]
    assert model.num_parameters() == (2 * 3 + 3) + (3 + 1) == len(list(model.named_parameters()))
    first = "Linear(in_features=2, out_features=3, bias=True)"
    assert repr(model).splitlines()[1] == f"  (blocks.{keys[0]}): {first}"
    params = model.parameters()
    opt = optim.SGD(params, lr=0.1)
    before = _values(model)
    sum(model(x[:2]) ** 2 for x in X).backward()
    opt.step()
    assert all(a != b for a, b in zip(before, _values(model)))
    model.zero_grad()
    assert all(p.grad == 0.0 for p in params)


def test_dict_attributes_name_their_items_by_key():
    class Heads(nn.Module):
        def __init__(self):
            self.heads = {"a": nn.Linear(1, 1), "b": [nn.Linear(1, 2)], "scale": fastgrad.Var(2.0)}
            self.config = {"lr": 0.1, "sizes": [1, 2], 3: "three"}  # data: ignored

    # a module's own parameters first, then its children's (as for attributes)
    assert list(Heads().state_dict()) == [
        "heads.scale", "heads.a.weight", "heads.a.bias", "heads.b.0.weight", "heads.b.0.bias"]
    assert Heads().num_parameters() == 2 + 4 + 1


@pytest.mark.parametrize("value", [
    [],
    [1, 2, 3],
    ["relu", "tanh"],
    [[1.0, 2.0], [3.0]],
    {"lr": 0.1, "names": ("a", "b")},
    {1, 2},
    (None, 0.5),
])
def test_containers_of_plain_data_are_ignored(value):
    m = nn.Module()
    m.data = value
    assert m.parameters() == [] and list(m.named_children()) == [] and m.state_dict() == {}


@pytest.mark.parametrize("value", [
    [nn.Linear(1, 1), 3],
    (nn.Linear(1, 1), "relu"),
    [3, nn.Linear(1, 1)],
    [nn.Linear(1, 1), fastgrad.Var(1.0)],
    [fastgrad.Var(1.0), 2.0],
    [[fastgrad.Var(1.0)], [fastgrad.Var(2.0), fastgrad.Var(3.0)]],
    [[nn.Linear(1, 1)], [nn.Linear(1, 1)]],
    [{"a": nn.Linear(1, 1)}],
    {"a": {"b": nn.Linear(1, 1)}},
    {"a": [nn.Linear(1, 1), None]},
    {nn.Linear(1, 1)},
    {1: nn.Linear(1, 1)},
    {"a.b": nn.Linear(1, 1)},
])
def test_a_container_mixing_modules_or_vars_with_other_objects_is_a_type_error(value):
    m = nn.Module()
    m.blocks = value
    for walk in (m.parameters, lambda: list(m.named_children()), m.state_dict, m.zero_grad, lambda: repr(m)):
        with pytest.raises(TypeError, match="'blocks"):
            walk()


def test_private_attributes_are_not_walked():
    m = nn.Module()
    m._cache = [nn.Linear(1, 1), 3]  # private: neither walked nor checked
    m._inner = nn.Linear(1, 1)
    assert m.parameters() == [] and list(m.modules()) == [m]


def test_a_container_that_overrides_named_children_alone_is_walked_everywhere():
    class Bag(nn.Module):
        """Keeps its modules in a private list and names them itself."""

        def __init__(self, *modules):
            self._items = list(modules)
            self.scale = fastgrad.Var(2.0)

        def named_children(self):
            return ((f"item{i}", m) for i, m in enumerate(self._items))

    model = nn.Module()
    model.bag = Bag(nn.Linear(2, 2), nn.Linear(2, 1))
    first, second = model.bag._items
    assert model.parameters() == [model.bag.scale, *first.parameters(), *second.parameters()]
    assert model.num_parameters() == 1 + 6 + 3
    assert list(model.modules()) == [model, model.bag, first, second]
    assert list(model.state_dict()) == [
        "bag.scale", "bag.item0.weight", "bag.item0.bias", "bag.item1.weight", "bag.item1.bias"]
    assert repr(model).splitlines()[2] == "    (item0): Linear(in_features=2, out_features=2, bias=True)"
    for p in model.parameters():
        p.grad = 1.0
    model.zero_grad()
    assert all(p.grad == 0.0 for p in [*first.parameters(), *second.parameters()])
    twin = copy.deepcopy(model)
    assert twin.state_dict() == model.state_dict()


# ---- state dicts, pickle, deepcopy ----

def test_state_dict_round_trip_through_a_sequential_and_a_dict():
    class Net(nn.Module):
        def __init__(self, seed):
            self.trunk = Model(seed)
            self.heads = Blocks("dict", seed)

        def forward(self, x):
            return self.trunk(x) + self.heads(x[:2])

    a, b = Net(1), Net(2)
    sd = a.state_dict()
    assert list(sd) == [f"trunk.{k}" for k in Model().state_dict()] + [
        f"heads.{k}" for k in Blocks("dict").state_dict()]
    assert sd["trunk.body.2.bias"] == [v.data for v in a.trunk.body[2].bias]
    params_b = b.parameters()
    assert _values(b) != _values(a)
    assert b.load_state_dict(sd) == ([], [])
    assert b.parameters() == params_b  # in place
    assert _values(b) == _values(a)
    assert b(X[0]).data == a(X[0]).data
    sd["trunk.body.0.weight"] = [[0.0] * 3] * 3
    with pytest.raises(RuntimeError, match="size mismatch for trunk.body.0.weight"):
        b.load_state_dict(sd)
    del sd["trunk.body.0.weight"]
    with pytest.raises(RuntimeError, match="Missing key.*'trunk.body.0.weight'"):
        b.load_state_dict(sd)


@pytest.mark.parametrize("clone", ["pickle", "deepcopy"])
def test_a_cloned_model_is_equal_independent_and_trains(clone):
    model = Model(5)
    expected = model(X[0]).data  # the layers now cache the original's node indices
    twin = pickle.loads(pickle.dumps(model)) if clone == "pickle" else copy.deepcopy(model)
    assert isinstance(twin.body, nn.Sequential) and len(twin.body) == 4
    assert twin.parameters() == _linear_vars(twin)
    assert list(twin.state_dict()) == list(model.state_dict())
    assert [p.data for p in _linear_vars(twin)] == [p.data for p in _linear_vars(model)]
    assert not {id(p) for p in _linear_vars(twin)} & {id(p) for p in _linear_vars(model)}
    assert twin(X[0]).data == expected
    original = [p.data for p in _linear_vars(model)]
    opt = optim.SGD(twin.parameters(), lr=0.1)
    _loss(twin).backward()
    opt.step()
    assert all(a != b for a, b in zip([p.data for p in _linear_vars(twin)], original))
    assert [p.data for p in _linear_vars(model)] == original
    assert all(p.grad == 0.0 for p in _linear_vars(model))


# ---- sharing, cycles, depth ----

def test_a_shared_submodule_is_counted_once():
    class Tied(nn.Module):
        def __init__(self):
            self.shared = nn.Linear(2, 2)
            self.seq = nn.Sequential(self.shared, nn.Tanh(), self.shared)
            self.also = [self.shared]

        def forward(self, x):
            return self.seq(x)

    m = Tied()
    assert m.num_parameters() == len(m.parameters()) == 6
    assert [name for name, _ in m.named_parameters()][:1] == ["shared.weight.0.0"]
    assert len(list(m.named_parameters())) == 6
    assert [name for name, _ in m.named_modules()] == ["", "shared", "seq", "seq.1"]
    assert list(m.state_dict()) == ["shared.weight", "shared.bias"]
    assert len(list(m.named_children())) == 3  # the direct children, aliases included (as repr shows them)
    opt = optim.SGD(m.parameters(), lr=0.5)  # duplicates would be a ValueError
    sum(m([1.0, -1.0])).backward()
    w = m.shared.weight[0][0]
    expected = w.data - 0.5 * w.grad
    opt.step()
    assert w.data == expected
    m.load_state_dict(m.state_dict())


def test_a_shared_parameter_is_counted_once():
    m = nn.Module()
    m.w = [fastgrad.Var(1.0), fastgrad.Var(2.0)]
    m.tied = m.w
    m.b = fastgrad.Var(0.5)
    m.first = m.w[0]
    assert m.parameters() == [m.w[0], m.w[1], m.b]
    assert [name for name, _ in m.named_parameters()] == ["w.0", "w.1", "b"]
    assert list(m.state_dict()) == ["w", "b"]  # an entry whose Vars are all listed already is left out
    optim.SGD(m.parameters(), lr=0.1)


def test_a_back_reference_to_the_parent_is_walked_once():
    outer = nn.Module()
    outer.inner = nn.Linear(1, 1)
    outer.inner.owner = outer  # a cycle: inner -> outer -> inner
    assert list(itertools.islice(outer.modules(), 3)) == [outer, outer.inner]  # islice: no hang if it loops
    assert len(outer.parameters()) == 2
    assert list(outer.state_dict()) == ["inner.weight", "inner.bias"]
    assert "(owner)" in repr(outer)


class _Wrap(nn.Module):
    def __init__(self, inner):
        self.m = inner


def _nest(depth):
    leaf = nn.Module()
    leaf.p = fastgrad.Var(1.0)
    m = leaf
    for _ in range(depth):
        m = _Wrap(m)
    return m, leaf


def test_a_10000_deep_nest_walks_without_recursion():
    model, leaf = _nest(10_000)
    assert sum(1 for _ in model.modules()) == 10_001
    assert model.parameters() == [leaf.p]
    leaf.p.grad = 3.0
    model.zero_grad()
    assert leaf.p.grad == 0.0
    ((name, p),) = model.named_parameters()
    assert p is leaf.p and name == "m." * 10_000 + "p"
    (key,) = model.state_dict()
    assert key == name


def test_a_deep_nest_reprs_without_recursion():
    model, _ = _nest(2_000)
    lines = repr(model).splitlines()
    assert len(lines) == 2 * 2_000 + 1
    assert lines[0] == "_Wrap(" and lines[2_000] == " " * 4_000 + "(m): Module()" and lines[-1] == ")"
