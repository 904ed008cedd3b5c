"""Engine mechanics the public API does not show directly: affine layers, segment recycling, custom-op
re-entrancy and arena growth during a sweep, transform sweeps against backward()."""
import gc
import pickle
import random

import numpy as np
import pytest

import fastgrad as fg
from fastgrad import _engine as E
from fastgrad._nn import affine


def _layer(nin, nout, seed):
    rng = random.Random(seed)
    W = [[fg.Var(rng.uniform(-1, 1)) for _ in range(nin)] for _ in range(nout)]
    b = [fg.Var(rng.uniform(-1, 1)) for _ in range(nout)]
    return W, b


@pytest.mark.parametrize("activation", [None, "linear", "relu", "tanh", "sigmoid"])
def test_affine_matches_dot_plus_bias(activation):
    W, b = _layer(3, 5, seed=1)
    xs = [fg.Var(0.3), 0.7, fg.Var(-1.2)]
    out = affine(W, b, xs, activation)
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
    W, b = _layer(2, 3, seed=2)
    with pytest.raises(ValueError, match="weight row 0 has 2 entries, expected 1"):
        affine(W, b, [1.0], "relu")
    with pytest.raises(ValueError, match="unknown activation"):
        affine(W, b, [1.0, 2.0], "gelu")
    with pytest.raises(ValueError, match="the bias has 2 entries, expected 3"):
        affine(W, b[:2], [1.0, 2.0])
    with pytest.raises(TypeError, match="expected leaf Vars"):
        affine([[1.0, 2.0]] + W[1:], b, [1.0, 2.0])
    with pytest.raises(ValueError, match="not a leaf"):
        affine([[W[0][0] * 2.0, W[0][1]]] + W[1:], b, [1.0, 2.0])
    with pytest.raises(RuntimeError, match="never initialised"):
        affine(W, [fg.Var.__new__(fg.Var)] + b[1:], [1.0, 2.0])
    with pytest.raises(TypeError):
        affine(W, b, ["a", 2.0])
    assert len(affine(W, None, [1.0, 2.0])) == 3


def test_affine_uses_the_vars_its_lists_hold_now():
    W, b = _layer(2, 1, seed=3)
    assert affine(W, b, [1.0, 1.0])[0].data == W[0][0].data + W[0][1].data + b[0].data
    W[0][0] = fg.Var(100.0)          # item assignment: no cache can hide it
    y = affine(W, b, [1.0, 1.0])[0]
    assert y.data == 100.0 + W[0][1].data + b[0].data
    y.backward()
    assert W[0][0].grad == 1.0


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


def test_backward_inside_a_custom_backward_runs_on_its_own_marks():
    x = fg.Var(2.0)

    def rule(g):
        (x * 3.0).backward()       # a second pass while the first waits here: it owns its marks and adjoints
        return (g,)

    y = E.custom(1.0, [x], rule) * 2.0
    y.backward()
    assert x.grad == 3.0 + 2.0
    x.grad = 0.0
    (x * x).backward()
    assert x.grad == 4.0


def test_inspection_inside_a_custom_backward_leaves_the_running_pass_intact():
    x = fg.Var(2.0)
    u = x * 2.0

    def rule(g):
        fg.stats(u)
        fg.graph_table(u)
        assert list(E.grad(u, [x])) == [2.0]
        assert fg.jvp(lambda t: t * u, (1.0,), (1.0,))[1] == 4.0
        return (3.0 * g,)

    y = E.custom(3.0 * u.data, [u], rule) + u * 5.0
    y.backward()
    assert x.grad == 16.0          # the review's case: 6.0 while inspection overwrote the visit marks
    assert u.grad == 8.0


def test_endless_nesting_of_backward_passes_is_a_clear_error_and_the_engine_recovers():
    x = fg.Var(2.0)
    holder = []

    def rule(g):
        holder[0].backward()       # the same graph again, from inside its own rule
        return (g,)

    holder.append(E.custom(1.0, [x], rule) * 2.0)
    with pytest.raises(RuntimeError, match="graph walks at once"):
        holder[0].backward()
    holder.clear()
    x.grad = 0.0
    (x * x).backward()
    assert x.grad == 4.0
    assert all(not busy for busy in E._walks_busy())


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
    # NOTE: a collection inside the loop could free another test's garbage (Vars in cycles) and change
    # the count: collect first, and keep the collector off while counting
    gc.collect()
    gc.disable()
    try:
        before = E._alive_nodes()
        for n in (1, 2, 3, 10):
            x = fg.sum([(c * float(i) - 1.0) ** 2 for i in range(n)])
            y = fg.dot([c] * n, [float(i) for i in range(n)])
            z = E.custom(1.0, [c] * n, lambda g, n=n: (g,) * n)
            layer = affine([[w]] * n, [w] * n, [c], "relu")
            del x, y, z, layer
        assert E._alive_nodes() == before
    finally:
        gc.enable()


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


# ---- a handle that was never given a node ----

def _uses(v):
    other = fg.Var(1.0)
    return {
        "data": lambda: v.data, "set data": lambda: setattr(v, "data", 5.0), "grad": lambda: v.grad,
        "set grad": lambda: setattr(v, "grad", 1.0), "item": v.item, "detach": v.detach,
        "backward": v.backward, "zero_grad": v.zero_grad, "is_leaf": lambda: v.is_leaf, "op": lambda: v.op,
        "add": lambda: v + 1.0, "radd": lambda: 1.0 + v, "add var": lambda: other + v,
        "mul var": lambda: v * other,
        "div": lambda: v / 2.0, "pow": lambda: v ** other, "neg": lambda: -v, "abs": lambda: abs(v),
        "exp": v.exp, "fg.exp": lambda: fg.exp(v), "maximum": lambda: fg.maximum(v, 1.0),
        "sum": lambda: fg.sum([other, v]), "dot": lambda: fg.dot([v], [other]), "float": lambda: float(v),
        "bool": lambda: bool(v), "compare": lambda: v < 1.0, "format": lambda: f"{v:.2f}",
        "pickle": lambda: pickle.dumps(v), "custom": lambda: E.custom(1.0, [v], lambda g: (g,)),
        "grad()": lambda: E.grad(other * 2.0, [v]), "jvp": lambda: E.jvp([v], [other], [1.0]),
        "param_index": lambda: E.param_index([v]), "stats": lambda: fg.stats(v),
        "optimizer": lambda: fg.optim.SGD([v], lr=0.1),
    }


def test_an_uninitialised_var_raises_on_every_use_and_never_touches_memory():
    v = fg.Var.__new__(fg.Var)
    for name, use in _uses(v).items():
        with pytest.raises(RuntimeError, match="never initialised"):
            use()
            pytest.fail(f"{name} did not raise")
    assert "uninitialised" in repr(v)
    del v
    gc.collect()
    (fg.Var(2.0) * 3.0).backward()      # the engine is intact


def test_a_subclass_that_forgets_super_init_raises_instead_of_computing_garbage():
    class Named(fg.Var):
        def __init__(self, value, name):
            self.name = name            # forgot super().__init__(value)

    class Good(fg.Var):
        def __init__(self, value, name):
            super().__init__(value)
            self.name = name

    bad = Named(3.0, "w")
    with pytest.raises(RuntimeError, match="Named was never initialised"):
        (bad * 2.0).backward()
    good = Good(3.0, "w")
    (good * 2.0).backward()
    assert good.grad == 2.0 and good.name == "w"


def test_reinitialising_a_var_inside_its_own_backward_keeps_the_pass_intact():
    x = fg.Var(2.0)
    holder = []

    def rule(g):
        holder[0].__init__(7.0)        # drops the root's node while the pass is running on it
        keep = [fg.Var(float(i)) for i in range(2 * E.memory_stats()["segment_size"])]  # recycle slots
        assert len(keep) > 0
        return (g * 3.0,)

    y = E.custom(1.0, [x * 1.0], rule) * 2.0
    holder.append(y)
    y.backward()
    assert x.grad == 6.0
    assert y.data == 7.0 and y.is_leaf
