"""Losses against closed forms and finite differences; reductions; stability at ±1000."""
import math

import pytest

import fastgrad
from fastgrad import nn
from fastgrad.nn import functional as F


def _sigmoid(x):
    return 1 / (1 + math.exp(-x)) if x >= 0 else math.exp(x) / (1 + math.exp(x))


def _grads(loss_fn, xs, *args, **kwargs):
    """loss value and d loss / d xs through the engine."""
    vs = [fastgrad.Var(x) for x in xs]
    loss = loss_fn(vs, *args, **kwargs)
    loss.backward()
    return loss.data, [v.grad for v in vs]


def _finite_differences(loss_fn, xs, *args, h=1e-6, **kwargs):
    out = []
    for i in range(len(xs)):
        up, down = list(xs), list(xs)
        up[i] += h
        down[i] -= h
        out.append((loss_fn(up, *args, **kwargs).data - loss_fn(down, *args, **kwargs).data) / (2 * h))
    return out


X = [0.5, -1.25, 2.0, 0.0]


# ---- mse ----

@pytest.mark.parametrize("reduction,scale", [("mean", 1 / 4), ("sum", 1.0)])
def test_mse_closed_form_and_gradient(reduction, scale):
    t = [1.0, 0.0, 2.5, -1.0]
    value, grads = _grads(F.mse_loss, X, t, reduction=reduction)
    assert value == pytest.approx(scale * sum((x - ti) ** 2 for x, ti in zip(X, t)), abs=1e-15)
    assert grads == pytest.approx([scale * 2 * (x - ti) for x, ti in zip(X, t)], abs=1e-15)
    assert grads == pytest.approx(_finite_differences(F.mse_loss, X, t, reduction=reduction), abs=1e-8)


def test_mse_of_scalars_and_the_sum_is_one_fused_node():
    assert F.mse_loss(fastgrad.Var(3.0), 1.0).data == 4.0
    loss = F.mse_loss([fastgrad.Var(v) for v in X], [0.0] * 4, reduction="sum")
    assert loss.op == "dot"


# ---- hinge ----

@pytest.mark.parametrize("reduction,scale", [("mean", 1 / 4), ("sum", 1.0)])
def test_hinge_closed_form_and_gradient(reduction, scale):
    y = [1, -1, -1, 1]
    value, grads = _grads(F.hinge_loss, X, y, reduction=reduction)
    assert value == pytest.approx(scale * sum(max(0.0, 1 - yi * x) for x, yi in zip(X, y)), abs=1e-15)
    expected = [scale * (-yi if 1 - yi * x > 0 else 0.0) for x, yi in zip(X, y)]
    assert grads == pytest.approx(expected, abs=1e-15)
    assert grads == pytest.approx(_finite_differences(F.hinge_loss, X, y, reduction=reduction), abs=1e-8)


def test_hinge_is_microgradss_max_margin():
    scores, y = [fastgrad.Var(v) for v in (0.3, -2.0, 1.5)], [1, -1, -1]
    micrograd_style = sum((1 + -yi * si).relu() for yi, si in zip(y, scores)) * (1.0 / len(y))
    assert F.hinge_loss(scores, y).data == micrograd_style.data


def test_hinge_rejects_zero_one_labels():
    with pytest.raises(ValueError, match="-1 or \\+1"):
        F.hinge_loss([fastgrad.Var(0.5)], [0])


# ---- binary cross-entropy with logits ----

@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_bce_with_logits_closed_form_and_gradient(reduction):
    t = [1.0, 0.0, 0.25, 1.0]
    scale = 1 / 4 if reduction == "mean" else 1.0
    value, grads = _grads(F.binary_cross_entropy_with_logits, X, t, reduction=reduction)
    expected = [-(ti * math.log(_sigmoid(x)) + (1 - ti) * math.log(1 - _sigmoid(x))) for x, ti in zip(X, t)]
    assert value == pytest.approx(scale * sum(expected), rel=1e-14, abs=1e-15)
    assert grads == pytest.approx([scale * (_sigmoid(x) - ti) for x, ti in zip(X, t)], abs=1e-15)
    assert grads == pytest.approx(
        _finite_differences(F.binary_cross_entropy_with_logits, X, t, reduction=reduction), abs=1e-8)


def test_bce_gradient_at_zero_logit_is_sigmoid_minus_target():
    for t in (0.0, 0.3, 1.0):
        _, (g,) = _grads(F.binary_cross_entropy_with_logits, [0.0], [t])
        assert g == pytest.approx(0.5 - t, abs=1e-16)   # (1 - t) - 0.5: rounded once, not 2x too small


@pytest.mark.parametrize("x,t,value,grad", [
    (1000.0, 0.0, 1000.0, 1.0),
    (1000.0, 1.0, 0.0, 0.0),
    (-1000.0, 1.0, 1000.0, -1.0),
    (-1000.0, 0.0, 0.0, 0.0),
])
def test_bce_is_stable_at_large_logits(x, t, value, grad):
    v, (g,) = _grads(F.binary_cross_entropy_with_logits, [x], [t])
    assert v == pytest.approx(value, abs=1e-12) and g == pytest.approx(grad, abs=1e-12)


# ---- cross-entropy ----

def _log_softmax(xs):
    m = max(xs)
    lse = m + math.log(sum(math.exp(x - m) for x in xs))
    return [x - lse for x in xs]


def test_cross_entropy_closed_form_and_gradient():
    logits = [1.0, 2.0, -0.5, 0.25]
    value, grads = _grads(F.cross_entropy, logits, 2)
    assert value == pytest.approx(-_log_softmax(logits)[2], abs=1e-15)
    p = [math.exp(v) for v in _log_softmax(logits)]
    assert grads == pytest.approx([pi - (k == 2) for k, pi in enumerate(p)], abs=1e-15)
    assert grads == pytest.approx(_finite_differences(F.cross_entropy, logits, 2), abs=1e-8)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_cross_entropy_over_a_batch(reduction):
    rows = [[1.0, 2.0, 3.0], [0.5, -0.5, 0.0]]
    targets = [0, 2]
    vs = [[fastgrad.Var(x) for x in row] for row in rows]
    loss = F.cross_entropy(vs, targets, reduction=reduction)
    terms = [-_log_softmax(row)[t] for row, t in zip(rows, targets)]
    assert loss.data == pytest.approx(sum(terms) / (2 if reduction == "mean" else 1), abs=1e-15)
    loss.backward()
    scale = 0.5 if reduction == "mean" else 1.0
    p0 = [math.exp(v) for v in _log_softmax(rows[0])]
    expected = [scale * (p - (k == 0)) for k, p in enumerate(p0)]
    assert [v.grad for v in vs[0]] == pytest.approx(expected, abs=1e-15)


def test_cross_entropy_is_stable_at_large_logits():
    value, grads = _grads(F.cross_entropy, [1000.0, -1000.0, 0.0], 1)
    assert value == pytest.approx(2000.0) and grads == pytest.approx([1.0, -1.0, 0.0], abs=1e-12)
    value, grads = _grads(F.cross_entropy, [1000.0, 999.0], 0)
    assert value == pytest.approx(math.log(1 + math.exp(-1.0)), abs=1e-12)
    assert all(math.isfinite(g) for g in grads)


def test_cross_entropy_target_errors():
    with pytest.raises(IndexError, match="out of bounds"):
        F.cross_entropy([fastgrad.Var(1.0), fastgrad.Var(2.0)], 2)
    with pytest.raises(TypeError):
        F.cross_entropy([fastgrad.Var(1.0), fastgrad.Var(2.0)], 1.0)
    with pytest.raises(ValueError):
        F.cross_entropy([[1.0, 2.0]], [0, 1])


def test_softmax_and_log_softmax():
    logits = [fastgrad.Var(v) for v in (1000.0, 0.0, -1000.0)]
    probs = F.softmax(logits)
    assert sum(p.data for p in probs) == pytest.approx(1.0)
    assert [p.data for p in probs] == pytest.approx([1.0, 0.0, 0.0])
    assert [v.data for v in F.log_softmax([1.0, 2.0, 3.0])] == pytest.approx(_log_softmax([1.0, 2.0, 3.0]))


# ---- shared behaviour ----

LOSSES = [
    (F.mse_loss, [0.0]),
    (F.hinge_loss, [1]),
    (F.binary_cross_entropy_with_logits, [1.0]),
]


@pytest.mark.parametrize("fn,target", LOSSES)
def test_invalid_reduction_is_a_value_error(fn, target):
    for bad in ("batchmean", "Mean", None, 1):
        with pytest.raises(ValueError, match="not a valid value for reduction"):
            fn([fastgrad.Var(0.5)], target, reduction=bad)
    with pytest.raises(ValueError, match="not a valid value for reduction"):
        F.cross_entropy([fastgrad.Var(0.5)], 0, reduction="avg")


@pytest.mark.parametrize("fn,target", LOSSES)
def test_length_mismatch_and_empty_input(fn, target):
    with pytest.raises(ValueError, match="elements"):
        fn([fastgrad.Var(0.5), fastgrad.Var(1.0)], target)
    with pytest.raises(ValueError, match="empty"):
        fn([], [])


def test_loss_modules_match_the_functions():
    xs, ts = [fastgrad.Var(v) for v in X], [1, -1, 1, 1]
    assert nn.HingeLoss()(xs, ts).data == F.hinge_loss(xs, ts).data
    assert nn.MSELoss(reduction="sum")(xs, [0.0] * 4).data == F.mse_loss(xs, [0.0] * 4, reduction="sum").data
    ones = [1.0] * 4
    assert nn.BCEWithLogitsLoss()(xs, ones).data == F.binary_cross_entropy_with_logits(xs, ones).data
    assert nn.CrossEntropyLoss()(xs, 3).data == F.cross_entropy(xs, 3).data
    with pytest.raises(ValueError):
        nn.MSELoss(reduction="batchmean")


def test_activation_functions():
    assert [v.data for v in F.relu([-1.0, 2.0])] == [0.0, 2.0]
    assert F.tanh(fastgrad.Var(0.5)).data == pytest.approx(math.tanh(0.5))
    assert F.sigmoid(1000.0).data == 1.0 and F.sigmoid(-1000.0).data == 0.0


def _same(xs, ys):
    return all((math.isnan(x) and math.isnan(y)) or x == y for x, y in zip(xs, ys)) and len(xs) == len(ys)


INF, NAN = math.inf, math.nan


@pytest.mark.parametrize("logits, soft, log_soft", [
    ([INF, 1.0], [NAN, NAN], [NAN, NAN]),             # PyTorch and JAX: inf - inf is nan everywhere
    ([-INF, 1.0], [0.0, 1.0], [-INF, 0.0]),
    ([-INF, -INF], [NAN, NAN], [NAN, NAN]),
    ([NAN, 1.0], [NAN, NAN], [NAN, NAN]),
    ([1.0, NAN], [NAN, NAN], [NAN, NAN]),
    ([1000.0, 0.0], [1.0, 0.0], [0.0, -1000.0]),
])
def test_softmax_of_infinite_and_nan_logits_follows_pytorch(logits, soft, log_soft):
    assert _same([v.data for v in F.softmax(logits)], soft)
    assert _same([v.data for v in F.log_softmax(logits)], log_soft)


def test_softmax_edge_cases_agree_with_torch_when_installed():
    torch = pytest.importorskip("torch")
    for logits in ([INF, 1.0], [-INF, 1.0], [-INF, -INF], [NAN, 1.0], [1.0, NAN], [INF, INF], [3.0, -INF]):
        t = torch.tensor(logits, dtype=torch.float64)
        assert _same([v.data for v in F.softmax(logits)], torch.softmax(t, 0).tolist()), logits
        assert _same([v.data for v in F.log_softmax(logits)], torch.log_softmax(t, 0).tolist()), logits
