"""Losses against torch.nn.functional in float64: values and gradients w.r.t. every input Var, to 1e-12.

Each case runs the same random data through fastgrad (Vars) and torch (float64 tensors). For 'none' the
gradient compared is that of Σ c_i·term_i with random c, so every term's gradient is checked.
"""
from __future__ import annotations

import zlib

import numpy as np
import pytest

import fastgrad
from fastgrad.nn import functional as F

torch = pytest.importorskip("torch")
TF = torch.nn.functional

RTOL = 1e-12
ATOL = 1e-15   # for values and gradients that are (nearly) 0, where a relative bound means nothing


def _vars(array):
    """Nested lists of Vars with the array's shape (a 0-d array gives one Var)."""
    if array.ndim == 0:
        return fastgrad.Var(float(array))
    return [_vars(a) for a in array]


def _leaves(tree):
    return [tree] if isinstance(tree, fastgrad.Var) else [v for t in tree for v in _leaves(t)]


def _values(tree):
    return np.array(tree.data if isinstance(tree, fastgrad.Var) else [_values(t) for t in tree])


def _grads(tree):
    return np.array(tree.grad if isinstance(tree, fastgrad.Var) else [_grads(t) for t in tree])


def _close(ours, theirs, what):
    np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=ATOL, err_msg=what)


def _compare(ours_fn, torch_fn, arrays, grad_of, constants=(), reduction="mean", seed=0, **kwargs):
    """Run both on `arrays` (name -> ndarray, positional, in order); names in `grad_of` are Vars (ours) and
    leaf tensors (torch), the others go as they are (ours) and as tensors (torch).

    `constants` maps the keyword arguments both take as plain values (ours gets lists, torch tensors).
    """
    ours_args = {k: (_vars(a) if k in grad_of else a) for k, a in arrays.items()}
    torch_args = {k: torch.tensor(a, requires_grad=k in grad_of) for k, a in arrays.items()}
    ours_kw = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in dict(constants).items()}
    torch_kw = {k: (torch.tensor(v) if isinstance(v, np.ndarray) else v) for k, v in dict(constants).items()}
    ours = ours_fn(*ours_args.values(), reduction=reduction, **ours_kw, **kwargs)
    theirs = torch_fn(*torch_args.values(), reduction=reduction, **torch_kw, **kwargs)
    _close(_values(ours), theirs.detach().numpy(), "value")
    if reduction == "none":
        c = np.random.default_rng(seed).normal(size=theirs.shape)
        outs = _leaves(ours)
        fastgrad.dot(c.reshape(-1).tolist(), outs).backward()
        (theirs * torch.tensor(c)).sum().backward()
    else:
        ours.backward()
        theirs.backward()
    for k in grad_of:
        _close(_grads(ours_args[k]), torch_args[k].grad.numpy(), f"gradient w.r.t. {k}")


REDUCTIONS = ["mean", "sum", "none"]
SHAPES = [(), (7,), (4, 3)]


def _rng(*key):
    """A generator seeded by the test's parameters (crc32: stable across runs, unlike hash())."""
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


# ---- regression losses ----

REGRESSION = [
    (F.mse_loss, TF.mse_loss, {}),
    (F.l1_loss, TF.l1_loss, {}),
    (F.huber_loss, TF.huber_loss, {}),
    (F.huber_loss, TF.huber_loss, {"delta": 0.375}),
    (F.huber_loss, TF.huber_loss, {"delta": 2.5}),
    (F.smooth_l1_loss, TF.smooth_l1_loss, {}),
    (F.smooth_l1_loss, TF.smooth_l1_loss, {"beta": 0.375}),
    (F.smooth_l1_loss, TF.smooth_l1_loss, {"beta": 0.0}),
]


@pytest.mark.parametrize("ours,theirs,kwargs", REGRESSION)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", SHAPES)
def test_regression_losses_match_torch(ours, theirs, kwargs, reduction, shape):
    rng = _rng(ours.__name__, str(kwargs), reduction, shape)
    arrays = {"input": rng.normal(size=shape) * 2, "target": rng.normal(size=shape)}
    _compare(ours, theirs, arrays, ["input", "target"], reduction=reduction, **kwargs)


@pytest.mark.parametrize("ours,theirs,kwargs", REGRESSION)
@pytest.mark.parametrize("reduction", ["sum", "none"])
def test_regression_gradients_at_the_kinks_match_torch(ours, theirs, kwargs, reduction):
    """d = 0 exactly, |d| = delta or beta exactly (from both sides of the target), and between."""
    k = kwargs.get("delta", kwargs.get("beta", 1.0))
    target = np.array([0.25, 0.25, 0.25, -0.5, 3.0, 0.25])
    input = target + np.array([0.0, k, -k, k, -k, 0.5 * k])
    assert ((input - target)[1:5] == [k, -k, k, -k]).all()       # the kinks are hit exactly
    _compare(ours, theirs, {"input": input, "target": target}, ["input", "target"], reduction=reduction,
             **kwargs)


# ---- binary cross-entropy ----

@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("weighted", ["none", "full", "last"])
def test_binary_cross_entropy_matches_torch(reduction, shape, weighted):
    rng = _rng("bce", reduction, shape, weighted)
    input = rng.uniform(0.02, 0.98, size=shape)
    target = rng.uniform(size=shape)
    if target.ndim:
        target.reshape(-1)[:2] = [0.0, 1.0]                        # hard labels take the short path
    constants = {}
    if weighted == "full":
        constants["weight"] = rng.uniform(0.1, 3.0, size=shape)
    elif weighted == "last" and shape:
        constants["weight"] = rng.uniform(0.1, 3.0, size=shape[-1:])
    _compare(F.binary_cross_entropy, TF.binary_cross_entropy, {"input": input, "target": target},
             ["input", "target"], constants, reduction=reduction)


def test_binary_cross_entropy_at_the_clamps_matches_torch_values():
    """x = 0, 1 and below e^-100: PyTorch clamps each log at -100; the values agree exactly."""
    input = np.array([0.0, 1.0, 1e-50, 0.0, 1.0, 1.0 - 2.0 ** -53, 0.5])
    target = np.array([0.3, 0.3, 0.7, 0.0, 1.0, 0.0, 1.0])
    ours = F.binary_cross_entropy(input.tolist(), target.tolist(), reduction="none")
    theirs = TF.binary_cross_entropy(torch.tensor(input), torch.tensor(target), reduction="none")
    assert [v.data for v in ours] == theirs.tolist()


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("weighted", ["none", "weight", "pos_weight", "both"])
def test_binary_cross_entropy_with_logits_matches_torch(reduction, shape, weighted):
    rng = _rng("bcel", reduction, shape, weighted)
    input = rng.normal(size=shape) * 4
    target = rng.uniform(size=shape)
    constants = {}
    if weighted in ("weight", "both"):
        constants["weight"] = rng.uniform(0.1, 3.0, size=shape)
    if weighted in ("pos_weight", "both"):
        constants["pos_weight"] = rng.uniform(0.1, 3.0, size=shape[-1:])
    _compare(F.binary_cross_entropy_with_logits, TF.binary_cross_entropy_with_logits,
             {"input": input, "target": target}, ["input", "target"], constants, reduction=reduction)


@pytest.mark.parametrize("pos_weight", [None, 2.5])
def test_binary_cross_entropy_with_logits_at_extreme_logits_matches_torch(pos_weight):
    input = np.array([1000.0, -1000.0, 1000.0, -1000.0, 40.0, -40.0, 0.0, 700.0])
    target = np.array([0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.3, 0.25])
    constants = {} if pos_weight is None else {"pos_weight": np.array([pos_weight])}
    for reduction in REDUCTIONS:
        _compare(F.binary_cross_entropy_with_logits, TF.binary_cross_entropy_with_logits,
                 {"input": input, "target": target}, ["input", "target"], constants, reduction=reduction)


# ---- cross-entropy and nll ----

def _class_data(key, n=6, c=5, scale=3.0, ignore=True):
    rng = _rng(*key)
    logits = rng.normal(size=(n, c)) * scale
    target = rng.integers(0, c, size=n)
    if ignore:
        target[2] = -100
    return logits, target, rng


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("smoothing", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("ignore", [False, True])
def test_cross_entropy_matches_torch(reduction, weighted, smoothing, ignore):
    logits, target, rng = _class_data(("ce", reduction, weighted, smoothing, ignore), ignore=ignore)
    constants = {"weight": rng.uniform(0.2, 3.0, size=5)} if weighted else {}
    _compare(F.cross_entropy, TF.cross_entropy, {"input": logits, "target": target}, ["input"], constants,
             reduction=reduction, label_smoothing=smoothing)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_of_one_row_matches_torch(reduction):
    logits, _, rng = _class_data(("ce1", reduction), n=1, ignore=False)
    constants = {"weight": rng.uniform(0.2, 3.0, size=5)}
    _compare(F.cross_entropy, TF.cross_entropy, {"input": logits[0], "target": np.array(3)}, ["input"],
             constants, reduction=reduction, label_smoothing=0.2)


@pytest.mark.parametrize("ignore_index", [0, 4])
def test_cross_entropy_with_a_class_as_ignore_index_matches_torch(ignore_index):
    logits, target, rng = _class_data(("ce-ignore", ignore_index), ignore=False)
    target[:2] = ignore_index
    for reduction in REDUCTIONS:
        _compare(F.cross_entropy, TF.cross_entropy, {"input": logits, "target": target}, ["input"],
                 {"weight": rng.uniform(0.2, 3.0, size=5)}, reduction=reduction, ignore_index=ignore_index,
                 label_smoothing=0.3)


@pytest.mark.parametrize("smoothing", [0.0, 0.25])
def test_cross_entropy_at_extreme_logits_matches_torch(smoothing):
    logits = np.array([[1000.0, -1000.0, 0.0], [-1000.0, 1000.0, 999.0], [0.0, 0.0, -1000.0]])
    target = np.array([1, 2, 2])
    for reduction in REDUCTIONS:
        _compare(F.cross_entropy, TF.cross_entropy, {"input": logits, "target": target}, ["input"],
                 {"weight": np.array([0.5, 2.0, 1.0])}, reduction=reduction, label_smoothing=smoothing)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
def test_nll_loss_matches_torch(reduction, weighted):
    logits, target, rng = _class_data(("nll", reduction, weighted))
    log_probs = torch.log_softmax(torch.tensor(logits), 1).numpy()
    constants = {"weight": rng.uniform(0.2, 3.0, size=5)} if weighted else {}
    _compare(F.nll_loss, TF.nll_loss, {"input": log_probs, "target": target}, ["input"], constants,
             reduction=reduction)


def test_cross_entropy_and_nll_when_every_row_is_ignored_match_torch():
    logits = np.array([[1.0, 2.0], [0.5, -0.5]])
    target = np.array([-100, -100])
    for ours, theirs in ((F.cross_entropy, TF.cross_entropy), (F.nll_loss, TF.nll_loss)):
        for reduction in ("mean", "sum"):
            got = ours(logits.tolist(), target, reduction=reduction).data
            want = theirs(torch.tensor(logits), torch.tensor(target), reduction=reduction).item()
            assert (np.isnan(got) and np.isnan(want)) or got == want


def test_cross_entropy_targets_in_every_integer_dtype_match_torch():
    logits, target, _ = _class_data(("ce-dtypes",), ignore=False)
    want = TF.cross_entropy(torch.tensor(logits), torch.tensor(target)).item()
    for dtype in (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint64):
        got = F.cross_entropy(logits.tolist(), target.astype(dtype)).data
        assert got == pytest.approx(want, rel=RTOL), dtype
    assert F.cross_entropy(logits, [np.int32(t) for t in target]).data == pytest.approx(want, rel=RTOL)


# ---- softmax and log-softmax of a batch ----

@pytest.mark.parametrize("fn,theirs", [(F.softmax, torch.softmax), (F.log_softmax, torch.log_softmax)])
@pytest.mark.parametrize("dim", [None, -1, 1, 0, -2])
def test_softmax_of_a_batch_matches_torch(fn, theirs, dim):
    logits = _rng("softmax", fn.__name__, str(dim)).normal(size=(4, 3)) * 3
    logits[1, 0] = 1000.0
    rows = _vars(logits)
    out = fn(rows) if dim is None else fn(rows, dim=dim)
    tx = torch.tensor(logits, requires_grad=True)
    tout = theirs(tx, 1 if dim is None else dim)
    _close(_values(out), tout.detach().numpy(), "value")
    c = np.random.default_rng(1).normal(size=logits.shape)
    fastgrad.dot(c.reshape(-1).tolist(), _leaves(out)).backward()
    (tout * torch.tensor(c)).sum().backward()
    _close(_grads(rows), tx.grad.numpy(), "gradient")
