"""fg.compile: a replayed tape gives eager mode's values and gradients bit for bit, and refuses what it
cannot replay."""
import gc
import math
import random
import threading

import numpy as np
import pytest
from conftest import DIFFERENTIABLE, call, n_operands

import fastgrad as fg
from fastgrad import _engine
from fastgrad._replay import Tape


def same(a, b):
    """Bit-identical floats (any two NaNs count as equal)."""
    return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))


def eager_and_compiled(fn, params, args, steps=1):
    """Run fn ``steps`` times eagerly (with backward), then compiled, each from zeroed gradients:
    ((value, grads) eager, (value, grads) compiled)."""
    compiled = fg.compile(fn)
    out = []
    for mode in ("eager", "compiled"):
        for p in params:
            p.grad = 0.0
        for _ in range(steps):
            if mode == "eager":
                loss = fn(*args)
                loss.backward()
            else:
                loss = compiled(*args)
            value = loss.data
        out.append((value, [p.grad for p in params]))
    return out


def assert_same_run(fn, params, args, steps=1):
    (ve, ge), (vc, gc_) = eager_and_compiled(fn, params, args, steps=steps)
    assert same(ve, vc), (ve, vc)
    assert len(ge) == len(gc_)
    for k, (a, b) in enumerate(zip(ge, gc_)):
        assert same(a, b), (k, a, b)


# ---------------------------------------------------------------------------------------------------------
# values and gradients equal eager mode's
# ---------------------------------------------------------------------------------------------------------

def moons_model(seed=0):
    random.seed(seed)
    model = fg.nn.MLP(2, [16, 16, 1])
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(20, 2))
    y = np.where(rng.normal(size=20) > 0, 1.0, -1.0)
    params = model.parameters()

    def loss_fn(X, y):
        scores = [model(list(x)) for x in X]
        data = fg.sum([(1 + -yi * si).relu() for yi, si in zip(y, scores)]) * (1.0 / len(scores))
        return data + 1e-4 * fg.dot(params, params)

    return model, params, X, y, loss_fn


def test_an_mlp_step_is_bit_identical_to_eager():
    model, params, X, y, loss_fn = moons_model()
    assert_same_run(loss_fn, params, (X, y))
    assert_same_run(loss_fn, params, (X, y), steps=3)      # gradients accumulate as in eager mode


def test_a_training_trajectory_is_bit_identical_to_eager():
    losses = []
    for compiled in (False, True):
        model, params, X, y, loss_fn = moons_model(1)
        opt = fg.optim.SGD(params, lr=0.5, momentum=0.9)
        step = fg.compile(loss_fn) if compiled else None
        run = []
        for _ in range(8):
            opt.zero_grad()
            if compiled:
                loss = step(X, y)
            else:
                loss = loss_fn(X, y)
                loss.backward()
            opt.step()
            run.append(loss.data)
        losses.append((run, [p.data for p in params]))
        if compiled:
            assert step.traces == 1
    assert losses[0] == losses[1]


@pytest.mark.parametrize("op", DIFFERENTIABLE, ids=lambda op: op.name)
def test_every_op_replays_like_eager_at_ordinary_points_kinks_and_ieee_edges(op):
    """Each op with its operands from arguments, from parameters made outside, and both; at points drawn
    from the op's domain, at its kinks and at IEEE edges; replayed on one tape per structure."""
    n = n_operands(op)
    rng = random.Random(op.name)
    lo, hi = op.domain
    points = [tuple(rng.uniform(lo, hi) for _ in range(n)) for _ in range(6)]
    points += [tuple(p) + (1.0,) * (n - len(p)) for p in op.special if len(p) <= n]
    points += [(e,) * n for e in (0.0, -0.0, 1.0, -1.0, math.inf, -math.inf, math.nan, 1e308, 5e-324)]
    ks = op.k_values or (0.5,)
    w = fg.Var(0.75)        # a parameter made outside, read by every form below

    def f(*xs):
        outs = [call(fg, op, list(xs), k) for k in ks]
        outs.append(call(fg, op, [xs[0] * w, *xs[1:]], ks[0]))          # a parameter on the path
        outs.append(call(fg, op, [w] * n, ks[0]))                       # only the parameter
        return fg.sum(outs)

    compiled = fg.compile(f)
    for point in points:
        w.grad = 0.0
        loss = f(*[fg.Var(x) for x in point])
        loss.backward()
        want = (loss.data, w.grad)
        w.grad = 0.0
        got = compiled(*point)
        assert same(got.data, want[0]), (point, got.data, want[0])
        assert same(w.grad, want[1]), (point, w.grad, want[1])
    assert compiled.traces == 1


def test_shared_subexpressions_constants_and_a_parameter_used_twice():
    w, b = fg.Var(0.3), fg.Var(-1.2)

    def f(x, y):
        s = x * w + b
        t = s * s + fg.sum([s, 2.0, w])          # a constant operand becomes a constant leaf of the tape
        return (t / (y + w)).tanh() + fg.maximum(s, w) + w * w

    assert_same_run(f, [w, b], (0.7, 1.9))
    assert_same_run(f, [w, b], (-0.3, -0.3))


def test_chains_whose_operands_are_the_previous_position_replay_like_eager():
    """The single replay keeps position i - 1's value and adjoint in a register. Every way a node can read
    the node just before it: as its first operand, its second, both (y * y), after a SUM or DOT node, and
    with the previous node also read by a later one (its adjoint gathers from two places)."""
    w, b = fg.Var(0.3), fg.Var(-1.2)

    def f(x, y):
        s = x * w                    # a == i - 1 is not possible for the first node: both older
        s = s * s                    # a == b == i - 1
        s = b - s                    # b == i - 1, a older
        t = s.tanh()                 # unary, a == i - 1
        u = t * 0.5 + s              # MULC on i - 1, then ADD whose a is i - 1 and b older (s read twice)
        v = fg.sum([u, w, y]) * u    # SUM, then MUL with a == i - 1 and b older
        z = fg.dot([v, w], [x, v])   # DOT, then the chain continues through it
        return (z + 1e-3).log1p() - v

    assert_same_run(f, [w, b], (0.7, 1.9))
    assert_same_run(f, [w, b], (-0.3, 0.0))


def test_dot_nodes_whose_operands_step_at_fixed_strides_replay_like_eager():
    """The single replay runs a dot node whose weight and input positions are each an arithmetic
    progression by stepping two indices: every kind of stride, ranges that overlap, and the nodes it
    leaves to the general loop (one term, positions that are no progression)."""
    rng = np.random.default_rng(5)
    ps = [fg.Var(float(v)) for v in rng.normal(size=8)]

    def f(*x):
        h = [fg.dot(ps[:4], x[:4]),                 # both stride 1
             fg.dot(ps[4:], x[::-1][:4]),           # inputs at stride -1
             fg.dot([ps[0]] * 3, x[1:4]),           # weights at stride 0
             fg.dot(ps, ps),                        # the same range twice: each adjoint gains 2 terms
             fg.dot(ps[::2], ps[1::2]),             # interleaved, stride 2
             fg.dot(ps[1:3], x[5:7])]               # two terms
        t = [hh.tanh() for hh in h]                 # computed nodes as operands
        h.append(fg.dot(t, x[::2][:len(t)]))        # weights at the outputs' positions, stride 2 inputs
        h.append(fg.dot(t[:3], [x[0], x[2], x[1]])) # no progression: the general loop
        h.append(fg.dot(t[:1], x[:1]))              # one term
        return fg.sum(h) * fg.dot(t[::-1], t)       # computed nodes at stride -1 against stride 1

    args = tuple(float(v) for v in rng.normal(size=12))
    assert_same_run(f, ps, args)
    assert_same_run(f, ps, tuple(-a for a in args), steps=2)


def _layer_parts(seed, width=8, fan_in=7):
    """Parameters and the inputs of a layer: weights (width rows of fan_in), biases, and input weights; the
    layer's inputs are computed nodes, tanh(u_m * arg_m), so their adjoints reach parameters."""
    rng = np.random.default_rng(seed)
    W = [[fg.Var(float(v)) for v in row] for row in rng.normal(size=(width, fan_in))]
    bias = [fg.Var(float(v)) for v in rng.normal(size=width)]
    u = [fg.Var(float(v)) for v in rng.normal(size=fan_in)]
    args = tuple(float(v) for v in rng.normal(size=fan_in))
    return W, bias, u, args, [p for row in W for p in row] + bias + u


def _groups(fn, args):
    return fg.compile(fn).tape(*args).dot_groups


@pytest.mark.parametrize("seed", range(3))
def test_dot_groups_replay_like_eager_and_form_only_where_the_order_of_every_addition_holds(seed):
    """The single replay runs 4 neurons of a layer (strided dot nodes over the same inputs) as one group.
    Where a node between them reads the group's weights or inputs, or the weights overlap, or the inputs do
    not step, a group would add some adjoint terms in another order: none is formed there. Every case
    matches eager mode bit for bit over 3 accumulating steps. (Seven inputs: where the weights are at
    stride 1, the adjoint takes 4 input slots at once (AVX2), then 2, then 1; at stride 2, one by one.)"""
    W, bias, u, args, params = _layer_parts(seed)

    def inputs(x):
        return [(ui * xi).tanh() for ui, xi in zip(u, x)]

    def layer(*x):                              # 8 neurons: 2 groups
        h = inputs(x)
        return fg.sum([(fg.dot(w, h) + b).tanh() for w, b in zip(W, bias)])

    def reads_next_weight(*x):                  # a node between the neurons reads the next one's weight
        h = inputs(x)
        return fg.sum([fg.dot(w, h) * W[(j + 1) % 8][0] for j, w in enumerate(W)])

    def reads_an_input(*x):                     # ... or one of the shared inputs
        h = inputs(x)
        return fg.sum([(fg.dot(w, h) * h[2]).tanh() for w in W])

    def overlapping_weights(*x):                # neuron j's weights: W[1][j + 1], W[1][j] (overlapping)
        h = inputs(x)
        return fg.sum([(fg.dot(W[0][j:j + 3], h[:3]) + b).tanh() for j, b in enumerate(bias[:3])]
                      + [(fg.dot(W[1][j:j + 2][::-1], h[:2]) + b).tanh() for j, b in enumerate(bias[:4])])

    def same_input_repeated(*x):                # inputs at stride 0
        h = inputs(x)
        return fg.sum([(fg.dot(w, [h[0]] * len(w)) + b).tanh() for w, b in zip(W, bias)])

    def strided_weights(*x):                    # each neuron's weights at stride 2 (touched in order first)
        h = inputs(x)
        flat = [p for row in W for p in row]
        return fg.sum(flat) + fg.sum([(fg.dot(flat[10 * j:10 * j + 10:2], h[:5]) + b).tanh()
                                      for j, b in enumerate(bias[:4])])

    for fn, groups in ((layer, 2), (strided_weights, 1), (reads_next_weight, 0), (reads_an_input, 0),
                       (overlapping_weights, 0), (same_input_repeated, 0)):
        assert _groups(fn, args) == groups, fn.__name__
        assert_same_run(fn, params, args, steps=3)


def _tails(fn, args):
    tape = fg.compile(fn).tape(*args)
    return tape.dot_groups, tape.group_tails


@pytest.mark.parametrize("seed", range(3))
def test_group_spans_run_each_neurons_tail_with_its_group_like_eager(seed):
    """Where each of a group's 4 neurons is followed by the same number of tail nodes (a bias add, an
    activation: each reading the node before it and at most a position before the group), the single replay
    runs the group and its tails as one span, forward at its first node and in reverse from its last. The
    common tails (bias + relu, bias + tanh) have kernels of their own; the others (every tail op: add, sub,
    mul, + k, * k, neg, relu, tanh) go through the general one. Every case equals eager mode bit for bit over
    3 accumulating steps, at kinks too (inputs of 0: relu at 0, relu's adjoint 0 where its input is 0)."""
    W, bias, u, args, params = _layer_parts(seed)
    c = fg.Var(0.75)
    params = params + [c]

    def inputs(x):
        return [(ui * xi).tanh() for ui, xi in zip(u, x)]

    def relu_layer(*x):                         # 8 neurons: 2 spans of 4 x 2 tail nodes
        h = inputs(x)
        return fg.sum([(fg.dot(w, h) + b).relu() for w, b in zip(W, bias)])

    def tanh_layer(*x):
        h = inputs(x)
        return fg.sum([(fg.dot(w, h) + b).tanh() for w, b in zip(W, bias)])

    def mixed_tails(*x):                        # 3 tail nodes per neuron, the general kernel
        h = inputs(x)
        tails = [lambda y, b: ((y - b) * c).relu(), lambda y, b: (-(y * b)).tanh(),
                 lambda y, b: ((y + 0.5) * 2.0) - b, lambda y, b: (-y + b) * b]
        return fg.sum([tails[j % 4](fg.dot(w, h), b) for j, (w, b) in enumerate(zip(W, bias))])

    def bare_dots(*x):                          # neurons one after another (d = 1): spans with no tails
        h = inputs(x)
        return fg.sum([fg.dot(w, h) for w in W]) * c

    def untailed(*x):                           # sigmoid is no tail op: groups, but no span
        h = inputs(x)
        return fg.sum([(fg.dot(w, h) + b).sigmoid() for w, b in zip(W, bias)])

    def reads_inside(*x):                       # a tail reads the group's first dot: no span
        h = inputs(x)
        ys = []
        for w, b in zip(W[:4], bias):
            ys.append(fg.dot(w, h))
            ys[-1] = (ys[-1] + b) * (ys[0] if len(ys) > 1 else b)
        return fg.sum(ys)

    def chain_after_span(*x):                   # a chain run (* 0.5, + 1) right after a span's last node
        h = inputs(x)
        ys = [(fg.dot(w, h) + b).relu() for w, b in zip(W, bias)]
        return fg.sum(ys[:-1] + [ys[-1] * 0.5 + 1.0])

    assert fg.compile(chain_after_span).tape(*args).chain_runs == 1
    for fn, expected in ((relu_layer, (2, 16)), (tanh_layer, (2, 16)), (mixed_tails, (2, 24)),
                         (chain_after_span, (2, 16)),
                         (bare_dots, (2, 0)), (untailed, (2, 0)), (reads_inside, (1, 0))):
        assert _tails(fn, args) == expected, fn.__name__
        assert_same_run(fn, params, args, steps=3)
        assert_same_run(fn, params, tuple(0.0 for _ in args), steps=2)
    for b in bias:                              # relu's kink itself: inputs 0 and biases 0 make x = 0
        b.data = 0.0
    for fn in (relu_layer, mixed_tails):
        assert_same_run(fn, params, tuple(0.0 for _ in args), steps=2)


def _four_neurons(seed):
    """A layer of 4 neurons (relu(dot + bias)), its parameters and arguments, and the tape fg.compile makes
    of it: one group, one span of 8 tail nodes."""
    W, bias, u, args, params = _layer_parts(seed)

    def inputs(x):
        return [(ui * xi).tanh() for ui, xi in zip(u, x)]

    def layer(*x):
        h = inputs(x)
        return fg.sum([(fg.dot(w, h) + b).relu() for w, b in zip(W[:4], bias)])

    tape = fg.compile(layer).tape(*args)
    assert (tape.dot_groups, tape.group_tails) == (1, 8)
    return W, bias, inputs, layer, args, params, tape


def _replayed_like_eager(tape, args, params, eager_fn):
    """Run the hand-made ``tape`` on ``args`` and eager ``eager_fn`` (a function of Vars): the same value and
    the same gradients of ``params``, bit for bit."""
    for p in params:
        p.grad = 0.0
    value = tape.run(np.array(args))
    replayed = [p.grad for p in params]
    for p in params:
        p.grad = 0.0
    eager = eager_fn(*(fg.Var(a) for a in args))
    eager.backward()
    assert same(value, eager.data)
    assert [same(r, p.grad) for r, p in zip(replayed, params)] == [True] * len(params)


def _with(tape, b=None, outputs=None):
    """``tape``'s arrays as a new Tape, with other b operands or outputs."""
    return Tape(tape.op, tape.a, tape.b if b is None else b, tape.k, tape.operands, list(tape.external),
                tape.nargs, tape.outputs if outputs is None else outputs)


def test_a_span_reaching_past_the_output_is_not_formed():
    """The reverse sweep starts at the output: a span that would end after it is left a plain group. (A
    trace puts the loss's own nodes first, so only a hand-made tape has an output inside a span: here, a
    layer's tape whose output is moved to its last neuron's bias add.)"""
    W, bias, inputs, _, args, params, full = _four_neurons(3)
    last_add = int(np.flatnonzero(full.op == full.op[full.out - 2])[-1])   # the 4th neuron's bias add
    tape = _with(full, outputs=[last_add])
    assert (tape.dot_groups, tape.group_tails) == (1, 0)
    _replayed_like_eager(tape, args, params, lambda *x: fg.dot(W[3], inputs(x)) + bias[3])


def test_hand_made_tapes_with_odd_tails_form_no_span_and_replay_as_one_node_after_another():
    """A hand-made tape may give a bias add no second operand (b = -1) or a relu a second one: the span
    kernels read b only for add, sub and mul, so such tails form no span, and the general sweep runs them (an
    add with no b adds 0.0; a unary op's b gets a zero term). Values and gradients equal eager mode's on the
    same program: relu(dot + 0.0), and the plain layer."""
    W, _, inputs, layer, args, params, full = _four_neurons(4)

    def no_bias(*x):
        h = inputs(x)
        return fg.sum([(fg.dot(w, h) + 0.0).relu() for w in W[:4]])

    relus = np.flatnonzero(full.op == full.op[full.out - 1])
    for odd, b_value, same_as in ((relus - 1, -1, no_bias), (relus, 0, layer)):
        b = full.b.copy()
        b[odd] = b_value
        tape = _with(full, b=b)
        assert (tape.dot_groups, tape.group_tails) == (1, 0)
        _replayed_like_eager(tape, args, params, same_as)


def test_dot_groups_stop_at_the_output_where_the_reverse_sweep_starts():
    """A layer computed after the loss (an auxiliary result) forms no group: the reverse sweep never
    reaches it; its values are still computed, and equal eager mode's."""
    W, bias, u, args, params = _layer_parts(7)

    def fn(*x):
        h = [(ui * xi).tanh() for ui, xi in zip(u, x)]
        loss = fg.sum([(fg.dot(w, h) + b).tanh() for w, b in zip(W[:4], bias)])
        return loss, [fg.dot(w, h) for w in W[4:]]

    step = fg.compile(fn)
    assert step.tape(*args).dot_groups == 1
    for p in params:
        p.grad = 0.0
    loss, aux = step(*args)
    compiled = [p.grad for p in params]
    for p in params:
        p.grad = 0.0
    eager_loss, eager_aux = fn(*(fg.Var(a) for a in args))
    eager_loss.backward()
    assert same(loss.data, eager_loss.data)
    assert [same(a, e.data) for a, e in zip(aux, eager_aux)] == [True] * 4
    assert [same(c, p.grad) for c, p in zip(compiled, params)] == [True] * len(params)


def _runs(fn, args):
    return fg.compile(fn).tape(*args).chain_runs


LINKS = (lambda y: y * -0.75, lambda y: y + 0.25, lambda y: y.tanh(), lambda y: y.exp(), lambda y: -y,
         lambda y: y.relu(), lambda y: y.leaky_relu(0.1), lambda y: y ** 3, lambda y: 2.0 ** y,
         lambda y: y.sin(), lambda y: 1.5 - y, lambda y: abs(y), lambda y: 0.5 / (y + 3.0),
         lambda y: y.sigmoid(), lambda y: y.softplus())


@pytest.mark.parametrize("seed", range(3))
def test_chain_runs_replay_like_eager(seed):
    """Runs of one-operand links (each reading only the node before it, which nothing else reads) are
    swept in loops of their own, adjoints in a register: the same bits as eager mode, where a run starts
    at an argument, at a parameter whose .grad accumulates, after a node read twice, and where it stops at
    a node read twice, at the output, and at relu's zero adjoints (-0.0 and 0.0 keep their signs)."""
    rng = np.random.default_rng(seed)
    w = fg.Var(float(rng.normal()))
    order = [LINKS[j] for j in rng.permutation(len(LINKS))]

    def links(y, ops):
        for op in ops:
            y = op(y)
        return y

    def from_argument(x):                       # the first run starts at x, an argument (a float when eager)
        return links(x if isinstance(x, fg.Var) else fg.Var(x), order) * w

    def from_parameter(x):                      # ... at w, whose .grad accumulates over the steps
        return links(w, order) * x

    def read_twice(x):                          # t is read twice: the runs stop at it and start after it
        t = links(x * w, order[:7])
        return links(t, order[7:]) + links(t, order[3:9])

    def output_inside(x):                       # the loss is a link of a longer chain: the rest is auxiliary
        loss = links(x * w, order[:8])
        return loss, [links(loss, order[8:])]

    def dead_relu(x):                           # relu at negative values: adjoints of -0.0 and 0.0
        return links((x * w - 5.0).relu() * -2.0, order[:4]) + w * 0.5

    x = (float(rng.uniform(0.2, 0.6)),)
    for fn in (from_argument, from_parameter, read_twice, dead_relu):
        assert _runs(fn, x) >= 1, fn.__name__
        assert_same_run(fn, [w], x, steps=3)
    assert _runs(read_twice, x) >= 3

    step = fg.compile(output_inside)
    assert step.tape(*x).chain_runs == 2        # one up to the loss, one after it (forward only)
    w.grad = 0.0
    loss, aux = step(*x)
    compiled = w.grad
    w.grad = 0.0
    eager_loss, eager_aux = output_inside(*x)
    eager_loss.backward()
    assert same(loss.data, eager_loss.data) and same(aux[0], eager_aux[0].data) and same(compiled, w.grad)


def test_a_node_computed_outside_is_an_input_whose_gradient_reaches_its_leaves():
    w = fg.Var(1.5)
    c = w * 2.0                 # computed once, outside: eager mode backpropagates through it to w

    def f(x):
        return (c * x).sin() + c

    assert_same_run(f, [w], (0.4,))


def test_var_arguments_run_eagerly_so_transforms_see_through_a_compiled_function():
    w = fg.Var(2.0)
    step = fg.compile(lambda a: (a * w).exp())
    x = fg.Var(0.5)
    out = step(x)                        # eager: the result is connected to x, and backward already ran
    assert out.op == "exp" and x.grad == pytest.approx(2.0 * math.exp(1.0)) and step.traces == 0
    g = fg.grad(step)(0.25)              # fg.grad passes Vars: the derivative is right, not 0
    assert g == pytest.approx(2.0 * math.exp(0.5))
    h = fg.grad(fg.grad(step))(0.25)
    assert h == pytest.approx(4.0 * math.exp(0.5))


def test_a_compiled_function_called_inside_another_trace_is_traced_through():
    w = fg.Var(1.5)
    inner = fg.compile(lambda x: (w * x).sin())
    outer = fg.compile(lambda x: inner(x) * 3.0 + w)
    w.grad = 0.0
    assert outer(0.5).data == math.sin(0.75) * 3.0 + 1.5
    assert w.grad == pytest.approx(3.0 * 0.5 * math.cos(0.75) + 1.0)
    assert inner.traces == 0


def test_graph_rebuilds_the_tape_for_inspection_with_the_same_values():
    model, params, X, y, loss_fn = moons_model()
    step = fg.compile(loss_fn)
    out = step.graph(X, y)
    assert out.data == loss_fn(X, y).data
    stats = fg.stats(out)
    tape = step.tape(X, y)
    assert stats.nodes == tape.n
    assert len(fg.graph_table(out).rows) == tape.n
    wv = params[0]
    assert out.data == step(X, y).data and wv.grad != 0.0


def test_auxiliary_results_are_returned_as_floats():
    w = fg.Var(0.5)

    def f(xs):
        scores = [w * x for x in xs]
        return fg.sum(scores), {"scores": scores, "first": scores[0].exp()}

    step = fg.compile(f)
    loss, aux = step([1.0, 2.0, 3.0])
    assert loss.data == 3.0
    assert aux == {"scores": [0.5, 1.0, 1.5], "first": math.exp(0.5)}
    assert w.grad == 6.0           # only the loss is backpropagated
    loss, aux = step([2.0, 2.0, -4.0])
    assert aux["scores"] == [1.0, 1.0, -2.0] and loss.data == 0.0 and w.grad == 6.0


def test_forward_only():
    w = fg.Var(2.0)
    step = fg.compile(lambda x: w * x, backward=False)
    assert step(3.0).data == 6.0 and w.grad == 0.0


# ---------------------------------------------------------------------------------------------------------
# structure: cache, re-tracing
# ---------------------------------------------------------------------------------------------------------

def test_it_traces_once_per_structure_and_retraces_when_it_changes():
    w = fg.Var(1.0)
    step = fg.compile(lambda xs: fg.sum([w * x for x in xs]), cache_size=2)
    step(np.ones(3))
    step(np.arange(3.0))
    assert step.traces == 1
    assert step(np.ones(4)).data == 4.0 and step.traces == 2
    assert step([1.0, 2.0]).data == 3.0 and step.traces == 3      # a list: another structure
    step(np.ones(3))                                               # evicted (cache_size=2): traced again
    assert step.traces == 4
    step.clear()
    step(np.ones(3))
    assert step.traces == 5



def test_array_arguments_are_read_at_each_call_whatever_their_layout_or_dtype():
    """One float64 array argument is read in place: a read-only one works, a change between calls is seen;
    strided, integer and Fortran-ordered arrays are converted."""
    w = fg.Var(0.5)
    step = fg.compile(lambda X: fg.sum([w * x * float(j + 1) for j, x in enumerate(X.ravel())]))

    def eager(X):
        return sum(0.5 * x * float(j + 1) for j, x in enumerate(np.ravel(X)))

    X = np.arange(6.0).reshape(3, 2)
    X.setflags(write=False)
    assert step(X).data == eager(X)
    Y = X.copy()
    step(Y)
    Y[1, 1] = 10.0
    assert step(Y).data == eager(Y)
    for Z in (np.arange(12.0).reshape(3, 4)[:, ::2], np.arange(6).reshape(3, 2),
              np.asfortranarray(np.arange(6.0).reshape(3, 2))):
        assert step(Z).data == eager(Z), Z

# ---------------------------------------------------------------------------------------------------------
# what a trace cannot see: errors, never a wrong number
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("leak", [
    lambda x: x if x > 0 else -x,
    lambda x: x if bool(x) else -x,
    lambda x: x * float(x),
    lambda x: x * int(x),
    lambda x: x if x <= 0.5 else x * 2,
])
def test_python_decisions_on_traced_values_raise(leak):
    with pytest.raises(fg.TraceError, match="fg.compile"):
        fg.compile(leak)(1.5)
    assert (fg.Var(1.0) > 0) is True          # outside a trace comparisons are plain Python values


def test_check_catches_a_value_read_through_data():
    w = fg.Var(1.0)

    def f(x):
        return w * x if x.data > 0 else w * -x    # .data is not caught while tracing ...

    step = fg.compile(f, check=True)
    step(1.0)
    with pytest.raises(fg.TraceError, match="differs from running it eagerly"):
        step(-1.0)                                 # ... but check=True compares with eager mode


def test_check_passes_and_then_stops_checking():
    model, params, X, y, loss_fn = moons_model()
    step = fg.compile(loss_fn, check=True)
    for _ in range(4):
        step(X, y)


@pytest.mark.parametrize("result, error, match", [
    (lambda x: 3.0, TypeError, "must return a scalar Var"),
    (lambda x: [x], TypeError, "must return a scalar Var"),
    (lambda x: (x, 2.0), fg.TraceError, "auxiliary results must be Vars"),
])
def test_bad_results_are_refused(result, error, match):
    with pytest.raises(error, match=match):
        fg.compile(result)(1.0)


def test_custom_ops_and_bad_arguments_are_refused():
    cube = fg.custom_op(lambda x: x * x * x, lambda g, x: (3 * x * x * g,))
    with pytest.raises(TypeError, match="custom op"):
        fg.compile(lambda x: cube(x))(2.0)
    with pytest.raises(TypeError, match="expected a function"):
        fg.compile(3)
    with pytest.raises(ValueError, match="cache_size"):
        fg.compile(lambda x: x, cache_size=0)
    with pytest.raises(TypeError, match="str"):
        fg.compile(lambda x: x * 2)("2")
    with pytest.raises(TypeError):
        fg.compile(lambda x: x * 2)(np.array(["a"]))


def test_the_engine_recovers_after_an_exception_inside_a_trace():
    def boom(x):
        x * 2
        raise KeyError("inside")

    with pytest.raises(KeyError):
        fg.compile(boom)(1.0)
    assert fg.Var(1.0) > 0                    # no trace left active


def test_hand_made_tapes_are_validated():
    op = np.array([0, 1], dtype=np.uint8)
    ok = (np.array([-1, 0]), np.array([-1, -1]), np.zeros(2), np.zeros(0, dtype=np.int64))
    Tape(op, *ok, [], 1, [1])
    with pytest.raises(ValueError, match="before it"):
        Tape(op, np.array([-1, 5]), *ok[1:], [], 1, [1])
    with pytest.raises(ValueError, match="out of range"):
        Tape(op, *ok, [], 1, [7])
    with pytest.raises(ValueError, match="same length"):
        Tape(op, np.array([-1]), *ok[1:], [], 1, [1])
    with pytest.raises(ValueError, match="op code"):
        Tape(np.array([0, 250], dtype=np.uint8), *ok, [], 1, [1])
    with pytest.raises(ValueError, match="argument values"):
        Tape(op, *ok, [], 1, [1]).run(np.zeros(3))


# ---------------------------------------------------------------------------------------------------------
# lifetime, depth, threads
# ---------------------------------------------------------------------------------------------------------

def test_replays_keep_memory_flat_and_a_dropped_function_frees_its_tape():
    gc.collect()
    before = _engine.memory_stats()["nodes_alive"]
    model, params, X, y, loss_fn = moons_model()
    after_model = _engine.memory_stats()["nodes_alive"]
    step = fg.compile(loss_fn)
    step(X, y)
    warm = _engine.memory_stats()
    for _ in range(10_000 // 20):
        for _ in range(20):
            step(X, y)
    assert _engine.memory_stats()["nodes_alive"] == warm["nodes_alive"]
    assert _engine.memory_stats()["nodes_capacity"] == warm["nodes_capacity"]
    del step
    assert _engine.memory_stats()["nodes_alive"] == after_model
    del model, params, loss_fn
    gc.collect()
    assert _engine.memory_stats()["nodes_alive"] == before


def test_a_million_node_chain_compiles_and_replays_without_recursion():
    w = fg.Var(1.0)

    def chain(x):
        y = x * w
        for _ in range(10 ** 6 // 2):
            y = y * 0.9999999 + 1e-7
        return y

    step = fg.compile(chain, check=True)
    v = step(1.0)
    assert v.data == pytest.approx(1.0, rel=1e-6)
    assert step.tape(1.0).n > 10 ** 6


def test_threads_replaying_their_own_models_get_exact_results():
    results = {}

    def work(seed):
        model, params, X, y, loss_fn = moons_model(seed)
        step = fg.compile(loss_fn)
        opt = fg.optim.SGD(params, lr=0.1)
        out = []
        for _ in range(30):
            opt.zero_grad()
            out.append(step(X, y).data)
            opt.step()
        results[seed] = out

    for seed in (3, 4):
        work(seed)
    single = dict(results)
    threads = [threading.Thread(target=work, args=(s,)) for s in (3, 4, 3, 4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == single


# ---------------------------------------------------------------------------------------------------------
# fg.vmap: one sample's tape replayed over a batch
# ---------------------------------------------------------------------------------------------------------

def per_sample(model):
    def one(x, yi):
        s = model(list(x))
        return (1 + -yi * s).relu(), [s]
    return one


@pytest.mark.parametrize("reduce", ["mean", "sum"])
def test_vmap_matches_eager_values_bit_for_bit_and_gradients_to_rounding(reduce):
    model, params, X, y, _ = moons_model(2)
    one = per_sample(model)
    for p in params:
        p.grad = 0.0
    outs = [one(x, yi) for x, yi in zip(X, y)]
    total = fg.sum([o[0] for o in outs])
    loss = total * (1.0 / len(outs)) if reduce == "mean" else total
    loss.backward()
    want = [p.grad for p in params]
    for p in params:
        p.grad = 0.0
    got, aux = fg.vmap(one, reduce=reduce, block=8)(X, y)
    assert got.data == loss.data
    assert aux[0].tolist() == [o[1][0].data for o in outs]
    scale = max(abs(g) for g in want)
    assert max(abs(a - b) for a, b in zip(want, [p.grad for p in params])) <= 1e-13 * scale


def test_vmap_gives_the_same_bits_for_any_thread_count_and_close_results_for_any_block():
    model, params, _, _, _ = moons_model(3)
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(1000, 2)), np.sign(rng.normal(size=1000))
    runs = {}
    for threads, block in ((1, 64), (2, 64), (3, 64), (1, 128), (2, 7)):
        for p in params:
            p.grad = 0.0
        loss, _ = fg.vmap(per_sample(model), threads=threads, block=block)(X, y)
        runs[threads, block] = (loss.data, [p.grad for p in params])
    assert runs[1, 64] == runs[2, 64] == runs[3, 64]
    for key in ((1, 128), (2, 7)):
        assert runs[key][0] == runs[1, 64][0]
        for a, b in zip(runs[key][1], runs[1, 64][1]):
            assert a == pytest.approx(b, rel=1e-12, abs=1e-15)


def test_vmap_traces_once_per_sample_shape_and_reads_parameters_each_call():
    w = fg.Var(2.0)
    f = fg.vmap(lambda x: w * x[0] + x[1], reduce="sum")
    assert f(np.ones((5, 2))).data == 15.0
    w.data = 3.0
    assert f(np.ones((9, 2))).data == 36.0 and f.traces == 1
    assert f(np.ones((2, 3))).data == 8.0 and f.traces == 2


@pytest.mark.parametrize("args, error, match", [
    ((np.ones((3, 2)), np.ones(4)), ValueError, "samples"),
    ((np.ones((0, 2)),), ValueError, "no samples"),
    ((np.float64(1.0),), ValueError, "sample axis"),
    ((np.array(["a", "b"]),), TypeError, "must hold real numbers"),
    (([fg.Var(1.0)],), TypeError, "Vars"),
    ((), TypeError, "at least one"),
])
def test_vmap_bad_batches_are_refused(args, error, match):
    with pytest.raises(error, match=match):
        fg.vmap(lambda *xs: fg.Var(1.0) * 2)(*args)


def test_vmap_bad_options_are_refused():
    with pytest.raises(ValueError, match="reduce"):
        fg.vmap(lambda x: x, reduce="max")
    with pytest.raises(ValueError, match="threads"):
        fg.vmap(lambda x: x, threads=0)
    with pytest.raises(ValueError, match="block"):
        fg.vmap(lambda x: x, block=-1)
    with pytest.raises(TypeError, match="function"):
        fg.vmap(None if False else 5)


def test_the_avx2_kernels_give_the_generic_kernels_bits():
    """Both builds of the replay kernels on the same tape: the same values and gradients, bit for bit."""
    from fastgrad import _replay, tracing
    if not tracing._has_avx2():
        pytest.skip("this CPU has no AVX2: only the generic kernels run here")
    from fastgrad import _replay_avx2
    model, params, X, y, loss_fn = moons_model(5)
    one = per_sample(model)
    rng = np.random.default_rng(1)
    Xb = np.concatenate([rng.normal(size=(300, 2)), np.sign(rng.normal(size=(300, 1)))], axis=1)
    tapes = {}
    for name, fn, args in (("whole", loss_fn, (X, y)), ("sample", lambda x, t: one(x, t)[0], (X[0], y[0]))):
        src = fg.compile(fn).tape(*args)
        tapes[name] = [m.Tape(src.op, src.a, src.b, src.k, src.operands, src.external, src.nargs, src.outputs)
                       for m in (_replay, _replay_avx2)]
    x = np.concatenate([X.ravel(), y])
    results = []
    for k in range(2):
        for p in params:
            p.grad = 0.0
        v = tapes["whole"][k].run(x)
        losses = tapes["sample"][k].run_batch(Xb, True, 1.0 / 300, 64, 2)
        results.append((v, losses.tolist(), [p.grad for p in params]))
    assert results[0] == results[1]


# ---------------------------------------------------------------------------------------------------------
# random graphs: compiled against eager, bit for bit
# ---------------------------------------------------------------------------------------------------------

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

EDGES = (0.0, -0.0, 1.0, -1.0, 2.0, 0.5, math.inf, -math.inf, math.nan, 1e308, 5e-324)
numbers = st.one_of(st.sampled_from(EDGES), st.floats(-3.0, 3.0), st.floats())


@st.composite
def programs(draw):
    """(n_args, n_params, instructions): each instruction an op row, operand indices into the nodes made so
    far (args, then params, then earlier instructions: shared subexpressions), and a constant."""
    n_args = draw(st.integers(1, 3))
    n_params = draw(st.integers(0, 2))
    code = []
    for j in range(draw(st.integers(1, 12))):
        op = draw(st.sampled_from(DIFFERENTIABLE))
        avail = n_args + n_params + j
        operands = draw(st.lists(st.integers(0, avail - 1), min_size=n_operands(op), max_size=n_operands(op)))
        k = draw(st.sampled_from(op.k_values)) if op.k_values else draw(numbers)
        code.append((op, operands, k))
    return n_args, n_params, code


def run_program(program, args, params):
    n_args, n_params, code = program
    nodes = list(args) + list(params)
    for op, operands, k in code:
        nodes.append(call(fg, op, [nodes[i] for i in operands], k))
    return fg.sum(nodes[n_args + n_params:])      # every instruction reaches the output


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(programs(), st.lists(st.lists(numbers, min_size=5, max_size=5), min_size=1, max_size=3),
       st.lists(numbers, min_size=2, max_size=2))
def test_random_graphs_compiled_equal_eager_bit_for_bit(program, points, param_values):
    n_args, n_params, code = program
    params = [fg.Var(v) for v in param_values[:n_params]]
    compiled = fg.compile(lambda *xs: run_program(program, xs, params))
    for point in points:
        args = point[:n_args]
        for p in params:
            p.grad = 0.0
        loss = run_program(program, [fg.Var(a) for a in args], params)
        loss.backward()
        want = [loss.data, *[p.grad for p in params]]
        for p in params:
            p.grad = 0.0
        got = [compiled(*args).data, *[p.grad for p in params]]
        assert all(same(a, b) for a, b in zip(got, want)), (got, want)
    assert compiled.traces == 1


@settings(max_examples=100, deadline=None, derandomize=True, database=None)
@given(programs(), st.lists(st.lists(numbers, min_size=3, max_size=3), min_size=1, max_size=9),
       st.lists(numbers, min_size=2, max_size=2))
def test_random_graphs_batched_values_equal_eager_per_sample(program, points, param_values):
    """Per sample, fg.vmap's values are eager mode's bits; the summed gradient matches eager to rounding."""
    n_args, n_params, code = program
    params = [fg.Var(v) for v in param_values[:n_params]]
    batch = np.array([p[:n_args] for p in points])
    losses = []
    for p in params:
        p.grad = 0.0
    for row in batch:
        loss = run_program(program, [fg.Var(float(a)) for a in row], params)
        loss.backward()
        losses.append(loss.data)
    want = [p.grad for p in params]
    for p in params:
        p.grad = 0.0
    def one(*xs):
        out = run_program(program, xs, params)
        return out, [out]

    f = fg.vmap(one, reduce="sum", block=4)
    total, (per_sample,) = f(*[batch[:, j] for j in range(n_args)])
    assert all(same(a, b) for a, b in zip(per_sample.tolist(), losses))
    for a, b in zip([p.grad for p in params], want):
        if math.isfinite(a) and math.isfinite(b):
            assert a == pytest.approx(b, rel=1e-12, abs=1e-300)
        else:       # an inf or nan: the other order of the same sum gives an inf or nan too
            assert not math.isfinite(a) and not math.isfinite(b), (a, b)


def test_sum_in_order_is_the_python_loop_bit_for_bit():
    """fg.vmap totals its per-sample losses with _replay.sum_in_order: 0.0 + x[0] + x[1] + ... in order,
    the bits of that loop over Python floats (values over many binades, so another order would differ)."""
    from fastgrad import _replay
    rng = np.random.default_rng(3)
    x = rng.standard_normal(5000) * np.exp2(rng.integers(-40, 40, size=5000))
    total = 0.0
    for v in x.tolist():
        total += v
    assert _replay.sum_in_order(x) == total
    assert _replay.sum_in_order(x) != math.fsum(x.tolist())       # the order matters on these values
    assert math.copysign(1.0, _replay.sum_in_order(np.array([-0.0]))) == 1.0
    assert _replay.sum_in_order(np.empty(0)) == 0.0
    with pytest.raises(ValueError):
        _replay.sum_in_order(np.zeros((2, 2)))
    with pytest.raises(TypeError):
        _replay.sum_in_order(None)
