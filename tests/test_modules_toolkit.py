"""fastgrad.nn's training toolkit: train()/eval(), ModuleList, ModuleDict, Dropout, apply, Sequential's list
operations, PyTorch's repr, and layer errors in the user's terms (one output is a bare Var everywhere).

Oracles: hand-written formulas and expected strings always; torch (when installed) for reprs, dropout's scale
and Linear's values and gradients."""
import copy
import math
import pickle
import random

import numpy as np
import pytest

import fastgrad
from fastgrad import nn, optim


def _values(model):
    return [p.data for p in model.parameters()]


def _linear_vars(lin):
    """A Linear's parameters, listed by hand: the weight rows, then the bias."""
    return [v for row in lin.weight for v in row] + list(lin.bias or [])


# ---- train() / eval() / .training ----

class NoSuperInit(nn.Module):
    """micrograd style: never calls super().__init__()."""

    def __init__(self):
        self.lin = nn.Linear(2, 2)
        self.drop = nn.Dropout(0.5, rng=0)
        self.blocks = [nn.Tanh(), nn.Sequential(nn.ReLU(), nn.Dropout(0.1))]
        self.heads = {"a": nn.Linear(2, 1)}
        self.items = nn.ModuleList([nn.Sigmoid()])
        self.named = nn.ModuleDict({"x": nn.Identity()})


def test_training_is_true_by_default_without_super_init():
    model = NoSuperInit()
    assert model.training is True
    assert all(m.training is True for m in model.modules())
    assert "training" not in vars(model)  # the class default, not yet an instance attribute


def test_train_and_eval_recurse_and_return_self():
    model = NoSuperInit()
    modules = list(model.modules())
    assert len(modules) == 12  # counted by hand: self, lin, drop, Tanh, Sequential + 2, a, ModuleList + 1,
    #                            ModuleDict + 1
    assert model.eval() is model
    assert [m.training for m in modules] == [False] * 12
    assert model.train() is model
    assert [m.training for m in modules] == [True] * 12
    assert model.train(False) is model and not any(m.training for m in modules)
    model.items.train()  # only that subtree
    assert [m.training for m in model.modules()].count(True) == 2


def test_training_is_never_a_parameter_or_state_entry():
    model = NoSuperInit()
    before_sd, before_names = model.state_dict(), [n for n, _ in model.named_parameters()]
    model.eval()
    assert "training" in vars(model)
    assert model.state_dict() == before_sd
    assert [n for n, _ in model.named_parameters()] == before_names
    assert not any("training" in key for key in model.state_dict())
    assert model.num_parameters() == (2 * 2 + 2) + (2 + 1)


@pytest.mark.parametrize("clone", [pickle, copy])
def test_the_mode_survives_pickle_and_deepcopy(clone):
    model = NoSuperInit().eval()
    twin = pickle.loads(pickle.dumps(model)) if clone is pickle else copy.deepcopy(model)
    assert not any(m.training for m in twin.modules())


@pytest.mark.parametrize("mode", ["eval", 0, 1, None, 1.0])
def test_train_refuses_a_mode_that_is_not_a_bool(mode):
    model = NoSuperInit()
    with pytest.raises(ValueError, match="mode must be True or False"):
        model.train(mode)
    assert all(m.training for m in model.modules())  # unchanged


# ---- ModuleList ----

def test_module_list_behaves_as_a_list():
    a, b, c, d = nn.Linear(2, 2), nn.Tanh(), nn.Linear(2, 1), nn.ReLU()
    ml = nn.ModuleList([a, b])
    assert len(ml) == 2 and list(ml) == [a, b] and ml[0] is a and ml[-1] is b
    assert ml.append(c) is ml and list(ml) == [a, b, c]
    ml.insert(1, d)
    assert list(ml) == [a, d, b, c]
    ml.insert(-100, d)  # list.insert clamps
    assert list(ml) == [d, a, d, b, c]
    del ml[0]
    assert list(ml) == [a, d, b, c]
    assert ml.pop() is c and ml.pop(0) is a and list(ml) == [d, b]
    ml[0] = a
    assert list(ml) == [a, b]
    assert ml.extend([c, d]) is ml and list(ml) == [a, b, c, d]
    ml += [d]
    assert list(ml) == [a, b, c, d, d]
    del ml[3:]
    assert list(ml) == [a, b, c]
    tail = ml[1:]
    assert type(tail) is nn.ModuleList and list(tail) == [b, c] and tail[0] is b
    assert list(nn.ModuleList(nn.Sequential(a, b))) == [a, b]  # a container is an iterable of Modules
    both = ml + nn.ModuleList([d])
    assert type(both) is nn.ModuleList and list(both) == [a, b, c, d] and list(ml) == [a, b, c]
    assert ml[np.int64(1)] is b
    assert [name for name, _ in ml.named_children()] == ["0", "1", "2"]
    assert list(ml.children()) == [a, b, c]
    assert len(nn.ModuleList()) == 0 and nn.ModuleList().parameters() == []


def test_module_list_renumbers_its_children_after_changes():
    first, second = nn.Linear(1, 1), nn.Linear(1, 2)
    ml = nn.ModuleList([first, second])
    ml.insert(0, nn.ReLU())
    assert list(ml.state_dict()) == ["1.weight", "1.bias", "2.weight", "2.bias"]
    del ml[0]
    assert list(ml.state_dict()) == ["0.weight", "0.bias", "1.weight", "1.bias"]
    assert ml.parameters() == _linear_vars(first) + _linear_vars(second)


class Stack(nn.Module):
    def __init__(self, seed=0):
        rng = random.Random(seed)
        self.layers = nn.ModuleList([nn.Linear(2, 3, rng=rng), nn.Linear(3, 3, rng=rng)])
        self.layers.append(nn.Linear(3, 1, rng=rng))

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = nn.functional.tanh(x)
        return x


def test_a_module_list_trains_saves_and_loads():
    model = Stack(1)
    lins = list(model.layers)
    assert model.parameters() == [v for lin in lins for v in _linear_vars(lin)]
    assert model.num_parameters() == (2 * 3 + 3) + (3 * 3 + 3) + (3 + 1) == 25
    names = [n for n, _ in model.named_parameters()]
    assert names[0] == "layers.0.weight.0.0" and names[-1] == "layers.2.bias.0"
    assert list(model.state_dict()) == [f"layers.{i}.{p}" for i in range(3) for p in ("weight", "bias")]
    opt = optim.SGD(model.parameters(), lr=0.1)
    before = _values(model)
    model([0.5, -1.0]).backward()
    assert all(p.grad != 0.0 for p in model.parameters())
    opt.step()
    assert all(x != y for x, y in zip(before, _values(model)))
    model.zero_grad()
    assert all(p.grad == 0.0 for p in model.parameters())
    other = Stack(2)
    assert other.load_state_dict(model.state_dict()) == ([], [])
    assert _values(other) == _values(model)
    assert other([0.1, 0.2]).data == model([0.1, 0.2]).data


class Both(nn.Module):
    def __init__(self):
        self.ml = nn.ModuleList([nn.Linear(2, 2), nn.Linear(2, 1)])
        self.md = nn.ModuleDict({"enc": nn.Linear(2, 2), "train": nn.Linear(2, 1)})


@pytest.mark.parametrize("clone", ["pickle", "deepcopy"])
def test_module_list_and_dict_clone_independently(clone):
    model = Both()
    twin = pickle.loads(pickle.dumps(model)) if clone == "pickle" else copy.deepcopy(model)
    assert type(twin.ml) is nn.ModuleList and type(twin.md) is nn.ModuleDict
    assert list(twin.md) == ["enc", "train"]
    assert twin.state_dict() == model.state_dict()
    assert not {id(p) for p in twin.parameters()} & {id(p) for p in model.parameters()}
    assert twin.ml[1](twin.ml[0]([1.0, 2.0])).data == model.ml[1](model.ml[0]([1.0, 2.0])).data


@pytest.mark.parametrize("action,error", [
    (lambda ml: ml.append(3), TypeError),
    (lambda ml: ml.append([nn.ReLU()]), TypeError),
    (lambda ml: ml.extend(nn.ReLU()), TypeError),
    (lambda ml: ml.extend(5), TypeError),
    (lambda ml: ml.extend([nn.ReLU(), "relu"]), TypeError),
    (lambda ml: ml.insert(0, None), TypeError),
    (lambda ml: ml.insert("0", nn.ReLU()), TypeError),
    (lambda ml: ml.__setitem__(0, 1.5), TypeError),
    (lambda ml: ml.__setitem__(slice(0, 1), [2]), TypeError),
    (lambda ml: ml["0"], TypeError),
    (lambda ml: ml[1.0], TypeError),
    (lambda ml: ml[2], IndexError),
    (lambda ml: ml[-3], IndexError),
    (lambda ml: ml.__delitem__(5), IndexError),
    (lambda ml: ml.pop(2), IndexError),
    (lambda ml: ml([1.0]), NotImplementedError),
])
def test_module_list_bad_input(action, error):
    a, b = nn.Linear(1, 1), nn.Tanh()
    ml = nn.ModuleList([a, b])
    with pytest.raises(error):
        action(ml)
    assert list(ml) == [a, b]  # unchanged


@pytest.mark.parametrize("arg", [nn.Linear(1, 1), 3, [nn.Linear(1, 1), 3]])
def test_module_list_constructor_takes_an_iterable_of_modules(arg):
    with pytest.raises(TypeError, match="ModuleList"):
        nn.ModuleList(arg)


# ---- ModuleDict ----

def test_module_dict_mapping_interface():
    enc, dec, act = nn.Linear(2, 3), nn.Linear(3, 1), nn.Tanh()
    md = nn.ModuleDict({"enc": enc, "dec": dec})
    assert len(md) == 2 and list(md) == ["enc", "dec"] and md["enc"] is enc
    assert "enc" in md and "act" not in md and 3 not in md
    md["act"] = act
    assert list(md.keys()) == ["enc", "dec", "act"]
    assert list(md.values()) == [enc, dec, act]
    assert list(md.items()) == [("enc", enc), ("dec", dec), ("act", act)]
    assert md.get("dec") is dec and md.get("nope") is None
    assert md.pop("dec") is dec and list(md) == ["enc", "act"]
    del md["act"]
    assert list(md) == ["enc"]
    md.update([("b", act), ("a", dec)])
    md.update(nn.ModuleDict({"c": nn.ReLU()}))
    assert list(md) == ["enc", "b", "a", "c"]
    md.clear()
    assert len(md) == 0 and md.parameters() == []
    with pytest.raises(KeyError):
        md["enc"]


def test_module_dict_children_are_named_by_key():
    class Net(nn.Module):
        def __init__(self):
            self.blocks = nn.ModuleDict({"enc": nn.Linear(2, 3), "dec": nn.Linear(3, 1)})
            self.blocks["train"] = nn.Linear(1, 1)  # a key named like a method does not hide it

    model = Net()
    assert [name for name, _ in model.blocks.named_children()] == ["enc", "dec", "train"]
    assert list(model.state_dict()) == [f"blocks.{k}.{p}" for k in ("enc", "dec", "train")
                                        for p in ("weight", "bias")]
    assert model.num_parameters() == (6 + 3) + (3 + 1) + (1 + 1)
    assert [name for name, _ in model.named_modules()] == [
        "", "blocks", "blocks.enc", "blocks.dec", "blocks.train"]
    assert model.blocks.train(False) is model.blocks and not model.blocks["train"].training
    twin = Net()
    twin.load_state_dict(model.state_dict())
    assert _values(twin) == _values(model)
    for p in model.parameters():
        p.grad = 1.0
    model.zero_grad()
    assert all(p.grad == 0.0 for p in model.parameters())


def test_module_dict_walks_public_attributes_too():
    md = nn.ModuleDict({"a": nn.Linear(1, 1)})
    md.extra = nn.Linear(1, 2)
    assert [name for name, _ in md.named_children()] == ["a", "extra"]
    assert list(md.state_dict()) == ["a.weight", "a.bias", "extra.weight", "extra.bias"]


@pytest.mark.parametrize("key,error", [
    (1, TypeError),
    (None, TypeError),
    (("a",), TypeError),
    ("", ValueError),
    ("a.b", ValueError),
])
def test_module_dict_refuses_bad_keys(key, error):
    md = nn.ModuleDict({"ok": nn.ReLU()})
    with pytest.raises(error, match="ModuleDict keys"):
        md[key] = nn.Tanh()
    with pytest.raises(error, match="ModuleDict keys"):
        nn.ModuleDict({key: nn.Tanh()})
    with pytest.raises(error, match="ModuleDict keys"):
        md.update([("fine", nn.Tanh()), (key, nn.Tanh())])
    assert list(md) == ["ok"]  # update checks everything before writing


@pytest.mark.parametrize("arg", [
    {"a": 3},
    {"a": [nn.ReLU()]},
    [("a", nn.ReLU(), 1)],
    ["ab"],
    [nn.ReLU()],
    5,
    "ab",
    nn.ReLU(),
])
def test_module_dict_refuses_bad_values(arg):
    md = nn.ModuleDict()
    with pytest.raises(TypeError):
        md.update(arg)
    assert len(md) == 0
    with pytest.raises(TypeError):
        nn.ModuleDict(arg)


def test_module_dict_has_no_forward():
    with pytest.raises(NotImplementedError):
        nn.ModuleDict({"a": nn.ReLU()})(1.0)


# ---- Dropout ----

def _draws(seed, n, p):
    """The kept/dropped pattern the documented rule gives: one random() per element, dropped below p."""
    r = random.Random(seed)
    return [r.random() >= p for _ in range(n)]


@pytest.mark.parametrize("p", [0.1, 0.5, 0.75])
def test_dropout_values_and_gradients_follow_the_formula(p):
    xs = [fastgrad.Var(0.25 * i - 3.0) for i in range(40)]
    out = nn.Dropout(p, rng=123)(xs)
    keep = _draws(123, 40, p)
    assert 0 < sum(keep) < 40
    scale = 1.0 / (1.0 - p)
    assert [y.data for y in out] == [x.data * scale if k else 0.0 for x, k in zip(xs, keep)]
    fastgrad.sum(out).backward()
    assert [x.grad for x in xs] == [scale if k else 0.0 for k in keep]


def test_dropout_same_seed_same_mask_and_own_generator():
    xs = [1.0] * 64
    a = nn.Dropout(0.5, rng=7)(xs)
    random.seed(0)
    b = nn.Dropout(0.5, rng=7)(xs)
    random.seed(99)  # the global generator is not used
    c = nn.Dropout(0.5, rng=random.Random(7))(xs)
    assert a == b == c
    assert a != nn.Dropout(0.5, rng=8)(xs)
    drop = nn.Dropout(0.5, rng=7)
    assert drop(xs) == a and drop(xs) != a  # the stream goes on between calls


@pytest.mark.parametrize("clone", ["pickle", "deepcopy"])
def test_a_cloned_dropout_continues_the_same_stream(clone):
    drop = nn.Dropout(0.3, rng=5)
    drop([1.0] * 10)
    twin = pickle.loads(pickle.dumps(drop)) if clone == "pickle" else copy.deepcopy(drop)
    assert twin([1.0] * 50) == drop([1.0] * 50)


def test_dropout_statistics():
    p, n = 0.3, 20_000
    out = nn.Dropout(p, rng=1)([1.0] * n)
    dropped = sum(y == 0.0 for y in out)
    sigma = math.sqrt(n * p * (1 - p))
    assert abs(dropped - n * p) < 5 * sigma
    assert set(out) == {0.0, 1.0 / (1.0 - p)}
    assert abs(sum(out) / n - 1.0) < 5 * sigma / (n * (1 - p))  # inverted dropout keeps the mean


def test_dropout_is_the_identity_in_eval_mode_and_at_p_zero():
    xs = [fastgrad.Var(1.0), fastgrad.Var(2.0)]
    drop = nn.Dropout(0.9, rng=0)
    assert drop.eval()(xs) is xs
    v = fastgrad.Var(3.0)
    assert drop(v) is v
    assert nn.Dropout(0.0)(xs) is xs
    net = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5, rng=0))
    x = [0.5, -0.5]
    net.eval()
    expected = [y.data for y in net[0](x)]
    assert [y.data for y in net(x)] == expected
    net.train()  # the eval call drew nothing: the first two draws of seed 0 decide
    assert [y.data for y in net(x)] == [e * 2.0 if k else 0.0 for e, k in zip(expected, _draws(0, 2, 0.5))]


def test_dropout_p_one_gives_zeros_with_zero_gradient():
    xs = [fastgrad.Var(v) for v in (1.0, -2.0, 3.0)]
    out = nn.Dropout(1.0)(xs)
    assert [y.data for y in out] == [0.0, 0.0, 0.0]
    fastgrad.sum(out).backward()
    assert [x.grad for x in xs] == [0.0, 0.0, 0.0]


def test_dropout_input_shapes():
    drop = nn.Dropout(0.5, rng=3)
    keep = _draws(3, 5, 0.5)
    out = drop([[1.0, fastgrad.Var(2.0)], (3.0, 4.0), 5.0])  # nested, depth first; tuples become lists
    flat = [out[0][0], out[0][1].data, out[1][0], out[1][1], out[2]]
    assert flat == [x * 2.0 if k else 0.0 for x, k in zip([1.0, 2.0, 3.0, 4.0, 5.0], keep)]
    assert isinstance(out[1], list) and isinstance(out[0][1], fastgrad.Var) and type(out[2]) is float
    assert isinstance(nn.Dropout(0.5, rng=0)(fastgrad.Var(1.0)), fastgrad.Var)
    assert nn.Dropout(0.5)([]) == []


@pytest.mark.parametrize("p,error", [
    (-0.1, ValueError), (1.5, ValueError), (float("nan"), ValueError), (float("inf"), ValueError),
    ("0.5", TypeError), (None, TypeError), (True, TypeError), (0.5 + 0j, TypeError),
])
def test_dropout_refuses_bad_p(p, error):
    with pytest.raises(error, match="between 0 and 1"):
        nn.Dropout(p)


@pytest.mark.parametrize("rng", ["seed", 1.5, True, np.random.default_rng(0)])
def test_dropout_refuses_bad_rng(rng):
    with pytest.raises(TypeError, match="rng must be an int seed or a random.Random"):
        nn.Dropout(0.5, rng=rng)


@pytest.mark.parametrize("x", ["abc", None, [1.0, "a"], [[1.0], [None]], {1.0: 2.0}, 1 + 2j])
@pytest.mark.parametrize("training", [True, False])
def test_dropout_refuses_bad_input_in_both_modes(x, training):
    drop = nn.Dropout(0.5, rng=0).train(training)
    with pytest.raises(TypeError, match="Dropout takes a Var, a number or a list of them"):
        drop(x)


def test_dropout_has_no_parameters_and_reprs_its_p():
    drop = nn.Dropout(0.25)
    assert drop.parameters() == [] and drop.state_dict() == {}
    assert repr(drop) == "Dropout(p=0.25)"
    assert repr(nn.Dropout()) == "Dropout(p=0.5)"
    assert repr(nn.Dropout(1)) == "Dropout(p=1.0)"


def test_dropout_scale_matches_torch_bit_for_bit():
    torch = pytest.importorskip("torch")
    for p in (0.1, 0.3, 0.5, 0.7):
        ours = {y for y in nn.Dropout(p, rng=0)([1.0] * 200) if y}
        t = torch.nn.functional.dropout(torch.ones(2000, dtype=torch.float64), p, training=True)
        theirs = {v for v in t.tolist() if v}
        assert ours == theirs and len(ours) == 1
        ones = torch.ones(5, dtype=torch.float64)
        assert torch.nn.functional.dropout(ones, p, training=False).tolist() == [1.0] * 5
    assert torch.nn.functional.dropout(torch.ones(3, dtype=torch.float64), 1.0).tolist() == [0.0] * 3


# ---- apply ----

def test_apply_visits_children_first_then_self_once_each():
    shared = nn.Linear(1, 1)
    inner = nn.Sequential(shared, nn.Tanh())
    model = nn.Sequential(inner, nn.ModuleList([nn.ReLU(), shared]), nn.ModuleDict({"k": nn.Sigmoid()}))
    seen = []
    assert model.apply(seen.append) is model
    # by hand: depth first, children before their parent, the shared Linear once (where first met)
    assert seen == [shared, inner[1], inner, model[1][0], model[1], model[2]["k"], model[2], model]
    names = {id(m): n or "." for n, m in model.named_modules()}
    assert [names[id(m)] for m in seen] == ["0.0", "0.1", "0", "1.0", "1", "2.k", "2", "."]


def test_apply_order_matches_torch():
    torch = pytest.importorskip("torch")
    tnn = torch.nn

    def build(lib):
        return lib.Sequential(lib.Sequential(lib.Linear(1, 1), lib.Tanh()),
                              lib.ModuleList([lib.ReLU(), lib.Linear(1, 2)]),
                              lib.ModuleDict({"k": lib.Sigmoid(), "j": lib.Identity()}))

    def order(model):
        names = {id(m): n for n, m in model.named_modules()}
        seen = []
        model.apply(lambda m: seen.append(names[id(m)]))
        return seen

    assert order(build(nn)) == order(build(tnn))


def test_apply_initializes_weights_and_walks_deep_nests():
    def zero_linear(m):
        if isinstance(m, nn.Linear):
            for v in _linear_vars(m):
                v.data = 0.0

    model = Stack(3).apply(zero_linear)
    assert all(v == 0.0 for v in _values(model))
    m = nn.Module()
    for _ in range(3_000):
        outer = nn.Module()
        outer.m = m
        m = outer
    count = []
    m.apply(lambda _: count.append(1))
    assert len(count) == 3_001


@pytest.mark.parametrize("fn", [None, 3, "print"])
def test_apply_refuses_a_non_callable(fn):
    with pytest.raises(TypeError, match="fn must be callable"):
        nn.ReLU().apply(fn)


# ---- Sequential's list operations ----

def test_sequential_append_slice_insert_pop():
    a, b, c = nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1)
    seq = nn.Sequential(a)
    assert seq.append(b) is seq and seq.append(c) is seq
    assert list(seq) == [a, b, c] and [n for n, _ in seq.named_children()] == ["0", "1", "2"]
    head = seq[:2]
    assert type(head) is nn.Sequential and list(head) == [a, b] and head[0] is a
    assert list(seq[::-1]) == [c, b, a]
    x = [0.5, -1.0]
    assert seq(x).data == c(b(a(x))).data
    seq.insert(1, nn.ReLU())
    assert [type(m).__name__ for m in seq] == ["Linear", "ReLU", "Tanh", "Linear"]
    assert list(seq.state_dict()) == ["0.weight", "0.bias", "3.weight", "3.bias"]
    assert type(seq.pop(1)) is nn.ReLU and list(seq) == [a, b, c]
    with pytest.raises(TypeError, match="Sequential takes Modules"):
        seq.append(lambda v: v)
    with pytest.raises(TypeError, match="Sequential takes Modules"):
        seq.extend([nn.ReLU(), 2])
    with pytest.raises(IndexError, match="out of range"):
        seq[3]
    assert list(seq) == [a, b, c]


# ---- repr, as PyTorch prints it ----

EXPECTED_REPR = """Sequential(
  (0): Linear(in_features=2, out_features=16, bias=True)
  (1): ReLU()
  (2): ModuleList(
    (0-1): 2 x Linear(in_features=2, out_features=2, bias=True)
    (2): Tanh()
    (3): Sequential(
      (0): Sigmoid()
    )
  )
  (3): ModuleDict(
    (a): Sigmoid()
    (b): Identity()
  )
  (4): Linear(in_features=3, out_features=1, bias=False)
)"""


def _repr_model(lib):
    return lib.Sequential(
        lib.Linear(2, 16), lib.ReLU(),
        lib.ModuleList([lib.Linear(2, 2), lib.Linear(2, 2), lib.Tanh(), lib.Sequential(lib.Sigmoid())]),
        lib.ModuleDict({"a": lib.Sigmoid(), "b": lib.Identity()}),
        lib.Linear(3, 1, bias=False))


def test_repr_follows_pytorchs_layout():
    assert repr(_repr_model(nn)) == EXPECTED_REPR
    assert repr(nn.Sequential(nn.Linear(2, 16), nn.ReLU())) == (
        "Sequential(\n  (0): Linear(in_features=2, out_features=16, bias=True)\n  (1): ReLU()\n)")
    assert repr(nn.ModuleList()) == "ModuleList()" and repr(nn.ModuleDict()) == "ModuleDict()"
    assert repr(nn.ModuleList([nn.ReLU()] * 3)) == "ModuleList(\n  (0-2): 3 x ReLU()\n)"


def test_repr_matches_torch():
    torch = pytest.importorskip("torch")
    assert repr(_repr_model(nn)) == repr(_repr_model(torch.nn))
    # Dropout: torch adds ", inplace=False" (fastgrad has no in-place ops)
    assert repr(nn.Dropout(0.1)) == repr(torch.nn.Dropout(0.1)).replace(", inplace=False", "")


def test_a_module_list_referring_back_to_itself_reprs():
    ml = nn.ModuleList([nn.ReLU()])
    holder = nn.Module()
    holder.back = ml
    ml.append(holder)
    text = repr(ml)
    assert "ModuleList(...)" in text and text.startswith("ModuleList(\n  (0): ReLU()")


# ---- num_parameters ----

def test_num_parameters():
    assert nn.Linear(4, 3).num_parameters() == 4 * 3 + 3
    assert nn.Linear(4, 3, bias=False).num_parameters() == 12
    assert nn.Neuron(5).num_parameters() == 6
    assert nn.Layer(3, 2).num_parameters() == 8
    assert nn.MLP(2, [16, 16, 1]).num_parameters() == 337
    shared = nn.Linear(2, 2)
    assert nn.ModuleList([shared, shared, nn.Linear(2, 1)]).num_parameters() == 6 + 3
    assert nn.Sequential(nn.ReLU(), nn.Dropout()).num_parameters() == 0


def test_num_parameters_matches_torch():
    torch = pytest.importorskip("torch")
    ours = _repr_model(nn).num_parameters()
    theirs = sum(p.numel() for p in _repr_model(torch.nn).parameters())
    assert ours == theirs == (2 * 16 + 16) + 2 * (2 * 2 + 2) + 3


# ---- one output is a bare Var, for every layer ----

def test_one_output_is_a_bare_var_for_linear_layer_mlp_and_neuron():
    x = [0.5, -1.0, 2.0]
    for model in (nn.Linear(3, 1), nn.Layer(3, 1), nn.MLP(3, [4, 1]), nn.Neuron(3)):
        y = model(x)
        assert type(y) is fastgrad.Var
        y.backward()  # what a PyTorch user does with a one-element output
    for model in (nn.Linear(3, 2), nn.Layer(3, 2), nn.MLP(3, [4, 2])):
        ys = model(x)
        assert type(ys) is list and len(ys) == 2 and all(type(y) is fastgrad.Var for y in ys)


def test_a_bare_var_or_number_is_one_input_so_one_output_layers_chain():
    rng = random.Random(4)
    net = nn.Sequential(nn.Linear(2, 1, rng=rng), nn.Tanh(), nn.Linear(1, 3, rng=rng))
    x = [0.3, -0.7]
    l1, l2 = net[0], net[2]
    h = math.tanh(sum(w.data * xi for w, xi in zip(l1.weight[0], x)) + l1.bias[0].data)
    expected = [row[0].data * h + b.data for row, b in zip(l2.weight, l2.bias)]
    assert [y.data for y in net(x)] == pytest.approx(expected, abs=1e-15)
    assert [y.data for y in l2(2.0)] == [y.data for y in l2([2.0])]
    assert [y.data for y in l2(np.float64(2.0))] == [y.data for y in l2([2.0])]
    model = nn.MLP(2, [1, 2], rng=rng)  # a one-wide hidden layer (micrograd's own MLP fails here)
    assert len(model(x)) == 2


def test_inputs_may_be_any_iterable_of_numbers():
    lin = nn.Linear(3, 2, rng=random.Random(0))
    expected = [y.data for y in lin([1.0, 2.0, 3.0])]
    assert [y.data for y in lin((1.0, 2.0, 3.0))] == expected
    assert [y.data for y in lin(np.array([1.0, 2.0, 3.0]))] == expected
    assert [y.data for y in lin(float(v) for v in (1, 2, 3))] == expected
    assert [y.data for y in lin(range(1, 4))] == expected


def test_linear_values_and_gradients_match_torch():
    torch = pytest.importorskip("torch")
    for nout in (1, 3):
        lin = nn.Linear(4, nout, rng=random.Random(nout))
        t = torch.nn.Linear(4, nout).double()
        with torch.no_grad():
            t.weight.copy_(torch.tensor([[v.data for v in row] for row in lin.weight], dtype=torch.float64))
            t.bias.copy_(torch.tensor([v.data for v in lin.bias], dtype=torch.float64))
        xs = [fastgrad.Var(v) for v in (0.5, -1.0, 2.0, 0.25)]
        tx = torch.tensor([0.5, -1.0, 2.0, 0.25], dtype=torch.float64, requires_grad=True)
        out = lin(xs)
        outs = [out] if nout == 1 else out
        fastgrad.sum([y * (k + 1) for k, y in enumerate(outs)]).backward()
        ty = t(tx)
        (ty * torch.arange(1, nout + 1, dtype=torch.float64)).sum().backward()
        assert [y.data for y in outs] == pytest.approx(ty.tolist(), abs=1e-14)
        assert [x.grad for x in xs] == pytest.approx(tx.grad.tolist(), abs=1e-14)
        assert [v.grad for v in lin.bias] == pytest.approx(t.bias.grad.tolist(), abs=1e-14)


# ---- errors in the user's terms ----

LINEAR = "Linear(in_features=4, out_features=3, bias=True)"


@pytest.mark.parametrize("make,n_in,name", [
    (lambda: nn.Linear(4, 3), 4, LINEAR),
    (lambda: nn.Linear(4, 1, bias=False), 4, "Linear(in_features=4, out_features=1, bias=False)"),
    (lambda: nn.Layer(4, 3), 4, "Layer(4, 3, activation='relu')"),
    (lambda: nn.MLP(4, [3, 1]), 4, "Layer(4, 3, activation='relu')"),
    (lambda: nn.Neuron(4), 4, "ReLUNeuron(4)"),
    (lambda: nn.Neuron(4, nonlin=False), 4, "LinearNeuron(4)"),
    (lambda: nn.Neuron(1), 1, "ReLUNeuron(1)"),
])
@pytest.mark.parametrize("given", [0, 2, 3, 5])
def test_a_wrong_input_count_names_the_layer_and_never_counts_the_bias(make, n_in, name, given):
    layer = make()
    if given == n_in:
        return
    with pytest.raises(ValueError) as info:
        layer([1.0] * given)
    expected = f"{name} expects {n_in} input{'s' if n_in != 1 else ''}, got {given}"
    assert str(info.value) == expected
    assert info.value.__cause__ is None and info.value.__suppress_context__  # the engine's error is hidden


def test_a_single_var_given_to_a_wider_layer_counts_as_one_input():
    with pytest.raises(ValueError, match=r"^Linear\(in_features=4, .*\) expects 4 inputs, got 1$"):
        nn.Linear(4, 3)(fastgrad.Var(1.0))
    with pytest.raises(ValueError, match=r"^ReLUNeuron\(2\) expects 2 inputs, got 1$"):
        nn.Neuron(2)(3.0)


@pytest.mark.parametrize("make,name", [
    (lambda: nn.Linear(3, 2), "Linear(in_features=3, out_features=2, bias=True)"),
    (lambda: nn.Layer(3, 1), "Layer(3, 1, activation='relu')"),
    (lambda: nn.MLP(3, [2, 1]), "Layer(3, 2, activation='relu')"),
    (lambda: nn.Neuron(3, activation="tanh"), "TanhNeuron(3)"),
])
@pytest.mark.parametrize("bad,kind", [
    ("a", "str"), (None, "NoneType"), (1 + 2j, "complex"), ([2.0], "list"), (np.zeros(2), "ndarray"),
])
def test_a_non_number_input_names_the_layer_and_its_position(make, name, bad, kind):
    with pytest.raises(TypeError) as info:
        make()([1.0, bad, 2.0])
    message = str(info.value)
    assert message.startswith(f"{name}: input 1 is a {kind}, expected a Var or a real number")
    assert "affine" not in message and "dot" not in message
    if kind in ("list", "ndarray"):
        assert "call it on each row of a batch" in message


@pytest.mark.parametrize("make", [lambda: nn.Linear(2, 2), lambda: nn.Layer(2, 2), lambda: nn.Neuron(2),
                                  lambda: nn.MLP(2, [2, 1])])
@pytest.mark.parametrize("bad", [None, "ab", b"ab", object(), 1 + 1j])
def test_an_input_that_is_no_list_names_the_layer(make, bad):
    with pytest.raises(TypeError, match=r"takes a list of 2 inputs \(Vars or numbers\), got "):
        make()(bad)


def test_broken_parameters_are_reported_without_engine_names():
    layer = nn.Layer(2, 2)
    layer.neurons[1].w[0] = fastgrad.Var(1.0) * 2  # not a leaf
    with pytest.raises(ValueError) as info:
        layer([1.0, 2.0])
    assert str(info.value) == "Layer(2, 2, activation='relu'): neuron 1's w holds a Var that is not a leaf"
    lin = nn.Linear(2, 2)
    lin.bias[1] = fastgrad.Var(1.0) + 1
    with pytest.raises(ValueError) as info:
        lin([1.0, 2.0])
    assert str(info.value) == (
        "Linear(in_features=2, out_features=2, bias=True): the bias holds a Var that is not a leaf")


@pytest.mark.parametrize("nouts,error,match", [
    (3, TypeError, "layer sizes must be a list of ints"),
    ("16", TypeError, "layer sizes must be a list of ints"),
    (None, TypeError, "layer sizes must be a list of ints"),
    ([], ValueError, "at least one layer"),
    ([16, "1"], ValueError, "non-negative ints"),
    ([16, -1], ValueError, "non-negative ints"),
    ([2.5], ValueError, "non-negative ints"),
    ([True], ValueError, "non-negative ints"),
])
def test_mlp_says_its_layer_sizes_must_be_a_list(nouts, error, match):
    with pytest.raises(error, match=match):
        nn.MLP(2, nouts)


def test_mlp_checks_nin():
    with pytest.raises(ValueError, match="nin must be a non-negative int"):
        nn.MLP(2.0, [1])
    assert nn.MLP(2, (3, 1)).num_parameters() == 9 + 4
