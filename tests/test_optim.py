"""Optimizers against PyTorch's published update formulas, hyper-parameter validation, state round trips."""
import copy
import gc
import json
import math
import pickle

import numpy as np
import pytest

import fastgrad
from fastgrad import nn, optim
from fastgrad.optim import lr_scheduler

STEPS = 3


# ---- the published formulas (torch.optim docs), one scalar parameter, written out independently ----

def sgd_formula(grads_of, p, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False,
                maximize=False):
    b, out = None, []
    for t in range(1, STEPS + 1):
        g = grads_of(p)
        g = -g if maximize else g
        if weight_decay:
            g = g + weight_decay * p
        if momentum:
            b = g if t == 1 else momentum * b + (1 - dampening) * g
            g = g + momentum * b if nesterov else b
        p = p - lr * g
        out.append(p)
    return out


def adagrad_formula(grads_of, p, lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0,
                    eps=1e-10, maximize=False):
    s, out = initial_accumulator_value, []
    for t in range(1, STEPS + 1):
        g = grads_of(p)
        g = -g if maximize else g
        if weight_decay:
            g = g + weight_decay * p
        clr = lr / (1 + (t - 1) * lr_decay)
        s = s + g * g
        p = p - clr * g / (math.sqrt(s) + eps)
        out.append(p)
    return out


def rmsprop_formula(grads_of, p, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                    centered=False, maximize=False):
    v, gbar, b, out = 0.0, 0.0, 0.0, []
    for _ in range(STEPS):
        g = grads_of(p)
        g = -g if maximize else g
        if weight_decay:
            g = g + weight_decay * p
        v = alpha * v + (1 - alpha) * g * g
        vt = v
        if centered:
            gbar = alpha * gbar + (1 - alpha) * g
            vt = v - gbar * gbar
        if momentum > 0:
            b = momentum * b + g / (math.sqrt(vt) + eps)
            p = p - lr * b
        else:
            p = p - lr * g / (math.sqrt(vt) + eps)
        out.append(p)
    return out


def adam_formula(grads_of, p, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
                 decoupled=False, maximize=False):
    beta1, beta2 = betas
    m = v = vmax = 0.0
    out = []
    for t in range(1, STEPS + 1):
        g = grads_of(p)
        g = -g if maximize else g
        if weight_decay:
            if decoupled:
                p = p * (1 - lr * weight_decay)
            else:
                g = g + weight_decay * p
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        m_hat = m / (1 - beta1 ** t)
        if amsgrad:
            vmax = max(vmax, v)
            v_hat = vmax / (1 - beta2 ** t)
        else:
            v_hat = v / (1 - beta2 ** t)
        p = p - lr * m_hat / (math.sqrt(v_hat) + eps)
        out.append(p)
    return out


def square_grad(p):
    """d/dp p**2."""
    return 2.0 * p


CASES = [
    ("SGD", {"lr": 0.1}, sgd_formula),
    ("SGD", {"lr": 0.1, "momentum": 0.9}, sgd_formula),
    ("SGD", {"lr": 0.1, "momentum": 0.9, "dampening": 0.5}, sgd_formula),
    ("SGD", {"lr": 0.1, "momentum": 0.9, "nesterov": True}, sgd_formula),
    ("SGD", {"lr": 0.1, "momentum": 0.5, "weight_decay": 0.1}, sgd_formula),
    ("SGD", {"lr": 0.1, "maximize": True}, sgd_formula),
    ("Adagrad", {}, adagrad_formula),
    ("Adagrad", {"lr": 0.5, "lr_decay": 0.1, "weight_decay": 0.2, "initial_accumulator_value": 0.3},
     adagrad_formula),
    ("RMSprop", {}, rmsprop_formula),
    ("RMSprop", {"lr": 0.05, "centered": True}, rmsprop_formula),
    ("RMSprop", {"lr": 0.05, "momentum": 0.9}, rmsprop_formula),
    ("RMSprop", {"lr": 0.05, "alpha": 0.9, "momentum": 0.5, "centered": True, "weight_decay": 0.1},
     rmsprop_formula),
    ("Adam", {}, adam_formula),
    ("Adam", {"lr": 0.1, "betas": (0.8, 0.99), "weight_decay": 0.1}, adam_formula),
    ("Adam", {"lr": 0.1, "amsgrad": True}, adam_formula),
    ("Adam", {"lr": 0.1, "maximize": True}, adam_formula),
    ("AdamW", {"lr": 0.1}, adam_formula),
    ("AdamW", {"lr": 0.1, "weight_decay": 0.5, "amsgrad": True}, adam_formula),
]


def _fastgrad_trajectory(name, kwargs, p0=1.0, steps=STEPS):
    p = fastgrad.Var(p0)
    opt = getattr(optim, name)([p], **kwargs)
    out = []
    for _ in range(steps):
        opt.zero_grad()
        (p * p).backward()
        opt.step()
        out.append(p.data)
    return out


def _formula_kwargs(name, kwargs):
    kw = dict(kwargs)
    if name == "AdamW":
        kw.setdefault("weight_decay", 1e-2)  # AdamW's default
        kw["decoupled"] = True
    return kw


@pytest.mark.parametrize("name,kwargs,formula", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_three_steps_of_p_squared_follow_the_published_formula(name, kwargs, formula):
    expected = formula(square_grad, 1.0, **_formula_kwargs(name, kwargs))
    got = _fastgrad_trajectory(name, kwargs)
    assert got == pytest.approx(expected, abs=1e-12, rel=0)


def test_sgd_trajectory_by_hand():
    # p <- p - 0.1 * 2p: 1, 0.8, 0.64, 0.512
    assert _fastgrad_trajectory("SGD", {"lr": 0.1}) == pytest.approx([0.8, 0.64, 0.512], abs=1e-15)


def test_adam_first_step_moves_by_lr():
    # m_hat = g, v_hat = g**2 at step 1, so the step is lr * g / (|g| + eps)
    (p1,) = _fastgrad_trajectory("Adam", {"lr": 0.1}, steps=1)
    assert p1 == pytest.approx(1.0 - 0.1 * 2.0 / (2.0 + 1e-8), abs=1e-15)


@pytest.mark.parametrize("name,kwargs,formula", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_matches_torch_when_installed(name, kwargs, formula):
    torch = pytest.importorskip("torch")
    p = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    opt = getattr(torch.optim, name)([p], **kwargs)
    expected = []
    for _ in range(STEPS):
        opt.zero_grad()
        (p * p).backward()
        opt.step()
        expected.append(p.item())
    assert _fastgrad_trajectory(name, kwargs) == pytest.approx(expected, rel=1e-15, abs=1e-15)


@pytest.mark.parametrize("name", ["SGD", "Adagrad", "RMSprop", "Adam", "AdamW"])
def test_one_loop_updates_every_parameter_with_its_own_gradient(name):
    kwargs = {"lr": 0.1, "momentum": 0.9} if name == "SGD" else {"lr": 0.1}
    values = [1.0, -2.0, 0.5, 3.0, -0.25]
    ps = [fastgrad.Var(v) for v in values]
    opt = getattr(optim, name)(ps, **kwargs)
    for _ in range(STEPS):
        opt.zero_grad()
        fastgrad.dot(ps, ps).backward()
        opt.step()
    for v0, p in zip(values, ps):
        assert p.data == pytest.approx(_fastgrad_trajectory(name, kwargs, p0=v0)[-1], abs=1e-15)


def test_a_zero_gradient_is_a_real_gradient():
    p = fastgrad.Var(1.0)
    opt = optim.SGD([p], lr=0.1, weight_decay=0.5)
    opt.step()  # grad is 0.0: the decay still applies
    assert p.data == pytest.approx(1.0 - 0.1 * 0.5)
    q = fastgrad.Var(1.0)
    adam = optim.Adam([q], lr=0.1)
    (q * q).backward()
    adam.step()
    before = q.data
    adam.zero_grad()
    adam.step()  # momentum carries on
    assert q.data < before


# ---- hyper-parameter validation: PyTorch's messages ----

@pytest.mark.parametrize("make,message", [
    (lambda p: optim.SGD(p, lr=-1.0), "Invalid learning rate: -1.0"),
    (lambda p: optim.SGD(p, lr=0.1, momentum=-0.5), "Invalid momentum value: -0.5"),
    (lambda p: optim.SGD(p, lr=0.1, weight_decay=-1e-3), "Invalid weight_decay value: -0.001"),
    (lambda p: optim.SGD(p, lr=0.1, nesterov=True),
     "Nesterov momentum requires a momentum and zero dampening"),
    (lambda p: optim.SGD(p, lr=0.1, momentum=0.9, dampening=0.1, nesterov=True),
     "Nesterov momentum requires a momentum and zero dampening"),
    (lambda p: optim.Adagrad(p, lr=-0.1), "Invalid learning rate: -0.1"),
    (lambda p: optim.Adagrad(p, lr_decay=-1.0), "Invalid lr_decay value: -1.0"),
    (lambda p: optim.Adagrad(p, weight_decay=-1.0), "Invalid weight_decay value: -1.0"),
    (lambda p: optim.Adagrad(p, initial_accumulator_value=-1.0),
     "Invalid initial_accumulator_value value: -1.0"),
    (lambda p: optim.Adagrad(p, eps=-1.0), "Invalid epsilon value: -1.0"),
    (lambda p: optim.RMSprop(p, lr=-1.0), "Invalid learning rate: -1.0"),
    (lambda p: optim.RMSprop(p, eps=-1.0), "Invalid epsilon value: -1.0"),
    (lambda p: optim.RMSprop(p, momentum=-1.0), "Invalid momentum value: -1.0"),
    (lambda p: optim.RMSprop(p, weight_decay=-1.0), "Invalid weight_decay value: -1.0"),
    (lambda p: optim.RMSprop(p, alpha=-1.0), "Invalid alpha value: -1.0"),
    (lambda p: optim.Adam(p, lr=-1.0), "Invalid learning rate: -1.0"),
    (lambda p: optim.Adam(p, eps=-1.0), "Invalid epsilon value: -1.0"),
    (lambda p: optim.Adam(p, betas=(1.0, 0.999)), "Invalid beta parameter at index 0: 1.0"),
    (lambda p: optim.Adam(p, betas=(0.9, -0.1)), "Invalid beta parameter at index 1: -0.1"),
    (lambda p: optim.Adam(p, weight_decay=-1.0), "Invalid weight_decay value: -1.0"),
    (lambda p: optim.AdamW(p, lr=-1.0), "Invalid learning rate: -1.0"),
    (lambda p: optim.AdamW(p, betas=(0.9, 1.0)), "Invalid beta parameter at index 1: 1.0"),
])
def test_invalid_hyper_parameters_raise_pytorchs_value_error(make, message):
    with pytest.raises(ValueError) as info:
        make([fastgrad.Var(1.0)])
    assert str(info.value) == message


def test_invalid_hyper_parameter_in_a_group_is_rejected_too():
    with pytest.raises(ValueError, match="Invalid learning rate: -2.0"):
        optim.SGD([{"params": [fastgrad.Var(1.0)], "lr": -2.0}], lr=0.1)


@pytest.mark.parametrize("name", ["SGD", "Adagrad", "RMSprop", "Adam", "AdamW"])
def test_empty_or_duplicated_parameters_are_value_errors(name):
    cls = getattr(optim, name)
    with pytest.raises(ValueError, match="empty parameter list"):
        cls([])
    with pytest.raises(ValueError, match="empty parameter list"):
        cls(iter([]))
    p = fastgrad.Var(1.0)
    with pytest.raises(ValueError, match="duplicate"):
        cls([p, fastgrad.Var(2.0), p])
    with pytest.raises(ValueError, match="more than one parameter group"):
        cls([{"params": [p]}, {"params": [fastgrad.Var(0.0), p]}])


def test_bad_parameters_are_rejected():
    p = fastgrad.Var(1.0)
    with pytest.raises(TypeError, match="iterable of Vars or dicts"):
        optim.SGD(p, lr=0.1)
    with pytest.raises(TypeError, match="can only optimize Vars"):
        optim.SGD([p, 1.0], lr=0.1)
    with pytest.raises(ValueError, match="non-leaf"):
        optim.SGD([p * 2.0], lr=0.1)
    with pytest.raises(TypeError, match="ordered collections"):
        optim.SGD({p}, lr=0.1)


# ---- groups, zero_grad, the learning rate ----

def test_param_groups_have_their_own_hyper_parameters_and_a_settable_lr():
    a, b = fastgrad.Var(1.0), fastgrad.Var(1.0)
    opt = optim.SGD([{"params": [a]}, {"params": [b], "lr": 0.2}], lr=0.1, momentum=0.0)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.2]
    assert opt.param_groups[1]["momentum"] == 0.0  # defaults filled in
    (a * a + b * b).backward()
    opt.step()
    assert (a.data, b.data) == pytest.approx((0.8, 0.6))
    opt.param_groups[0]["lr"] = 0.5
    opt.zero_grad()
    (a * a + b * b).backward()
    opt.step()
    assert (a.data, b.data) == pytest.approx((0.8 - 0.5 * 1.6, 0.6 - 0.2 * 1.2))


def test_add_param_group():
    a, b = fastgrad.Var(1.0), fastgrad.Var(1.0)
    opt = optim.Adam([a], lr=0.1)
    opt.add_param_group({"params": b, "lr": 0.01})
    assert len(opt.param_groups) == 2 and opt.param_groups[1]["betas"] == (0.9, 0.999)
    with pytest.raises(ValueError, match="more than one parameter group"):
        opt.add_param_group({"params": [a]})
    (a * a + b * b).backward()
    opt.step()
    assert a.data == pytest.approx(0.9, abs=1e-6) and b.data == pytest.approx(0.99, abs=1e-6)


def test_zero_grad_zeroes_every_gradient():
    model = nn.MLP(3, [4, 2])
    opt = optim.SGD(model.parameters(), lr=0.1)
    out = model([1.0, 2.0, 3.0])
    (out[0] * out[1] + out[0]).backward()
    opt.zero_grad()
    assert all(p.grad == 0.0 for p in model.parameters())


def test_closure_is_called_and_its_loss_returned():
    p = fastgrad.Var(3.0)
    opt = optim.SGD([p], lr=0.25)

    def closure():
        opt.zero_grad()
        loss = p * p
        loss.backward()
        return loss

    assert opt.step(closure).data == 9.0
    assert p.data == 1.5


# ---- schedulers ----

def test_lambda_lr_scales_the_initial_lr():
    opt = optim.SGD([fastgrad.Var(1.0)], lr=2.0)
    sched = lr_scheduler.LambdaLR(opt, lambda k: 1.0 - 0.1 * k)
    seen = []
    for _ in range(4):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([2.0, 1.8, 1.6, 1.4])
    assert sched.get_last_lr() == pytest.approx([1.2])


def test_step_lr_decays_every_step_size_epochs():
    opt = optim.SGD([fastgrad.Var(1.0)], lr=1.0)
    sched = lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    seen = []
    for _ in range(7):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([1.0, 1.0, 0.5, 0.5, 0.25, 0.25, 0.125])
    with pytest.raises(ValueError):
        lr_scheduler.StepLR(opt, step_size=0)


def test_lambda_lr_matches_torch_when_installed():
    torch = pytest.importorskip("torch")
    t_opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.3)
    t_sched = torch.optim.lr_scheduler.StepLR(t_opt, step_size=3, gamma=0.7)
    opt = optim.SGD([fastgrad.Var(0.0)], lr=0.3)
    sched = lr_scheduler.StepLR(opt, step_size=3, gamma=0.7)
    for _ in range(10):
        assert opt.param_groups[0]["lr"] == t_opt.param_groups[0]["lr"]
        t_opt.step()
        t_sched.step()
        opt.step()
        sched.step()


# ---- state dicts and pickling ----

OPTIMIZERS = [
    ("SGD", {"lr": 0.1, "momentum": 0.9, "nesterov": True}),
    ("Adagrad", {"lr": 0.1, "lr_decay": 0.01}),
    ("RMSprop", {"lr": 0.01, "momentum": 0.5, "centered": True}),
    ("Adam", {"lr": 0.05, "amsgrad": True}),
    ("AdamW", {"lr": 0.05}),
]


def _train(model, opt, steps, sched=None):
    xs = [[0.5, -1.0], [1.5, 0.25], [-0.75, 0.5]]
    for _ in range(steps):
        opt.zero_grad()
        outs = [model(x) for x in xs]
        loss = fastgrad.dot(outs, outs)
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
    return [p.data for p in model.parameters()]


@pytest.mark.parametrize("name,kwargs", OPTIMIZERS)
def test_state_dict_is_plain_numbers_and_resumes_exactly(name, kwargs):
    model = nn.MLP(2, [4, 1])
    opt = getattr(optim, name)(model.parameters(), **kwargs)
    _train(model, opt, 2)
    sd = opt.state_dict()
    json.dumps(sd)  # plain numbers, lists and dicts only
    assert sd["param_groups"][0]["params"] == list(range(len(model.parameters())))
    if sd["state"]:
        assert set(sd["state"][0]) >= {"step"} or name == "SGD"

    twin = nn.MLP(2, [4, 1])
    twin.load_state_dict(model.state_dict())
    twin_opt = getattr(optim, name)(twin.parameters(), lr=123.0)
    twin_opt.load_state_dict(json.loads(json.dumps(sd)))  # survives JSON (string keys)
    assert twin_opt.param_groups[0]["lr"] == kwargs["lr"]
    assert _train(twin, twin_opt, 3) == _train(model, opt, 3)  # bit for bit


@pytest.mark.parametrize("name,kwargs", OPTIMIZERS)
def test_pickle_round_trip_resumes_bit_for_bit(name, kwargs):
    model = nn.MLP(2, [4, 1])
    opt = getattr(optim, name)(model.parameters(), **kwargs)
    sched = lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    _train(model, opt, 3, sched)
    model2, opt2, sched2 = pickle.loads(pickle.dumps((model, opt, sched)))
    assert opt2.param_groups[0]["params"][0] is model2.parameters()[0]
    assert _train(model2, opt2, 4, sched2) == _train(model, opt, 4, sched)


def test_load_state_dict_rejects_mismatches_and_changes_nothing():
    ps = [fastgrad.Var(1.0), fastgrad.Var(2.0)]
    opt = optim.Adam(ps, lr=0.1)
    (ps[0] * ps[1]).backward()
    opt.step()
    before = copy.deepcopy(opt.state_dict())
    other = optim.Adam([fastgrad.Var(1.0)], lr=0.1)
    with pytest.raises(ValueError, match="doesn't match the size"):
        opt.load_state_dict(other.state_dict())
    two_groups = optim.Adam([{"params": [fastgrad.Var(1.0)]}, {"params": [fastgrad.Var(2.0)]}])
    with pytest.raises(ValueError, match="different number of parameter groups"):
        opt.load_state_dict(two_groups.state_dict())
    bad = copy.deepcopy(before)
    bad["param_groups"][0]["lr"] = -1.0
    with pytest.raises(ValueError, match="Invalid learning rate"):
        opt.load_state_dict(bad)
    bad = copy.deepcopy(before)
    bad["state"][1]["exp_avg"] = "0.5"
    with pytest.raises(ValueError, match="non-numeric"):
        opt.load_state_dict(bad)
    bad = copy.deepcopy(before)
    bad["state"][1]["step"] = 7
    with pytest.raises(ValueError, match="step counts"):
        opt.load_state_dict(bad)
    assert opt.state_dict() == before


def test_state_is_created_lazily_like_pytorch():
    p = fastgrad.Var(1.0)
    assert optim.Adam([p]).state_dict()["state"] == {}
    assert optim.SGD([p], lr=0.1).state_dict()["state"] == {}
    adagrad = optim.Adagrad([p], initial_accumulator_value=0.5)
    assert adagrad.state_dict()["state"] == {0: {"step": 0, "sum": 0.5}}
    sgd = optim.SGD([p], lr=0.1)
    sgd.step()
    assert sgd.state_dict()["state"] == {}  # no momentum: no buffer


def test_repr_lists_the_groups():
    text = repr(optim.SGD([fastgrad.Var(1.0)], lr=0.1, momentum=0.9))
    assert text.startswith("SGD (") and "lr: 0.1" in text and "momentum: 0.9" in text


# ---- an optimizer never writes into a Var it was not given ----

def test_a_removed_and_freed_parameter_never_redirects_the_update_to_another_var():
    from fastgrad import _engine

    seg = _engine.memory_stats()["segment_size"]
    keep = fastgrad.Var(1.0)
    before = [fastgrad.Var(0.0) for _ in range(2 * seg)]   # so that `gone` shares a segment with fillers only
    gone = fastgrad.Var(2.0)
    after = [fastgrad.Var(0.0) for _ in range(2 * seg)]
    opt = optim.SGD([keep, gone], lr=0.1)
    opt.param_groups[0]["params"].remove(gone)
    del gone, before, after                          # its whole segment dies and is recycled
    gc.collect()
    others = [fastgrad.Var(100.0) for _ in range(6 * seg)]   # one of them reuses the freed slot
    for v in others:
        v.grad = 1.0
    keep.grad = 1.0
    opt.step()
    assert keep.data == 1.0 - 0.1
    assert [v.data for v in others if v.data != 100.0] == []   # once, one of them became 99.9


def test_a_removed_parameter_is_no_longer_updated_and_the_others_keep_their_state():
    def run(edit):
        a, b, c = fastgrad.Var(1.0), fastgrad.Var(2.0), fastgrad.Var(3.0)
        opt = optim.Adam([a, b, c], lr=0.1)
        for step in range(6):
            for p, g in zip((a, b, c), (0.5, -1.0, 2.0)):
                p.grad = g * (step + 1)
            if step == 3 and edit:
                opt.param_groups[0]["params"][:] = [c, a]      # drop b, reorder the rest
            opt.step()
        return a.data, b.data, c.data, opt.state_dict()

    a, b, c, state = run(edit=True)
    a0, b0, c0, _ = run(edit=False)
    assert (a, c) == (a0, c0)                       # a's and c's moments followed them
    assert b != b0                                  # b stopped moving after 3 steps
    assert len(state["state"]) == 2


def test_parameters_added_after_steps_are_an_error_before_any_step_they_are_taken():
    a, b = fastgrad.Var(1.0), fastgrad.Var(2.0)
    opt = optim.Adam([a], lr=0.1)
    opt.param_groups[0]["params"].append(b)           # no step yet: no state to disagree with
    b.grad = 1.0
    opt.step()
    assert b.data != 2.0
    c = fastgrad.Var(3.0)
    opt.param_groups[0]["params"].append(c)
    with pytest.raises(ValueError, match="add_param_group"):
        opt.step()


def test_a_reinitialised_parameter_is_followed():
    p = fastgrad.Var(1.0)
    opt = optim.SGD([p], lr=0.5)
    p.__init__(10.0)                                  # a new node behind the same Var
    p.grad = 2.0
    opt.step()
    assert p.data == 9.0


def test_the_update_loops_refuse_indices_that_are_not_live_leaves():
    from fastgrad import _optim
    from fastgrad._engine import param_index

    v = fastgrad.Var(1.0)
    interior = v * 2.0
    assert not interior.is_leaf
    for bad in (np.array([10 ** 12], dtype=np.int64), np.array([-3], dtype=np.int64),
                param_index([v]) + 1):                # the next node is the interior v * 2
        with pytest.raises(ValueError, match="not a live leaf"):
            _optim.zero_grad(bad)
        with pytest.raises(ValueError, match="not a live leaf"):
            _optim.sgd_step(bad, np.empty(0), 0.1, 0.0, 0.0, 0.0, False, False, False)
    _optim.zero_grad(param_index([v]))
    for bad in (np.array([10 ** 12], dtype=np.int64), param_index([v]) + 1):
        for f in (_optim.get_values, _optim.set_values, _optim.get_grads, _optim.set_grads):
            with pytest.raises(ValueError, match="not a live leaf"):
                f(bad, np.zeros(1))


def test_parameters_in_and_out_as_one_array():
    """The gather and scatter of data parallelism: values and gradients by node index, in one C loop."""
    from fastgrad import _optim
    from fastgrad._engine import param_index

    params = [fastgrad.Var(float(k)) for k in range(5)]
    index = param_index(params)
    out = np.empty(5)
    _optim.get_values(index, out)
    assert out.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    _optim.set_values(index, np.array([5.0, 6.0, 7.0, 8.0, 9.0]))
    assert [p.data for p in params] == [5.0, 6.0, 7.0, 8.0, 9.0]
    params[2].requires_grad_(False)
    _optim.set_grads(index, np.array([0.5, 1.5, 2.5, 3.5, 4.5]))
    assert [p.grad for p in params] == [0.5, 1.5, 0.0, 3.5, 4.5]       # a frozen parameter takes none
    _optim.get_grads(index, out)
    assert out.tolist() == [0.5, 1.5, 0.0, 3.5, 4.5]
    _optim.set_values(index, np.zeros(5))
    assert params[2].data == 0.0                                         # loading sets frozen ones too
    for f in (_optim.get_values, _optim.set_values, _optim.get_grads, _optim.set_grads):
        with pytest.raises(ValueError, match="entries for 5 parameters"):
            f(index, np.zeros(4))


# ---- a zero gradient is a real gradient (the README's semantics; PyTorch's set_to_none=True differs) ----

def test_a_parameter_no_loss_touched_has_grad_zero_and_still_follows_its_optimizer():
    used, unused = fastgrad.Var(1.0), fastgrad.Var(2.0)
    decay = optim.SGD([used, unused], lr=0.1, weight_decay=0.5)
    momentum = optim.SGD([fastgrad.Var(3.0)], lr=0.1, momentum=0.9)
    moved = momentum.param_groups[0]["params"][0]
    for step in range(3):
        decay.zero_grad()
        momentum.zero_grad()
        (used * 3.0).backward()
        if step == 0:
            moved.grad = 1.0                 # touched once, then never again
        assert unused.grad == 0.0            # never None
        decay.step()
        momentum.step()
    assert unused.data == pytest.approx(2.0 * (1 - 0.1 * 0.5) ** 3)      # weight decay alone moves it
    assert moved.data == pytest.approx(3.0 - 0.1 * (1 + 0.9 + 0.81))   # the momentum buffer keeps moving it


def test_zero_gradients_match_torch_with_set_to_none_false():
    torch = pytest.importorskip("torch")
    p = fastgrad.Var(2.0)
    opt = optim.Adam([p], lr=0.1, weight_decay=0.1)
    t = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    topt = torch.optim.Adam([t], lr=0.1, weight_decay=0.1)
    for _ in range(5):
        opt.zero_grad()
        topt.zero_grad(set_to_none=False)    # PyTorch's default (True) would skip the parameter
        t.grad = torch.zeros_like(t)
        opt.step()
        topt.step()
        assert p.data == pytest.approx(t.item(), rel=1e-15)
    assert p.data != 2.0
