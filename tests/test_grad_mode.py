"""Grad mode (fg.no_grad, enable_grad, set_grad_enabled) and frozen leaves (requires_grad_(False))."""
import copy
import gc
import pickle
import threading
import weakref

import numpy as np
import pytest

import fastgrad as fg
from fastgrad import _engine


def alive() -> int:
    return _engine.memory_stats()["nodes_alive"]


# ---- no_grad: nothing is recorded ----

def test_results_inside_no_grad_are_leaves_with_the_same_values():
    a, b = fg.Var(1.5), fg.Var(-2.0)
    eager = [(a * b + a.exp()).data, fg.dot([a, b], [b, a]).data, fg.sum([a, b, 3.0]).data, a.tanh().data]
    with fg.no_grad():
        y = a * b + a.exp()
        results = [y, fg.dot([a, b], [b, a]), fg.sum([a, b, 3.0]), a.tanh()]
        assert not fg.is_grad_enabled()
    assert fg.is_grad_enabled()
    assert [r.data for r in results] == eager
    for r in results:
        assert r.is_leaf and r.op == "leaf" and r._prev == set()


def test_no_grad_holds_no_reference_on_its_inputs():
    with fg.no_grad():
        x = fg.Var(2.0)
        before = alive()
        y = x
        for _ in range(1000):
            y = y * 1.0001 + 0.5
        # each step's result is a leaf: the chain keeps only the last one (and the constants are freed)
        assert alive() - before <= 2
    assert y.data > 0


def test_a_graph_built_inside_no_grad_does_not_reach_the_parameters():
    w = fg.Var(3.0)
    with fg.no_grad():
        y = w * w
    y.backward()
    assert w.grad == 0.0
    assert y.grad == 1.0      # the leaf itself: as a constant leaf, its .grad takes the seed


def test_backward_of_a_graph_built_before_works_inside_no_grad():
    w = fg.Var(3.0)
    y = w * w
    with fg.no_grad():
        y.backward()
    assert w.grad == 6.0


def test_layers_custom_ops_and_parameters_inside_no_grad():
    model = fg.nn.MLP(3, [4, 1], rng=__import__("random").Random(0))
    x = [0.5, -1.0, 2.0]
    eager = model(x).data

    class Rule:
        def __call__(self, g):
            return (g,)
    rule = Rule()
    rule_alive = weakref.ref(rule)
    with fg.no_grad():
        out = model(x)
        c = _engine.custom(5.0, [fg.Var(1.0)], rule)
        p = fg.Var(7.0)         # Var(x) is an ordinary leaf: a model built here trains normally
    assert out.data == eager and out.is_leaf
    assert c.is_leaf and c.data == 5.0
    del rule, c
    gc.collect()
    assert rule_alive() is None          # a no_grad custom op keeps no rule
    (p * p).backward()
    assert p.grad == 14.0 and p.requires_grad


def test_no_grad_as_a_decorator_and_nested_enable_grad():
    w = fg.Var(2.0)

    @fg.no_grad()
    def evaluate():
        inner = w * 3.0
        with fg.enable_grad():
            tracked = w * 4.0
            assert fg.is_grad_enabled()
        assert not fg.is_grad_enabled()
        return inner, tracked

    inner, tracked = evaluate()
    assert inner.is_leaf and not tracked.is_leaf
    tracked.backward()
    assert w.grad == 4.0
    assert evaluate.__name__ == "evaluate"
    assert fg.is_grad_enabled()


def test_set_grad_enabled_as_a_call_and_as_a_context():
    try:
        fg.set_grad_enabled(False)
        assert not fg.is_grad_enabled()
        fg.set_grad_enabled(True)
        assert fg.is_grad_enabled()
        with fg.set_grad_enabled(False):
            assert not fg.is_grad_enabled()
            with fg.set_grad_enabled(True):
                assert fg.is_grad_enabled()
            assert not fg.is_grad_enabled()
        assert fg.is_grad_enabled()

        @fg.set_grad_enabled(False)
        def f():
            return fg.is_grad_enabled()
        assert fg.is_grad_enabled()          # decorating does not leave the mode switched
        assert f() is False and fg.is_grad_enabled()
    finally:
        fg.set_grad_enabled(True)


def test_the_mode_is_restored_when_the_block_raises():
    with pytest.raises(KeyError):
        with fg.no_grad():
            {}["missing"]
    assert fg.is_grad_enabled()


def test_one_instance_entered_twice():
    ng = fg.no_grad()
    with ng:
        with ng:
            assert not fg.is_grad_enabled()
        assert not fg.is_grad_enabled()
    assert fg.is_grad_enabled()


def test_grad_mode_is_per_thread():
    seen = {}
    inside = threading.Event()
    release = threading.Event()

    def other():
        inside.wait()
        a = fg.Var(2.0)
        seen["enabled"] = fg.is_grad_enabled()
        seen["leaf"] = (a * a).is_leaf
        release.set()

    t = threading.Thread(target=other)
    t.start()
    with fg.no_grad():
        inside.set()
        release.wait(10)
        assert not fg.is_grad_enabled()
    t.join()
    assert seen == {"enabled": True, "leaf": False}


def test_threads_in_no_grad_and_training_at_once_give_exact_results():
    errors = []

    def evaluate():
        with fg.no_grad():
            for k in range(2000):
                x = fg.Var(float(k))
                if not (x * 2.0).is_leaf:
                    errors.append("graph node inside no_grad")

    def train():
        w = fg.Var(1.0)
        for _ in range(2000):
            y = w * w * 3.0
            if y.is_leaf:
                errors.append("leaf outside no_grad")
            y.backward()
        if w.grad != 2000 * 6.0:
            errors.append(f"grad {w.grad}")

    ts = [threading.Thread(target=evaluate), threading.Thread(target=train)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert errors == []


@pytest.mark.parametrize("bad", [0, 1, None, "no", np.bool_(True)])
def test_set_grad_enabled_takes_a_bool(bad):
    with pytest.raises(TypeError, match="bool"):
        fg.set_grad_enabled(bad)
    assert fg.is_grad_enabled()


def test_decorating_what_cannot_be_decorated():
    with pytest.raises(TypeError, match="decorates a function"):
        fg.no_grad()(3)

    def gen():
        yield 1
    with pytest.raises(TypeError, match="generator"):
        fg.no_grad()(gen)


def test_transforms_differentiate_inside_no_grad():
    def f(x):
        return x * x * x
    with fg.no_grad():
        assert fg.grad(f)(2.0) == 12.0
        assert fg.hessian(f)(2.0) == 12.0
        value, g = fg.value_and_grad(f)(3.0)
        assert (value, g) == (27.0, 27.0)
        assert fg.jvp(f, (2.0,), (1.0,))[1] == 12.0
        assert fg.vjp(f, 2.0)[1](1.0) == (12.0,)
        assert not fg.is_grad_enabled()


def test_compiled_functions_inside_no_grad_replay_forward_only():
    w = fg.Var(0.5)

    def loss(x):
        return (w * x - 1.0) ** 2

    step = fg.compile(loss)
    with fg.no_grad():
        first = step(3.0)          # traces inside no_grad: the trace still records
    assert w.grad == 0.0
    value = step(3.0)
    assert value.data == first.data == 0.25
    assert w.grad == 2 * (0.5 * 3 - 1) * 3
    with fg.no_grad():
        step(3.0)
    assert w.grad == 3.0

    batched = fg.vmap(loss)
    with fg.no_grad():
        total = batched(np.array([1.0, 3.0]))
    assert w.grad == 3.0
    assert total.data == ((0.5 - 1) ** 2 + 0.25) / 2


# ---- frozen leaves ----

def test_a_frozen_leaf_takes_no_gradient_and_says_so():
    a, b = fg.Var(2.0), fg.Var(3.0)
    assert a.requires_grad_(False) is a
    assert not a.requires_grad and b.requires_grad
    y = a * b + a * a
    assert y.requires_grad
    y.backward()
    assert a.grad == 0.0 and b.grad == 2.0
    a.requires_grad = True
    (a * b).backward()
    assert a.grad == 3.0


def test_a_frozen_output_leaf_takes_no_seed():
    a = fg.Var(2.0).requires_grad_(False)
    a.backward()
    assert a.grad == 0.0


def test_requires_grad_errors():
    a = fg.Var(2.0)
    with pytest.raises(ValueError, match="leaf"):
        (a * a).requires_grad_(False)
    with pytest.raises(TypeError, match="bool"):
        a.requires_grad_(1)
    with pytest.raises(TypeError, match="bool"):
        a.requires_grad = "no"


def test_frozen_survives_pickle_and_deepcopy():
    a = fg.Var(2.0).requires_grad_(False)
    for b in (pickle.loads(pickle.dumps(a)), copy.deepcopy(a)):
        assert not b.requires_grad
        (b * 3.0).backward()
        assert b.grad == 0.0


def test_compiled_and_batched_replay_leave_frozen_parameters_alone():
    w, c = fg.Var(0.5), fg.Var(2.0)

    def loss(x):
        return (w * x - c) ** 2

    step, batched = fg.compile(loss), fg.vmap(loss, reduce="sum")
    step(1.0)
    step(1.0)           # a replay
    batched(np.array([1.0, 2.0]))
    g_w, g_c = w.grad, c.grad
    assert g_w != 0.0 and g_c != 0.0
    c.requires_grad_(False)
    step(1.0)
    batched(np.array([1.0, 2.0]))
    assert c.grad == g_c            # unchanged
    assert w.grad != g_w            # still accumulates
    fresh_w = w.grad
    w.grad = 0.0
    step(1.0)
    assert w.grad == 2 * (0.5 - 2.0)
    assert fresh_w != 0.0


@pytest.mark.parametrize("make", [
    lambda ps: fg.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.1),
    lambda ps: fg.optim.Adam(ps, lr=0.1, weight_decay=0.1),
    lambda ps: fg.optim.AdamW(ps, lr=0.1),
    lambda ps: fg.optim.RMSprop(ps, lr=0.1, momentum=0.5, centered=True),
    lambda ps: fg.optim.Adagrad(ps, lr=0.1, weight_decay=0.1),
])
def test_optimizers_leave_frozen_parameters_and_their_state_alone(make):
    frozen, live = fg.Var(1.0), fg.Var(1.0)
    twin = fg.Var(1.0)                              # trains alone, as `live` should
    opt, opt_twin = make([frozen, live]), make([twin])
    frozen.requires_grad_(False)
    for _ in range(3):
        for o in (opt, opt_twin):
            o.zero_grad()
        (frozen * live * live).backward()
        (1.0 * twin * twin).backward()
        opt.step()
        opt_twin.step()
    assert frozen.data == 1.0 and frozen.grad == 0.0
    assert live.data == twin.data


def test_freezing_a_layer_of_a_model():
    import random
    model = fg.nn.Sequential(fg.nn.Linear(2, 3, rng=random.Random(1)), fg.nn.ReLU(),
                             fg.nn.Linear(3, 1, rng=random.Random(2)))
    assert model[0].requires_grad_(False) is model[0]
    first = [p.data for p in model[0].parameters()]
    opt = fg.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(3):
        opt.zero_grad()
        model([1.0, -2.0]).backward()
        opt.step()
    assert [p.data for p in model[0].parameters()] == first
    assert all(p.grad == 0.0 for p in model[0].parameters())
    assert any(p.grad != 0.0 for p in model[2].parameters())
    assert all(p.requires_grad for p in model[2].parameters())
    model.requires_grad_()
    assert all(p.requires_grad for p in model.parameters())
    with pytest.raises(TypeError, match="bool"):
        model.requires_grad_(0)


def test_layers_inside_no_grad_leave_no_node_behind():
    import random
    model = fg.nn.Sequential(fg.nn.Linear(3, 8, rng=random.Random(0)), fg.nn.Tanh(),
                             fg.nn.Linear(8, 2, rng=random.Random(1)))
    mlp = fg.nn.MLP(3, [8, 1], rng=random.Random(2))
    x = [0.1, 0.2, -0.3]
    eager = [v.data for v in model(x)] + [mlp(x).data]
    gc_before = alive()
    with fg.no_grad():
        for _ in range(50):
            out = [v.data for v in model(x)] + [mlp(x).data]
    assert out == eager
    assert alive() == gc_before

