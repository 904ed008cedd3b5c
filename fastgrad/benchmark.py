"""Reusable benchmark workloads: the compiled engine against the pure-Python reference (and micrograd).

Every workload returns rows, one dict per measured quantity::

    {"name": ..., "unit": "ns/op", "n": nodes for fastgrad, "n_baseline": nodes for the baselines,
     "fastgrad": ..., "reference": ..., "micrograd": ... or None, "ratio": reference / fastgrad,
     "ratio_micrograd": micrograd / fastgrad or None}

Times come from ``time.perf_counter``, the best of ``repeats`` runs; every ratio compares numbers from
the same call. As ``timeit`` does, the cyclic GC is off while a run is timed (it collects between runs): with
it on, the pure-Python baselines get several times slower on graphs this large, which would flatter fastgrad.
``micrograd`` (PyPI) is imported lazily and skipped when it is not installed; it takes part only where its
vocabulary (+ - * / **k relu) and its recursive topological sort allow. ``benchmarks/bench_engine.py``
prints these rows as a Markdown table.
"""
import contextlib
import gc
import importlib
import json
import math
import os
import random
import subprocess
import sys
import time
import types

import fastgrad
from fastgrad import reference

CHAIN_FACTOR = 0.999999


def micrograd_value():
    """micrograd's Value class, or None when micrograd is not installed."""
    try:
        return importlib.import_module("micrograd.engine").Value
    except ImportError:
        return None


# ---- workloads: graph builders shared by every implementation ----

def _full_term(a, b, c):
    """14 ops: mul add tanh, sub relu mul, mul exp mul add div, mul pow add."""
    t = (a * b + c).tanh()
    u = (a - c).relu() * 0.5
    v = (b * 0.3).exp() / (c * c + 1.0)
    return t * u + v ** 2


def _basic_term(a, b, c):
    """11 ops in micrograd's vocabulary: mul add relu, sub mul, mul add div, mul pow add."""
    t = (a * b + c).relu()
    u = (a - c) * 0.5
    v = b / (c * c + 1.0)
    return t * u + v ** 2


TERMS = {"full": (_full_term, 14), "micrograd": (_basic_term, 11)}


def _pairwise_sum(vs):
    """Sum by a balanced tree of binary + nodes (shallow enough for micrograd's recursive backward)."""
    while len(vs) > 1:
        vs = [vs[i] + vs[i + 1] if i + 1 < len(vs) else vs[i] for i in range(0, len(vs), 2)]
    return vs[0]


def _best(runs):
    """Per key, the smallest of the runs' timings."""
    return {key: min(run[key] for run in runs) for key in runs[0]}


@contextlib.contextmanager
def _gc_paused():
    """Collect, then keep the cyclic GC off for the timed block."""
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _time_mixed(mod, values, plan, term, fused_sum, repeats):
    """Best forward (build) and backward seconds, the output value and the leaves' gradients."""
    runs = []
    for _ in range(repeats):
        leaves = [mod.Var(x) for x in values]
        with _gc_paused():
            t0 = time.perf_counter()
            terms = [term(leaves[i], leaves[j], leaves[k]) for i, j, k in plan]
            out = mod.sum(terms) if fused_sum else _pairwise_sum(terms)
            t1 = time.perf_counter()
            out.backward()
            t2 = time.perf_counter()
        runs.append({"forward": t1 - t0, "backward": t2 - t1})
        result = out.data, [v.grad for v in leaves]
        del terms, out, leaves
    gc.collect()
    return _best(runs), result


def _check_agree(name, result, expected):
    """Guard against timing a wrong computation: values and gradients must match the engine's."""
    (y, grads), (y0, grads0) = result, expected
    if not all(math.isclose(u, v, rel_tol=1e-9, abs_tol=1e-9) for u, v in zip([y, *grads], [y0, *grads0])):
        raise RuntimeError(f"{name}: result differs from fastgrad's ({y} vs {y0})")


def _row(name, unit, n, n_baseline, fg_value, ref_value, mg_value=None):
    return {"name": name, "unit": unit, "n": n, "n_baseline": n_baseline, "fastgrad": fg_value,
            "reference": ref_value, "micrograd": mg_value, "ratio": ref_value / fg_value,
            "ratio_micrograd": None if mg_value is None else mg_value / fg_value}


def mixed_graph(n_ops=200_000, vocabulary="full", n_leaves=300, repeats=3, seed=0):
    """Forward ns/op and backward ns/node on a graph of ``n_ops`` mixed operations, summed into one output.

    Many small expressions (``TERMS[vocabulary]``) over ``n_leaves`` shared leaves, then one sum. "full" mixes
    add/sub/mul/div/pow/tanh/exp/relu and sums with ``fg.sum`` (fused in fastgrad, a chain of + in the
    reference); "micrograd" keeps to micrograd's operators, sums by a tree of binary + and runs micrograd too.
    Both rows are per operation of the program as written (the sum counts one op per term), so every
    implementation has the same denominator whatever its node count.
    """
    term, ops_per_term = TERMS[vocabulary]
    rng = random.Random(seed)
    values = [rng.uniform(-1.0, 1.0) for _ in range(n_leaves)]
    n_terms = n_ops // (ops_per_term + 1)
    plan = [tuple(rng.randrange(n_leaves) for _ in range(3)) for _ in range(n_terms)]
    n = n_terms * (ops_per_term + 1)
    fused = vocabulary == "full"
    fg_time, fg_result = _time_mixed(fastgrad, values, plan, term, fused, repeats)
    ref_time, ref_result = _time_mixed(reference, values, plan, term, fused, repeats)
    _check_agree("reference", ref_result, fg_result)
    mg_time = {"forward": None, "backward": None}
    value = micrograd_value()
    if vocabulary == "micrograd" and value is not None:
        mg_time, mg_result = _time_mixed(types.SimpleNamespace(Var=value), values, plan, term, False, repeats)
        _check_agree("micrograd", mg_result, fg_result)
    rows = []
    for phase, unit in (("forward", "ns/op"), ("backward", "ns/node")):
        mg = mg_time[phase]
        rows.append(_row(f"mixed graph ({vocabulary} ops): {phase}", unit, n, n,
                         fg_time[phase] / n * 1e9, ref_time[phase] / n * 1e9,
                         None if mg is None else mg / n * 1e9))
    return rows


def _chain(mod, n):
    """A leaf x and a chain of n nodes over it: alternately y * 0.999999 and y + x."""
    x = mod.Var(1.0)
    y = x
    for i in range(n):
        y = y * CHAIN_FACTOR if i & 1 else y + x
    return x, y


def _time_chain(mod, n, repeats):
    runs = []
    for _ in range(repeats):
        with _gc_paused():
            t0 = time.perf_counter()
            _, y = _chain(mod, n)
            t1 = time.perf_counter()
            y.backward()
            t2 = time.perf_counter()
            del y
            t3 = time.perf_counter()
        runs.append({"build": t1 - t0, "backward": t2 - t1, "free": t3 - t2})
    gc.collect()
    return {key: seconds / n * 1e9 for key, seconds in _best(runs).items()}


def deep_chain(n=10 ** 6, n_baseline=10 ** 5, repeats=3):
    """Build, backward and free ns/node on a chain n nodes deep (the reference on a shorter chain).

    micrograd is not run: its recursive topological sort fails near depth 1,000.
    """
    fg_ns, ref_ns = _time_chain(fastgrad, n, repeats), _time_chain(reference, n_baseline, repeats)
    return [_row(f"deep chain: {phase}", "ns/node", n, n_baseline, fg_ns[phase], ref_ns[phase])
            for phase in ("build", "backward", "free")]


def _memory():
    """(current, peak) resident bytes of this process.

    WARNING: on Linux, getrusage's ru_maxrss is inherited through fork and exec, so a child started by a
    parent with a large peak reports the parent's peak as its own baseline (this once halved the bytes/node
    shown). /proc/self/status's VmRSS/VmHWM belong to the address space, which exec replaces.
    """
    try:
        with open("/proc/self/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        import resource

        unit = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB elsewhere
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * unit
        return peak, peak


def chain_child(implementation, n):
    """In a fresh process: build, backward and free a chain of n nodes; print peak RSS and times as JSON."""
    mod = fastgrad if implementation == "fastgrad" else reference
    _chain(mod, 10)  # import-time and first-use allocations belong to the baseline
    gc.disable()
    rss0, _ = _memory()
    t0 = time.perf_counter()
    x, y = _chain(mod, n)
    y.backward()
    t1 = time.perf_counter()
    _, peak = _memory()
    grad = x.grad
    del x, y
    t2 = time.perf_counter()
    print(json.dumps({"bytes_per_node": (peak - rss0) / n, "build_backward_s": t1 - t0,
                      "free_s": t2 - t1, "grad": grad}))


def _run_chain_child(implementation, n):
    root = os.path.dirname(os.path.dirname(os.path.abspath(fastgrad.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    code = f"from fastgrad.benchmark import chain_child; chain_child({implementation!r}, {n})"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)


def chain_memory(n=10 ** 7, n_baseline=10 ** 6):
    """Peak RSS bytes/node and build+backward+free ns/node of one huge chain, each in its own process."""
    fg_run, ref_run = _run_chain_child("fastgrad", n), _run_chain_child("reference", n_baseline)
    per_node = [(run["build_backward_s"] + run["free_s"]) * 1e9 / size
                for run, size in ((fg_run, n), (ref_run, n_baseline))]
    return [_row("huge chain: peak RSS", "bytes/node", n, n_baseline, fg_run["bytes_per_node"],
                 ref_run["bytes_per_node"]),
            _row("huge chain: build+backward+free", "ns/node", n, n_baseline, *per_node)]


def run_all(quick=False):
    """Every workload; ``quick`` shrinks the sizes about tenfold (for a smoke run, not for reporting)."""
    scale, repeats = (10, 2) if quick else (1, 3)
    return [*mixed_graph(200_000 // scale, "full", repeats=repeats),
            *mixed_graph(200_000 // scale, "micrograd", repeats=repeats),
            *deep_chain(10 ** 6 // scale, 10 ** 5 // scale, repeats=repeats),
            *chain_memory(10 ** 7 // scale, 10 ** 6 // scale)]


def _format(x, digits=1):
    return "—" if x is None else f"{x:,.{digits}f}"


def markdown_table(rows):
    """The rows as a Markdown table (sizes: fastgrad's, and the baselines' where they differ)."""
    lines = [("| workload | nodes | unit | fastgrad | reference | micrograd | reference / fastgrad "
              "| micrograd / fastgrad |"),
             "|---|---:|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        size = f"{r['n']:,}" if r["n"] == r["n_baseline"] else f"{r['n']:,} ({r['n_baseline']:,})"
        lines.append(f"| {r['name']} | {size} | {r['unit']} | {_format(r['fastgrad'])} | "
                     f"{_format(r['reference'])} | {_format(r['micrograd'])} | {_format(r['ratio'])}× | "
                     f"{_format(r['ratio_micrograd']) + '×' if r['ratio_micrograd'] else '—'} |")
    return "\n".join(lines)
