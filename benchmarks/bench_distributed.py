"""Data parallelism on Ray: 2 workers against 1 on an epoch of the digits model (issue 12's targets).

    python benchmarks/bench_distributed.py [--hidden 128] [--batch 1348 256] [--epochs 5] [--repeat 3]
    python benchmarks/bench_distributed.py --quick      # one block of 2 epochs, batch 1348

Needs ray and scikit-learn (pip install 'fastgrad[distributed,data]'). Starts a local Ray with 2 CPUs and no
dashboard. For each batch size: one epoch of warm-up (the trace), then ``--repeat`` blocks of ``--epochs``
epochs with 1 worker and with 2 (fg.vmap on one thread in each worker), alternately; the time per epoch of
the best block of each counts. Also timed: the same epochs in this process without Ray (fg.vmap, one
thread), and the parts of a Ray step: gathering the parameters, ray.put of the parameter array, the wait for
the workers (of which the slowest worker's own compute), the reduction, the optimizer step.

Last, the paper model of docs/scaling.md: time per step = compute / N + a ring all-reduce of 8·P bytes,
with the compute per parameter per sample measured here (one thread, fg.vmap forward and backward), for
P = 10^3 .. 10^7 and N = 1 .. 64 at 10 and 100 Gb/s; and the same with this machine's measured fixed Ray
overhead per step added. Prints Markdown tables; every ratio comes from one run.
"""
import argparse
import math
import os
import pickle
import platform
import sys
import time

import numpy as np

import fastgrad as fg


def epoch_time(trainer, X, T, batch, epochs):
    """Seconds per epoch over `epochs` more epochs, and the mean step timing."""
    trainer.reset_timing()
    done = trainer.step_count // math.ceil(len(X) / batch)
    t0 = time.perf_counter()
    trainer.fit(X, T, batch_size=batch, epochs=done + epochs)
    return (time.perf_counter() - t0) / epochs, trainer.timing()


def local_epoch(model, X, T, batch, loss, epochs):
    """Seconds per epoch in this process: fg.vmap (one thread) per batch, Adam step."""
    opt = fg.optim.Adam(model.parameters(), lr=0.01)
    batched = fg.vmap(lambda x, t: loss(model, x, t), reduce="mean", threads=1)
    batched(X[:batch], T[:batch])        # trace
    t0 = time.perf_counter()
    for _ in range(epochs):
        for k in range(0, len(X), batch):
            opt.zero_grad()
            batched(X[k:k + batch], T[k:k + batch])
            opt.step()
    return (time.perf_counter() - t0) / epochs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, nargs="+", default=[128])
    parser.add_argument("--batch", type=int, nargs="+", default=[1348, 256])
    parser.add_argument("--epochs", type=int, default=5, help="epochs per timed block")
    parser.add_argument("--repeat", type=int, default=3, help="timed blocks (the best counts)")
    parser.add_argument("--quick", action="store_true", help="one block of 2 epochs, batch 1348 only")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.repeat, args.batch = 2, 1, [1348]

    import ray

    from fastgrad.distributed import DataParallel
    from fastgrad.distributed.digits import digits_loss, digits_model, load_digits_split

    X, T, _, _ = load_digits_split()
    hidden = tuple(args.hidden)
    params = digits_model(hidden).num_parameters()
    root = os.path.dirname(os.path.dirname(os.path.abspath(fg.__file__)))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"PYTHONPATH": root}})
    print(f"digits: {len(X)} training rows, MLP(64, {[*hidden, 10]}): {params} parameters; "
          f"{platform.python_version()}, ray {ray.__version__}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.2f}", file=sys.stderr)

    rows, parts = [], []
    for batch in args.batch:
        steps = math.ceil(len(X) / batch)
        # NOTE: both trainers live at once, to alternate their epochs; Ray's CPU reservation is bookkeeping
        # (no pinning), so half a CPU each lets the 3 actors coexist on 2 CPUs. Only one trainer computes
        # at a time.
        trainers = {n: DataParallel(lambda: digits_model(hidden), digits_loss,
                                    lambda p: fg.optim.Adam(p, lr=0.01), workers=n, cpus_per_worker=0.5)
                    for n in (1, 2)}
        for trainer in trainers.values():
            trainer.fit(X, T, batch_size=batch, epochs=1)       # warm-up: actors, trace
        times = {1: [], 2: []}
        timing = {}
        for _ in range(args.repeat):
            for n, trainer in trainers.items():               # alternate, so load hits both alike
                t, step_timing = epoch_time(trainer, X, T, batch, args.epochs)
                if not times[n] or t < min(times[n]):
                    timing[n] = step_timing
                times[n].append(t)
        for trainer in trainers.values():
            trainer.shutdown()
        local = min(local_epoch(digits_model(hidden), X, T, batch, digits_loss, args.epochs)
                    for _ in range(args.repeat))
        best = {n: min(t) for n, t in times.items()}
        rows.append((batch, steps, local, best[1], best[2], best[1] / best[2]))
        for n in (1, 2):
            parts.append((batch, n, timing[n]))

    flat = np.zeros(params)
    t0 = time.perf_counter()
    for _ in range(100):
        pickle.dumps(flat, protocol=5)
    pickled = (time.perf_counter() - t0) / 100

    print(f"\nSeconds per epoch of the digits model ({len(X)} rows, {params} parameters, Adam), best of "
          f"{args.repeat} blocks of {args.epochs} epochs; 2 CPUs:\n")
    print("| batch | steps/epoch | one process, no Ray (s) | Ray, 1 worker (s) | Ray, 2 workers (s) "
          "| 2 workers vs 1 |")
    print("|---:|---:|---:|---:|---:|---:|")
    for batch, steps, local, one, two, ratio in rows:
        print(f"| {batch} | {steps} | {local:.4f} | {one:.4f} | {two:.4f} | {ratio:.2f}x |")
    print(f"\nMean per step, milliseconds (the best block); pickling the {params}-parameter array alone: "
          f"{pickled * 1e3:.3f} ms:\n")
    print("| batch | workers | gather params | ray.put | wait (all results) | of which compute "
          "| reduce | optimizer | step total | overhead (total - compute) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for batch, n, t in parts:
        print(f"| {batch} | {n} | {t['gather'] * 1e3:.3f} | {t['put'] * 1e3:.3f} | {t['wait'] * 1e3:.3f} | "
              f"{t['compute'] * 1e3:.3f} | {t['reduce'] * 1e3:.3f} | {t['apply'] * 1e3:.3f} | "
              f"{t['total'] * 1e3:.3f} | {t['overhead'] * 1e3:.3f} |")
    ray.shutdown()

    # ---- the paper model ----
    model = digits_model(hidden)
    batched = fg.vmap(lambda x, t: digits_loss(model, x, t), reduce="sum", threads=1)
    batched(X, T)
    per = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        batched(X, T)
        per.append((time.perf_counter() - t0) / (len(X) * params))
    c = min(per)
    fixed = min(t["overhead"] for _, n, t in parts if n == 2)
    print(paper_model(c, fixed))


def paper_model(c, fixed, batch=1024):
    """Markdown tables of the model T(N) = c·P·B/N + 2(N-1)/N · 8P/bandwidth (+ fixed)."""
    Ns = (1, 2, 4, 8, 16, 32, 64)
    out = [f"\nPaper model: global batch B = {batch} samples, compute c = {c * 1e9:.3f} ns per parameter per "
           f"sample (measured: one thread, fg.vmap), ring all-reduce 2(N-1)/N · 8P bytes per worker link. "
           "Cells: ms per step (speedup over N = 1).\n"]
    with_ray = f" + the measured fixed Ray overhead per step, {fixed * 1e3:.2f} ms (also at N = 1)"
    for title, extra in (("", 0.0), (with_ray, fixed)):
        for gbps in (10, 100):
            bandwidth = gbps * 1e9 / 8
            out.append(f"\n{gbps} Gb/s{title}:\n")
            out.append("| P | " + " | ".join(f"N = {n}" for n in Ns) + " |")
            out.append("|---:|" + "---:|" * len(Ns))
            for e in range(3, 8):
                P = 10 ** e
                t1 = c * P * batch + extra
                cells = []
                for n in Ns:
                    t = c * P * batch / n + 2 * (n - 1) / n * 8 * P / bandwidth + extra
                    cells.append(f"{t * 1e3:,.3g} ({t1 / t:.1f}x)")
                out.append(f"| 10^{e} | " + " | ".join(cells) + " |")
    return "\n".join(out)


if __name__ == "__main__":
    main()
