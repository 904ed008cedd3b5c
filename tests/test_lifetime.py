"""Graph lifetime: deep graphs, freeing without the cyclic GC, flat memory in training loops.

docs/semantics.md, 5.
"""
import gc
import math
import weakref

import pytest
from conftest import run_python

import fastgrad
from fastgrad._engine import memory_stats

Var = fastgrad.Var
SEGMENT = memory_stats()["segment_size"]


@pytest.fixture
def gc_disabled():
    """Freeing must not depend on the cyclic garbage collector."""
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    yield
    if was_enabled:
        gc.enable()


def test_million_node_chain_builds_backpropagates_and_frees():
    out = run_python("""
import fastgrad
from fastgrad._engine import memory_stats

N, K = 10 ** 6, 0.999999
before = memory_stats()["segments_live"]
x = fastgrad.Var(1.0)
y = x
for i in range(N):
    y = y * K if i % 2 else y + x
y.backward()
g, gx = 1.0, 0.0  # the same reverse sweep by hand: y = y * K scales, y = y + x passes g to x
for i in reversed(range(N)):
    if i % 2:
        g *= K
    else:
        gx += g
gx += g
peak = memory_stats()["segments_live"]
del y
print(x.grad, gx, peak, memory_stats()["segments_live"], before)
""")
    grad, expected, peak, after, before = (float(t) for t in out.split())
    assert grad == pytest.approx(expected, rel=1e-12) and grad > 1.0
    assert peak >= before + 10 ** 6 // SEGMENT
    assert after <= before + 2  # all but x's segment and the (emptied) tail went back to the pool


def test_dropped_graph_is_freed_with_gc_disabled(gc_disabled):
    before = memory_stats()
    x = Var(0.5)
    h = x * 2
    dead = weakref.ref(h)
    y = h
    for _ in range(3 * SEGMENT):
        y = (y * 0.5).tanh() + x  # three nodes a step: nine segments in all
    peak = memory_stats()
    del h, y
    end = memory_stats()
    assert dead() is None
    assert peak["segments_live"] >= before["segments_live"] + 8
    assert end["segments_live"] <= before["segments_live"] + 2  # x's segment and the (emptied) tail may stay
    assert end["segments_free"] >= peak["segments_free"] + 8  # returned to the pool
    assert end["nodes_capacity"] == peak["nodes_capacity"]


def test_dropped_intermediate_handle_is_dead_with_gc_disabled(fg, gc_disabled):
    x = fg.Var(1.5)
    h = x.exp()
    dead = weakref.ref(h)
    y = h * x
    del h, y
    assert dead() is None and x.data == 1.5


def _neuron_step(w, b, xs, target):
    """One micrograd-style step: loss = (tanh(b + sum w_i x_i) - target)^2, backward, SGD update, zero."""
    act = b
    for wi, xi in zip(w, xs):
        act = act + wi * xi
    loss = (act.tanh() - target) ** 2
    loss.backward()
    for p in (*w, b):
        p.data -= 0.05 * p.grad
        p.grad = 0.0
    return loss.data


def test_training_loop_memory_stays_flat(gc_disabled):
    steps, warm = 10_000, 2_000
    width = max(2, math.ceil(SEGMENT / 1_000))  # 10,000 steps span many segments at any segment size
    w, b = [Var(0.1 * (i + 1)) for i in range(width)], Var(0.0)
    xs = [[((i * 37 + j * 11) % 17) / 17 - 0.5 for j in range(width)] for i in range(10)]
    targets = [0.5 if sum(x) > 0 else -0.5 for x in xs]
    losses, live = [], []
    for step in range(steps):
        losses.append(_neuron_step(w, b, xs[step % 10], targets[step % 10]))
        if step == warm:
            capacity = memory_stats()["nodes_capacity"]
        if step >= warm:
            live.append(memory_stats()["segments_live"])
    assert steps * (3 * width + 4) >= 10 * SEGMENT  # the loop did cycle through segments
    assert memory_stats()["nodes_capacity"] == capacity
    assert max(live) <= live[0] + 2
    assert sum(losses[-10:]) < 0.5 * sum(losses[:10])  # and it trained


def test_intermediate_reused_across_many_steps_survives_recycling(gc_disabled):
    w = Var(1.5)
    c = w * 2  # built once; every step's nodes live in later segments that get recycled
    steps = 4 * SEGMENT // 5 + 1
    for step in range(steps):
        x = (step % 7) - 3.0
        w.grad = 0.0
        loss = (c * x + 1).relu() + (c - x) ** 2
        loss.backward()
        assert c.data == 3.0
        assert w.grad == 2 * ((x if 3.0 * x + 1 > 0 else 0.0) + 2 * (3.0 - x)), step


def test_output_keeps_its_unnamed_intermediates_alive(gc_disabled):
    x = Var(0.7)
    y = ((x * 3).exp() + x.sin()).tanh() * 2  # no handle to any intermediate
    for _ in range(2 * SEGMENT):
        junk = (x * 1.5 + 1).relu()  # garbage graphs fill, free and reuse segments
    del junk
    y.backward()
    u = math.exp(2.1) + math.sin(0.7)
    assert y.data == pytest.approx(2 * math.tanh(u), rel=1e-15)
    du = 3 * math.exp(2.1) + math.cos(0.7)
    assert x.grad == pytest.approx(2 * (1 - math.tanh(u) ** 2) * du, rel=1e-14)


def test_fused_nodes_leave_pooled_segments_alone():
    # In a fresh process: free a two-segment graph (its first segment goes to the pool, the tail is emptied
    # in place), then make and drop fused sum/dot nodes. They reference only their operands' segments.
    out = run_python("""
import fastgrad
from fastgrad._engine import memory_stats

x = fastgrad.Var(1.0)
y = x
for _ in range(memory_stats()["segment_size"] + 100):
    y = y + 1.0
del x, y
live = memory_stats()["segments_live"]
a = fastgrad.Var(1.5)
s, d = fastgrad.sum([a, a, 2.0]), fastgrad.dot([a, 3.0], [a, a])
del s, d, a
dropped = memory_stats()["segments_live"]
keep = fastgrad.Var(0.7)
y = (keep * 3 + 1) * 2
for _ in range(3 * memory_stats()["segment_size"]):
    junk = (keep * 1.5 + 1).relu()  # reuses pooled segments
print(live, dropped, memory_stats()["segments_live"], y.data)
""")
    live, dropped, final, value = (float(t) for t in out.split())
    assert dropped == live  # the emptied tail stays live; nothing else changed
    assert final >= 1
    assert value == (0.7 * 3 + 1) * 2  # no live node was overwritten by a recycled segment
