"""fastgrad.nn.init (statistics and exact bounds against PyTorch's formulas, determinism, errors) and
fastgrad.nn.utils gradient clipping (hand-computed values, and torch.nn.utils on the same numbers)."""
import math
import random
import statistics
import warnings

import pytest

import fastgrad
from fastgrad import nn
from fastgrad.nn import init
from fastgrad.nn.utils import clip_grad_norm_, clip_grad_value_

OUT, IN = 160, 80  # a weight matrix: OUT rows of IN Vars


def matrix(rows=OUT, cols=IN):
    return [[fastgrad.Var(0.0) for _ in range(cols)] for _ in range(rows)]


def values(m):
    return [v.data for row in m for v in row]


# ---- calculate_gain ----

GAINS = [
    ("linear", None, 1.0), ("conv2d", None, 1.0), ("sigmoid", None, 1.0), ("tanh", None, 5.0 / 3),
    ("relu", None, math.sqrt(2.0)), ("leaky_relu", None, math.sqrt(2.0 / (1 + 0.01 ** 2))),
    ("leaky_relu", 0.2, math.sqrt(2.0 / 1.04)), ("leaky_relu", 0, math.sqrt(2.0)), ("selu", None, 0.75),
]


@pytest.mark.parametrize("name,param,gain", GAINS)
def test_calculate_gain_table(name, param, gain):
    assert init.calculate_gain(name, param) == pytest.approx(gain, rel=1e-15)


@pytest.mark.parametrize("name,param,gain", GAINS)
def test_calculate_gain_matches_torch(name, param, gain):
    torch = pytest.importorskip("torch")
    assert init.calculate_gain(name, param) == torch.nn.init.calculate_gain(name, param)


def test_calculate_gain_errors():
    with pytest.raises(ValueError, match="unsupported nonlinearity 'gelu'"):
        init.calculate_gain("gelu")
    for bad in (True, "0.2", [0.2]):
        with pytest.raises(ValueError, match="negative_slope"):
            init.calculate_gain("leaky_relu", bad)


# ---- element-wise fills: bounds exact, statistics against the formulas ----

def test_uniform_bounds_and_moments():
    m = matrix()
    assert init.uniform_(m, -2.0, 3.0, generator=random.Random(0)) is m
    xs = values(m)
    assert min(xs) >= -2.0 and max(xs) <= 3.0
    assert min(xs) < -1.99 and max(xs) > 2.99
    assert statistics.fmean(xs) == pytest.approx(0.5, abs=0.03)
    assert statistics.pstdev(xs) == pytest.approx(5.0 / math.sqrt(12), rel=0.02)


def test_normal_moments_and_degenerate_std():
    m = matrix()
    init.normal_(m, mean=1.5, std=0.25, generator=random.Random(1))
    xs = values(m)
    assert statistics.fmean(xs) == pytest.approx(1.5, abs=0.01)
    assert statistics.pstdev(xs) == pytest.approx(0.25, rel=0.02)
    init.normal_(m, mean=-3.0, std=0.0)
    assert set(values(m)) == {-3.0}


def test_constant_zeros_ones_on_any_shape():
    v, flat, nested = fastgrad.Var(5.0), [fastgrad.Var(1.0), fastgrad.Var(2.0)], matrix(3, 2)
    assert init.zeros_(v) is v and v.data == 0.0
    assert init.ones_(flat) is flat and [x.data for x in flat] == [1.0, 1.0]
    assert init.constant_(nested, 0.125) is nested and set(values(nested)) == {0.125}
    bias = (fastgrad.Var(1.0), fastgrad.Var(2.0))
    init.constant_(bias, -1)
    assert [b.data for b in bias] == [-1.0, -1.0]


# ---- fan-based initialisation ----

def xavier_std(gain, fan_in, fan_out):
    return gain * math.sqrt(2.0 / (fan_in + fan_out))


def kaiming_std(gain, fan):
    return gain / math.sqrt(fan)


FAN_CASES = [
    # (function, kwargs, expected std, uniform?)
    (init.xavier_uniform_, {}, xavier_std(1.0, IN, OUT), True),
    (init.xavier_uniform_, {"gain": 5.0 / 3}, xavier_std(5.0 / 3, IN, OUT), True),
    (init.xavier_normal_, {}, xavier_std(1.0, IN, OUT), False),
    (init.xavier_normal_, {"gain": 2.0}, xavier_std(2.0, IN, OUT), False),
    (init.kaiming_uniform_, {}, kaiming_std(math.sqrt(2.0), IN), True),  # leaky_relu with a = 0
    (init.kaiming_uniform_, {"a": 0.2, "mode": "fan_out"}, kaiming_std(math.sqrt(2.0 / 1.04), OUT), True),
    (init.kaiming_uniform_, {"nonlinearity": "tanh"}, kaiming_std(5.0 / 3, IN), True),
    (init.kaiming_uniform_, {"a": math.sqrt(5)}, 1.0 / math.sqrt(3 * IN), True),  # nn.Linear's default
    (init.kaiming_normal_, {}, kaiming_std(math.sqrt(2.0), IN), False),
    (init.kaiming_normal_, {"mode": "fan_out", "nonlinearity": "relu"}, kaiming_std(math.sqrt(2.0), OUT),
     False),
    (init.kaiming_normal_, {"nonlinearity": "sigmoid"}, kaiming_std(1.0, IN), False),
]


@pytest.mark.parametrize("fn,kwargs,std,uniform", FAN_CASES)
def test_fan_based_statistics_match_the_formulas(fn, kwargs, std, uniform):
    m = matrix()
    assert fn(m, generator=random.Random(42), **kwargs) is m
    xs = values(m)
    assert statistics.fmean(xs) == pytest.approx(0.0, abs=0.02 * std)
    assert statistics.pstdev(xs) == pytest.approx(std, rel=0.02)
    if uniform:
        bound = math.sqrt(3.0) * std
        assert max(abs(x) for x in xs) <= bound  # exact: never outside
        assert max(abs(x) for x in xs) > 0.999 * bound


@pytest.mark.parametrize("fn,kwargs,std,uniform", FAN_CASES)
def test_fan_based_statistics_match_torch(fn, kwargs, std, uniform):
    torch = pytest.importorskip("torch")
    m = matrix()
    fn(m, generator=random.Random(7), **kwargs)
    t = torch.empty(OUT, IN, dtype=torch.float64)
    getattr(torch.nn.init, fn.__name__)(t, generator=torch.Generator().manual_seed(7), **kwargs)
    assert statistics.pstdev(values(m)) == pytest.approx(t.std(correction=0).item(), rel=0.03)
    if uniform:
        assert t.abs().max().item() <= math.sqrt(3.0) * std + 1e-12  # torch's bound is the formula's too


def test_seeded_generator_is_deterministic_and_default_is_the_random_module():
    a, b, c = matrix(5, 4), matrix(5, 4), matrix(5, 4)
    init.kaiming_uniform_(a, generator=random.Random(3))
    init.kaiming_uniform_(b, generator=random.Random(3))
    init.kaiming_uniform_(c, generator=random.Random(4))
    assert values(a) == values(b) != values(c)
    # the draws go row by row: the same as drawing them by hand
    rng, bound = random.Random(3), math.sqrt(3.0) * (math.sqrt(2.0) / math.sqrt(4))  # √3 · gain/√fan_in
    assert values(a) == [rng.uniform(-bound, bound) for _ in range(20)]
    random.seed(11)
    init.xavier_normal_(a)
    random.seed(11)
    init.xavier_normal_(b)
    assert values(a) == values(b)


def test_fans_of_deeper_nests_use_the_receptive_field():
    torch = pytest.importorskip("torch")
    t = torch.empty(4, 3, 5)
    nested = [[[fastgrad.Var(0.0) for _ in range(5)] for _ in range(3)] for _ in range(4)]
    assert init._fans(nested) == torch.nn.init._calculate_fan_in_and_fan_out(t) == (15, 20)
    init.xavier_uniform_(nested, generator=random.Random(0))
    assert max(abs(v.data) for plane in nested for row in plane for v in row) <= math.sqrt(6.0 / 35)


def test_initialises_layers_in_place():
    lin = nn.Linear(3, 2)
    init.kaiming_normal_(lin.weight, nonlinearity="relu", generator=random.Random(0))
    init.zeros_(lin.bias)
    w = [[v.data for v in row] for row in lin.weight]
    out = lin([1.0, 2.0, 3.0])
    assert [o.data for o in out] == [fastgrad.dot(row, [1.0, 2.0, 3.0]).data for row in w]
    layer = nn.Layer(4, 3)  # micrograd's shape: the matrix is the neurons' weight lists
    init.xavier_uniform_([n.w for n in layer.neurons], generator=random.Random(1))
    assert all(abs(v.data) <= math.sqrt(6.0 / 7) for n in layer.neurons for v in n.w)


def test_fan_errors_and_bad_arguments():
    for one_d in (fastgrad.Var(1.0), [fastgrad.Var(1.0), fastgrad.Var(2.0)], []):
        for fn in (init.xavier_uniform_, init.xavier_normal_, init.kaiming_uniform_, init.kaiming_normal_):
            with pytest.raises(ValueError, match="fewer than 2 dimensions"):
                fn(one_d)
    with pytest.raises(ValueError, match="same length"):
        init.xavier_uniform_([[fastgrad.Var(0.0)], [fastgrad.Var(0.0), fastgrad.Var(0.0)]])
    with pytest.raises(ValueError, match="ragged"):
        init.kaiming_normal_([[fastgrad.Var(0.0), [fastgrad.Var(0.0)]]])
    with pytest.raises(ValueError, match="mode"):
        init.kaiming_uniform_(matrix(2, 2), mode="fan_avg")
    with pytest.raises(ValueError, match="unsupported nonlinearity"):
        init.kaiming_normal_(matrix(2, 2), nonlinearity="swish")
    with pytest.raises(TypeError, match="Var"):
        init.uniform_([[1.0, 2.0]])
    with pytest.raises(TypeError, match="Var"):
        init.zeros_(3.0)
    with pytest.raises(TypeError, match="generator"):
        init.normal_(matrix(1, 1), generator=42)
    with pytest.raises(ValueError, match="a <= b"):
        init.uniform_(matrix(1, 1), 1.0, 0.0)
    with pytest.raises(ValueError, match="std >= 0"):
        init.normal_(matrix(1, 1), std=-1.0)
    with pytest.raises(TypeError, match="real number"):
        init.constant_(matrix(1, 1), "1.0")


def test_empty_matrix_is_a_no_op():
    for m in ([[], []], [[]]):
        assert init.kaiming_uniform_(m) is m
        assert init.xavier_normal_(m) is m


# ---- clip_grad_norm_ ----

def with_grads(grads):
    vs = [fastgrad.Var(1.0) for _ in grads]
    for v, g in zip(vs, grads):
        v.grad = g
    return vs


def test_clip_grad_norm_by_hand():
    vs = with_grads([3.0, -4.0])
    total = clip_grad_norm_(vs, max_norm=1.0)
    assert type(total) is float and total == 5.0
    coef = 1.0 / (5.0 + 1e-6)
    assert [v.grad for v in vs] == [3.0 * coef, -4.0 * coef]
    vs = with_grads([0.3, -0.4])  # norm 0.5 < 1: the coefficient is clamped to 1, grads unchanged
    assert clip_grad_norm_(vs, 1.0) == pytest.approx(0.5, rel=1e-15)
    assert [v.grad for v in vs] == [0.3, -0.4]
    clip_grad_norm_(vs, 0.6)  # max_norm / norm = 1.2: still clamped to 1
    assert [v.grad for v in vs] == [0.3, -0.4]


@pytest.mark.parametrize("p,norm", [(1, 7.0), (3, (27 + 64) ** (1 / 3)), (math.inf, 4.0), ("inf", 4.0),
                                    (0, 2.0), (0.5, (math.sqrt(3) + 2) ** 2), (-math.inf, 0.0),
                                    (-1, 0.0)])
def test_clip_grad_norm_other_orders(p, norm):
    vs = with_grads([3.0, -4.0, 0.0])
    assert clip_grad_norm_(vs, 0.5, norm_type=p) == pytest.approx(norm, rel=1e-14)
    coef = min(1.0, 0.5 / (norm + 1e-6))
    assert [v.grad for v in vs] == pytest.approx([3.0 * coef, -4.0 * coef, 0.0], rel=1e-14)


def test_clip_grad_norm_takes_a_var_nested_lists_and_a_model():
    v = with_grads([-10.0])[0]
    assert clip_grad_norm_(v, 2.0) == 10.0 and v.grad == pytest.approx(-2.0, rel=1e-6)
    lin = nn.Linear(2, 2)
    out = lin([1.0, -2.0])
    (out[0] * out[1] * 100.0).backward()
    grads = [p.grad for p in lin.parameters()]
    total = clip_grad_norm_([lin.weight, lin.bias], 0.1)
    assert total == pytest.approx(math.sqrt(sum(g * g for g in grads)), rel=1e-14)
    after = clip_grad_norm_(lin.parameters(), 1e9)  # a model's flat list; the norm now is ~0.1
    assert after == pytest.approx(0.1, rel=1e-5)


def test_clip_grad_norm_nonfinite():
    vs = with_grads([math.nan, 1.0])
    assert math.isnan(clip_grad_norm_(vs, 1.0))
    assert all(math.isnan(v.grad) for v in vs)  # scaled by a NaN coefficient, as PyTorch does
    vs = with_grads([math.inf, 2.0])
    assert clip_grad_norm_(vs, 1.0) == math.inf
    assert math.isnan(vs[0].grad) and vs[1].grad == 0.0  # inf·0 and 2·0
    vs = with_grads([math.inf, 2.0])
    with pytest.raises(RuntimeError, match="non-finite"):
        clip_grad_norm_(vs, 1.0, error_if_nonfinite=True)
    assert [v.grad for v in vs] == [math.inf, 2.0]  # untouched


def test_clip_grad_norm_does_not_overflow():
    # NOTE: PyTorch squares first and gets inf here (and then zeroes the gradients)
    vs = with_grads([1e200, 1e200])
    assert clip_grad_norm_(vs, 1.0) == pytest.approx(math.sqrt(2) * 1e200, rel=1e-15)
    assert [v.grad for v in vs] == pytest.approx([math.sqrt(0.5)] * 2, rel=1e-12)


def test_clip_grad_norm_empty_and_bad_arguments():
    assert clip_grad_norm_([], 1.0) == 0.0
    with pytest.warns(UserWarning, match="empty generator"):
        assert clip_grad_norm_((p for p in []), 1.0) == 0.0
    with pytest.raises(TypeError, match="Vars"):
        clip_grad_norm_([fastgrad.Var(1.0), 2.0], 1.0)
    with pytest.raises(TypeError, match="max_norm"):
        clip_grad_norm_([fastgrad.Var(1.0)], "1")
    with pytest.raises(TypeError, match="norm_type"):
        clip_grad_norm_([fastgrad.Var(1.0)], 1.0, norm_type="fro")
    with pytest.raises(TypeError, match="iterable"):
        clip_grad_norm_(3.0, 1.0)


TORCH_GRADS = [[3.0, -4.0, 0.5], [1e-3, 2e-3, -5e-4], [0.0, 0.0], [math.inf, 1.0], [math.nan, 1.0],
               [math.inf, math.nan], [0.0, 2.0, -3.0], [0.7, -1.3, 2.9, 1e-9, -40.0]]


def same(a, b):
    return (math.isnan(a) and math.isnan(b)) or a == b or abs(a - b) <= 1e-12 * abs(b)


@pytest.mark.parametrize("grads", TORCH_GRADS)
def test_clip_grad_norm_matches_torch(grads):
    torch = pytest.importorskip("torch")
    for p in (2.0, 1.0, 3.0, 0.5, math.inf, -math.inf, 0.0, -1.0):
        for max_norm in (1.0, 0.1, 100.0):
            vs = with_grads(grads)
            ts = [torch.zeros((), dtype=torch.float64, requires_grad=True) for _ in grads]
            for t, g in zip(ts, grads):
                t.grad = torch.tensor(g, dtype=torch.float64)
            total = clip_grad_norm_(vs, max_norm, p)
            t_total = torch.nn.utils.clip_grad_norm_(ts, max_norm, p).item()
            assert same(total, t_total), (p, max_norm, total, t_total)
            assert all(same(v.grad, t.grad.item()) for v, t in zip(vs, ts)), (p, max_norm)


# ---- clip_grad_value_ ----

def test_clip_grad_value_by_hand():
    vs = with_grads([3.0, -4.0, 0.25, math.nan, -math.inf])
    assert clip_grad_value_(vs, 1.0) is None
    got = [v.grad for v in vs]
    assert got[:3] == [1.0, -1.0, 0.25] and math.isnan(got[3]) and got[4] == -1.0
    nested = [with_grads([5.0, -5.0]), with_grads([0.5])]
    clip_grad_value_(nested, 2)
    assert [v.grad for row in nested for v in row] == [2.0, -2.0, 0.5]
    with pytest.raises(TypeError, match="clip_value"):
        clip_grad_value_(nested, None)


def test_clip_grad_value_matches_torch():
    torch = pytest.importorskip("torch")
    grads = [3.0, -4.0, 0.25, math.nan, -math.inf, math.inf, 0.0]
    for clip in (1.0, 0.1, 10.0, -0.5, 0.0):  # a negative clip_value sets everything to it, as in torch
        vs = with_grads(grads)
        t = torch.tensor(grads, dtype=torch.float64, requires_grad=True)
        t.grad = torch.tensor(grads, dtype=torch.float64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.nn.utils.clip_grad_value_([t], clip)
        clip_grad_value_(vs, clip)
        assert all(same(v.grad, g) for v, g in zip(vs, t.grad.tolist())), clip


def test_clipping_in_a_training_step():
    model = nn.MLP(2, [8, 1])
    opt = fastgrad.optim.SGD(model.parameters(), lr=0.1)
    loss = model([3.0, -2.0]) * 50.0
    loss.backward()
    before = math.sqrt(sum(p.grad ** 2 for p in model.parameters()))
    assert clip_grad_norm_(model.parameters(), 0.5) == pytest.approx(before, rel=1e-14)
    after = math.sqrt(sum(p.grad ** 2 for p in model.parameters()))
    assert after == pytest.approx(min(before, 0.5 * before / (before + 1e-6)), rel=1e-12)
    opt.step()


# ---- MLP(init=...) ----

def test_mlp_init_micrograd_is_the_default_and_pytorch_bounds_by_fan_in():
    import random as _random

    import fastgrad as fg
    a = fg.nn.MLP(64, [32, 10], rng=_random.Random(3))
    b = fg.nn.MLP(64, [32, 10], rng=_random.Random(3), init="micrograd")
    assert [p.data for p in a.parameters()] == [p.data for p in b.parameters()]
    assert max(abs(p.data) for p in a.parameters()) > 0.9          # uniform(-1, 1)
    c = fg.nn.MLP(64, [32, 10], rng=_random.Random(3), init="pytorch")
    for layer, nin in zip(c.layers, (64, 32)):
        values = [p.data for p in layer.parameters()]
        bound = 1 / nin ** 0.5
        assert max(abs(v) for v in values) <= bound
        assert max(abs(v) for v in values) > 0.9 * bound


def test_mlp_init_function_gets_each_layers_weight_matrix_and_bias():
    import fastgrad as fg
    from fastgrad.nn import init
    seen = []

    def my_init(weight, bias):
        seen.append((len(weight), len(weight[0]), len(bias)))
        init.constant_(weight, 0.5)
        init.zeros_(bias)

    m = fg.nn.MLP(3, [4, 2], init=my_init)
    assert seen == [(4, 3, 4), (2, 4, 2)]
    assert sorted({p.data for p in m.parameters()}) == [0.0, 0.5]
    assert m([1.0, 1.0, 1.0])[0].data == 4 * 0.5 * 1.5


def test_mlp_init_errors():
    import pytest as _pytest

    import fastgrad as fg
    with _pytest.raises(ValueError, match="'micrograd', 'pytorch'"):
        fg.nn.MLP(2, [3], init="xavier")
    with _pytest.raises(TypeError, match="function"):
        fg.nn.MLP(2, [3], init=3)
