"""Threads and re-entrancy: a sweep owns its marks and scratch (docs/semantics.md, 6; docs/engine.md, Walks).

Threads that each train their own model share only the engine's arena. Every number they compute must be
exactly what the same work gives single-threaded, however the interpreter interleaves them; and inspecting
a graph (fg.stats, fg.graph_table, fg.jvp) from inside a custom op's backward rule must not disturb the
sweep that called the rule.
"""
import random
import sys
import threading

import pytest

import fastgrad as fg

# (p - t)^2 as one custom node: the engine calls its Python backward rule in the middle of the sweep
squared_error = fg.custom_op(lambda p, t: (p - t) ** 2, lambda g, p, t: (2 * (p - t) * g, -2 * (p - t) * g),
                             name="squared_error")


def _train(seed, steps, inspect_every=7):
    """Train a tiny model of its own; return every number it produced (per-step losses, what the inspection
    calls saw, the final parameters) and in how many steps backward() was refused."""
    rng = random.Random(seed)
    model = fg.nn.MLP(2, [3, 1], activation="tanh", rng=rng)
    opt = fg.optim.Adam(model.parameters(), lr=0.02)
    points = [((rng.uniform(-1, 1), rng.uniform(-1, 1)), rng.choice((-1.0, 1.0))) for _ in range(3)]
    losses, seen, refused = [], [], 0
    for step in range(steps):
        opt.zero_grad()
        loss = fg.sum([squared_error(model(x), t) for x, t in points])
        if step % inspect_every == 0:
            s = fg.stats(loss)
            # NOTE: not the grad column: nn's shared bias constant (a leaf in every model's graph)
            # accumulates gradients from every model, so its grad depends on what other threads did.
            rows = [(r.value, r.created, r.local) for r in fg.graph_table(loss)]
            value, tangent = fg.jvp(lambda a: model([a, 0.5]), (points[0][0][0],), (1.0,))
            # repr: exact for floats (shortest round trip), and equal for the NaN that graph_table shows as
            # the local derivative of a custom op (NaN != NaN would make equal runs look different)
            seen.append(repr((s.nodes, s.edges, s.backward_flops, rows, value, tangent)))
        refused += _backward(loss)
        opt.step()
        losses.append(loss.data)
    return losses, seen, [p.data for p in model.parameters()], refused


REFUSAL = "backward() cannot run inside a custom op's backward"


def _backward(loss):
    """loss.backward(); returns 1 if the engine refused it (at least once) because ANOTHER thread was inside
    a custom op's rule, else 0. A refusal fails the test; retrying only lets it count the refused steps and
    still compare the numbers (the engine refuses before the sweep writes anything)."""
    refused = 0
    while True:
        try:
            loss.backward()
            return refused
        except RuntimeError as e:
            if REFUSAL not in str(e):
                raise
            refused = 1


def _differences(expected, got):
    """A short account of where `got` differs from `expected` (both results of _train), or ''."""
    (losses0, seen0, params0, _), (losses1, seen1, params1, refused) = expected, got
    wrong = [i for i, (a, b) in enumerate(zip(losses0, losses1)) if a != b]
    problems = []
    if refused:
        problems.append(f"backward() refused in {refused} of {len(losses0)} steps (RuntimeError: {REFUSAL})")
    if wrong:
        problems.append(f"{len(wrong)} of {len(losses0)} losses differ (first at step {wrong[0]}: "
                        f"{losses1[wrong[0]]!r} instead of {losses0[wrong[0]]!r})")
    wrong_seen = sum(a != b for a, b in zip(seen0, seen1))
    if wrong_seen:
        problems.append(f"{wrong_seen} of {len(seen0)} inspections differ")
    if params0 != params1:
        problems.append("final parameters differ")
    return ", ".join(problems)


def _run_threads(steps, nthreads=4):
    """_train(seed, steps) for seeds 0..nthreads-1, one thread each, switching as often as possible."""
    results, errors = [None] * nthreads, [None] * nthreads
    start = threading.Barrier(nthreads)

    def work(k):
        start.wait()
        try:
            results[k] = _train(k, steps)
        except Exception as e:  # reported by the test, beside the other threads' results
            errors[k] = e

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=work, args=(k,)) for k in range(nthreads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    return results, errors


def _check_threads_match_single_threaded(steps):
    expected = [_train(k, steps) for k in range(4)]
    results, errors = _run_threads(steps)
    assert all(refused == 0 for *_, refused in expected)
    report = []
    for k, (want, got, err) in enumerate(zip(expected, results, errors)):
        if err is not None:
            report.append(f"thread {k}: {type(err).__name__}: {err}")
        elif _differences(want, got):
            report.append(f"thread {k}: {_differences(want, got)}")
    assert not report, "\n".join(report)


def test_threads_training_their_own_models_compute_exactly_what_one_thread_does():
    _check_threads_match_single_threaded(steps=500)


@pytest.mark.slow
def test_ten_thousand_steps_in_four_threads_compute_exactly_what_one_thread_does():
    _check_threads_match_single_threaded(steps=10_000)


def test_backward_in_one_thread_while_another_runs_a_custom_rule():
    # Thread A stops inside its custom op's backward rule until thread B has run a whole backward() of its
    # own, unrelated graph: B must neither be refused nor disturb A.
    inside, done = threading.Event(), threading.Event()
    errors = []

    def held_rule(g, v):
        inside.set()
        done.wait(timeout=10)
        return 3 * g

    def thread_a():
        try:
            x = fg.Var(2.0)
            y = fg.custom_op(lambda v: 3 * v, held_rule)(x * 2.0) * x
            y.backward()
            results["a"] = x.grad
        except Exception as e:
            errors.append(("A", e))
            inside.set()

    def thread_b():
        inside.wait(timeout=10)
        try:
            w = fg.Var(3.0)
            z = squared_error(w * w, 1.0) + w
            z.backward()
            results["b"] = w.grad
        except Exception as e:
            errors.append(("B", e))
        finally:
            done.set()

    results = {}
    threads = [threading.Thread(target=thread_a), threading.Thread(target=thread_b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    # y = 3 (2x) x = 6 x^2, dy/dx = 12 x = 24;  z = (w^2 - 1)^2 + w, dz/dw = 4 w (w^2 - 1) + 1 = 97
    assert results == {"a": 24.0, "b": 97.0}


def _inspect_stats(u):
    fg.stats(u)


def _inspect_graph_table(u):
    fg.graph_table(u)


def _inspect_jvp(u):
    fg.jvp(lambda t: t * u, (1.0,), (1.0,))


@pytest.mark.parametrize("inspect", [_inspect_stats, _inspect_graph_table, _inspect_jvp],
                         ids=["stats", "graph_table", "jvp"])
def test_inspecting_a_graph_inside_a_custom_backward_leaves_the_gradient_alone(inspect):
    x = fg.Var(2.0)
    u = x * 2.0

    def rule(g, v):
        inspect(u)
        return 3 * g

    op = fg.custom_op(lambda v: 3 * v, rule)
    y = op(u) + u * 5.0
    y.backward()
    assert x.grad == 16.0  # y = 3u + 5u = 8u = 16x


@pytest.mark.parametrize("inspect", [_inspect_stats, _inspect_graph_table, _inspect_jvp],
                         ids=["stats", "graph_table", "jvp"])
def test_inspecting_a_graph_inside_a_custom_rule_under_fg_grad_leaves_the_gradient_alone(inspect):
    def f(x):
        u = x * 2.0

        def rule(g, v):
            inspect(u)
            return 3 * g

        return fg.custom_op(lambda v: 3 * v, rule)(u) + u * 5.0

    assert fg.grad(f)(2.0) == 16.0
