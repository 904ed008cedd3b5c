"""Tensor ops: the engine's fast paths against tensor.py's general path and hand-written NumPy (issue 10).

    python benchmarks/bench_tensor.py [--ops 2000] [--repeat 7]

Two measurements, each run alternately with its rivals (so machine load hits all alike), best of --repeat,
GC on, `gc.collect()` before each run:
- a chain of --ops elementwise multiplies `y = y * w` of 4x4 float64 arrays, then `y.sum().backward()`:
  fastgrad's fast path, the same chain through tensor.py's general path (what float32 or an unusual broadcast
  takes), and the chain hand-written in NumPy (forward keeping every intermediate, backward by hand); the
  same with `y = y @ w` (2-D matmul);
- one two-moons training step on 100 points (zero_grad, forward, cross-entropy, backward, Adam step) of an
  MLP 2-16-16-2: `nn.MLP(..., tensor=True)` on the batch, and the scalar `nn.MLP` on a list of samples.
Prints Markdown tables; every ratio comes from one run. The gradients of each chain are checked against the
NumPy ones first.
"""
import argparse
import gc
import platform
import random
import sys
import time

import numpy as np

import fastgrad as fg
from fastgrad import tensor as T
from fastgrad.app.op_overhead import autodiff_chain, numpy_chain, op_inputs
from fastgrad.data import make_moons
from fastgrad.tensor_functional import cross_entropy


# tensor.py's general path for each chained op (what float32 or an unusual broadcast takes)
GENERAL = {"mul": lambda y, w: T._binary("mul", y, w), "matmul": T._matmul}


def chains(n):
    """{op: {name: function returning d out / d B}} for chains of n links on 4x4 arrays: the bench's chains
    (fastgrad.app.op_overhead: the same inputs, the fast-path chain and the NumPy one written by hand), and
    the same chain through tensor.py's general path."""
    out = {}
    for op, general in GENERAL.items():
        a, b = op_inputs(op)

        def fast(op=op, a=a, b=b):
            B = fg.Tensor(b, requires_grad=True)
            autodiff_chain(op, fg.Tensor(a, requires_grad=True), B, n)
            return B.grad

        def slow(a=a, b=b, step=general):
            A, B = fg.Tensor(a, requires_grad=True), fg.Tensor(b, requires_grad=True)
            y = A
            for _ in range(n):
                y = step(y, B)
            T._sum(y, None, False, False).backward()
            return B.grad

        def by_hand(op=op, a=a, b=b):
            return numpy_chain(op, a, b, n)[2]

        out[op] = {"fastgrad, fast path": fast, "fastgrad, general path": slow,
                   "NumPy, hand-written": by_hand}
    return out


def moons_steps():
    """{name: one training step} of the two-moons MLP, on Tensors and on scalar Vars."""
    X, y = make_moons(100, noise=0.1, random_state=0)
    xs, ys = X.tolist(), y.tolist()
    batch = fg.nn.MLP(2, [16, 16, 2], rng=random.Random(0), init="pytorch", tensor=True)
    scalar = fg.nn.MLP(2, [16, 16, 2], rng=random.Random(0), init="pytorch")
    opt_b, opt_s = fg.optim.Adam(batch.parameters(), lr=1e-2), fg.optim.Adam(scalar.parameters(), lr=1e-2)

    def tensor_step():
        opt_b.zero_grad()
        loss = cross_entropy(batch(X), y)
        loss.backward()
        opt_b.step()
        return loss.item()

    def scalar_step():
        opt_s.zero_grad()
        loss = fg.nn.functional.cross_entropy([scalar(x) for x in xs], ys)
        loss.backward()
        opt_s.step()
        return loss.data

    return {"`nn.MLP(..., tensor=True)`, one batch": tensor_step, "`nn.MLP`, a list of samples": scalar_step}


def best_of(fns, repeat):
    runs = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            gc.collect()
            t0 = time.perf_counter()
            fn()
            runs[name].append(time.perf_counter() - t0)
    return {name: min(times) for name, times in runs.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)
    print(f"# fastgrad {fg.__version__}, Python {platform.python_version()}, NumPy {np.__version__}, "
          f"best of {args.repeat}, GC on\n")
    for op, fns in chains(args.ops).items():
        grads = [fn() for fn in fns.values()]
        if not all(np.allclose(g, grads[-1], rtol=1e-10) for g in grads):
            sys.exit(f"the {op} chains' gradients differ")
        best = best_of(fns, args.repeat)
        base = best["NumPy, hand-written"]
        sign = "*" if op == "mul" else "@"
        print(f"A chain of {args.ops} `y = y {sign} w` on 4x4 float64, forward + backward:\n")
        print("| implementation | µs per op | vs NumPy |")
        print("|---|---:|---:|")
        for name, seconds in best.items():
            print(f"| {name} | {seconds / args.ops * 1e6:.2f} | {seconds / base:.2f}× |")
        print()
    best = best_of(moons_steps(), args.repeat)
    base = best["`nn.MLP(..., tensor=True)`, one batch"]
    print("One two-moons step, 100 points, MLP 2-16-16-2, cross-entropy, Adam:\n")
    print("| model | ms per step | vs Tensor |")
    print("|---|---:|---:|")
    for name, seconds in best.items():
        print(f"| {name} | {seconds * 1e3:.3f} | {seconds / base:.1f}× |")


if __name__ == "__main__":
    main()
