"""fg.Tensor ops of issue 10's second increment (max/min, maximum/minimum, where, concatenate, stack, the
softmax family) and the Tensor losses of fastgrad.tensor_functional: values against NumPy and hand-written
formulas, gradients against central differences (float64), ties, ±1000 and ±inf, float32, errors at build
time, no_grad; and against torch (when installed)."""
import math

import numpy as np
import pytest

import fastgrad as fg
from tensor_checks import check_grads, numeric_grad  # noqa: F401  (tests/tensor_checks.py)
from fastgrad import _engine
from fastgrad import tensor as ft
from fastgrad import tensor_functional as tf

RNG = np.random.default_rng(10)
INF = math.inf
NAN = math.nan


def grad_of(build, a, weights=None):
    """The gradient of sum(build(t) * weights) at array a (weights default to ones)."""
    t = fg.Tensor(a, requires_grad=True)
    out = build(t)
    (out * (np.ones(out.shape) if weights is None else weights)).sum().backward()
    return t.grad


def np_softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


# ---- max / min over axes ----

@pytest.mark.parametrize("axis", [None, 0, 1, -1, (0, 2)])
@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("name", ["max", "min"])
def test_max_and_min_over_axes(name, axis, keepdims):
    a = RNG.normal(size=(2, 3, 4))
    out = getattr(fg.Tensor(a), name)(axis=axis, keepdims=keepdims)
    want = getattr(a, name)(axis=axis, keepdims=keepdims)
    assert out.shape == want.shape
    np.testing.assert_array_equal(out.data, want)
    check_grads(lambda x: getattr(x, name)(axis=axis, keepdims=keepdims), a)


def test_max_and_min_split_ties_evenly():
    a = np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0], [5.0, 0.0, 1.0]])
    np.testing.assert_array_equal(grad_of(lambda t: t.max(axis=1), a),
                                  [[0, 0.5, 0.5], [1 / 3, 1 / 3, 1 / 3], [1, 0, 0]])
    b = np.array([[1.0, 3.0], [1.0, 0.0], [2.0, 0.0]])
    np.testing.assert_array_equal(grad_of(lambda t: t.min(axis=0), b), [[0.5, 0], [0.5, 0.5], [0, 0.5]])
    whole = grad_of(lambda t: t.max(), np.array([4.0, 4.0, 1.0, 4.0]))
    np.testing.assert_array_equal(whole, [1 / 3, 1 / 3, 0, 1 / 3])
    # the scalar engine's max splits a tie the same way
    u, v = fg.Var(2.0), fg.Var(2.0)
    fg.maximum(u, v).backward()
    assert (u.grad, v.grad) == (0.5, 0.5)


def test_max_and_min_ties_match_torch_amax():
    torch = pytest.importorskip("torch")
    a = np.array([[1.0, 3.0, 3.0, 0.0], [2.0, 2.0, 2.0, 2.0], [-1.0, -1.0, 4.0, -1.0]])
    w = RNG.normal(size=3)
    for name, tname in (("max", "amax"), ("min", "amin")):
        mine = grad_of(lambda t, name=name: getattr(t, name)(axis=1), a, w)
        ta = torch.tensor(a, requires_grad=True)
        (getattr(torch, tname)(ta, dim=1) * torch.tensor(w)).sum().backward()
        np.testing.assert_allclose(mine, ta.grad.numpy(), rtol=1e-15)


# ---- maximum / minimum ----

@pytest.mark.parametrize("shapes", [((3, 4), (3, 4)), ((3, 4), (4,)), ((3, 1), (1, 4)), ((), (2, 3))])
def test_maximum_and_minimum_values_broadcast_and_gradients(shapes):
    a, b = RNG.normal(size=shapes[0]), RNG.normal(size=shapes[1])
    for fn, ref in ((ft.maximum, np.maximum), (ft.minimum, np.minimum)):
        np.testing.assert_array_equal(fn(fg.Tensor(a), fg.Tensor(b)).data, ref(a, b))
        check_grads(fn, a, b)
    np.testing.assert_array_equal(fg.Tensor(a).maximum(b).data, np.maximum(a, b))
    np.testing.assert_array_equal(fg.Tensor(a).minimum(0.0).data, np.minimum(a, 0.0))


def test_maximum_and_minimum_split_ties_as_the_scalar_engine():
    a = np.array([1.0, 2.0, 3.0])
    b = np.array([1.0, 0.0, 3.0])
    for fn in (ft.maximum, ft.minimum):
        ta, tb = fg.Tensor(a, requires_grad=True), fg.Tensor(b, requires_grad=True)
        fn(ta, tb).sum().backward()
        scalar = []
        for x, y in zip(a, b):
            u, v = fg.Var(x), fg.Var(y)
            getattr(fg, fn.__name__)(u, v).backward()
            scalar.append((u.grad, v.grad))
        np.testing.assert_array_equal(ta.grad, [s[0] for s in scalar])
        np.testing.assert_array_equal(tb.grad, [s[1] for s in scalar])
        assert ta.grad[0] == tb.grad[0] == 0.5 and ta.grad[2] == tb.grad[2] == 0.5


def test_maximum_with_a_var_and_numbers():
    v = fg.Var(0.5)
    t = fg.Tensor([0.0, 1.0, 2.0], requires_grad=True)
    y = ft.maximum(t, v).sum()
    np.testing.assert_array_equal(ft.maximum(t, v).data, [0.5, 1.0, 2.0])
    y.backward()
    np.testing.assert_array_equal(t.grad, [0.0, 1.0, 1.0])
    assert v.grad == 1.0
    np.testing.assert_array_equal(ft.minimum(2.0, np.array([1.0, 3.0])).data, [1.0, 2.0])


# ---- where ----

def test_where_values_broadcast_and_gradients():
    a, b = RNG.normal(size=(3, 4)), RNG.normal(size=(4,))
    cond = RNG.normal(size=(3, 1)) > 0
    cond[0, 0], cond[1, 0] = True, False
    out = fg.where(cond, fg.Tensor(a), fg.Tensor(b))
    np.testing.assert_array_equal(out.data, np.where(cond, a, b))
    check_grads(lambda x, y: fg.where(cond, x, y), a, b)
    ta, tb = fg.Tensor(a, requires_grad=True), fg.Tensor(b, requires_grad=True)
    fg.where(cond, ta, tb).sum().backward()
    np.testing.assert_array_equal(ta.grad, np.broadcast_to(cond, (3, 4)).astype(float))
    np.testing.assert_array_equal(tb.grad, (~cond).sum() * np.ones(4))


def test_where_with_a_constant_branch_is_a_masked_relu():
    a = np.array([-1.0, 0.5, 2.0])
    t = fg.Tensor(a, requires_grad=True)
    fg.where(t.data > 0, t, 0.0).sum().backward()
    np.testing.assert_array_equal(t.grad, [0.0, 1.0, 1.0])


# ---- concatenate / stack ----

@pytest.mark.parametrize("axis", [0, 1, -1])
def test_concatenate(axis):
    a, b = RNG.normal(size=(2, 3)), RNG.normal(size=(2, 3))
    c = RNG.normal(size=(2, 3))
    out = fg.concatenate([fg.Tensor(a), fg.Tensor(b), c], axis=axis)
    np.testing.assert_array_equal(out.data, np.concatenate([a, b, c], axis=axis))
    check_grads(lambda x, y: fg.concatenate([x, y, c], axis=axis), a, b)
    check_grads(lambda x, y: fg.concatenate((x, y, x), axis=axis), a, b)    # a twice: accumulates


def test_concatenate_different_lengths():
    a, b = RNG.normal(size=(2, 3)), RNG.normal(size=(5, 3))
    ta, tb = fg.Tensor(a, requires_grad=True), fg.Tensor(b, requires_grad=True)
    w = RNG.normal(size=(7, 3))
    (fg.concatenate([ta, tb]) * w).sum().backward()
    np.testing.assert_array_equal(ta.grad, w[:2])
    np.testing.assert_array_equal(tb.grad, w[2:])


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_stack(axis):
    a, b = RNG.normal(size=(2, 3)), RNG.normal(size=(2, 3))
    out = fg.stack([fg.Tensor(a), fg.Tensor(b), a], axis=axis)
    np.testing.assert_array_equal(out.data, np.stack([a, b, a], axis=axis))
    check_grads(lambda x, y: fg.stack([x, y, x], axis=axis), a, b)


def test_stack_of_0d_tensors_and_vars():
    v = fg.Var(3.0)
    t = fg.Tensor(2.0, requires_grad=True)
    out = fg.stack([t, v, 1.0])
    np.testing.assert_array_equal(out.data, [2.0, 3.0, 1.0])
    (out * np.array([1.0, 2.0, 3.0])).sum().backward()
    assert t.grad == 1.0 and v.grad == 2.0


# ---- softmax, log_softmax, logsumexp ----

@pytest.mark.parametrize("axis", [0, 1, -1])
def test_softmax_family_values_and_gradients(axis):
    a = RNG.normal(size=(3, 4)) * 3
    e = np.exp(a)
    by_hand = e / e.sum(axis=axis, keepdims=True)
    np.testing.assert_allclose(ft.softmax(fg.Tensor(a), axis).data, by_hand, rtol=1e-14)
    # atol: the oracle log(e / sum e) loses digits where the probability is near 1 (log near 0)
    np.testing.assert_allclose(fg.Tensor(a).log_softmax(axis).data, np.log(by_hand), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(fg.Tensor(a).logsumexp(axis).data, np.log(e.sum(axis=axis)), rtol=1e-14)
    np.testing.assert_allclose(fg.Tensor(a).logsumexp(axis, keepdims=True).data,
                               np.log(e.sum(axis=axis, keepdims=True)), rtol=1e-14)
    check_grads(lambda x: x.softmax(axis), a)
    check_grads(lambda x: ft.log_softmax(x, axis), a)
    check_grads(lambda x: x.logsumexp(axis), a)
    check_grads(lambda x: ft.logsumexp(x, axis, keepdims=True), a)


def test_logsumexp_over_several_and_all_axes():
    a = RNG.normal(size=(2, 3, 4))
    np.testing.assert_allclose(ft.logsumexp(fg.Tensor(a)).data, np.log(np.exp(a).sum()), rtol=1e-14)
    np.testing.assert_allclose(ft.logsumexp(fg.Tensor(a), (0, 2)).data, np.log(np.exp(a).sum(axis=(0, 2))),
                               rtol=1e-14)
    check_grads(lambda x: x.logsumexp(), a)
    check_grads(lambda x: x.logsumexp((0, 2)), a)
    # its gradient is the softmax over the reduced axes
    np.testing.assert_allclose(grad_of(lambda x: x.logsumexp(), a), np.exp(a) / np.exp(a).sum(), rtol=1e-13)


def test_softmax_family_is_finite_at_plus_minus_1000():
    a = np.array([[1000.0, -1000.0, 0.0], [1000.0, 1000.0, 1000.0], [-1000.0, -1000.0, -999.0]])
    sm = ft.softmax(fg.Tensor(a)).data
    lsm = ft.log_softmax(fg.Tensor(a)).data
    lse = ft.logsumexp(fg.Tensor(a), 1).data
    for out in (sm, lsm, lse):
        assert np.isfinite(out).all()
    np.testing.assert_allclose(sm[0], [1.0, 0.0, 0.0])
    np.testing.assert_allclose(sm[1], [1 / 3] * 3, rtol=1e-15)
    np.testing.assert_allclose(lsm[0], [0.0, -2000.0, -1000.0])
    np.testing.assert_allclose(lse, [1000.0, 1000.0 + math.log(3), -999.0 + math.log1p(2 * math.exp(-1))],
                               rtol=1e-15)
    g = grad_of(lambda x: x.logsumexp(1), a)
    assert np.isfinite(g).all()
    np.testing.assert_allclose(g[0], [1.0, 0.0, 0.0])
    g = grad_of(lambda x: x.log_softmax(), a, np.array([[1.0, 2.0, 3.0]] * 3))
    np.testing.assert_allclose(g[0], [1.0 - 6.0, 2.0, 3.0])


# PyTorch 2.x's values and gradients (weights [1, 2]) at infinite entries
INF_CASES = [
    # row        softmax       log_softmax     lse    lse grad     log_softmax grad
    ([INF, 0.0], [NAN, NAN], [NAN, NAN], INF, [NAN, 0.0], [NAN, NAN]),
    ([-INF, 0.0], [0.0, 1.0], [-INF, 0.0], 0.0, [0.0, 1.0], [1.0, -1.0]),
    ([-INF, -INF], [NAN, NAN], [NAN, NAN], -INF, [NAN, NAN], [NAN, NAN]),
    ([INF, -INF], [NAN, NAN], [NAN, NAN], INF, [NAN, 0.0], [NAN, NAN]),
]


@pytest.mark.parametrize("row, sm, lsm, lse, lse_grad, lsm_grad", INF_CASES)
def test_softmax_family_at_infinities_behaves_like_pytorch(row, sm, lsm, lse, lse_grad, lsm_grad):
    a = np.array(row)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        np.testing.assert_array_equal(ft.softmax(fg.Tensor(a)).data, sm)
        np.testing.assert_array_equal(ft.log_softmax(fg.Tensor(a)).data, lsm)
        assert ft.logsumexp(fg.Tensor(a)).item() == lse
        np.testing.assert_array_equal(grad_of(lambda x: x.logsumexp(), a), lse_grad)
        np.testing.assert_array_equal(grad_of(lambda x: x.log_softmax(), a, np.array([1.0, 2.0])), lsm_grad)


@pytest.mark.parametrize("row", [c[0] for c in INF_CASES] + [[1000.0, -1000.0], [3.0, 1.0]])
def test_softmax_family_matches_torch(row):
    torch = pytest.importorskip("torch")
    a = np.array([row, row[::-1]])
    w = np.array([[1.0, 2.0], [-1.0, 0.5]])
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        for mine, theirs in ((lambda x: x.softmax(1), lambda x: torch.softmax(x, 1)),
                             (lambda x: x.log_softmax(1), lambda x: torch.log_softmax(x, 1)),
                             (lambda x: x.logsumexp(1), lambda x: torch.logsumexp(x, 1))):
            t = fg.Tensor(a, requires_grad=True)
            out = mine(t)
            wt = w if out.ndim == 2 else w[:, 0]
            (out * wt).sum().backward()
            ta = torch.tensor(a, requires_grad=True)
            tout = theirs(ta)
            (tout * torch.tensor(wt)).sum().backward()
            np.testing.assert_allclose(out.data, tout.detach().numpy(), rtol=1e-14, atol=1e-300)
            np.testing.assert_allclose(t.grad, ta.grad.numpy(), rtol=1e-14, atol=1e-300)


# ---- cross_entropy ----

def ce_by_hand(x, t, weight=None, ignore_index=-100, reduction="mean", eps=0.0):
    """PyTorch's documented formula, row by row in Python floats."""
    n, c = x.shape
    w = np.ones(c) if weight is None else weight
    terms, denom = [], 0.0
    for i in range(n):
        if t[i] == ignore_index:
            terms.append(0.0)
            continue
        lse = math.log(sum(math.exp(v) for v in x[i]))
        logp = [v - lse for v in x[i]]
        terms.append((1 - eps) * w[t[i]] * -logp[t[i]] + eps / c * sum(-w[k] * logp[k] for k in range(c)))
        denom += w[t[i]]
    if reduction == "none":
        return np.array(terms)
    return sum(terms) / (denom if reduction == "mean" else 1.0)


CE_OPTIONS = [{}, {"label_smoothing": 0.2}, {"weight": np.array([0.5, 2.0, 1.0, 3.0])},
              {"ignore_index": 1}, {"weight": np.array([0.5, 2.0, 1.0, 3.0]), "label_smoothing": 0.1,
                                    "ignore_index": 2}]


@pytest.mark.parametrize("options", CE_OPTIONS, ids=lambda o: "-".join(o) or "plain")
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_against_the_formula_and_finite_differences(options, reduction):
    x = RNG.normal(size=(6, 4)) * 2
    labels = np.array([0, 3, 1, 2, 1, 3])
    out = tf.cross_entropy(fg.Tensor(x), labels, reduction=reduction, **options)
    want = ce_by_hand(x, labels, options.get("weight"), options.get("ignore_index", -100), reduction,
                      options.get("label_smoothing", 0.0))
    np.testing.assert_allclose(out.data, want, rtol=1e-13)
    check_grads(lambda z: tf.cross_entropy(z, labels, reduction=reduction, **options), x)


@pytest.mark.parametrize("options", CE_OPTIONS, ids=lambda o: "-".join(o) or "plain")
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_matches_torch(options, reduction):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = RNG.normal(size=(6, 4)) * 3
    x[0] = [1000.0, -1000.0, 0.0, 5.0]
    labels = [0, 1, 1, 2, 3, 3]
    t = fg.Tensor(x, requires_grad=True)
    out = tf.cross_entropy(t, labels, reduction=reduction, **options)
    w = RNG.normal(size=out.shape)
    (out * w).sum().backward()
    tx = torch.tensor(x, requires_grad=True)
    topts = {k: torch.tensor(v) if isinstance(v, np.ndarray) else v for k, v in options.items()}
    tout = F.cross_entropy(tx, torch.tensor(labels), reduction=reduction, **topts)
    (tout * torch.tensor(w)).sum().backward()
    np.testing.assert_allclose(out.data, tout.detach().numpy(), rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(t.grad, tx.grad.numpy(), rtol=1e-13, atol=1e-15)


def test_cross_entropy_is_finite_at_plus_minus_1000():
    x = np.array([[1000.0, -1000.0], [-1000.0, 1000.0], [1000.0, 1000.0]])
    t = fg.Tensor(x, requires_grad=True)
    loss = tf.cross_entropy(t, np.array([0, 0, 1]), reduction="none")
    np.testing.assert_allclose(loss.data, [0.0, 2000.0, math.log(2)], rtol=1e-15)
    loss.sum().backward()
    np.testing.assert_allclose(t.grad, [[0.0, 0.0], [-1.0, 1.0], [0.5, -0.5]])
    smooth = tf.cross_entropy(fg.Tensor(x), [0, 0, 1], label_smoothing=0.1)
    assert np.isfinite(smooth.item())


def test_cross_entropy_with_an_infinite_logit_gives_nan_as_pytorch():
    with np.errstate(invalid="ignore"):
        loss = tf.cross_entropy(fg.Tensor([[INF, 0.0], [1.0, 2.0]]), [0, 1], reduction="none")
    assert math.isnan(loss.data[0]) and np.isfinite(loss.data[1])
    # -inf on a class that is not the target is harmless: it has probability 0
    loss = tf.cross_entropy(fg.Tensor([[-INF, 0.0]]), [1])
    assert loss.item() == 0.0


def test_cross_entropy_one_row_and_all_ignored():
    row = np.array([1.0, 2.0, 0.5])
    one = tf.cross_entropy(fg.Tensor(row), 1)
    assert one.shape == () and one.item() == pytest.approx(ce_by_hand(row[None], [1]), rel=1e-15)
    assert tf.cross_entropy(row, np.int64(1), reduction="none").shape == ()
    check_grads(lambda z: tf.cross_entropy(z, 2), row)
    with np.errstate(invalid="ignore"):
        assert math.isnan(tf.cross_entropy(fg.Tensor([row, row]), [-100, -100]).item())


@pytest.mark.parametrize("labels, error, match", [
    (np.array([0.0, 1.0]), TypeError, "integer"),
    ([0.5, 1], TypeError, "integer"),
    (np.array([True, False]), TypeError, "integer"),
    (fg.Tensor([0.0, 1.0]), TypeError, "class indices"),
    ([0, 3], IndexError, "out of bounds"),
    ([0, -1], IndexError, "out of bounds"),
    ([0, 1, 2], ValueError, "2 targets"),
    (np.array([[0, 1]]), ValueError, "2 targets"),
])
def test_cross_entropy_bad_labels(labels, error, match):
    with pytest.raises(error, match=match):
        tf.cross_entropy(fg.Tensor(np.zeros((2, 3)), requires_grad=True), labels)


def test_cross_entropy_bad_arguments():
    x = fg.Tensor(np.zeros((2, 3)), requires_grad=True)
    with pytest.raises(ValueError, match="reduction"):
        tf.cross_entropy(x, [0, 1], reduction="avg")
    with pytest.raises(ValueError, match="label_smoothing"):
        tf.cross_entropy(x, [0, 1], label_smoothing=1.5)
    with pytest.raises(TypeError, match="label_smoothing"):
        tf.cross_entropy(x, [0, 1], label_smoothing="0.1")
    with pytest.raises(ValueError, match="one entry per class"):
        tf.cross_entropy(x, [0, 1], weight=[1.0, 2.0])
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        tf.cross_entropy(fg.Tensor(np.zeros((2, 3, 4))), [0, 1])


# ---- mse_loss, binary_cross_entropy_with_logits ----

@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_loss(reduction):
    a, b = RNG.normal(size=(3, 4)), RNG.normal(size=(3, 4))
    out = tf.mse_loss(fg.Tensor(a), fg.Tensor(b), reduction=reduction)
    sq = (a - b) ** 2
    want = {"mean": sq.mean(), "sum": sq.sum(), "none": sq}[reduction]
    np.testing.assert_allclose(out.data, want, rtol=1e-14)
    check_grads(lambda x, y: tf.mse_loss(x, y, reduction=reduction), a, b)
    t = fg.Tensor(a, requires_grad=True)
    tf.mse_loss(t, b).backward()
    np.testing.assert_allclose(t.grad, 2 * (a - b) / a.size, rtol=1e-14)


def bce_by_hand(x, y, w=1.0, p=1.0):
    """The textbook -w·[p·y·log σ(x) + (1 - y)·log(1 - σ(x))], fine at moderate logits."""
    s = 1 / (1 + np.exp(-x))
    return -w * (p * y * np.log(s) + (1 - y) * np.log(1 - s))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
def test_bce_with_logits_against_the_formula_and_finite_differences(reduction, weighted):
    x, y = RNG.normal(size=(4, 3)) * 2, RNG.uniform(size=(4, 3))
    kw = {"weight": RNG.uniform(0.5, 2, size=(4, 1)), "pos_weight": np.array([0.5, 1.0, 3.0])}
    kw = kw if weighted else {}
    out = tf.binary_cross_entropy_with_logits(fg.Tensor(x), y, reduction=reduction, **kw)
    terms = bce_by_hand(x, y, kw.get("weight", 1.0), kw.get("pos_weight", 1.0))
    want = {"mean": terms.mean(), "sum": terms.sum(), "none": terms}[reduction]
    np.testing.assert_allclose(out.data, want, rtol=1e-13)
    check_grads(lambda a, b: tf.binary_cross_entropy_with_logits(a, b, reduction=reduction, **kw), x, y)


@pytest.mark.parametrize("weighted", [False, True])
def test_bce_with_logits_matches_torch(weighted):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = np.array([[1000.0, -1000.0, 0.5], [-40.0, 40.0, -2.0]])
    y = np.array([[0.0, 1.0, 0.3], [0.0, 1.0, 1.0]])
    kw = {"weight": np.array([2.0, 0.5, 1.0]), "pos_weight": np.array([0.5, 1.0, 3.0])} if weighted else {}
    for reduction in ("mean", "none"):
        t, ty = fg.Tensor(x, requires_grad=True), fg.Tensor(y, requires_grad=True)
        out = tf.binary_cross_entropy_with_logits(t, ty, reduction=reduction, **kw)
        w = np.ones(out.shape)
        (out * w).sum().backward()
        tx, tyy = torch.tensor(x, requires_grad=True), torch.tensor(y, requires_grad=True)
        tout = F.binary_cross_entropy_with_logits(tx, tyy, reduction=reduction,
                                                  **{k: torch.tensor(v) for k, v in kw.items()})
        tout.sum().backward()
        # atol: at x = -40, y = 0 PyTorch's form gives 0 where the exact value is 4.2e-18 (so do we)
        np.testing.assert_allclose(out.data, tout.detach().numpy(), rtol=1e-14, atol=1e-17)
        np.testing.assert_allclose(t.grad, tx.grad.numpy(), rtol=1e-14, atol=1e-17)
        np.testing.assert_allclose(ty.grad, tyy.grad.numpy(), rtol=1e-14)


def test_bce_with_logits_is_stable_at_plus_minus_1000():
    x = np.array([1000.0, -1000.0, 1000.0, -1000.0, -40.0])
    y = np.array([1.0, 0.0, 0.0, 1.0, 0.0])
    t = fg.Tensor(x, requires_grad=True)
    out = tf.binary_cross_entropy_with_logits(t, y, reduction="none")
    np.testing.assert_allclose(out.data, [0.0, 0.0, 1000.0, 1000.0, math.log1p(math.exp(-40.0))], rtol=1e-15)
    out.sum().backward()
    sigma = 1 / (1 + math.exp(40.0))       # σ(-40) ≈ 4.2e-18: neither value nor gradient lost to 40 - 40
    np.testing.assert_allclose(t.grad, [0.0, 0.0, 1.0, -1.0, sigma], rtol=1e-15)


def test_loss_shape_errors_raise_when_built():
    a = fg.Tensor(np.zeros((2, 3)), requires_grad=True)
    with pytest.raises(ValueError, match="differ"):
        tf.mse_loss(a, np.zeros((3, 2)))
    with pytest.raises(ValueError, match="differ"):
        tf.binary_cross_entropy_with_logits(a, np.zeros(3))
    with pytest.raises(ValueError, match="broadcast"):
        tf.binary_cross_entropy_with_logits(a, np.zeros((2, 3)), weight=np.ones(2))
    with pytest.raises(ValueError, match="reduction"):
        tf.mse_loss(a, np.zeros((2, 3)), reduction=None)
    with pytest.raises(TypeError):
        tf.mse_loss(a, "x")


# ---- across the new ops: dtypes, errors, no_grad, inputs untouched ----

BUILDERS = {
    "max": lambda x: x.max(axis=0),
    "min": lambda x: x.min(),
    "maximum": lambda x: ft.maximum(x, 0.1),
    "where": lambda x: fg.where(x.data > 0, x, x * 2.0),
    "concatenate": lambda x: fg.concatenate([x, x], axis=1),
    "stack": lambda x: fg.stack([x, x]),
    "softmax": lambda x: x.softmax(),
    "log_softmax": lambda x: x.log_softmax(0),
    "logsumexp": lambda x: x.logsumexp(1),
    "cross_entropy": lambda x: tf.cross_entropy(x, [0, 2, 1], label_smoothing=0.1),
    "mse_loss": lambda x: tf.mse_loss(x, x * 0.5),
    "bce_with_logits": lambda x: tf.binary_cross_entropy_with_logits(x, np.full((3, 3), 0.25)),
}


@pytest.mark.parametrize("name", BUILDERS)
def test_float32_is_kept(name):
    a = RNG.normal(size=(3, 3)).astype(np.float32)
    t = fg.Tensor(a, requires_grad=True)
    out = BUILDERS[name](t)
    assert out.dtype == np.float32
    out.sum().backward()
    assert t.grad.dtype == np.float32 and np.isfinite(t.grad).all()
    want = BUILDERS[name](fg.Tensor(a.astype(np.float64))).data
    np.testing.assert_allclose(out.data, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", BUILDERS)
def test_no_grad_builds_nothing(name):
    t = fg.Tensor(RNG.normal(size=(3, 3)), requires_grad=True)
    before = _engine.memory_stats()["nodes_alive"]
    with fg.no_grad():
        out = BUILDERS[name](t)
    assert not out.requires_grad
    assert _engine.memory_stats()["nodes_alive"] == before


@pytest.mark.parametrize("name", BUILDERS)
def test_read_only_and_strided_inputs_are_never_modified(name):
    base = RNG.normal(size=(3, 6))
    for arr in (base[:, ::2], np.asfortranarray(base[:, :3])):
        arr.setflags(write=False)
        before = arr.copy()
        t = fg.Tensor(arr, requires_grad=True)
        BUILDERS[name](t).sum().backward()
        BUILDERS[name](fg.Tensor(arr)).sum()
        np.testing.assert_array_equal(arr, before)


def test_shape_and_argument_errors_raise_when_the_op_is_built():
    t = fg.Tensor(np.ones((2, 3)), requires_grad=True)
    cases = [
        (ValueError, "do not broadcast", lambda: ft.maximum(t, np.ones(4))),
        (ValueError, "do not broadcast", lambda: fg.where(np.ones(4, bool), t, 0.0)),
        (TypeError, "bool", lambda: fg.where(np.ones((2, 3)), t, 0.0)),
        (ValueError, "differ off axis", lambda: fg.concatenate([t, fg.Tensor(np.ones((2, 2)))])),
        (ValueError, "differ off axis", lambda: fg.concatenate([t, np.ones(3)])),
        (ValueError, "0-d", lambda: fg.concatenate([fg.Tensor(1.0), fg.Tensor(2.0)])),
        (ValueError, "at least one", lambda: fg.stack([])),
        (TypeError, "list or tuple", lambda: fg.stack(t)),
        (ValueError, "same shape", lambda: fg.stack([t, t.T])),
        (ValueError, "out of range", lambda: fg.stack([t, t], axis=3)),
        (ValueError, "out of range", lambda: fg.concatenate([t, t], axis=2)),
        (TypeError, "axis", lambda: fg.concatenate([t, t], axis=0.5)),
        (ValueError, "out of range", lambda: t.softmax(2)),
        (TypeError, "axis", lambda: t.log_softmax((0, 1))),
        (ValueError, "out of range", lambda: t.max(axis=2)),
        (ValueError, "empty", lambda: fg.Tensor(np.ones((0, 3))).max(axis=0)),
        (ValueError, "empty", lambda: fg.Tensor(np.ones((0, 3))).logsumexp(0)),
    ]
    for error, match, build in cases:
        with pytest.raises(error, match=match):
            build()


def test_a_small_classifier_step_matches_numpy_by_hand():
    x = RNG.normal(size=(8, 3))
    labels = RNG.integers(0, 4, size=8)
    W, b = RNG.normal(size=(3, 4)), RNG.normal(size=4)
    tw, tb = fg.Tensor(W, requires_grad=True), fg.Tensor(b, requires_grad=True)
    loss = tf.cross_entropy(fg.concatenate([fg.Tensor(x) @ tw], axis=0) + tb, labels)
    loss.backward()
    p = np_softmax(x @ W + b)
    p[np.arange(8), labels] -= 1
    np.testing.assert_allclose(tw.grad, x.T @ p / 8, rtol=1e-13)
    np.testing.assert_allclose(tb.grad, p.sum(0) / 8, rtol=1e-13)


def test_0d_inputs_give_arrays():
    for build, value in [(lambda t: t.max(), 2.0), (lambda t: t.min(), 2.0), (lambda t: t.softmax(), 1.0),
                         (lambda t: t.log_softmax(0), 0.0), (lambda t: t.logsumexp(), 2.0),
                         (lambda t: tf.mse_loss(t, 1.0, reduction="none"), 1.0),
                         (lambda t: tf.binary_cross_entropy_with_logits(t, 1.0, reduction="none"),
                          math.log1p(math.exp(-2.0)))]:
        t = fg.Tensor(np.float32(2.0), requires_grad=True)
        out = build(t)
        assert isinstance(out.data, np.ndarray) and out.shape == () and out.dtype == np.float32
        assert out.item() == pytest.approx(value, rel=1e-6)
        out.backward()
        assert isinstance(t.grad, np.ndarray) and t.grad.shape == ()
    with pytest.raises(ValueError, match="out of range"):
        fg.Tensor(1.0).softmax(1)
