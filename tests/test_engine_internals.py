"""Engine mechanics the public API does not show directly: affine layers, segment recycling, custom-op
re-entrancy and arena growth during a sweep, transform sweeps against backward()."""
import random

import numpy as np
import pytest

import fastgrad as fg
from fastgrad import _engine as E


def _layer(nin, nout, seed):
    rng = random.Random(seed)
    W = [[fg.Var(rng.uniform(-1, 1)) for _ in range(nin)] for _ in range(nout)]
    b = [fg.Var(rng.uniform(-1, 1)) for _ in range(nout)]
    Wi = E.param_index([w for row in W for w in row]).reshape(nout, nin)
    return W, b, Wi, E.param_index(b)


@pytest.mark.parametrize("activation", [None, "linear", "relu", "tanh", "sigmoid"])
def test_affine_matches_dot_plus_bias(activation):
    W, b, Wi, bi = _layer(3, 5, seed=1)
    xs = [fg.Var(0.3), 0.7, fg.Var(-1.2)]
    out = E.affine(Wi, bi, xs, activation)
    act = {None: lambda v: v, "linear": lambda v: v, "relu": fg.relu, "tanh": fg.tanh,
           "sigmoid": fg.sigmoid}[activation]
    ref = [act(fg.dot(W[r], xs) + b[r]) for r in range(5)]
    assert [o.data for o in out] == [r.data for r in ref]
    params = [w for row in W for w in row] + b + [xs[0], xs[2]]
    fg.sum(out).backward()
    g1 = [p.grad for p in params]
    for p in params:
        p.grad = 0.0
    fg.sum(ref).backward()
    assert [p.grad for p in params] == pytest.approx(g1, rel=1e-15, abs=1e-15)


def test_affine_validates_its_input():
    W, b, Wi, bi = _layer(2, 3, seed=2)   # W and b must stay alive: Wi and bi only index them
    with pytest.raises(ValueError, match="expected 2 inputs"):
        E.affine(Wi, bi, [1.0], "relu")
    with pytest.raises(ValueError, match="unknown activation"):
        E.affine(Wi, bi, [1.0, 2.0], "gelu")
    with pytest.raises(ValueError, match="biases"):
        E.affine(Wi, bi[:2], [1.0, 2.0])
    with pytest.raises(ValueError, match="not a live leaf"):
        E.affine(np.full((3, 2), -5, dtype=np.int64), bi, [1.0, 2.0])
    dead = fg.Var(1.0)
    dead_index = E.param_index([dead])[0]
    del dead
    with pytest.raises(ValueError, match="not a live leaf"):
        E.affine(np.full((3, 2), dead_index, dtype=np.int64), bi, [1.0, 2.0])
    with pytest.raises(TypeError):
        E.affine(Wi, bi, ["a", 2.0])


def test_dropped_graphs_return_their_segments_to_the_pool():
    x = fg.Var(1.0)
    before = E.memory_stats()["segments_live"]
    z = x
    for _ in range(5 * E.memory_stats()["segment_size"]):
        z = z + 1.0
    assert E.memory_stats()["segments_live"] >= before + 4
    del z
    assert E.memory_stats()["segments_live"] <= before + 1
    assert E.memory_stats()["segments_free"] >= 4


def test_a_warm_loop_allocates_no_new_node_storage():
    w = fg.Var(0.5)
    c = w * 2.0            # built once, reused by every step
    caps = []
    for _ in range(300):
        loss = fg.sum([(c * float(i) - 1.0) ** 2 for i in range(50)])
        w.grad = 0.0
        loss.backward()
        assert w.grad == pytest.approx(sum(2 * (2 * w.data * i - 1) * 2 * i for i in range(50)))
        caps.append(E.memory_stats()["nodes_capacity"])
    assert caps[-1] == caps[10]


def test_backward_inside_a_custom_backward_is_refused_and_the_engine_recovers():
    x = fg.Var(2.0)

    def rule(g):
        (x * 3.0).backward()
        return (g,)

    y = E.custom(1.0, [x], rule) * 2.0
    with pytest.raises(RuntimeError, match="inside a custom op"):
        y.backward()
    x.grad = 0.0
    (x * x).backward()
    assert x.grad == 4.0


def test_a_custom_rule_that_grows_the_arena_mid_sweep_keeps_gradients_right():
    x = fg.Var(2.0)

    def rule(g):
        keep = [fg.Var(1.0) for _ in range(3 * E.memory_stats()["nodes_capacity"] // 2)]
        assert fg.sum(keep).data == len(keep)
        return (3.0 * g,)

    y = E.custom(5.0, [x], rule) * x
    y.backward()
    assert x.grad == 3.0 * 2.0 + 5.0


_RANDOM_OPS = [
    lambda a, b: a * b, lambda a, b: a + b, lambda a, b: a / b, lambda a, b: (a * 0.3).tanh(),
    lambda a, b: a.sigmoid() * b, lambda a, b: fg.dot([a, b], [b, 2.0]), lambda a, b: a ** 2.0,
    lambda a, b: (a * 0.1).exp(), lambda a, b: fg.maximum(a, b), lambda a, b: a.sqrt() + b.log(),
]


def test_transform_sweeps_agree_with_backward_on_random_graphs():
    rng = random.Random(7)
    for _ in range(30):
        xs = [fg.Var(rng.uniform(0.5, 2.0)) for _ in range(4)]
        nodes = list(xs)
        for _ in range(25):
            a, b = rng.choice(nodes), rng.choice(nodes)
            nodes.append(rng.choice(_RANDOM_OPS)(a, b))
        out = fg.sum(nodes[-5:])
        for x in xs:
            x.grad = 0.0
        out.backward()
        g = [x.grad for x in xs]
        assert list(E.grad(out, xs)) == pytest.approx(g, rel=1e-12)
        t = [rng.uniform(-1, 1) for _ in xs]
        jv = E.jvp([out], xs, t)[0]
        assert jv == pytest.approx(sum(gi * ti for gi, ti in zip(g, t)), rel=1e-10, abs=1e-12)
        g2, HV = E.hvp(out, xs, np.eye(4))
        assert list(g2) == pytest.approx(g, rel=1e-12)
        assert np.allclose(HV, HV.T, rtol=1e-9, atol=1e-12)   # a Hessian is symmetric


def test_hvp_of_a_polynomial_matches_its_closed_form():
    x, y = fg.Var(1.5), fg.Var(-0.5)
    f = x ** 3.0 * y + x * y * y                            # H = [[6xy, 3x²+2y], [3x²+2y, 2x]]
    g, H = E.hvp(f, [x, y], np.eye(2))
    assert list(g) == pytest.approx([3 * 1.5 ** 2 * -0.5 + 0.25, 1.5 ** 3 + 2 * 1.5 * -0.5])
    assert H == pytest.approx(np.array([[6 * 1.5 * -0.5, 3 * 2.25 - 1.0], [3 * 2.25 - 1.0, 3.0]]))


def test_nary_nodes_hold_no_stray_references():
    # regression: p1 of an n-ary node holds its arity, and was once counted as a parent reference,
    # pinning whichever node had that index
    w = fg.Var(0.5)
    c = w * 2.0
    before = E._alive_nodes()
    for n in (1, 2, 3, 10):
        x = fg.sum([(c * float(i) - 1.0) ** 2 for i in range(n)])
        y = fg.dot([c] * n, [float(i) for i in range(n)])
        z = E.custom(1.0, [c] * n, lambda g, n=n: (g,) * n)
        Wi = E.param_index([w] * n).reshape(n, 1)
        layer = E.affine(Wi, E.param_index([w] * n), [c], "relu")
        del x, y, z, layer
    assert E._alive_nodes() == before


def test_a_graph_is_freed_node_by_node_when_its_last_handle_goes():
    x = fg.Var(1.5)
    base = E.memory_stats()["nodes_alive"]
    y = (x * x + 1.0).tanh()
    keep = y * 2.0
    del y
    assert E.memory_stats()["nodes_alive"] == base + 4     # mul, addc, tanh, mulc: all reachable
    del keep
    assert E.memory_stats()["nodes_alive"] == base


def test_hvp_and_jvp_treat_inputs_as_seeds_like_grad_does():
    # regression: hvp once cut the graph at its inputs and disagreed with grad when one input
    # depended on another (PyTorch's autograd.grad gives the total derivative, as grad does)
    a = fg.Var(1.5)
    b = a * 2.0
    o = b * a
    assert list(E.grad(o, [a, b])) == [6.0, 1.5]
    g, H = E.hvp(o, [a, b], np.eye(2))
    assert list(g) == [6.0, 1.5]
    assert H.tolist() == [[4.0, 1.0], [1.0, 0.0]]
    assert E.jvp([o], [a, b], [1.0, 0.0]) == [6.0]   # d/da along a, with b following a


def test_forward_sweeps_pass_custom_nodes_that_do_not_depend_on_the_inputs():
    x = fg.Var(3.0)
    c = E.custom(8.0, [fg.Var(2.0)], lambda g: (12.0 * g,))
    assert E.jvp([x * c], [x], [1.0]) == [8.0]
    assert E.hvp(x * x * c, [x], [[1.0]])[1].tolist() == [[16.0]]

    def cube_rule(g):
        return (27.0 * g,)

    d = E.custom(27.0, [x], cube_rule)
    with pytest.raises(NotImplementedError, match="cube_rule"):
        E.jvp([d * 2.0], [x], [1.0])


def test_jvp_pushes_a_block_of_directions_in_one_sweep_like_one_at_a_time():
    rng = random.Random(3)
    xs = [fg.Var(rng.uniform(0.5, 1.5)) for _ in range(3)]
    outs = [xs[0] * xs[1], (xs[1] / xs[2]).tanh(), fg.dot(xs, xs), xs[2].exp()]
    block = [[rng.uniform(-1, 1) for _ in xs] for _ in range(5)]
    assert E.jvp(outs, xs, block) == [E.jvp(outs, xs, t) for t in block]
