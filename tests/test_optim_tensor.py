"""Optimizers over Tensor parameters: against torch.optim, against the Var path's C loops (bit for bit), and
against the textbook formulas written out here; mixed Var + Tensor groups, float32, state dicts, errors."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest

import fastgrad as fg
from fastgrad import optim
from fastgrad.optim import lr_scheduler

STEPS = 12
SHAPE = (3, 4)
RNG = np.random.default_rng(1234)
W0 = RNG.standard_normal(SHAPE)
COEF = RNG.standard_normal(SHAPE)   # mixed signs: gradients change sign along the trajectory


def grad_of(w: np.ndarray) -> np.ndarray:
    """The gradient fed to every implementation at parameter value w (so equal parameters get equal grads);
    a w of another shape than SHAPE takes the first entries of COEF (W0[0] gets COEF[0])."""
    coef = COEF if w.shape == SHAPE else COEF.ravel()[:w.size].reshape(w.shape)
    return np.sin(3.0 * w) + coef * w


CASES = [
    ("SGD", {"lr": 0.1}),
    ("SGD", {"lr": 0.1, "momentum": 0.9}),
    ("SGD", {"lr": 0.1, "momentum": 0.9, "dampening": 0.5}),
    ("SGD", {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 0.1}),
    ("SGD", {"lr": 0.1, "momentum": 0.5, "weight_decay": 0.1, "maximize": True}),
    ("Adagrad", {}),
    ("Adagrad", {"lr": 0.5, "lr_decay": 0.1, "weight_decay": 0.2, "initial_accumulator_value": 0.3}),
    ("Adagrad", {"lr": 0.2, "maximize": True}),
    ("RMSprop", {}),
    ("RMSprop", {"lr": 0.05, "centered": True}),
    ("RMSprop", {"lr": 0.05, "momentum": 0.9}),
    ("RMSprop", {"lr": 0.05, "alpha": 0.9, "momentum": 0.5, "centered": True, "weight_decay": 0.1}),
    ("RMSprop", {"lr": 0.05, "maximize": True}),
    ("RMSprop", {"lr": 0.05, "alpha": 0.4, "centered": True}),        # lerp weight 0.6: its other branch
    ("Adam", {}),
    ("Adam", {"lr": 0.1, "betas": (0.8, 0.99), "weight_decay": 0.1}),
    ("Adam", {"lr": 0.1, "betas": (0.3, 0.99), "amsgrad": True}),    # beta1 < 0.5: lerp's other branch
    ("Adam", {"lr": 0.1, "maximize": True}),
    ("Adam", {"lr": 0.1, "betas": (0.6, 0.9)}),                        # lerp weight 0.4, near the switch
    ("AdamW", {"lr": 0.1}),
    ("AdamW", {"lr": 0.1, "weight_decay": 0.5, "amsgrad": True, "maximize": True}),
]
IDS = [f"{name}-{i}" for i, (name, _) in enumerate(CASES)]
# one case per optimizer with most of its options on
RICH = [
    ("SGD", {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 0.1}),
    ("Adagrad", {"lr": 0.5, "lr_decay": 0.1, "weight_decay": 0.2, "initial_accumulator_value": 0.3}),
    ("RMSprop", {"lr": 0.05, "alpha": 0.9, "momentum": 0.5, "centered": True, "weight_decay": 0.1}),
    ("Adam", {"lr": 0.1, "betas": (0.3, 0.99), "amsgrad": True, "weight_decay": 0.1}),
    ("AdamW", {"lr": 0.1, "weight_decay": 0.5, "amsgrad": True, "maximize": True}),
]


def tensor_run(name, kwargs, w0=W0, steps=STEPS, dtype=np.float64):
    """Parameter values after each step of fastgrad's optimizer on one Tensor."""
    t = fg.Tensor(np.asarray(w0, dtype=dtype), requires_grad=True)
    opt = getattr(optim, name)([t], **kwargs)
    out = []
    for _ in range(steps):
        t.grad = grad_of(t.data.astype(np.float64))
        opt.step()
        out.append(t.data.copy())
    return out


def var_run(name, kwargs, w0=W0, steps=STEPS):
    """The same on one Var per element: the C loops."""
    vs = [fg.Var(float(x)) for x in np.ravel(w0)]
    opt = getattr(optim, name)(vs, **kwargs)
    out = []
    for _ in range(steps):
        values = np.array([v.data for v in vs]).reshape(np.shape(w0))
        for v, g in zip(vs, grad_of(values).ravel()):
            v.grad = float(g)
        opt.step()
        out.append(np.array([v.data for v in vs]).reshape(np.shape(w0)))
    return out


def torch_run(torch, name, kwargs, w0=W0, steps=STEPS, dtype=None):
    p = torch.tensor(w0, dtype=dtype or torch.float64, requires_grad=True)
    opt = getattr(torch.optim, name)([p], **kwargs)
    out = []
    for _ in range(steps):
        p.grad = torch.from_numpy(grad_of(p.detach().numpy().astype(np.float64))).to(p.dtype)
        opt.step()
        out.append(p.detach().numpy().copy())
    return out


# ---- the textbook formulas (torch.optim's docs), vectorized, written out independently ----

def formula_run(name, kwargs, w0=W0, steps=STEPS):
    defaults = {
        "SGD": {"lr": 1e-3, "momentum": 0.0, "dampening": 0.0, "weight_decay": 0.0, "nesterov": False},
        "Adagrad": {"lr": 1e-2, "lr_decay": 0.0, "weight_decay": 0.0, "initial_accumulator_value": 0.0,
                    "eps": 1e-10},
        "RMSprop": {"lr": 1e-2, "alpha": 0.99, "eps": 1e-8, "weight_decay": 0.0, "momentum": 0.0,
                    "centered": False},
        "Adam": {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0, "amsgrad": False},
        "AdamW": {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 1e-2, "amsgrad": False},
    }[name]
    h = {**defaults, "maximize": False, **kwargs}
    p = np.array(w0, dtype=np.float64)
    zeros = np.zeros_like(p)
    buf, v, gbar, m, vmax = None, zeros, zeros, zeros, zeros
    s = zeros + h.get("initial_accumulator_value", 0.0)
    out = []
    for t in range(1, steps + 1):
        g = grad_of(p)
        g = -g if h["maximize"] else g
        if name == "AdamW":
            p = p * (1 - h["lr"] * h["weight_decay"])
        elif h["weight_decay"]:
            g = g + h["weight_decay"] * p
        if name == "SGD":
            if h["momentum"]:
                buf = g if t == 1 else h["momentum"] * buf + (1 - h["dampening"]) * g
                g = g + h["momentum"] * buf if h["nesterov"] else buf
            p = p - h["lr"] * g
        elif name == "Adagrad":
            clr = h["lr"] / (1 + (t - 1) * h["lr_decay"])
            s = s + g * g
            p = p - clr * g / (np.sqrt(s) + h["eps"])
        elif name == "RMSprop":
            a = h["alpha"]
            v = a * v + (1 - a) * g * g
            vt = v
            if h["centered"]:
                gbar = a * gbar + (1 - a) * g
                vt = v - gbar * gbar
            if h["momentum"] > 0:
                buf = (zeros if buf is None else h["momentum"] * buf) + g / (np.sqrt(vt) + h["eps"])
                p = p - h["lr"] * buf
            else:
                p = p - h["lr"] * g / (np.sqrt(vt) + h["eps"])
        else:
            b1, b2 = h["betas"]
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            vmax = np.maximum(vmax, v)
            v_hat = (vmax if h["amsgrad"] else v) / (1 - b2 ** t)
            p = p - h["lr"] * (m / (1 - b1 ** t)) / (np.sqrt(v_hat) + h["eps"])
        out.append(p)
    return out


@pytest.mark.parametrize("name,kwargs", CASES, ids=IDS)
def test_tensor_updates_follow_the_textbook_formulas(name, kwargs):
    for got, want in zip(tensor_run(name, kwargs), formula_run(name, kwargs)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name,kwargs", CASES, ids=IDS)
def test_tensor_updates_equal_the_var_loops_bit_for_bit(name, kwargs):
    for got, want in zip(tensor_run(name, kwargs), var_run(name, kwargs)):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("name,kwargs", CASES, ids=IDS)
def test_tensor_updates_match_torch_optim(name, kwargs):
    torch = pytest.importorskip("torch")
    for got, want in zip(tensor_run(name, kwargs), torch_run(torch, name, kwargs)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_hand_computed_first_steps():
    t = fg.Tensor([1.0, -2.0], requires_grad=True)
    opt = optim.SGD([t], lr=0.1, momentum=0.9)
    t.grad = [2.0, 4.0]
    opt.step()                                   # buf = g
    np.testing.assert_array_equal(t.data, [0.8, -2.4])
    opt.step()                                   # buf = 0.9·g + g
    np.testing.assert_allclose(t.data, [0.8 - 0.1 * 3.8, -2.4 - 0.1 * 7.6], rtol=1e-15)
    u = fg.Tensor([1.0, -2.0], requires_grad=True)
    adam = optim.Adam([u], lr=0.1)
    u.grad = [2.0, -0.5]
    adam.step()                                  # the first Adam step moves each entry by lr·sign(g)
    np.testing.assert_allclose(u.data, [1.0 - 0.1 * 2 / (2 + 1e-8), -2.0 + 0.1 * 0.5 / (0.5 + 1e-8)],
                               rtol=1e-15)


# ---- a real training loop: backward fills the grad buffer, zero_grad keeps it ----

@pytest.mark.parametrize("name,kwargs", [("SGD", {"lr": 0.05, "momentum": 0.9}), ("Adam", {"lr": 0.05})])
def test_training_with_backward_and_zero_grad_matches_torch(name, kwargs):
    x = RNG.standard_normal((8, 3))
    y = RNG.standard_normal((8, 1))
    w0 = RNG.standard_normal((3, 1))
    w = fg.Tensor(w0, requires_grad=True)
    opt = getattr(optim, name)([w], **kwargs)
    buffer = None
    losses = []
    for _ in range(10):
        opt.zero_grad()
        loss = ((x @ w - y) ** 2).mean()
        loss.backward()
        buffer = w.grad if buffer is None else buffer
        assert w.grad is buffer                  # zero_grad zeroed the same array in place
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    torch = pytest.importorskip("torch")
    tw = torch.tensor(w0, requires_grad=True)
    topt = getattr(torch.optim, name)([tw], **kwargs)
    for _ in range(10):
        topt.zero_grad()
        ((torch.from_numpy(x) @ tw - torch.from_numpy(y)) ** 2).mean().backward()
        topt.step()
    np.testing.assert_allclose(w.data, tw.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_zero_grad_fills_tensor_gradients_in_place_and_leaves_none_alone():
    a = fg.Tensor([1.0, 2.0], requires_grad=True)
    b = fg.Tensor([3.0], requires_grad=True)
    v = fg.Var(1.0)
    opt = optim.SGD([a, v, b], lr=0.1)
    (a * a).sum().backward()
    (v * v).backward()
    g = a.grad
    for set_to_none in (True, False):          # set_to_none changes nothing, for Vars and Tensors alike
        opt.zero_grad(set_to_none=set_to_none)
        assert a.grad is g and np.array_equal(g, [0.0, 0.0])
        assert b.grad is None and v.grad == 0.0


def test_a_tensor_with_grad_none_is_skipped_and_keeps_its_own_step_count():
    a = fg.Tensor(W0, requires_grad=True)
    late = fg.Tensor(W0, requires_grad=True)
    opt = optim.Adam([a, late], lr=0.1)
    for step in range(6):
        a.grad = grad_of(a.data)
        if step >= 3:
            late.grad = grad_of(late.data)
        opt.step()
        if step < 3:
            np.testing.assert_array_equal(late.data, W0)       # no gradient yet: no update, no state
            assert 1 not in opt.state_dict()["state"]
    state = opt.state_dict()["state"]
    assert (state[0]["step"], state[1]["step"]) == (6, 3)
    np.testing.assert_array_equal(late.data, tensor_run("Adam", {"lr": 0.1}, steps=3)[-1])


def test_grad_none_matches_torch_skipping_the_parameter():
    torch = pytest.importorskip("torch")
    a = fg.Tensor(W0, requires_grad=True)
    ta = torch.tensor(W0, requires_grad=True)
    b = fg.Tensor(W0, requires_grad=True)
    tb = torch.tensor(W0, requires_grad=True)
    opt = optim.RMSprop([a, b], lr=0.05, momentum=0.5)
    topt = torch.optim.RMSprop([ta, tb], lr=0.05, momentum=0.5)
    for step in range(5):
        a.grad = grad_of(a.data)
        ta.grad = torch.from_numpy(grad_of(ta.detach().numpy()))
        if step >= 2:
            b.grad = grad_of(b.data)
            tb.grad = torch.from_numpy(grad_of(tb.detach().numpy()))
        opt.step()
        topt.step()
    np.testing.assert_allclose(a.data, ta.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(b.data, tb.detach().numpy(), rtol=1e-12, atol=1e-12)


def test_a_zero_gradient_is_a_real_gradient_for_tensors_too():
    # as torch with zero_grad(set_to_none=False): weight decay still moves the parameter
    t = fg.Tensor([2.0, -1.0], requires_grad=True)
    opt = optim.SGD([t], lr=0.1, weight_decay=0.5)
    t.grad = [1.0, 1.0]
    opt.zero_grad()
    opt.step()
    np.testing.assert_allclose(t.data, [2.0 - 0.1 * 0.5 * 2.0, -1.0 + 0.1 * 0.5 * 1.0], rtol=1e-15)


# ---- mixed groups ----

@pytest.mark.parametrize("name,kwargs", RICH, ids=[name for name, _ in RICH])
def test_vars_and_tensors_in_one_group_move_as_they_do_alone(name, kwargs):
    t = fg.Tensor(W0, requires_grad=True)
    u = fg.Tensor(W0[0], requires_grad=True)
    vs = [fg.Var(float(x)) for x in W0.ravel()]
    opt = getattr(optim, name)([vs[0], t, *vs[1:6], u, *vs[6:]], **kwargs)
    for _ in range(STEPS):
        values = np.array([v.data for v in vs]).reshape(SHAPE)
        for v, g in zip(vs, grad_of(values).ravel()):
            v.grad = float(g)
        t.grad = grad_of(t.data)
        u.grad = grad_of(u.data)
        opt.step()
    alone = tensor_run(name, kwargs)[-1]
    np.testing.assert_array_equal(t.data, alone)
    np.testing.assert_array_equal(u.data, alone[0])
    np.testing.assert_array_equal(np.array([v.data for v in vs]).reshape(SHAPE), alone)


def test_groups_of_tensors_have_their_own_hyper_parameters():
    a = fg.Tensor([1.0], requires_grad=True)
    b = fg.Tensor([1.0], requires_grad=True)
    v = fg.Var(1.0)
    opt = optim.SGD([{"params": [a, v]}, {"params": b, "lr": 0.2}], lr=0.1)
    a.grad, b.grad, v.grad = [2.0], [2.0], 2.0
    opt.step()
    assert (a.data[0], v.data, b.data[0]) == pytest.approx((0.8, 0.8, 0.6))
    c = fg.Tensor([1.0], requires_grad=True)
    opt.add_param_group({"params": c, "lr": 0.5})
    c.grad = [1.0]
    opt.step()
    assert c.data[0] == 0.5


# ---- float32 ----

@pytest.mark.parametrize("name,kwargs", RICH, ids=[name for name, _ in RICH])
def test_float32_parameters_keep_float32(name, kwargs):
    t = fg.Tensor(W0.astype(np.float32), requires_grad=True)
    opt = getattr(optim, name)([t], **kwargs)
    for _ in range(STEPS):
        t.grad = grad_of(t.data.astype(np.float64))
        opt.step()
        assert t.data.dtype == np.float32 and t.grad.dtype == np.float32
    for key, value in opt.state_dict()["state"][0].items():
        if key != "step":
            assert value.dtype == np.float32 and value.shape == SHAPE
    np.testing.assert_allclose(t.data, tensor_run(name, kwargs)[-1], rtol=2e-4, atol=2e-5)
    torch = pytest.importorskip("torch")
    want = torch_run(torch, name, kwargs, w0=W0.astype(np.float32), dtype=torch.float32)[-1]
    np.testing.assert_allclose(t.data, want, rtol=2e-5, atol=2e-6)


# ---- state dicts ----

def _train(params, opt, steps):
    for _ in range(steps):
        for p in params:
            if isinstance(p, fg.Tensor):
                p.grad = grad_of(p.data)
            else:
                p.grad = float(np.sin(3.0 * p.data) + 0.5 * p.data)
        opt.step()
    return [p.data.copy() if isinstance(p, fg.Tensor) else p.data for p in params]


def _params():
    return [fg.Var(0.5), fg.Tensor(W0, requires_grad=True), fg.Var(-1.5),
            fg.Tensor(W0[:, 0], requires_grad=True)]


@pytest.mark.parametrize("name,kwargs", RICH, ids=[name for name, _ in RICH])
def test_state_dict_holds_array_copies_and_resumes_exactly(name, kwargs):
    params = _params()
    opt = getattr(optim, name)([{"params": params[:2]}, {"params": params[2:], "lr": 0.01}], **kwargs)
    _train(params, opt, 3)
    sd = opt.state_dict()
    assert sd["param_groups"][1]["params"] == [2, 3]
    for pos in (0, 2):                                   # a Var's entry: plain numbers, as before
        assert all(isinstance(v, (int, float)) for v in sd["state"][pos].values())
    for pos, shape in ((1, SHAPE), (3, (3,))):           # a Tensor's: arrays of its shape
        arrays = {k: v for k, v in sd["state"][pos].items() if k != "step"}
        assert arrays and all(isinstance(v, np.ndarray) and v.shape == shape for v in arrays.values())
        for v in arrays.values():
            v += 100.0                                   # a copy: the optimizer's state is untouched
    sd = opt.state_dict()

    twins = _params()
    for twin, p in zip(twins, params):
        twin.data = p.data.copy() if isinstance(p, fg.Tensor) else p.data
    twin_opt = getattr(optim, name)([{"params": twins[:2]}, {"params": twins[2:]}], lr=123.0)
    twin_opt.load_state_dict(copy.deepcopy(sd))
    assert twin_opt.param_groups[1]["lr"] == 0.01
    for got, want in zip(_train(twins, twin_opt, 4), _train(params, opt, 4)):
        np.testing.assert_array_equal(got, want)          # bit for bit
    again = twin_opt.state_dict()
    assert again["state"].keys() == opt.state_dict()["state"].keys()


def test_state_dict_of_vars_alone_is_unchanged():
    vs = [fg.Var(1.0), fg.Var(2.0)]
    opt = optim.Adam(vs, lr=0.1)
    _train(vs, opt, 2)
    sd = opt.state_dict()
    assert set(sd["state"]) == {0, 1}
    assert all(set(e) == {"step", "exp_avg", "exp_avg_sq"} and isinstance(e["exp_avg"], float)
               for e in sd["state"].values())


def test_adagrad_tensor_state_exists_from_construction():
    t = fg.Tensor(np.zeros((2, 2), dtype=np.float32), requires_grad=True)
    sd = optim.Adagrad([fg.Var(1.0), t], initial_accumulator_value=0.5).state_dict()
    assert sd["state"][0] == {"step": 0, "sum": 0.5}
    assert sd["state"][1]["step"] == 0
    np.testing.assert_array_equal(sd["state"][1]["sum"], np.full((2, 2), 0.5, dtype=np.float32))
    assert sd["state"][1]["sum"].dtype == np.float32


def test_load_state_dict_checks_tensor_state_and_changes_nothing_on_error():
    params = _params()
    opt = optim.Adam(params, lr=0.1)
    _train(params, opt, 2)
    before = opt.state_dict()
    cases = [
        (lambda sd: sd["state"][1].update(exp_avg=np.zeros(4)), "shape"),
        (lambda sd: sd["state"][1].update(exp_avg="zeros"), "non-numeric"),
        (lambda sd: sd["state"][1].update(exp_avg=np.array([True] * 12).reshape(SHAPE)), "non-numeric"),
        (lambda sd: sd["state"][1].update(velocity=np.zeros(SHAPE)), "unknown"),
        (lambda sd: sd["state"][3].update(step=-1), "step count"),
        (lambda sd: sd["state"][3].update(step=1.5), "step count"),
        (lambda sd: sd["state"][0].update(exp_avg=np.zeros(1)), "non-numeric"),   # an array for a Var
        (lambda sd: sd["param_groups"][0].update(lr=-1.0), "Invalid learning rate"),
    ]
    for edit, message in cases:
        bad = copy.deepcopy(before)
        edit(bad)
        with pytest.raises(ValueError, match=message):
            opt.load_state_dict(bad)
    after = opt.state_dict()
    assert after["state"].keys() == before["state"].keys()
    for pos in before["state"]:
        for key, value in before["state"][pos].items():
            np.testing.assert_array_equal(after["state"][pos][key], value)


def test_load_state_dict_accepts_lists_and_float64_state_for_a_float32_tensor():
    t = fg.Tensor(np.ones(3, dtype=np.float32), requires_grad=True)
    opt = optim.SGD([t], lr=0.1, momentum=0.9)
    opt.load_state_dict({"state": {"0": {"momentum_buffer": [1.0, 2.0, 3.0]}},
                         "param_groups": [{"lr": 0.1, "params": [0]}]})
    buf = opt.state_dict()["state"][0]["momentum_buffer"]
    assert buf.dtype == np.float32 and buf.tolist() == [1.0, 2.0, 3.0]
    t.grad = [0.0, 0.0, 0.0]
    opt.step()
    np.testing.assert_allclose(t.data, [1 - 0.1 * 0.9, 1 - 0.1 * 1.8, 1 - 0.1 * 2.7], rtol=1e-6)


# ---- schedulers ----

def test_schedulers_drive_a_tensor_optimizer_as_in_torch():
    torch = pytest.importorskip("torch")
    t = fg.Tensor(W0, requires_grad=True)
    opt = optim.Adam([t], lr=0.1)
    sched = lr_scheduler.OneCycleLR(opt, max_lr=0.2, total_steps=STEPS)
    p = torch.tensor(W0, requires_grad=True)
    topt = torch.optim.Adam([p], lr=0.1)
    tsched = torch.optim.lr_scheduler.OneCycleLR(topt, max_lr=0.2, total_steps=STEPS)
    for _ in range(STEPS):
        t.grad = grad_of(t.data)
        p.grad = torch.from_numpy(grad_of(p.detach().numpy()))
        opt.step()
        topt.step()
        sched.step()
        tsched.step()
        assert opt.param_groups[0]["lr"] == pytest.approx(topt.param_groups[0]["lr"], rel=1e-12)
        assert opt.param_groups[0]["betas"][0] == pytest.approx(topt.param_groups[0]["betas"][0], rel=1e-12)
    np.testing.assert_allclose(t.data, p.detach().numpy(), rtol=1e-12, atol=1e-12)


def test_step_lr_on_tensors_and_vars():
    t = fg.Tensor([1.0], requires_grad=True)
    v = fg.Var(1.0)
    opt = optim.SGD([t, v], lr=1.0)
    sched = lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    for _ in range(4):
        t.grad, v.grad = [1.0], 1.0
        opt.step()
        sched.step()
    assert t.data[0] == v.data == 1.0 - (1.0 + 1.0 + 0.5 + 0.5)


# ---- errors and edits ----

def test_tensors_that_cannot_be_optimized_are_rejected():
    t = fg.Tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(ValueError, match="can't optimize a non-leaf Tensor"):
        optim.SGD([t * 2.0], lr=0.1)
    with pytest.raises(ValueError, match="doesn't require gradients"):
        optim.Adam([fg.Tensor([1.0])])
    with pytest.raises(TypeError, match="iterable of Vars or dicts"):
        optim.SGD(t, lr=0.1)
    with pytest.raises(ValueError, match="duplicate"):
        optim.SGD([t, fg.Var(1.0), t], lr=0.1)
    with pytest.raises(ValueError, match="more than one parameter group"):
        optim.SGD([{"params": [t]}, {"params": [t]}], lr=0.1)
    with pytest.raises(TypeError, match="can only optimize Vars and Tensors"):
        optim.SGD([t, np.ones(2)], lr=0.1)


def test_data_replaced_by_another_shape_is_a_clear_error():
    t = fg.Tensor([1.0, 2.0], requires_grad=True)
    opt = optim.Adam([t], lr=0.1)
    t.grad = [1.0, 1.0]
    opt.step()
    t.data = np.zeros(3)
    with pytest.raises(ValueError, match="shape"):
        opt.step()


def test_edited_parameter_lists_keep_each_tensors_state():
    a = fg.Tensor(W0, requires_grad=True)
    b = fg.Tensor(W0, requires_grad=True)
    v = fg.Var(1.0)
    opt = optim.Adam([a, v, b], lr=0.1)
    for _ in range(3):
        a.grad, b.grad, v.grad = grad_of(a.data), grad_of(b.data), 0.5
        opt.step()
    group = opt.param_groups[0]
    group["params"].remove(a)                            # a leaves, b keeps its state
    c = fg.Tensor(W0, requires_grad=True)
    group["params"].append(c)                            # a new Tensor starts fresh, as in PyTorch
    for _ in range(2):
        a.grad, b.grad, c.grad, v.grad = grad_of(a.data), grad_of(b.data), grad_of(c.data), 0.5
        opt.step()
    full = tensor_run("Adam", {"lr": 0.1}, steps=5)
    np.testing.assert_array_equal(b.data, full[-1])
    np.testing.assert_array_equal(a.data, full[2])
    np.testing.assert_array_equal(c.data, full[1])
    state = opt.state_dict()["state"]
    assert [state[k]["step"] for k in range(3)] == [5, 5, 2]


def test_the_var_path_is_untouched_by_tensors_in_other_groups():
    vs = [fg.Var(x) for x in (1.0, -2.0, 0.5)]
    t = fg.Tensor([1.0, -2.0, 0.5], requires_grad=True)
    opt = optim.RMSprop([{"params": vs}, {"params": [t]}], lr=0.05, centered=True)
    for _ in range(5):
        for v in vs:
            v.grad = math.sin(v.data)
        # NOTE: the same gradients on both paths: libm's sin, not np.sin, which on an AVX-512 CPU with an
        # older NumPy (1.22's SIMD sin) differs from libm's in the last bit for some inputs
        t.grad = np.array([math.sin(x) for x in t.data])
        opt.step()
    assert opt._vars[0] is None and opt._tensor_at == [(), (0,)]     # the first group stays all-Var
    np.testing.assert_array_equal(t.data, [v.data for v in vs])


def test_the_array_updates_take_float64_c_arrays_only_and_check_sizes():
    """_optim's array entry points: any shape of float64 C-contiguous arrays; anything else returns False
    (the optimizer then takes its NumPy path); mismatched sizes are a ValueError."""
    from fastgrad import _optim
    p, g = np.ones((3, 4)), np.full((3, 4), 0.5)
    assert _optim.sgd_array(p, g, None, 0.1, 0.0, 0.0, 0.0, False, False, True) is True
    np.testing.assert_array_equal(p, np.full((3, 4), 1.0 + -0.1 * 0.5))
    for bad in (p.astype(np.float32), np.asfortranarray(np.ones((3, 4))), np.ones((4, 6))[:, ::2]):
        before = bad.copy()
        assert _optim.sgd_array(bad, g, None, 0.1, 0.0, 0.0, 0.0, False, False, True) is False
        np.testing.assert_array_equal(bad, before)
    ro = np.ones((3, 4))
    ro.setflags(write=False)
    assert _optim.sgd_array(ro, g, None, 0.1, 0.0, 0.0, 0.0, False, False, True) is False
    with pytest.raises(ValueError, match="grad has 6 entries for 12 parameters"):
        _optim.sgd_array(p, np.ones(6), None, 0.1, 0.0, 0.0, 0.0, False, False, True)
    m, v = np.zeros((3, 4)), np.zeros((3, 4))
    with pytest.raises(ValueError, match="exp_avg_sq has 3 entries"):
        _optim.adam_array(p, g, m, np.zeros(3), None, 1e-3, 0.9, 0.999, 1e-8, 0.0, 1e-2, 0.03, False, False)
    assert _optim.adam_array(p, g, m, v, None, 1e-3, 0.9, 0.999, 1e-8, 0.0, 1e-2, 0.03, False, False) is True
    np.testing.assert_allclose(m, (1.0 - 0.9) * 0.5, rtol=0, atol=0)    # lerp(0, g, 1 - beta1)


def test_zero_grad_fills_tensor_gradients_in_place():
    from fastgrad import _engine
    a = fg.Tensor(np.ones((2, 3)), requires_grad=True)
    b = fg.Tensor(np.ones(4, dtype=np.float32), requires_grad=True)
    c = fg.Tensor(np.ones(2), requires_grad=True)          # no backward reaches it: no gradient
    ((a * 3.0).sum() + (b * 2.0).sum()).backward()
    ga, gb = a.grad, b.grad
    opt = fg.optim.SGD([a, b, c], lr=0.1)
    opt.zero_grad()
    assert a.grad is ga and b.grad is gb and c.grad is None
    assert np.all(ga == 0) and np.all(gb == 0) and gb.dtype == np.float32
    with pytest.raises(TypeError, match="takes Tensors"):
        _engine._tensor_zero_grads([a, fg.Var(1.0)])


def test_sgd_over_a_group_equals_each_tensor_alone_whatever_the_mix():
    """SGD without momentum updates a group's float64 Tensors in one C loop (_optim.sgd_arrays); a group that
    also holds a float32 Tensor, or one without a gradient, takes the per-Tensor path: every Tensor ends
    where it would alone."""
    def run(tensors, grads, **kwargs):
        opt = optim.SGD(tensors, lr=0.1, **kwargs)
        for _ in range(3):
            for t, g in zip(tensors, grads):
                t.grad = None if g is None else g(t.data)
            opt.step()
        return [t.data.copy() for t in tensors]

    def make():
        return [fg.Tensor(W0, requires_grad=True), fg.Tensor(np.arange(3.0), requires_grad=True),
                fg.Tensor(np.ones(2, dtype=np.float32), requires_grad=True),
                fg.Tensor([5.0], requires_grad=True)]
    grads = [grad_of, np.sin, np.cos, None]
    for kwargs in ({}, {"weight_decay": 0.01, "maximize": True}):
        together = run(make(), grads, **kwargs)
        alone = [run([t], [g], **kwargs)[0] for t, g in zip(make(), grads)]
        for got, want in zip(together, alone):
            np.testing.assert_array_equal(got, want)
        f64_only = run(make()[:2], grads[:2], **kwargs)
        for got, want in zip(f64_only, alone[:2]):
            np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(together[3], [5.0])                    # no gradient: not moved
    assert together[2].dtype == np.float32


def test_sgd_arrays_updates_all_or_nothing():
    from fastgrad import _optim
    p, q, g = np.ones((3, 4)), np.ones(5), np.full((3, 4), 0.5)
    assert _optim.sgd_arrays([p, q], [g, None], 0.1, 0.0, False) is True
    np.testing.assert_array_equal(p, np.full((3, 4), 1.0 + -0.1 * 0.5))
    np.testing.assert_array_equal(q, np.ones(5))                         # None: skipped
    for bad_p, bad_g in ((np.ones(12, dtype=np.float32), np.ones(12)), (np.ones(12), np.ones(6)),
                         (np.ones((4, 6))[:, ::2], np.ones((4, 3))), (np.ones(12), [1.0] * 12)):
        p = np.ones((3, 4))
        assert _optim.sgd_arrays([p, bad_p], [g, bad_g], 0.1, 0.0, False) is False
        np.testing.assert_array_equal(p, np.ones((3, 4)))                # nothing written, not even p
    with pytest.raises(ValueError, match="2 parameters but 1 gradients"):
        _optim.sgd_arrays([p, p], [g], 0.1, 0.0, False)
    with pytest.raises(TypeError):
        _optim.sgd_arrays((p,), [g], 0.1, 0.0, False)


def test_tensor_param_grads_reads_what_a_step_applies():
    from fastgrad import _engine
    a = fg.Tensor(np.ones((2, 3)), requires_grad=True)
    b = fg.Tensor(np.ones(2), requires_grad=True)            # no backward reaches it
    c = fg.Tensor(np.ones(2), requires_grad=True)
    d = fg.Tensor(np.ones(2))                               # no node at all
    ((a * 3.0).sum() + (c * 2.0).sum()).backward()
    c.requires_grad_(False)
    grads = _engine._tensor_param_grads([a, b, c, d])
    assert grads[0] is a.grad and grads[1:] == [None, None, None]
    np.testing.assert_array_equal(grads[0], np.full((2, 3), 3.0))
    with pytest.raises(TypeError, match="takes Tensors"):
        _engine._tensor_param_grads([a, fg.Var(1.0)])
    a.data = np.zeros(3)
    with pytest.raises(ValueError, match=r"data has shape \(3,\) but its grad \(2, 3\)"):
        _engine._tensor_param_grads([a])
