"""Losses against closed forms and finite differences; reductions; stability at ±1000."""
import math

import numpy as np
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


# ---- reduction='none': the terms, in the input's shape ----

def _data(tree):
    return tree.data if isinstance(tree, fastgrad.Var) else [_data(t) for t in tree]


def _nested_close(got, want, rel):
    """Nested lists of the same shape whose numbers agree to `rel`."""
    if not isinstance(want, list):
        return got == pytest.approx(want, rel=rel)
    return isinstance(got, list) and len(got) == len(want) and all(
        _nested_close(g, w, rel) for g, w in zip(got, want))


ELEMENTWISE = [
    (F.mse_loss, lambda x, t: (x - t) ** 2),
    (F.l1_loss, lambda x, t: abs(x - t)),
    (F.huber_loss, lambda x, t: 0.5 * (x - t) ** 2 if abs(x - t) < 1 else abs(x - t) - 0.5),
    (F.smooth_l1_loss, lambda x, t: 0.5 * (x - t) ** 2 if abs(x - t) < 1 else abs(x - t) - 0.5),
]


@pytest.mark.parametrize("fn,formula", ELEMENTWISE)
def test_reduction_none_keeps_the_input_shape(fn, formula):
    rows = [[0.5, -1.25, 2.0], [0.0, 3.5, -0.75]]
    targets = [[1.0, 0.0, 2.5], [-1.0, 0.25, 0.5]]
    out = fn(rows, targets, reduction="none")
    assert _nested_close(_data(out), [[formula(x, t) for x, t in zip(r, s)] for r, s in zip(rows, targets)],
                         rel=1e-15)
    flat = [formula(x, t) for r, s in zip(rows, targets) for x, t in zip(r, s)]
    assert fn(rows, targets, reduction="sum").data == pytest.approx(sum(flat), rel=1e-14)
    assert fn(rows, targets).data == pytest.approx(sum(flat) / 6, rel=1e-14)
    assert _data(fn(X, [0.0] * 4, reduction="none")) == pytest.approx([formula(x, 0.0) for x in X])
    scalar = fn(fastgrad.Var(2.0), 0.5, reduction="none")
    assert isinstance(scalar, fastgrad.Var) and scalar.data == formula(2.0, 0.5)


def test_targets_may_be_numpy_arrays_and_vars_and_get_gradients():
    xs = [fastgrad.Var(v) for v in X]
    assert F.mse_loss(xs, np.array([1.0, 0.0, 2.5, -1.0])).data == F.mse_loss(xs, [1.0, 0.0, 2.5, -1.0]).data
    assert F.l1_loss(xs, np.arange(4)).data == F.l1_loss(xs, [0.0, 1.0, 2.0, 3.0]).data
    ts = [fastgrad.Var(v) for v in (1.0, 0.0, 2.5, -1.0)]
    F.mse_loss(xs, ts, reduction="sum").backward()
    assert [t.grad for t in ts] == [-x.grad for x in xs] == [-2 * (x - t.data) for x, t in zip(X, ts)]


# ---- l1, huber, smooth l1: closed forms and the kinks ----

def _kink_grads(fn, diffs, **kwargs):
    """The gradient of fn(x, 0.25, reduction='sum') at x = 0.25 + d, for each d (all exact in binary)."""
    xs = [fastgrad.Var(0.25 + d) for d in diffs]
    fn(xs, [0.25] * len(xs), reduction="sum", **kwargs).backward()
    return [x.grad for x in xs]


def test_l1_gradient_is_the_sign_and_0_at_0():
    assert _kink_grads(F.l1_loss, [-2.0, -0.5, 0.0, 0.5, 2.0]) == [-1.0, -1.0, 0.0, 1.0, 1.0]


@pytest.mark.parametrize("delta", [1.0, 0.375, 2.5])
def test_huber_closed_form_and_gradient_at_the_kink(delta):
    diffs = [-2 * delta, -delta, -0.5 * delta, 0.0, 0.5 * delta, delta, 3 * delta]
    value = F.huber_loss([0.25 + d for d in diffs], [0.25] * 7, reduction="sum", delta=delta).data
    expected = [0.5 * d * d if abs(d) < delta else delta * (abs(d) - 0.5 * delta) for d in diffs]
    assert value == pytest.approx(sum(expected), rel=1e-15)
    # PyTorch: d inside, ±delta outside and at |d| = delta (continuous: the kink is in the second derivative)
    assert _kink_grads(F.huber_loss, diffs, delta=delta) == [max(-delta, min(delta, d)) for d in diffs]


@pytest.mark.parametrize("beta", [1.0, 0.375, 2.5])
def test_smooth_l1_closed_form_and_gradient_at_the_kink(beta):
    diffs = [-2 * beta, -beta, -0.5 * beta, 0.0, 0.5 * beta, beta, 3 * beta]
    value = F.smooth_l1_loss([0.25 + d for d in diffs], [0.25] * 7, reduction="sum", beta=beta).data
    expected = [0.5 * d * d / beta if abs(d) < beta else abs(d) - 0.5 * beta for d in diffs]
    assert value == pytest.approx(sum(expected), rel=1e-15)
    assert _kink_grads(F.smooth_l1_loss, diffs, beta=beta) == [max(-1.0, min(1.0, d / beta)) for d in diffs]


def test_smooth_l1_with_beta_0_is_l1():
    xs, ts = [0.5, -1.25, 2.0, 0.25], [1.0, 0.0, 2.5, 0.25]
    assert F.smooth_l1_loss(xs, ts, beta=0.0).data == F.l1_loss(xs, ts).data
    assert _kink_grads(F.smooth_l1_loss, [-1.0, 0.0, 1.0], beta=0.0) == [-1.0, 0.0, 1.0]


def test_huber_is_smooth_l1_times_delta():
    xs, ts = [0.5, -1.25, 2.0, 0.25], [1.0, 0.0, 2.5, 0.25]
    smooth = F.smooth_l1_loss(xs, ts, beta=0.5).data
    assert F.huber_loss(xs, ts, delta=0.5).data == pytest.approx(0.5 * smooth, rel=1e-15)


@pytest.mark.parametrize("fn,key", [(F.huber_loss, "delta"), (F.smooth_l1_loss, "beta")])
def test_bad_thresholds(fn, key):
    bad = [-1.0, math.nan, math.inf] + ([0.0] if key == "delta" else [])
    for value in bad:
        with pytest.raises(ValueError, match=key):
            fn([0.5], [0.0], **{key: value})
    for value in ("1", None, fastgrad.Var(1.0)):
        with pytest.raises(TypeError, match=key):
            fn([0.5], [0.0], **{key: value})


def test_regression_gradients_match_finite_differences():
    t = [1.0, 0.0, 2.5, -1.0]
    for fn, kwargs in ((F.l1_loss, {}), (F.huber_loss, {"delta": 0.75}), (F.smooth_l1_loss, {"beta": 0.75})):
        _, grads = _grads(fn, X, t, **kwargs)
        assert grads == pytest.approx(_finite_differences(fn, X, t, **kwargs), abs=1e-8), fn.__name__


# ---- binary cross-entropy on probabilities ----

def _bce(x, y, w=1.0):
    return -w * (y * max(math.log(x), -100.0) + (1 - y) * max(math.log1p(-x), -100.0)) if 0 < x < 1 else \
        -w * (y * (math.log(x) if x > 0 else -100.0) + (1 - y) * (math.log1p(-x) if x < 1 else -100.0))


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_bce_closed_form_and_gradient(reduction):
    ps, ys, ws = [0.2, 0.9, 0.5, 0.75], [1.0, 0.0, 0.25, 1.0], [1.0, 2.0, 0.5, 3.0]
    scale = 0.25 if reduction == "mean" else 1.0
    value, grads = _grads(F.binary_cross_entropy, ps, ys, ws, reduction=reduction)
    assert value == pytest.approx(scale * sum(_bce(p, y, w) for p, y, w in zip(ps, ys, ws)), rel=1e-15)
    expected = [scale * w * (p - y) / (p * (1 - p)) for p, y, w in zip(ps, ys, ws)]   # PyTorch's formula
    assert grads == pytest.approx(expected, rel=1e-14)
    differences = _finite_differences(F.binary_cross_entropy, ps, ys, ws, reduction=reduction)
    assert grads == pytest.approx(differences, rel=1e-7)


def test_bce_clamps_each_log_at_minus_100_without_nan_gradients():
    ps = [0.0, 1.0, 1.0, 0.0, 1e-60, 1.0, 0.0]
    ys = [1.0, 0.0, 0.25, 0.0, 1.0, 1.0, 0.5]
    value, grads = _grads(F.binary_cross_entropy, ps, ys, reduction="none" and "sum")
    assert value == pytest.approx(100 + 100 + 75 + 0 + 100 + 0 + 50, rel=1e-15)
    # the derivative of the clamped loss: 0 through a clamped log, -y/x or (1-y)/(1-x) through the other
    assert grads == [0.0, 0.0, -0.25, 1.0, 0.0, -1.0, 0.5]


def test_bce_just_below_1_keeps_log1p_accuracy_and_the_full_gradient():
    below_one = math.nextafter(1.0, 0.0)
    for x in (1e-10, 0.5, below_one):
        v, (g,) = _grads(F.binary_cross_entropy, [x], [0.0])
        assert v == pytest.approx(-math.log1p(-x), rel=1e-15) and g == pytest.approx(1 / (1 - x), rel=1e-15)


def test_bce_rejects_values_outside_0_1():
    for x, y in ((1.5, 0.0), (-0.25, 1.0), (math.nan, 0.0)):
        with pytest.raises(ValueError, match="input should be between 0 and 1"):
            F.binary_cross_entropy([fastgrad.Var(x)], [y])
    with pytest.raises(ValueError, match="target should be between 0 and 1"):
        F.binary_cross_entropy([0.5], [fastgrad.Var(2.0)])


def test_bce_weight_broadcasts_over_rows_and_checks_its_shape():
    rows, targets = [[0.25, 0.5], [0.75, 0.5]], [[1.0, 0.0], [0.0, 1.0]]
    by_column = F.binary_cross_entropy(rows, targets, [2.0, 3.0], reduction="sum").data
    full = F.binary_cross_entropy(rows, targets, [[2.0, 3.0], [2.0, 3.0]], reduction="sum").data
    assert by_column == full == pytest.approx(sum(_bce(p, y, w) for r, s in zip(rows, targets)
                                                  for p, y, w in zip(r, s, (2.0, 3.0))), rel=1e-15)
    assert F.binary_cross_entropy(rows, targets, 2.0).data == 2.0 * F.binary_cross_entropy(rows, targets).data
    with pytest.raises(ValueError, match="does not broadcast"):
        F.binary_cross_entropy(rows, targets, [1.0, 2.0, 3.0])
    with pytest.raises(TypeError, match="weight"):
        F.binary_cross_entropy(rows, targets, "sum")


# ---- binary cross-entropy with logits: weight and pos_weight ----

def test_bce_with_logits_weight_and_pos_weight_closed_form_and_gradient():
    xs, ys, ws, pw = [0.5, -1.25, 2.0, 0.0], [1.0, 0.0, 0.25, 0.75], [1.0, 2.0, 0.5, 3.0], 2.5
    value, grads = _grads(F.binary_cross_entropy_with_logits, xs, ys, ws, reduction="sum", pos_weight=pw)
    expected = [-w * (pw * y * math.log(_sigmoid(x)) + (1 - y) * math.log(1 - _sigmoid(x)))
                for x, y, w in zip(xs, ys, ws)]
    assert value == pytest.approx(sum(expected), rel=1e-14)
    # PyTorch's gradient: w·((p·y + 1 - y)·σ(x) - p·y)
    expected = [w * ((pw * y + 1 - y) * _sigmoid(x) - pw * y) for x, y, w in zip(xs, ys, ws)]
    assert grads == pytest.approx(expected, rel=1e-14, abs=1e-16)


@pytest.mark.parametrize("x,y,value,grad", [
    (1000.0, 0.0, 1000.0, 1.0), (1000.0, 1.0, 0.0, 0.0),
    (-1000.0, 1.0, 2500.0, -2.5), (-1000.0, 0.0, 0.0, 0.0),
])
def test_bce_with_logits_and_pos_weight_are_stable_at_large_logits(x, y, value, grad):
    v, (g,) = _grads(F.binary_cross_entropy_with_logits, [x], [y], pos_weight=[2.5])
    assert v == value and g == grad


def test_bce_with_logits_keeps_tiny_losses():
    v, (g,) = _grads(F.binary_cross_entropy_with_logits, [40.0], [1.0])
    assert v == pytest.approx(math.exp(-40.0), rel=1e-15) and g == pytest.approx(-math.exp(-40.0), rel=1e-15)


# ---- cross-entropy and nll: weight, label smoothing, ignore_index, targets ----

ROWS = [[1.0, 2.0, -0.5, 0.25], [0.5, -0.5, 0.0, 3.0], [2.0, 2.0, 1.0, -1.0]]
W = [0.5, 2.0, 1.0, 3.0]


def _ce_terms(rows, targets, weight=None, smoothing=0.0, ignore_index=-100):
    """PyTorch's per-row terms and the mean's denominator, from the formula."""
    w = weight or [1.0] * len(rows[0])
    terms, denominator = [], 0.0
    for row, t in zip(rows, targets):
        if t == ignore_index:
            terms.append(0.0)
            continue
        logp = _log_softmax(row)
        c = len(row)
        smooth = -sum(wk * lk for wk, lk in zip(w, logp))
        terms.append((1 - smoothing) * -w[t] * logp[t] + smoothing / c * smooth)
        denominator += w[t]
    return terms, denominator


@pytest.mark.parametrize("weight", [None, W])
@pytest.mark.parametrize("smoothing", [0.0, 0.2, 1.0])
@pytest.mark.parametrize("targets", [[0, 3, 1], [2, -100, 1], [3, 3, -100]])
def test_cross_entropy_formula(weight, smoothing, targets):
    terms, denominator = _ce_terms(ROWS, targets, weight, smoothing)
    kwargs = {"weight": weight, "label_smoothing": smoothing}
    total = F.cross_entropy(ROWS, targets, reduction="sum", **kwargs).data
    assert total == pytest.approx(sum(terms), rel=1e-14)
    assert F.cross_entropy(ROWS, targets, **kwargs).data == pytest.approx(sum(terms) / denominator, rel=1e-14)
    each = _data(F.cross_entropy(ROWS, targets, reduction="none", **kwargs))
    assert each == pytest.approx(terms, rel=1e-14)


@pytest.mark.parametrize("weight", [None, W])
@pytest.mark.parametrize("smoothing", [0.0, 0.3])
def test_cross_entropy_gradient_formula_and_finite_differences(weight, smoothing):
    targets = [2, -100, 1]
    vs = [[fastgrad.Var(x) for x in row] for row in ROWS]
    loss = F.cross_entropy(vs, targets, weight, label_smoothing=smoothing)
    loss.backward()
    w = weight or [1.0] * 4
    _, denominator = _ce_terms(ROWS, targets, weight, smoothing)
    for row, t, row_vars in zip(ROWS, targets, vs):
        if t == -100:
            assert [v.grad for v in row_vars] == [0.0] * 4
            continue
        p = [math.exp(v) for v in _log_softmax(row)]
        # d/dx_k of (1-ε)·w_t·(-log p_t) + (ε/C)·Σ_c w_c·(-log p_c)
        expected = [((1 - smoothing) * w[t] * (p[k] - (k == t))
                     + smoothing / 4 * (sum(w) * p[k] - w[k])) / denominator for k in range(4)]
        assert [v.grad for v in row_vars] == pytest.approx(expected, rel=1e-13, abs=1e-16)

    def flat_loss(flat):
        rows = [flat[i * 4:(i + 1) * 4] for i in range(3)]
        return F.cross_entropy(rows, targets, weight, label_smoothing=smoothing)
    flat = [x for row in ROWS for x in row]
    differences = _finite_differences(flat_loss, flat)
    assert [v.grad for row in vs for v in row] == pytest.approx(differences, abs=1e-8)


def test_cross_entropy_ignore_index_can_be_a_class():
    targets = [0, 3, 0]
    terms, denominator = _ce_terms(ROWS, targets, W, 0.1, ignore_index=0)
    assert F.cross_entropy(ROWS, targets, W, ignore_index=0, label_smoothing=0.1).data == \
        pytest.approx(sum(terms) / denominator, rel=1e-14)


def test_cross_entropy_when_every_row_is_ignored_is_nan_for_the_mean():
    assert math.isnan(F.cross_entropy(ROWS, [-100] * 3).data)
    assert F.cross_entropy(ROWS, [-100] * 3, reduction="sum").data == 0.0
    assert _data(F.cross_entropy(ROWS, [-100] * 3, reduction="none")) == [0.0] * 3


def test_cross_entropy_of_one_row_gives_one_term():
    out = F.cross_entropy(ROWS[0], 2, reduction="none")
    assert isinstance(out, fastgrad.Var) and out.data == pytest.approx(-_log_softmax(ROWS[0])[2], rel=1e-15)
    assert F.cross_entropy(ROWS[0], 2, W).data == pytest.approx(out.data, rel=1e-15)   # mean: w_t / w_t


def test_cross_entropy_accepts_numpy_targets_of_any_integer_dtype():
    expected = F.cross_entropy(ROWS, [2, 0, 1]).data
    for dtype in (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint32, np.uint64, np.intp):
        assert F.cross_entropy(ROWS, np.array([2, 0, 1], dtype=dtype)).data == expected, dtype
        assert F.cross_entropy(ROWS, [dtype(2), dtype(0), dtype(1)]).data == expected, dtype
    assert F.cross_entropy(ROWS, (2, 0, 1)).data == expected
    assert F.cross_entropy(np.array(ROWS), np.array([2, 0, 1])).data == expected
    assert F.cross_entropy(ROWS[0], np.int64(2)).data == F.cross_entropy(ROWS[0], np.array(2)).data == \
        F.cross_entropy(ROWS[0], 2).data


@pytest.mark.parametrize("fn", [F.cross_entropy, F.nll_loss])
def test_class_target_errors(fn):
    with pytest.raises(IndexError, match=r"Target 4 is out of bounds: the input has 4 classes, 0 to 3 \(row"):
        fn(ROWS, [0, 4, 1])
    with pytest.raises(IndexError, match="Target -1 is out of bounds"):
        fn(ROWS, [0, -1, 1])
    with pytest.raises(IndexError, match="Target 7 is out of bounds"):
        fn(ROWS[0], 7)
    for bad in ([0.0, 1.0, 2.0], [True, 0, 1], np.array([0.0, 1.0, 2.0]), np.array([True, False, True]),
                ["0", "1", "2"], [None, 0, 1], [fastgrad.Var(0.0), 0, 1]):
        with pytest.raises(TypeError, match="int|integer"):
            fn(ROWS, bad)
    with pytest.raises(TypeError, match="one int target"):
        fn(ROWS[0], [2])
    with pytest.raises(TypeError, match="needs a list of 3 int targets"):
        fn(ROWS, 2)
    with pytest.raises(ValueError, match="3 rows of logits but 2 targets"):
        fn(ROWS, [0, 1])
    with pytest.raises(ValueError, match="1-D"):
        fn(ROWS, np.array([[0], [1], [2]]))
    with pytest.raises(ValueError, match="row 1 has 3 entries but row 0 has 4"):
        fn([ROWS[0], ROWS[1][:3]], [0, 1])
    with pytest.raises(ValueError, match="non-empty"):
        fn([], [])
    with pytest.raises(ValueError, match="non-empty"):
        fn(3.0, 0)
    with pytest.raises(ValueError, match="weight has shape \\(3,\\) but the input has 4 classes"):
        fn(ROWS, [0, 1, 2], [1.0, 2.0, 3.0])
    with pytest.raises(TypeError, match="pass reduction= by keyword"):
        fn(ROWS, [0, 1, 2], "sum")
    with pytest.raises(TypeError, match="ignore_index must be an int"):
        fn(ROWS, [0, 1, 2], ignore_index=1.0)


def test_label_smoothing_errors():
    for bad in (-0.1, 1.5, math.nan):
        with pytest.raises(ValueError, match="label_smoothing must be between 0.0 and 1.0"):
            F.cross_entropy(ROWS, [0, 1, 2], label_smoothing=bad)
    with pytest.raises(TypeError, match="label_smoothing"):
        F.cross_entropy(ROWS, [0, 1, 2], label_smoothing="0.1")


@pytest.mark.parametrize("weight", [None, W])
def test_nll_loss_formula_and_cross_entropy_is_nll_of_log_softmax(weight):
    targets = [3, -100, 0]
    w = weight or [1.0] * 4
    logp = [_log_softmax(row) for row in ROWS]
    total = sum(-w[t] * lp[t] for lp, t in zip(logp, targets) if t != -100)
    denominator = sum(w[t] for t in targets if t != -100)
    assert F.nll_loss(logp, targets, weight, reduction="sum").data == pytest.approx(total, rel=1e-15)
    assert F.nll_loss(logp, targets, weight).data == pytest.approx(total / denominator, rel=1e-15)
    lp_vars = [[fastgrad.Var(v) for v in row] for row in logp]
    F.nll_loss(lp_vars, targets, weight).backward()
    assert [[v.grad for v in row] for row in lp_vars] == [
        [-w[t] / denominator if k == t else 0.0 for k in range(4)] for t in targets]
    assert F.nll_loss(F.log_softmax(ROWS), targets, weight).data == \
        pytest.approx(F.cross_entropy(ROWS, targets, weight).data, rel=1e-15)


# ---- softmax and log-softmax of a batch ----

def test_softmax_of_a_batch_is_a_list_of_rows():
    out = F.log_softmax(ROWS)
    assert _nested_close(_data(out), [_log_softmax(row) for row in ROWS], rel=1e-15)
    assert _nested_close(_data(F.softmax(ROWS, dim=-1)), [[math.exp(v) for v in _log_softmax(row)]
                                                          for row in ROWS], rel=1e-14)
    columns = [list(c) for c in zip(*ROWS)]
    by_column = [[math.exp(v) for v in _log_softmax(c)] for c in columns]
    assert _nested_close(_data(F.softmax(ROWS, dim=0)), [list(r) for r in zip(*by_column)], rel=1e-14)
    assert _data(F.log_softmax(ROWS[0], dim=0)) == _data(F.log_softmax(ROWS[0]))


def test_softmax_dim_errors():
    with pytest.raises(IndexError, match="dim out of range"):
        F.softmax(ROWS, dim=2)
    with pytest.raises(IndexError, match="dim out of range"):
        F.log_softmax(ROWS[0], dim=1)
    with pytest.raises(TypeError, match="dim must be an int"):
        F.softmax(ROWS, dim=1.0)
    with pytest.raises(ValueError, match="row 1 has 2 entries"):
        F.softmax([[1.0, 2.0, 3.0], [1.0, 2.0]])


# ---- bad input shared by the elementwise losses ----

ALL_ELEMENTWISE = [F.mse_loss, F.l1_loss, F.huber_loss, F.smooth_l1_loss, F.binary_cross_entropy,
                   F.binary_cross_entropy_with_logits]


@pytest.mark.parametrize("fn", ALL_ELEMENTWISE)
def test_elementwise_bad_input(fn):
    with pytest.raises(ValueError, match=r"input has 2 elements \(shape \(2,\)\) but target has 3"):
        fn([0.5, 0.25], [0.0, 1.0, 0.0])
    with pytest.raises(ValueError, match=r"shape \(2, 1\).*shape \(2,\)"):
        fn([[0.5], [0.25]], [0.0, 1.0])
    with pytest.raises(ValueError, match="ragged"):
        fn([[0.5, 0.25], [0.5]], [[0.0, 1.0], [1.0]])
    with pytest.raises(ValueError, match="empty"):
        fn([], [])
    for bad in ("0.5", None, 1j, {"a": 0.5}):
        with pytest.raises(TypeError, match="real numbers"):
            fn([bad], [0.0])
        with pytest.raises(TypeError, match="real numbers"):
            fn([0.5], [bad])
    for bad in ("avg", None, "NONE"):
        with pytest.raises(ValueError, match="not a valid value for reduction: use 'mean', 'sum' or 'none'"):
            fn([0.5], [0.0], reduction=bad)


# ---- compiled losses replay the clamps and kinks at new values ----

def test_compiled_losses_replay_correctly_at_other_values():
    bce = fastgrad.compile(lambda x, y: F.binary_cross_entropy(x, y, reduction="sum"))
    huber = fastgrad.compile(lambda x, t: F.huber_loss(x, t, reduction="sum", delta=0.5))
    bce([0.5, 0.25], [0.3, 0.0])   # traced here
    for xs in ([1.0, 0.0], [0.0, 1.0], [1e-60, 0.5]):
        assert bce(xs, [0.3, 0.0]).data == F.binary_cross_entropy(xs, [0.3, 0.0], reduction="sum").data
    huber([0.0, 0.25], [0.0, 0.0])
    for xs in ([2.0, -3.0], [0.5, -0.5], [0.125, 0.0]):
        assert huber(xs, [0.0, 0.0]).data == F.huber_loss(xs, [0.0, 0.0], reduction="sum", delta=0.5).data


# ---- modules ----

MODULES = [
    (nn.L1Loss(), F.l1_loss, {}),
    (nn.MSELoss(reduction="sum"), F.mse_loss, {"reduction": "sum"}),
    (nn.HuberLoss(delta=0.5), F.huber_loss, {"delta": 0.5}),
    (nn.SmoothL1Loss(reduction="none", beta=0.25), F.smooth_l1_loss, {"reduction": "none", "beta": 0.25}),
    (nn.BCELoss([1.0, 2.0, 0.5, 1.0]), F.binary_cross_entropy, {"weight": [1.0, 2.0, 0.5, 1.0]}),
    (nn.BCEWithLogitsLoss(pos_weight=[2.0]), F.binary_cross_entropy_with_logits, {"pos_weight": 2.0}),
]


@pytest.mark.parametrize("module,fn,kwargs", MODULES)
def test_elementwise_loss_modules_match_the_functions(module, fn, kwargs):
    xs, ts = [0.5, 0.25, 0.75, 0.125], [1.0, 0.0, 0.5, 1.0]
    assert _data(module(xs, ts)) == _data(fn(xs, ts, **kwargs))
    assert module.parameters() == []


def test_class_loss_modules_match_the_functions():
    targets = [0, -100, 2]
    ce = nn.CrossEntropyLoss(W, ignore_index=-100, label_smoothing=0.2, reduction="sum")
    expected = F.cross_entropy(ROWS, targets, W, reduction="sum", label_smoothing=0.2).data
    assert ce(ROWS, targets).data == expected
    nll = nn.NLLLoss(weight=W, ignore_index=2)
    assert nll(ROWS, [0, 1, 2]).data == F.nll_loss(ROWS, [0, 1, 2], W, ignore_index=2).data
    assert ce.parameters() == nll.parameters() == []


def test_loss_module_repr_shows_non_default_options():
    assert repr(nn.L1Loss()) == "L1Loss(reduction='mean')"
    assert repr(nn.HuberLoss()) == "HuberLoss(reduction='mean')"
    assert repr(nn.HuberLoss(delta=2)) == "HuberLoss(reduction='mean', delta=2.0)"
    assert repr(nn.SmoothL1Loss("sum", beta=0.5)) == "SmoothL1Loss(reduction='sum', beta=0.5)"
    assert repr(nn.CrossEntropyLoss([1, 2], label_smoothing=0.1)) == \
        "CrossEntropyLoss(reduction='mean', weight=(1.0, 2.0), label_smoothing=0.1)"
    assert repr(nn.NLLLoss(ignore_index=0)) == "NLLLoss(reduction='mean', ignore_index=0)"
    assert repr(nn.BCEWithLogitsLoss(pos_weight=[3.0])) == \
        "BCEWithLogitsLoss(reduction='mean', pos_weight=(3.0,))"
    assert repr(nn.BCELoss()) == "BCELoss(reduction='mean')"


def test_loss_module_construction_errors():
    with pytest.raises(ValueError, match="delta"):
        nn.HuberLoss(delta=0.0)
    with pytest.raises(ValueError, match="beta"):
        nn.SmoothL1Loss(beta=-1.0)
    with pytest.raises(ValueError, match="label_smoothing"):
        nn.CrossEntropyLoss(label_smoothing=2.0)
    with pytest.raises(ValueError, match="reduction"):
        nn.NLLLoss(reduction="avg")
    with pytest.raises(TypeError, match="pass reduction= by keyword"):
        nn.CrossEntropyLoss("sum")
    with pytest.raises(TypeError, match="functional form"):
        nn.BCELoss([fastgrad.Var(1.0)])
    with pytest.raises(TypeError, match="ignore_index"):
        nn.CrossEntropyLoss(ignore_index="0")
    with pytest.raises(ValueError, match="flat"):
        nn.CrossEntropyLoss([[1.0, 2.0]])
