"""Scoring a data set without a graph (`fg.no_grad`) vs a training epoch on it (issue 11's measurement).

    python benchmarks/bench_no_grad.py [--points 1000] [--repeat 7]

Model: micrograd's MLP(2, [16, 16, 1]) on the two-moons data. Three timings of the same points, measured
alternately (so machine load hits all alike), best of --repeat, GC on throughout (as users run it):
- a training epoch: per-sample forward, hinge loss, backward, one SGD step (one batch of all points);
- scoring with the graph: per-sample forward with recording on, reading `.data`;
- scoring in `fg.no_grad()`: the same, nothing recorded.
Prints a Markdown table; every ratio comes from one run. Also checks that both scorings agree exactly.
"""
import argparse
import platform
import random
import sys
import time

import fastgrad as fg
from fastgrad.data import make_moons


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)

    X, y = make_moons(args.points, noise=0.1, random_state=0)
    xs = [list(map(float, row)) for row in X]
    ys = [1.0 if t > 0 else -1.0 for t in y]
    model = fg.nn.MLP(2, [16, 16, 1], rng=random.Random(0))
    opt = fg.optim.SGD(model.parameters(), lr=1e-3)

    def epoch():
        opt.zero_grad()
        scores = [model(x) for x in xs]
        loss = fg.nn.functional.hinge_loss(scores, ys)
        loss.backward()
        opt.step()

    def score_graph():
        return [model(x).data for x in xs]

    def score_no_grad():
        with fg.no_grad():
            return [model(x).data for x in xs]

    runs = {"epoch": [], "graph": [], "no_grad": []}
    fns = {"epoch": epoch, "graph": score_graph, "no_grad": score_no_grad}
    results = {}
    for _ in range(args.repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            results[name] = fn()
            runs[name].append(time.perf_counter() - t0)
    if results["graph"] != results["no_grad"]:
        sys.exit("scores with and without the graph differ")
    best = {k: min(v) for k, v in runs.items()}
    print(f"# fastgrad {fg.__version__}, Python {platform.python_version()}, {args.points} points, "
          f"MLP(2, [16, 16, 1]), best of {args.repeat}, GC on\n")
    print("| what | time per point | vs training epoch |")
    print("|---|---:|---:|")
    for name, label in (("epoch", "training epoch (forward, loss, backward, SGD step)"),
                        ("graph", "scoring, recording the graph"),
                        ("no_grad", "scoring in `fg.no_grad()`")):
        print(f"| {label} | {best[name] / args.points * 1e6:.2f} µs | {best[name] / best['epoch']:.2f}× |")


if __name__ == "__main__":
    main()
