"""`python -m fastgrad bench`: the engine workloads (`fastgrad.app.workloads`), the compiled tapes' replay
and threads (the same module), the two-moons training step on every backend (`fastgrad.app.backends`), the
Tensor per-op overhead (`fastgrad.app.op_overhead`) and the digits epoch (`fastgrad.app.digits_bench`), as
Markdown tables; optionally JSON rows and a plot."""
from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, TextIO

import fastgrad
from fastgrad.app import workloads
from fastgrad.app.threads import one_blas_thread as _one_blas_thread
from fastgrad.tracing import usable_cores
from fastgrad.app.backends import (
    COMPILED_NAME,
    JAX_NAME,
    MOONS_WORKLOAD,
    NUMPY_NAME,
    REFERENCE_NAME,
    TENSOR_NAME,
    TORCH_NAME,
    VMAP_NAME,
    initial_weights,
    moons,
    moons_step_implementations,
    step_graph_nodes,
)


def bench_moons_step(quick: bool = False, seed: int = 0, progress: Callable[[str], None] | None = None
                     ) -> list[dict[str, Any]]:
    """Time of one training step (zero_grad, forward over the 100 points, backward, update, freeing the
    graph) for each implementation: the median of the timed steps ("ms"; "best_ms" too), its speedup over the
    pure-Python reference ("vs_reference") and over the hand-written NumPy step ("vs_numpy"), and the nodes of
    one step's graph ("nodes", counted on a warm-up step; a compiled backend's: its tape's; None for NumPy and
    JAX, which build none).

    GC policy (`fastgrad.app.workloads.GC_POLICY`): the cyclic GC stays on. The "gc_off_" keys time the same
    steps, on a fresh backend, with it off; then micrograd's graphs (reference cycles) are freed by the
    untimed collections between steps, not in its times.

    NOTE: the median, not the best: a pure-Python step allocates ~65,000 objects and pays for the cyclic
    GC in some steps but not others; the median charges each implementation its typical step.
    NOTE: torch runs on one intra-op thread, as every other implementation here does (with its default of
    one thread per core, a shared or loaded machine made its step 10-100x slower and its time meaningless);
    so does fg.vmap (threads=1; 100 points are one block of its 128 anyway) and, when this process has not
    imported jax yet, XLA (its Eigen thread pool off).
    NOTE: fg.compile traces on the first warm-up step, jax.jit compiles there: neither is in the times.
    NOTE: the fast implementations (cost class 0, under ~2 ms a step) take turns: ROUNDS rounds, each timing
    a block of steps of every one of them, so a change in the machine's load (it is shared) reaches every row
    alike instead of the one row that ran during it. The slower ones take turns among themselves, first, in
    SLOW_ROUNDS rounds.
    """
    X, y = moons(seed)
    weights = initial_weights(2, (16, 16), seed)
    # (warm-up steps, timed steps) per cost class: fast, per-scalar on the engine, pure Python
    plan = [(3, 10), (1, 5), (1, 2)] if quick else [(5, 100), (2, 20), (1, 10)]
    rows, fast, slow = [], [], []
    for name, factory, cost in moons_step_implementations(weights, X, y, 100):
        row: dict[str, Any] = {"workload": MOONS_WORKLOAD, "implementation": name, "repeats": plan[cost][1]}
        rows.append(row)
        (fast if cost == 0 else slow).append((row, factory, cost))
    # NOTE: the slow ones first, before the fast turns import torch and jax: a pure-Python engine under the
    # cyclic GC slows down as the heap grows (in one run with torch imported first, fastgrad.nn came out
    # 640-780x faster than reference.py instead of 170-430x). They take turns too, in fewer rounds: run one
    # after the other, the per-scalar fg.Value row and the reference it is compared with could fall in
    # different spells of this shared machine's speed (its ratio read 45x and 27x within an hour)
    if progress and slow:
        progress("the per-scalar and pure-Python implementations, in turns")
    _time_in_turns([(row, factory, *plan[cost]) for row, factory, cost in slow], 1 if quick else SLOW_ROUNDS)
    if progress and fast:
        progress("the fast implementations, in turns")
    _time_in_turns([(row, factory, *plan[0]) for row, factory, _ in fast], 2 if quick else ROUNDS)
    ref = next(r for r in rows if r["implementation"] == REFERENCE_NAME)
    floor = next((r for r in rows if r["implementation"] == NUMPY_NAME), None)
    for r in rows:
        for prefix in ("", "gc_off_"):
            r[prefix + "vs_reference"] = ref[prefix + "ms"] / r[prefix + "ms"]
            r[prefix + "vs_numpy"] = None if floor is None else floor[prefix + "ms"] / r[prefix + "ms"]
    return rows


def _one_xla_thread() -> None:
    """XLA's CPU backend on one thread, if jax is not imported yet (XLA reads its flags once)."""
    if "jax" not in sys.modules:
        flags = os.environ.get("XLA_FLAGS", "")
        if "xla_cpu_multi_thread_eigen" not in flags:
            os.environ["XLA_FLAGS"] = (flags + " --xla_cpu_multi_thread_eigen=false").strip()


@contextlib.contextmanager
def _one_torch_thread(active: bool) -> Iterator[None]:
    """torch.set_num_threads(1) inside the block (restored after) when `active`."""
    if not active:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


ROUNDS = 10    # rounds of the fast moons implementations' turns (bench_moons_step)
SLOW_ROUNDS = 5    # rounds of the per-scalar and pure-Python implementations' turns


@contextlib.contextmanager
def _threads_for(name: str) -> Iterator[None]:
    """One intra-op thread for torch's and XLA's rows (XLA's flag is read when jax is first imported)."""
    if name.startswith("jax"):
        _one_xla_thread()
    with _one_torch_thread(name.startswith("torch")):
        yield


def _time_in_turns(entries: list[tuple[dict[str, Any], Callable[[], Any], int, int]], rounds: int) -> None:
    """Fill each row with its implementation's median/best step times. ``entries``: (row, factory, warm-up
    steps, timed steps). For the GC on, then off, a fresh backend of each (warmed up), then `rounds` rounds
    in which each, in turn, takes one untimed step and times a block of its `timed steps // rounds` steps."""
    for prefix, gc_enabled in (("", True), ("gc_off_", False)):
        live = []
        for row, factory, warmup, _ in entries:
            with _threads_for(row["implementation"]):
                backend = factory()
                for k in range(warmup):
                    out = backend.train_step()
                    if k == 0 and gc_enabled:
                        row["nodes"] = step_graph_nodes(out[0], backend)
                    del out  # nothing of a step's graph may stay alive into the timed steps
            live.append(backend)
        players = [(backend.train_step, max(1, repeats // rounds),
                    functools.partial(_threads_for, row["implementation"]), None)
                   for (row, _, _, repeats), backend in zip(entries, live)]
        with workloads.gc_policy(gc_enabled):
            times = workloads.time_in_turns(players, rounds, gc_enabled)
        del live, players
        for (row, *_), own in zip(entries, times):
            own.sort()
            row["repeats"] = len(own)
            row[prefix + "ms"] = 1e3 * own[len(own) // 2]
            row[prefix + "best_ms"] = 1e3 * own[0]


def run_bench(quick: bool = False, json_path: str | None = None, plot_path: str | None = None,
              only: str | None = None, out: TextIO | None = None) -> int:
    """`python -m fastgrad bench`: Markdown tables of the engine workloads, of the compiled tapes (replay and
    threads), of the two-moons training step, of the Tensor per-op overhead and of the digits epoch; `only`:
    one of them ("engine", "compiled", "moons", "digits"), or "tensor" for the last two; optionally the rows
    as JSON and a plot."""
    out = out if out is not None else sys.stdout
    if plot_path and importlib.util.find_spec("matplotlib") is None:
        print("error: --plot needs matplotlib, which is not installed: "
              "pip install matplotlib (or pip install 'fastgrad[plot]')", file=sys.stderr)
        return 2
    info = machine_info()
    print(f"fastgrad {info['fastgrad']} bench{' --quick' if quick else ''}, {info['date']}, "
          f"on {info['machine']}", file=out)
    print(f"GC policy, every engine, every table: {workloads.GC_POLICY}.", file=out)
    out.flush()
    engine: list[dict[str, Any]] = []
    compiled: list[dict[str, Any]] = []
    moons: list[dict[str, Any]] = []
    tensor_ops: list[dict[str, Any]] = []
    digits_rows: list[dict[str, Any]] = []
    if only in (None, "engine"):
        _status("engine workloads")
        engine = [dict(r) for r in workloads.run_all(quick=quick)]
        print("\n## Engine workloads\n", file=out)
        print("ns/op (program): time / the ops of the program as written, the same for every engine. "
              "ns/node, bytes/node (own graph): / the nodes of that engine's own graph, leaves and constants "
              "included (counted). Best of repeats.\n", file=out)
        print(workloads.markdown_table(engine), file=out)
    if only in (None, "compiled"):
        _status("compiled tapes")
        compiled = workloads.run_compiled(quick=quick)
        print("\n## Compiled tapes: replay and threads\n", file=out)
        print("fg.compile's replay (forward and backward in one C call) per node of its tape, against eager "
              "mode on the same graph; fg.vmap on two threads against one (this machine's usable cores: "
              f"{usable_cores()}), the two taking turns in rounds of consecutive calls, as the moons steps "
              "do. Best of repeats; tracing untimed.\n", file=out)
        print(workloads.compiled_markdown_table(compiled), file=out)
        print("\n" + "\n".join(compiled_targets(compiled)), file=out)
        out.flush()
    if only in (None, "moons"):
        with _one_blas_thread():
            moons = bench_moons_step(quick=quick, progress=lambda name: _status(f"moons step: {name}"))
        _status("")
        print(f"\n## Training step: {MOONS_WORKLOAD}\n", file=out)
        print("zero_grad + forward over the 100 points + backward + update (+ freeing the graph); "
              "median of the timed steps; the fast implementations take turns, in rounds of a few steps "
              "each, so the machine's load reaches them alike, and so do the per-scalar and pure-Python "
              "ones, among themselves, before them. Graph nodes: one step's graph, leaves "
              "included (torch: autograd "
              "nodes, one per tensor op; fg.compile: its tape's nodes; fg.vmap: the eager graph's count; "
              "none for NumPy and JAX). Speedup vs numpy: over the hand-written NumPy step, the floor. "
              "GC off: a collection between steps, untimed, frees micrograd's "
              "graphs (reference cycles) outside its times. NumPy's BLAS and torch on one thread.\n",
              file=out)
        print(moons_table(moons), file=out)
        print("\n" + "\n".join(moons_targets(moons)), file=out)
        out.flush()
    if only in (None, "tensor"):
        from fastgrad.app import op_overhead

        with _one_blas_thread():
            tensor_ops = op_overhead.bench_op_overhead(quick=quick,
                                                       progress=lambda op: _status(f"per-op overhead: {op}"))
        _status("")
        print(f"\n## {op_overhead.OVERHEAD_WORKLOAD}\n", file=out)
        print(f"A chain of {op_overhead.CHAIN} links of one op on 4x4 float64 arrays, forward + backward "
              "(`.sum().backward()`; NumPy: the same chain storing what its backward needs, then the "
              "backward by hand), per op. Overhead: fastgrad - numpy (negative: fastgrad's C loop beats "
              "NumPy's per-call cost). The sum link is two ops (sum, 0-d add). Best of repeats, the "
              "implementations taking turns in each; torch eager on one thread.\n", file=out)
        print(op_overhead.op_overhead_table(tensor_ops), file=out)
        print("\n" + "\n".join(op_overhead.op_overhead_targets(tensor_ops)), file=out)
        out.flush()
    if only in (None, "tensor", "digits"):
        digits_rows = _digits_section(quick, out)
    _status("")
    if json_path:
        with open(json_path, "w") as f:
            json.dump({"machine": info, "quick": quick, "engine": engine, "compiled": compiled,
                       "moons_step": moons, "tensor_ops": tensor_ops, "digits_epoch": digits_rows},
                      f, indent=2)
        print(f"\nrows written to {json_path}", file=out)
    if plot_path:
        plot_bench(engine, moons, plot_path, f"fastgrad bench on {info['machine']}")
        print(f"plot written to {plot_path}", file=out)
    return 0


def _digits_section(quick: bool, out: TextIO) -> list[dict[str, Any]]:
    """The "Digits epoch" section: its table and targets, or a note when scikit-learn is missing."""
    from fastgrad.app import digits_bench as digits

    print("\n## Digits epoch\n", file=out)
    if importlib.util.find_spec("sklearn") is None:
        print("skipped: the digits data set needs scikit-learn, which is not installed "
              "(pip install scikit-learn, or pip install 'fastgrad[data]')", file=out)
        return []
    with _one_blas_thread():
        rows = digits.bench_digits_epoch(quick=quick, progress=lambda name: _status(f"digits epoch: {name}"))
    _status("")
    first = rows[0]
    print(f"{digits.DIGITS_WORKLOAD}: scikit-learn's 8x8 digits / 16, {first['train_rows']} training rows "
          f"({first['batches']} batches), {first['test_rows']} test rows, cross-entropy, Adam lr 1e-3; every "
          "implementation from the same weights on the same batches. One untimed warm-up epoch, then the "
          "median of the timed epochs (a new shuffle each; the implementations take turns); vs numpy: "
          "time / the hand-written NumPy epoch's "
          "(lower is better). Test accuracy after the timed epochs. NumPy's BLAS and torch on one thread.\n",
          file=out)
    print(digits.digits_table(rows), file=out)
    print("\n" + "\n".join(digits.digits_targets(rows)), file=out)
    out.flush()
    return rows


def machine_info() -> dict[str, str]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {
        "machine": f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
                   f"Python {platform.python_version()}",
        "fastgrad": fastgrad.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }


def moons_table(rows: list[dict[str, Any]]) -> str:
    """The moons-step rows as a Markdown table: under the GC policy, then with the GC off (whose best step is
    in the JSON only)."""
    mg = next((r for r in rows if r["implementation"] == "micrograd"), None)
    floor = any(r.get("vs_numpy") is not None for r in rows)
    columns: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("implementation", lambda r: r["implementation"]),
        ("graph nodes / step", lambda r: "" if r.get("nodes") is None else f"{r['nodes']:,}"),
        ("steps timed", lambda r: str(r["repeats"])),
    ]
    for key, label in [("", "")] + ([("gc_off_", "GC off: ")] if all("gc_off_ms" in r for r in rows) else []):
        columns.append((f"{label}ms / step (median)", lambda r, k=key: f"{r[k + 'ms']:.3f}"))
        if not key:
            columns.append(("best", lambda r: "" if r.get("best_ms") is None else f"{r['best_ms']:.3f}"))
        columns.append((f"{label}speedup vs reference.py", lambda r, k=key: f"{r[k + 'vs_reference']:.1f}x"))
        if mg is not None:
            columns.append((f"{label}speedup vs micrograd",
                            lambda r, k=key: f"{mg[k + 'ms'] / r[k + 'ms']:.1f}x"))
        if floor:
            columns.append((f"{label}speedup vs numpy",
                            lambda r, k=key: f"{_significant(r[k + 'vs_numpy'])}x"))
    lines = ["| " + " | ".join(name for name, _ in columns) + " |",
             "|---|" + "---:|" * (len(columns) - 1)]
    lines += ["| " + " | ".join(cell(r) for _, cell in columns) + " |" for r in rows]
    return "\n".join(lines)


def _target(what: str, shown: str, met: bool) -> str:
    return f"target: {what}: {shown} ({'met' if met else 'NOT met'})"


def moons_targets(rows: list[dict[str, Any]]) -> list[str]:
    """The issues' targets for the moons step, checked against this run: a speedup over the reference
    (``vs_reference``) or a ratio of median step times (``ms``), each with its verdict."""
    speed = {r["implementation"]: r["vs_reference"] for r in rows if r.get("workload") == MOONS_WORKLOAD}
    ms = {r["implementation"]: r["ms"] for r in rows if r.get("workload") == MOONS_WORKLOAD}
    lines = []
    # (name, at least this many times faster than reference.py, format of the speedup)
    for name, least, fmt in (("fastgrad.nn (one fused call per layer)", 250, ".1f"),
                             ("fg.Value, micrograd-style per-scalar", 40, ".1f"),
                             (COMPILED_NAME, 1000, ".0f")):   # fg.compile's issue
        if name in speed:
            lines.append(_target(f"{name} >= {least}x faster than reference.py", f"{speed[name]:{fmt}}x",
                                 speed[name] >= least))
    # (what, numerator, denominator, met when numerator / denominator ..., format): times of one step
    ratios = ((f"{TENSOR_NAME} within 1.3x of the hand-written NumPy step", TENSOR_NAME, NUMPY_NAME,
               lambda q: q <= 1.3, ".2f"),
              (f"{TENSOR_NAME} >= 5x faster than torch eager", TORCH_NAME, TENSOR_NAME,
               lambda q: q >= 5, ".1f"),
              (f"{COMPILED_NAME} >= 2x faster than jax.jit", JAX_NAME, COMPILED_NAME,
               lambda q: q >= 2, ".2f"),
              (f"{COMPILED_NAME} within 2x of the hand-written NumPy step", COMPILED_NAME, NUMPY_NAME,
               lambda q: q <= 2, ".2f"),
              (f"{VMAP_NAME} no slower than the hand-written NumPy step", VMAP_NAME, NUMPY_NAME,
               lambda q: q <= 1, ".2f"))
    for what, num, den, met, fmt in ratios:
        if num in ms and den in ms:
            q = ms[num] / ms[den]
            lines.append(_target(what, f"{q:{fmt}}x", met(q)))
    return lines


def compiled_targets(rows: list[dict[str, Any]]) -> list[str]:
    """fg.compile's issue's targets for the compiled tapes (the GC on), checked against this run: the replay
    of a tape of 10^6 nodes or more at most 4 ns per node, fg.vmap on 2 threads at least 1.7x one."""
    lines = []
    for r in rows:
        if r.get("nodes") is not None and r["baseline"] == "eager backward":
            if r["nodes"] >= 10 ** 6:
                lines.append(_target("fg.compile replay <= 4 ns/node on a 10^6-node tape",
                                     f"{r['value']:.1f}", r["value"] <= 4))
        elif r["name"].startswith("fg.vmap") and r["measured"] == "threads=2":
            lines.append(_target("fg.vmap on 2 threads >= 1.7x one thread", f"{r['ratio']:.2f}x",
                                 r["ratio"] >= 1.7))
    return lines


def plot_bench(engine: list[dict[str, Any]], moons: list[dict[str, Any]], path: str, title: str) -> None:
    """Two panels: the engine workloads' speedups over reference.py, and the moons step's time per
    implementation (log scales)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [p for p in (engine, moons) if p]
    fig, axes = plt.subplots(len(panels), 1, squeeze=False,
                             figsize=(9, 1.5 + 0.4 * sum(len(p) for p in panels) + 0.8 * len(panels)))
    for ax, rows in zip(axes[:, 0], panels):
        if rows is engine:
            names = [f"{r['name']} ({r['unit']})" for r in rows]
            values = [r["ratio"] for r in rows]
            ax.set_xlabel("reference.py / fastgrad (log scale; higher is better)")
            ax.set_title("engine workloads", fontsize=10)
            labels = [f" {_short(v)}x" for v in values]
        else:
            names = [r["implementation"] for r in rows]
            values = [r["ms"] for r in rows]
            ax.set_xlabel("ms per step (log scale; lower is better)")
            ax.set_title("two-moons training step", fontsize=10)
            labels = [f" {_short(v)} ms" for v in values]
        ax.barh(range(len(rows)), values, color="#4c72b0")
        ax.set_yticks(range(len(rows)), names, fontsize=8)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set_xlim(right=max(values) * 4)  # room for the labels
        for i, (v, label) in enumerate(zip(values, labels)):
            ax.text(v, i, label, va="center", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _significant(value: float) -> str:
    """3 significant digits, never an exponent: 0.0000666, 0.132, 1, 12.3."""
    import numpy as np

    return np.format_float_positional(value, precision=3, fractional=False, trim="-")


def _short(value: float) -> str:
    """3 significant digits, without an exponent below a million."""
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def _status(text: str) -> None:
    """A transient status line on a terminal's stderr (nothing when stderr is not a terminal)."""
    if sys.stderr.isatty():
        sys.stderr.write("\r\033[K" + (f"running {text} ..." if text else ""))
        sys.stderr.flush()

