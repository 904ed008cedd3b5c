"""Cost of forward mode and Hessians relative to one reverse sweep (issue 4's targets).

    python benchmarks/bench_transforms.py [--quick]

Prints a Markdown table; every ratio comes from the timings of one run (best of --repeat runs each):
- the tangent sweep (`fg.jvp`) on a 10^6-node tape vs one reverse sweep on the same tape (target <= 2x);
- `fg.hessian` of a function of 10 inputs with a 10^4-node graph vs one `fg.grad` (target <= 30x).
"""
import argparse
import platform
import sys
import time

import numpy as np

import fastgrad as fg
from fastgrad import _engine
from fastgrad.inspection import stats
from fastgrad.transforms import grad, hessian, jvp


def best(fn, repeat):
    """Fastest of `repeat` timed calls (seconds) and the last result."""
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times), result


def best_pair(fn_a, fn_b, repeat):
    """Fastest times of two calls measured alternately (so machine load hits both alike), and results."""
    ta, tb, ra, rb = [], [], None, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        ra = fn_a()
        t1 = time.perf_counter()
        rb = fn_b()
        t2 = time.perf_counter()
        ta.append(t1 - t0)
        tb.append(t2 - t1)
    return min(ta), min(tb), ra, rb


def chain(x, nodes):
    """A chain of about `nodes` nodes (sin, mul by constant, add): y_{k+1} = sin(0.5 y_k) + x."""
    y = x
    for _ in range(nodes // 3):
        y = (y * 0.5).sin() + x
    return y


def mixer(*xs, nodes=10_000):
    """A scalar function of len(xs) inputs with about `nodes` nodes, every input used throughout."""
    acc = xs[0]
    n = len(xs)
    for k in range(nodes // 6):
        xi = xs[k % n]
        acc = fg.tanh(acc * xi + 0.1) * 0.9 + xi * 0.01
    return acc


def fmt(seconds):
    return f"{seconds * 1e3:.2f} ms" if seconds < 1 else f"{seconds:.2f} s"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tenfold smaller graphs (a smoke run)")
    parser.add_argument("--repeat", type=int, default=15, help="timed runs per measurement (best is kept)")
    args = parser.parse_args(argv)
    scale = 10 if args.quick else 1
    rows = []

    # --- forward mode vs reverse mode on one 10^6-node tape --------------------------------------------
    x = fg.Var(0.3)
    build, y = best(lambda: chain(x, 1_000_000 // scale), 1)
    n_nodes = stats(y).nodes
    t_rev, t_fwd, g_rev, g_fwd = best_pair(lambda: _engine.grad(y, [x]), lambda: _engine.jvp([y], [x], [1.0]),
                                           args.repeat)
    t_bwd, _ = best(lambda: y.backward(), args.repeat)
    assert abs(g_rev[0] - g_fwd[0]) <= 1e-9 * max(1.0, abs(g_rev[0])), (g_rev[0], g_fwd[0])
    rows.append((f"tangent sweep (_engine.jvp, as fg.jvp runs it) on a {n_nodes:,}-node tape", t_fwd,
                 f"one reverse sweep: {fmt(t_rev)}", t_fwd / t_rev, "<= 2"))
    rows.append(("  (y.backward() on the same tape, for reference)", t_bwd,
                 f"one reverse sweep: {fmt(t_rev)}", t_bwd / t_rev, ""))
    x0 = 0.3
    def f_chain(v):
        return chain(v, 1_000_000 // scale)

    t_grad_e2e, t_jvp_e2e, _, _ = best_pair(lambda: grad(f_chain)(x0), lambda: jvp(f_chain, (x0,), (1.0,)), 3)
    rows.append(("fg.jvp(f) end to end (records the tape, then sweeps)", t_jvp_e2e,
                 f"fg.grad(f): {fmt(t_grad_e2e)}", t_jvp_e2e / t_grad_e2e, ""))

    # --- Hessian of 10 inputs on a 10^4-node graph vs one gradient ---------------------------------------
    xs0 = [0.1 * (k + 1) for k in range(10)]
    argnums = tuple(range(10))
    def f(*xs):
        return mixer(*xs, nodes=10_000 // scale)

    h_nodes = stats(f(*[fg.Var(v) for v in xs0])).nodes
    t_grad, t_hess, _, H = best_pair(lambda: grad(f, argnums)(*xs0), lambda: hessian(f, argnums)(*xs0),
                                     args.repeat)
    H = np.array(H)
    assert np.allclose(H, H.T, rtol=1e-8, atol=1e-12)
    rows.append((f"fg.hessian, 10 inputs, {h_nodes:,}-node graph", t_hess, f"one fg.grad: {fmt(t_grad)}",
                 t_hess / t_grad, "<= 30"))
    leaves = [fg.Var(v) for v in xs0]
    out = f(*leaves)
    t_sweep_g, t_sweep_h, _, _ = best_pair(lambda: _engine.grad(out, leaves),
                                           lambda: _engine.hvp(out, leaves, np.eye(10)), args.repeat)
    rows.append(("  forward-over-reverse sweep alone (10 directions)", t_sweep_h,
                 f"one reverse sweep: {fmt(t_sweep_g)}", t_sweep_h / t_sweep_g, ""))

    print("| measurement | time | baseline | ratio | target |")
    print("|---|---:|---|---:|---|")
    for name, t, base, ratio, target in rows:
        verdict = ""
        if target:
            verdict = f"{target} {'(met)' if ratio <= float(target.split()[-1]) else '(MISSED)'}"
        print(f"| {name} | {fmt(t)} | {base} | {ratio:.2f}x | {verdict} |")
    print(f"\nPython {platform.python_version()} on {platform.machine()}; best of {args.repeat} runs, "
          f"the two sides of each ratio timed alternately (end-to-end rows: best of 3); recording the "
          f"{n_nodes:,}-node tape took {fmt(build)}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
