"""Learning-rate schedulers: step by step against torch.optim.lr_scheduler (when installed) and always against
closed formulas written out here; state-dict round trips in the middle of a run; argument errors."""
import json
import math
import pickle
import warnings

import pytest

import fastgrad
from fastgrad import optim
from fastgrad.optim import lr_scheduler

STEPS = 36
BASE_LRS = (0.5, 0.05)


def close(a, b, tol=1e-12):
    return abs(a - b) <= tol * max(1.0, abs(b))


# ---- the schedules under test: one factory per case, called with fastgrad's or torch's module ----

CASES = {
    "step": lambda m, o: m.StepLR(o, step_size=4, gamma=0.5),
    "multistep": lambda m, o: m.MultiStepLR(o, milestones=[3, 3, 10, 25], gamma=0.5),
    "multistep_unsorted": lambda m, o: m.MultiStepLR(o, milestones=[20, 4], gamma=0.3),
    "exponential": lambda m, o: m.ExponentialLR(o, gamma=0.93),
    "cosine": lambda m, o: m.CosineAnnealingLR(o, T_max=12, eta_min=0.001),
    "cosine_zero_min": lambda m, o: m.CosineAnnealingLR(o, T_max=7),
    "linear_warmup": lambda m, o: m.LinearLR(o, start_factor=0.1, total_iters=8),
    "linear_decay": lambda m, o: m.LinearLR(o, start_factor=1.0, end_factor=0.05, total_iters=20),
    "onecycle": lambda m, o: m.OneCycleLR(o, max_lr=[1.0, 0.2], total_steps=40),
    "onecycle_linear_three": lambda m, o: m.OneCycleLR(
        o, max_lr=0.8, epochs=4, steps_per_epoch=10, anneal_strategy="linear", three_phase=True,
        pct_start=0.25),
    "onecycle_cos_three_no_momentum": lambda m, o: m.OneCycleLR(
        o, max_lr=2.0, total_steps=STEPS, three_phase=True, cycle_momentum=False, div_factor=10.0,
        final_div_factor=100.0),
    "sequential": lambda m, o: m.SequentialLR(
        o, [m.LinearLR(o, start_factor=0.2, total_iters=5), m.CosineAnnealingLR(o, T_max=15, eta_min=0.01)],
        milestones=[5]),
    "sequential3": lambda m, o: m.SequentialLR(
        o, [m.ExponentialLR(o, gamma=0.9), m.MultiStepLR(o, milestones=[2, 4]), m.StepLR(o, 3, gamma=0.7)],
        milestones=[6, 20]),
}


# ---- closed formulas, written out independently of the implementation (t = epoch, g = group) ----

def _cos_anneal(start, end, pct):
    return end + (start - end) * (1 + math.cos(math.pi * pct)) / 2


def _lin_anneal(start, end, pct):
    return start + (end - start) * pct


def one_cycle(t, max_lr, total, pct_start=0.3, div=25.0, final_div=1e4, three=False, anneal=_cos_anneal,
              lo=None, hi=None):
    """The 1cycle value at step t: the lr, or the momentum when given (lo, hi) = (base, max) momentum."""
    initial = max_lr / div
    low = initial / final_div
    up = pct_start * total - 1
    a, b = (initial, max_lr) if lo is None else (hi, lo)  # momentum moves against the lr
    if t <= up:
        return anneal(a, b, t / up)
    if three:
        down = 2 * pct_start * total - 2
        if t <= down:
            return anneal(b, a, (t - up) / (down - up))
        return anneal(a, low if lo is None else hi, (t - down) / (total - 1 - down))
    return anneal(b, low if lo is None else hi, (t - up) / (total - 1 - up))


def cosine(t, base, t_max, eta_min=0.0):
    return eta_min + (base - eta_min) * (1 + math.cos(math.pi * t / t_max)) / 2


def linear(t, base, start, end, total):
    return base * (start + (end - start) * min(t, total) / total)


FORMULAS = {
    "step": lambda t, g: BASE_LRS[g] * 0.5 ** (t // 4),
    "multistep": lambda t, g: BASE_LRS[g] * 0.5 ** sum(1 for m in (3, 3, 10, 25) if m <= t),
    "multistep_unsorted": lambda t, g: BASE_LRS[g] * 0.3 ** sum(1 for m in (20, 4) if m <= t),
    "exponential": lambda t, g: BASE_LRS[g] * 0.93 ** t,
    "cosine": lambda t, g: cosine(t, BASE_LRS[g], 12, 0.001),
    "cosine_zero_min": lambda t, g: cosine(t, BASE_LRS[g], 7),
    "linear_warmup": lambda t, g: linear(t, BASE_LRS[g], 0.1, 1.0, 8),
    "linear_decay": lambda t, g: linear(t, BASE_LRS[g], 1.0, 0.05, 20),
    "onecycle": lambda t, g: one_cycle(t, (1.0, 0.2)[g], 40),
    "onecycle_linear_three": lambda t, g: one_cycle(t, 0.8, 40, pct_start=0.25, three=True,
                                                    anneal=_lin_anneal),
    "onecycle_cos_three_no_momentum": lambda t, g: one_cycle(t, 2.0, STEPS, div=10.0, final_div=100.0,
                                                             three=True),
    "sequential": lambda t, g: (linear(t, BASE_LRS[g], 0.2, 1.0, 5) if t < 5
                                else cosine(t - 5, BASE_LRS[g], 15, 0.01)),
    "sequential3": lambda t, g: (BASE_LRS[g] * 0.9 ** t if t < 6
                                 else BASE_LRS[g] * 0.1 ** sum(1 for m in (2, 4) if m <= t - 6) if t < 20
                                 else BASE_LRS[g] * 0.7 ** ((t - 20) // 3)),
}


def fg_optimizer(kind="SGD"):
    groups = [{"params": [fastgrad.Var(0.0)], "lr": lr} for lr in BASE_LRS]
    return optim.SGD(groups, momentum=0.9) if kind == "SGD" else optim.Adam(groups, betas=(0.9, 0.99))


def torch_optimizer(torch, kind="SGD"):
    groups = [{"params": [torch.zeros(1, requires_grad=True)], "lr": lr} for lr in BASE_LRS]
    if kind == "SGD":
        return torch.optim.SGD(groups, momentum=0.9)
    return torch.optim.Adam(groups, betas=(0.9, 0.99))


def momentum_of(group):
    return group["betas"][0] if "betas" in group else group["momentum"]


def run(opt, sched, steps=STEPS):
    """The (lr, momentum) of every group before each of `steps` steps (the first is the constructor's)."""
    seen = []
    for _ in range(steps):
        seen.append([(g["lr"], momentum_of(g)) for g in opt.param_groups])
        sched.step()
    return seen


@pytest.mark.parametrize("kind", ["SGD", "Adam"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_torch_step_by_step(case, kind):
    torch = pytest.importorskip("torch")
    t_opt = torch_optimizer(torch, kind)
    t_sched = CASES[case](torch.optim.lr_scheduler, t_opt)
    opt = fg_optimizer(kind)
    sched = CASES[case](lr_scheduler, opt)
    expected = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's "scheduler.step() before optimizer.step()"
        for _ in range(STEPS):
            expected.append([(g["lr"], momentum_of(g)) for g in t_opt.param_groups])
            t_sched.step()
    got = run(opt, sched)
    for t, (row, want) in enumerate(zip(got, expected)):
        for (lr, mom), (t_lr, t_mom) in zip(row, want):
            assert close(lr, t_lr) and close(mom, t_mom), (t, lr, t_lr, mom, t_mom)
    assert sched.get_last_lr() == pytest.approx(t_sched.get_last_lr(), rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_closed_formula(case):
    opt = fg_optimizer()
    sched = CASES[case](lr_scheduler, opt)
    for t, row in enumerate(run(opt, sched)):
        for g, (lr, _) in enumerate(row):
            assert close(lr, FORMULAS[case](t, g)), (t, g, lr, FORMULAS[case](t, g))


def test_one_cycle_cycles_momentum_and_beta1_inversely():
    for kind in ("SGD", "Adam"):
        opt = fg_optimizer(kind)
        sched = lr_scheduler.OneCycleLR(opt, max_lr=1.0, total_steps=30, base_momentum=0.8, max_momentum=0.9)
        for t, row in enumerate(run(opt, sched, 30)):
            assert close(row[0][0], one_cycle(t, 1.0, 30))
            assert close(row[0][1], one_cycle(t, 1.0, 30, lo=0.8, hi=0.9))
        if kind == "Adam":
            assert opt.param_groups[0]["betas"][1] == 0.99  # beta2 untouched
    assert opt.param_groups[0]["max_lr"] == 1.0 and opt.param_groups[0]["initial_lr"] == 1.0 / 25


def test_one_cycle_refuses_to_step_past_total_steps():
    opt = fg_optimizer()
    sched = lr_scheduler.OneCycleLR(opt, max_lr=1.0, total_steps=5)
    for _ in range(5):
        sched.step()
    with pytest.raises(ValueError, match="total steps is 5"):
        sched.step()


def test_cosine_rises_again_after_t_max_as_torch_does():
    opt = fg_optimizer()
    sched = lr_scheduler.CosineAnnealingLR(opt, T_max=4)
    lrs = [row[0][0] for row in run(opt, sched, 9)]
    assert lrs[4] == pytest.approx(0.0, abs=1e-15) and lrs[8] == pytest.approx(0.5)


# ---- ReduceLROnPlateau ----

def test_reduce_on_plateau_follows_a_metric_sequence():
    """patience 2, cooldown 1, factor 0.5, min_lr 0.2; expected values worked out by hand."""
    opt = optim.SGD([fastgrad.Var(0.0)], lr=1.0)
    sched = lr_scheduler.ReduceLROnPlateau(opt, patience=2, cooldown=1, factor=0.5, min_lr=0.2)
    metrics = [1.0, 0.9, 0.95, 0.95, 0.95,  # 3 bad epochs > patience: 0.5
               0.95, 0.95, 0.95, 0.95,      # 1 in cooldown, then 3 bad: 0.25
               0.8999,                      # an improvement (< 0.9 · (1 - 1e-4)), in cooldown
               0.89985, 0.89985, 0.89985,   # lower, but not by the relative threshold: 0.2 (min_lr)
               0.89985, 0.89985, 0.89985, 0.89985]  # at min_lr: no change
    expected = [1.0] * 4 + [0.5] * 4 + [0.25] * 4 + [0.2] * 5
    seen = []
    for m in metrics:
        sched.step(m)
        seen.append(opt.param_groups[0]["lr"])
    assert seen == expected
    assert sched.get_last_lr() == [0.2] and sched.best == 0.8999


def test_reduce_on_plateau_max_mode_abs_threshold_and_eps():
    opt = optim.SGD([fastgrad.Var(0.0)], lr=1.0)
    sched = lr_scheduler.ReduceLROnPlateau(opt, mode="max", threshold=0.5, threshold_mode="abs", patience=0,
                                           factor=0.9, eps=0.095)
    seen = []
    for m in [1.0, 1.6, 2.0, 2.05, 3.0]:  # 1.6 > 1 + 0.5 better; 2.0 not > 2.1: bad; 2.05 bad; 3.0 better
        sched.step(m)
        seen.append(opt.param_groups[0]["lr"])
    # the first reduction 1.0 -> 0.9 is more than eps; the second, 0.9 -> 0.81, is not: skipped
    assert seen == [1.0, 1.0, 0.9, 0.9, 0.9]


def test_reduce_on_plateau_accepts_a_var_and_leaves_lr_at_construction():
    opt = optim.SGD([fastgrad.Var(0.0)], lr=0.3)
    sched = lr_scheduler.ReduceLROnPlateau(opt, patience=0)
    assert opt.param_groups[0]["lr"] == 0.3 and "initial_lr" not in opt.param_groups[0]
    sched.step(fastgrad.Var(2.0))
    sched.step(fastgrad.Var(3.0))
    assert opt.param_groups[0]["lr"] == pytest.approx(0.03)
    with pytest.raises(TypeError):
        sched.step("1.0")


PLATEAU_SETTINGS = [
    {},
    {"mode": "max", "patience": 1, "factor": 0.5},
    {"threshold_mode": "abs", "threshold": 0.05, "patience": 2, "cooldown": 2},
    {"mode": "max", "threshold_mode": "abs", "threshold": 0.01, "patience": 0, "cooldown": 1,
     "min_lr": [0.01, 0.004], "factor": 0.3},
    {"patience": 1, "min_lr": 0.02, "eps": 0.01, "factor": 0.2},
]


def _metrics(n=40):
    # a noisy curve that improves, stalls, and worsens: deterministic
    return [1.0 / (1 + 0.3 * k) + 0.05 * math.sin(2.3 * k) + (0.01 * (k - 25) if k > 25 else 0.0)
            for k in range(n)]


@pytest.mark.parametrize("settings", PLATEAU_SETTINGS)
def test_reduce_on_plateau_matches_torch(settings):
    torch = pytest.importorskip("torch")
    t_opt = torch_optimizer(torch)
    t_sched = torch.optim.lr_scheduler.ReduceLROnPlateau(t_opt, **settings)
    opt = fg_optimizer()
    sched = lr_scheduler.ReduceLROnPlateau(opt, **settings)
    for k, m in enumerate(_metrics()):
        t_sched.step(m)
        sched.step(m)
        assert [g["lr"] for g in opt.param_groups] == [g["lr"] for g in t_opt.param_groups], k
        assert (sched.best, sched.num_bad_epochs, sched.cooldown_counter) == (
            t_sched.best, t_sched.num_bad_epochs, t_sched.cooldown_counter)
    assert sched.get_last_lr() == t_sched.get_last_lr()


# ---- state dicts: a restored scheduler continues exactly as the original ----

def _rebuild(case, state, kind="SGD"):
    opt = fg_optimizer(kind)
    opt.param_groups[0]["lr"] = 123.0  # overwritten by the loaded state
    sched = CASES[case](lr_scheduler, opt)
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    return opt, sched


@pytest.mark.parametrize("kind", ["SGD", "Adam"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_state_dict_round_trip_mid_run(case, kind):
    opt = fg_optimizer(kind)
    sched = CASES[case](lr_scheduler, opt)
    run(opt, sched, 13)
    state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict()}
    state = json.loads(json.dumps(state))  # plain values only
    opt2, sched2 = _rebuild(case, state, kind)
    assert sched2.get_last_lr() == sched.get_last_lr()
    assert run(opt2, sched2, 20) == run(opt, sched, 20)  # bit for bit


def test_state_dict_is_a_copy_and_pickle_round_trips():
    opt = fg_optimizer()
    sched = CASES["sequential"](lr_scheduler, opt)
    run(opt, sched, 3)
    sd = sched.state_dict()
    run(opt, sched, 2)
    assert sd["last_epoch"] == 3 and sd["_schedulers"][0]["last_epoch"] == 3
    opt2, sched2 = pickle.loads(pickle.dumps((opt, sched)))
    assert run(opt2, sched2, 20) == run(opt, sched, 20)


def test_reduce_on_plateau_state_round_trip():
    metrics = _metrics()
    opt = fg_optimizer()
    sched = lr_scheduler.ReduceLROnPlateau(opt, patience=1, cooldown=1, factor=0.5, min_lr=[0.01, 0.001])
    for m in metrics[:17]:
        sched.step(m)
    state = json.loads(json.dumps({"optimizer": opt.state_dict(), "scheduler": sched.state_dict()}))
    opt2 = fg_optimizer()
    sched2 = lr_scheduler.ReduceLROnPlateau(opt2)
    opt2.load_state_dict(state["optimizer"])
    sched2.load_state_dict(state["scheduler"])
    for m in metrics[17:]:
        sched.step(m)
        sched2.step(m)
        assert sched2.get_last_lr() == sched.get_last_lr()
        assert [g["lr"] for g in opt2.param_groups] == [g["lr"] for g in opt.param_groups]


def test_load_state_dict_rejects_another_kind_and_changes_nothing():
    opt = fg_optimizer()
    sched = lr_scheduler.CosineAnnealingLR(opt, T_max=10)
    run(opt, sched, 3)
    before = sched.state_dict()
    other = lr_scheduler.ExponentialLR(fg_optimizer(), gamma=0.5).state_dict()
    with pytest.raises(ValueError, match="missing keys"):
        sched.load_state_dict(other)
    assert sched.state_dict() == before
    seq = CASES["sequential"](lr_scheduler, fg_optimizer())
    seq_before = seq.state_dict()
    bad = seq.state_dict()
    bad["last_epoch"] = 99
    bad["_schedulers"][1] = other  # the second inner state is of the wrong kind
    with pytest.raises(ValueError):
        seq.load_state_dict(bad)
    assert seq.state_dict() == seq_before  # the first inner scheduler and SequentialLR itself rolled back


def test_resume_with_last_epoch_matches_torch():
    torch = pytest.importorskip("torch")
    t_opt = torch_optimizer(torch)
    opt = fg_optimizer()
    for group, t_group in zip(opt.param_groups, t_opt.param_groups):
        group["initial_lr"] = t_group["initial_lr"] = group["lr"]
        group["lr"] = t_group["lr"] = group["lr"] * 0.8
    t_sched = torch.optim.lr_scheduler.ExponentialLR(t_opt, gamma=0.8, last_epoch=1)
    sched = lr_scheduler.ExponentialLR(opt, gamma=0.8, last_epoch=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = run(t_opt, t_sched, 5)
    assert run(opt, sched, 5) == expected
    with pytest.raises(KeyError, match="initial_lr"):
        lr_scheduler.StepLR(fg_optimizer(), 3, last_epoch=4)


# ---- SequentialLR ----

def test_sequential_warm_up_then_decay():
    opt = optim.SGD([fastgrad.Var(0.0)], lr=1.0)
    warm = lr_scheduler.LinearLR(opt, start_factor=0.25, total_iters=3)
    decay = lr_scheduler.ExponentialLR(opt, gamma=0.5)
    sched = lr_scheduler.SequentialLR(opt, [warm, decay], milestones=[3])
    lrs = [row[0][0] for row in run(opt, sched, 7)]
    assert lrs == pytest.approx([0.25, 0.5, 0.75, 1.0, 0.5, 0.25, 0.125], rel=1e-15)
    assert sched.get_last_lr() == pytest.approx([0.0625])


def test_sequential_errors():
    opt, other = fg_optimizer(), fg_optimizer()
    a = lr_scheduler.ExponentialLR(opt, 0.9)
    with pytest.raises(ValueError, match="at least one"):
        lr_scheduler.SequentialLR(opt, [], [])
    with pytest.raises(ValueError, match="one milestone fewer"):
        lr_scheduler.SequentialLR(opt, [a, lr_scheduler.StepLR(opt, 2)], [])
    with pytest.raises(ValueError, match="another optimizer"):
        lr_scheduler.SequentialLR(opt, [a, lr_scheduler.StepLR(other, 2)], [3])
    with pytest.raises(ValueError, match="ReduceLROnPlateau"):
        lr_scheduler.SequentialLR(opt, [a, lr_scheduler.ReduceLROnPlateau(opt)], [3])
    with pytest.raises(TypeError, match="not a scheduler"):
        lr_scheduler.SequentialLR(opt, [a, "cosine"], [3])
    with pytest.raises(ValueError, match="non-decreasing"):
        lr_scheduler.SequentialLR(opt, [a, a, a], [5, 2])


# ---- argument errors ----

def _opt():
    return optim.SGD([fastgrad.Var(0.0)], lr=0.1)


BAD_ARGUMENTS = [
    (lambda: lr_scheduler.ExponentialLR("sgd", 0.5), TypeError, "not an Optimizer"),
    (lambda: lr_scheduler.ExponentialLR(_opt(), "0.5"), TypeError, "gamma must be a real number"),
    (lambda: lr_scheduler.MultiStepLR(_opt(), [2, 4.5]), TypeError, "milestone must be an int"),
    (lambda: lr_scheduler.MultiStepLR(_opt(), 3), TypeError, "milestones must be a list"),
    (lambda: lr_scheduler.CosineAnnealingLR(_opt(), T_max=0), ValueError, "T_max must be an int >= 1"),
    (lambda: lr_scheduler.LinearLR(_opt(), start_factor=0.0), ValueError, r"start_factor must be in \(0, 1"),
    (lambda: lr_scheduler.LinearLR(_opt(), start_factor=1.5), ValueError, "start_factor"),
    (lambda: lr_scheduler.LinearLR(_opt(), end_factor=-0.1), ValueError, r"end_factor must be in \[0, 1\]"),
    (lambda: lr_scheduler.LinearLR(_opt(), total_iters=0), ValueError, "total_iters"),
    (lambda: lr_scheduler.OneCycleLR(_opt(), 1.0), ValueError, "total_steps, or both epochs and"),
    (lambda: lr_scheduler.OneCycleLR(_opt(), 1.0, total_steps=0), ValueError, "total_steps must be"),
    (lambda: lr_scheduler.OneCycleLR(_opt(), 1.0, epochs=2, steps_per_epoch=0), ValueError, "steps_per_"),
    (lambda: lr_scheduler.OneCycleLR(_opt(), 1.0, 10, pct_start=1.5), ValueError, "pct_start"),
    (lambda: lr_scheduler.OneCycleLR(_opt(), 1.0, 10, anneal_strategy="exp"), ValueError, "anneal_strategy"),
    (lambda: lr_scheduler.OneCycleLR(_opt(), [1.0, 2.0], 10), ValueError, "one value per parameter group"),
    (lambda: lr_scheduler.OneCycleLR(optim.Adagrad([fastgrad.Var(0.0)]), 1.0, 10), ValueError,
     "momentum or betas"),
    (lambda: lr_scheduler.ReduceLROnPlateau(_opt(), factor=1.0), ValueError, "factor must be < 1.0"),
    (lambda: lr_scheduler.ReduceLROnPlateau(_opt(), mode="low"), ValueError, "mode must be"),
    (lambda: lr_scheduler.ReduceLROnPlateau(_opt(), threshold_mode="pct"), ValueError, "threshold_mode"),
    (lambda: lr_scheduler.ReduceLROnPlateau(_opt(), min_lr=[0.1, 0.2]), ValueError, "one value per"),
    (lambda: lr_scheduler.ReduceLROnPlateau(_opt(), patience=-1), ValueError, "patience"),
    (lambda: lr_scheduler.StepLR(_opt(), step_size=0), ValueError, "step_size"),
]


@pytest.mark.parametrize("make,error,match", BAD_ARGUMENTS)
def test_bad_arguments_raise_clear_errors(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_one_cycle_without_momentum_works_on_adagrad():
    opt = optim.Adagrad([fastgrad.Var(0.0)], lr=0.1)
    sched = lr_scheduler.OneCycleLR(opt, 1.0, total_steps=10, cycle_momentum=False)
    sched.step()
    assert close(opt.param_groups[0]["lr"], one_cycle(1, 1.0, 10))


def test_get_last_lr_is_a_copy():
    opt = _opt()
    sched = lr_scheduler.ExponentialLR(opt, 0.5)
    sched.get_last_lr()[0] = 7.0
    assert sched.get_last_lr() == [0.1]
