"""Reusable benchmark workloads: the compiled engine against the pure-Python reference (and micrograd).

GC policy, one for every engine in every table of ``python -m fastgrad bench``: the cyclic garbage collector
stays ON while timing, as in any Python program, and ``gc.collect()`` runs before each timed run so that no
run pays for another's garbage. Why on: micrograd's graphs are reference cycles (a node's ``_backward``
closure holds the node), which only the cyclic GC frees; with it off, that freeing would drop out of
micrograd's times. Every quantity is measured under the other policy too (GC off while timing, as ``timeit``
does), in the rows' ``gc_off`` entries and the tables' "GC off" columns: it changes the story for the
pure-Python engines, whose nodes are GC-tracked objects that every full collection walks, while fastgrad's
``Var`` is not GC-tracked. Measured on CPython 3.11 (three runs, a shared 2-core machine): the GC made the
reference's mixed-graph forward 6-8x slower and micrograd's 11-12x, their two-moons steps 2x and 6-8x;
backward, free and peak memory moved within the noise, fastgrad's times nowhere. How much depends on the
collector's heuristics, which change between Python versions.

Each row says its unit:

- ``ns/op (program)``: time / operations of the program as written, the same count for every engine (a term's
  ``a - c`` is one op whatever an engine makes of it). The ratio is the speedup on the same program.
- ``ns/node (own graph)``, ``bytes/node (own graph)``: time or memory / the nodes of THAT engine's graph,
  leaves and constants included, counted and never assumed: fastgrad's by the engine's live-node count, the
  others' by walking ``_prev`` from the output. fastgrad fuses (one ``sum`` node over all terms; ``a - c``,
  ``a * 0.5`` one node each, the constant inside the node); the reference and micrograd make a node per scalar
  op and a leaf per constant. The ratio compares the cost of one node.

Every row is a dict::

    {"name": ..., "unit": ..., "ops": {engine: program ops}, "nodes": {engine: graph nodes},
     "total": {engine: seconds (bytes for memory) over the whole workload},
     "fastgrad": ..., "reference": ..., "micrograd": ... (per unit; None when not run),
     "ratio": reference / fastgrad, "ratio_micrograd": micrograd / fastgrad or None,
     "gc_off": {"total", "fastgrad", "reference", "micrograd", "ratio", "ratio_micrograd"} with the GC off}

Times come from ``time.perf_counter``, the best of ``repeats`` runs; every ratio compares numbers from the
same call. ``micrograd`` (PyPI) is imported lazily and skipped when it is not installed; it takes part only
where its vocabulary (+ - * / **k relu) and its recursive topological sort allow.
``benchmarks/bench_engine.py`` and ``python -m fastgrad bench`` print these rows as a Markdown table.
"""
import contextlib
import functools
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
from fastgrad import _engine, reference

CHAIN_FACTOR = 0.999999
ENGINES = ("fastgrad", "reference", "micrograd")
GC_POLICY = ("cyclic GC on while timing, as in any Python program (gc.collect() before each timed run); "
             "the GC off columns time the same runs with it off")
NS_PER_OP = "ns/op (program)"
NS_PER_NODE = "ns/node (own graph)"
BYTES_PER_NODE = "bytes/node (own graph)"
# unit -> (the size it divides by, the factor from seconds or bytes)
UNITS = {NS_PER_OP: ("ops", 1e9), NS_PER_NODE: ("nodes", 1e9), BYTES_PER_NODE: ("nodes", 1.0)}


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
def gc_policy(enabled):
    """Collect, then keep the cyclic GC on (``enabled``) or off for the timed block; restore it after."""
    gc.collect()
    was_enabled = gc.isenabled()
    if enabled:
        gc.enable()
    else:
        gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
        else:
            gc.disable()


def time_calls(call, repeats, gc_enabled, before=None):
    """Seconds of ``repeats`` calls of ``call``, each freeing what it returns, under the GC policy the caller
    set (``gc_policy``, which makes one full collection first). GC on: no collection between calls but the
    GC's own (each call pays for collecting its predecessors' garbage, as in a training loop). GC off: off
    throughout; before each call, untimed, a collection of the youngest generation, which then holds
    everything the previous call allocated (micrograd's cyclic graph) and nothing older, so it does not walk
    the rest of the heap. ``before`` (optional): called untimed before each call (a ``zero_grad``)."""
    clock = time.perf_counter
    times = []
    for _ in range(repeats):
        if not gc_enabled:
            gc.collect(0)
        if before is not None:
            before()
        t0 = clock()
        out = call()
        del out  # freeing the result (a step's graph) is part of the call
        times.append(clock() - t0)
    return times


def time_in_turns(players, rounds, gc_enabled):
    """Time several implementations taking turns, so that the drift of this shared machine's load and core
    speed reaches them alike: ``rounds`` rounds in which each player ``(call, block, context, before)``, in
    turn and inside ``context()``, makes one untimed call (the others' turns left the caches holding their
    data), then ``block`` timed calls one by one (``time_calls``). Returns each player's times, in seconds."""
    times = [[] for _ in players]
    for _ in range(rounds):
        for (call, block, context, before), own in zip(players, times):
            with context():
                time_calls(call, 1, gc_enabled, before)
                own += time_calls(call, block, gc_enabled, before)
    return times


def _live_nodes():
    """The compiled engine's count of live nodes (its own bookkeeping, O(1))."""
    return _engine.memory_stats()["nodes_alive"]


def walk_nodes(out):
    """The number of nodes in a Python engine's graph (reference, micrograd), leaves included: walked
    iteratively along ``_prev`` from ``out``."""
    seen, stack = {id(out)}, [out]
    while stack:
        for parent in stack.pop()._prev:
            if id(parent) not in seen:
                seen.add(id(parent))
                stack.append(parent)
    return len(seen)


def graph_nodes(mod, out, live_before):
    """The nodes of ``out``'s graph, leaves included, as each engine built it.

    fastgrad: the engine's live nodes now minus ``live_before``, taken before the program made its first
    node, leaves included. Every node these workloads make is in the output's graph (the tests check the count
    against ``fastgrad.stats``, whose tape of a 10^7-node chain would cost more than the workload). Others:
    walked.
    """
    return _live_nodes() - live_before if mod is fastgrad else walk_nodes(out)


def _time_mixed(mod, values, plan, term, fused_sum, repeats, gc_enabled):
    """Best forward (build) and backward seconds, the graph's node count, the output value and the leaves'
    gradients."""
    runs, nodes = [], None
    for _ in range(repeats):
        gc.collect()
        live_before = _live_nodes()
        leaves = [mod.Var(x) for x in values]
        with gc_policy(gc_enabled):
            t0 = time.perf_counter()
            terms = [term(leaves[i], leaves[j], leaves[k]) for i, j, k in plan]
            out = mod.sum(terms) if fused_sum else _pairwise_sum(terms)
            t1 = time.perf_counter()
            out.backward()
            t2 = time.perf_counter()
        runs.append({"forward": t1 - t0, "backward": t2 - t1})
        if nodes is None:
            nodes = graph_nodes(mod, out, live_before)
        result = out.data, [v.grad for v in leaves]
        del terms, out, leaves
    gc.collect()
    return _best(runs), nodes, result


def _check_agree(name, result, expected):
    """Guard against timing a wrong computation: values and gradients must match the engine's."""
    (y, grads), (y0, grads0) = result, expected
    if not all(math.isclose(u, v, rel_tol=1e-9, abs_tol=1e-9) for u, v in zip([y, *grads], [y0, *grads0])):
        raise RuntimeError(f"{name}: result differs from fastgrad's ({y} vs {y0})")


def _figures(unit, sizes, total):
    """Per-unit figures and ratios of one policy's totals (seconds or bytes per engine; None: not run)."""
    size_key, factor = UNITS[unit]
    per = {e: None if total.get(e) is None else total[e] * factor / sizes[size_key][e] for e in ENGINES}
    fg = per["fastgrad"]
    return {"total": dict(total), **per,
            "ratio": per["reference"] / fg,
            "ratio_micrograd": None if per["micrograd"] is None else per["micrograd"] / fg}


def _row(name, unit, ops, nodes, total, total_gc_off):
    """One row: ``ops`` and ``nodes`` per engine; ``total`` and ``total_gc_off``: seconds or bytes per engine
    under the GC policy and with the GC off."""
    sizes = {"ops": ops, "nodes": nodes}
    return {"name": name, "unit": unit, "ops": dict(ops), "nodes": dict(nodes),
            **_figures(unit, sizes, total), "gc_off": _figures(unit, sizes, total_gc_off)}


def _by_engine(**values):
    return {e: values.get(e) for e in ENGINES}


def mixed_graph(n_ops=200_000, vocabulary="full", n_leaves=300, repeats=3, seed=0):
    """Forward and backward time of a graph of ``n_ops`` mixed operations, summed into one output.

    Many small expressions (``TERMS[vocabulary]``) over ``n_leaves`` shared leaves, then one sum. "full" mixes
    add/sub/mul/div/pow/tanh/exp/relu and sums with ``fg.sum`` (fused in fastgrad, a chain of + in the
    reference); "micrograd" keeps to micrograd's operators, sums by a tree of binary + and runs micrograd too.
    Forward is per op of the program as written (the sum counts one op per term: the same denominator for
    every engine); backward is per node of each engine's own graph.
    """
    term, ops_per_term = TERMS[vocabulary]
    rng = random.Random(seed)
    values = [rng.uniform(-1.0, 1.0) for _ in range(n_leaves)]
    n_terms = n_ops // (ops_per_term + 1)
    plan = [tuple(rng.randrange(n_leaves) for _ in range(3)) for _ in range(n_terms)]
    if len({i for term_leaves in plan for i in term_leaves}) != n_leaves:  # graph_nodes counts every leaf
        raise ValueError(f"{n_terms} terms leave some of the {n_leaves} leaves unused: use fewer leaves")
    n = n_terms * (ops_per_term + 1)
    fused = vocabulary == "full"
    engines = {"fastgrad": (fastgrad, fused), "reference": (reference, fused)}
    value = micrograd_value()
    if vocabulary == "micrograd" and value is not None:
        engines["micrograd"] = (types.SimpleNamespace(Var=value), False)
    times = {True: {}, False: {}}  # gc enabled -> engine -> {"forward": s, "backward": s}
    nodes, expected = {}, None
    for name, (mod, fused_sum) in engines.items():
        for gc_enabled in (True, False):
            times[gc_enabled][name], nodes[name], result = _time_mixed(mod, values, plan, term, fused_sum,
                                                                       repeats, gc_enabled)
            if expected is None:
                expected = result
            else:
                _check_agree(name, result, expected)
    ops = _by_engine(**{name: n for name in engines})
    nodes = _by_engine(**nodes)
    return [_row(f"mixed graph ({vocabulary} ops): {phase}", unit, ops, nodes,
                 _by_engine(**{e: t[phase] for e, t in times[True].items()}),
                 _by_engine(**{e: t[phase] for e, t in times[False].items()}))
            for phase, unit in (("forward", NS_PER_OP), ("backward", NS_PER_NODE))]


def _chain(mod, n):
    """A leaf x and a chain of n ops over it: alternately y * 0.999999 and y + x."""
    x = mod.Var(1.0)
    y = x
    for i in range(n):
        y = y * CHAIN_FACTOR if i & 1 else y + x
    return x, y


def _time_chain(mod, n, repeats, gc_enabled):
    """Best build, backward and free seconds of a chain of n ops, and its graph's node count."""
    runs, nodes = [], None
    clock = time.perf_counter
    for _ in range(repeats):
        gc.collect()
        live_before = _live_nodes()
        with gc_policy(gc_enabled):
            t0 = clock()
            _, y = _chain(mod, n)
            t1 = clock()
            y.backward()
            t2 = clock()
        if nodes is None:
            nodes = graph_nodes(mod, y, live_before)
        with gc_policy(gc_enabled):
            t3 = clock()
            del y
            t4 = clock()
        runs.append({"build": t1 - t0, "backward": t2 - t1, "free": t4 - t3})
    gc.collect()
    return _best(runs), nodes


def deep_chain(n=10 ** 6, n_baseline=10 ** 5, repeats=3):
    """Build (per op), backward and free (per node) time of a chain n ops deep (the reference: n_baseline).

    micrograd is not run: its recursive topological sort fails near depth 1,000.
    """
    ops = _by_engine(fastgrad=n, reference=n_baseline)
    times, nodes = {True: {}, False: {}}, {}
    for name, mod in (("fastgrad", fastgrad), ("reference", reference)):
        for gc_enabled in (True, False):
            times[gc_enabled][name], nodes[name] = _time_chain(mod, ops[name], repeats, gc_enabled)
    nodes = _by_engine(**nodes)
    return [_row(f"deep chain: {phase}", unit, ops, nodes,
                 _by_engine(**{e: t[phase] for e, t in times[True].items()}),
                 _by_engine(**{e: t[phase] for e, t in times[False].items()}))
            for phase, unit in (("build", NS_PER_OP), ("backward", NS_PER_NODE), ("free", NS_PER_NODE))]


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


def chain_child(implementation, n, gc_enabled=True):
    """In a fresh process: build, backward and free a chain of n ops; print the graph's node count, the peak
    RSS growth and the times as JSON."""
    mod = fastgrad if implementation == "fastgrad" else reference
    _chain(mod, 10)  # import-time and first-use allocations belong to the baseline
    gc.collect()
    if not gc_enabled:
        gc.disable()
    live_before = _live_nodes()
    rss0, _ = _memory()
    t0 = time.perf_counter()
    x, y = _chain(mod, n)
    y.backward()
    t1 = time.perf_counter()
    _, peak = _memory()
    nodes = graph_nodes(mod, y, live_before)
    grad = x.grad
    t2 = time.perf_counter()
    del x, y
    t3 = time.perf_counter()
    print(json.dumps({"nodes": nodes, "bytes": peak - rss0, "build_backward_s": t1 - t0,
                      "free_s": t3 - t2, "grad": grad}))


def _run_chain_child(implementation, n, gc_enabled):
    root = os.path.dirname(os.path.dirname(os.path.abspath(fastgrad.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    code = (f"from fastgrad.app.workloads import chain_child; "
            f"chain_child({implementation!r}, {n}, {gc_enabled})")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)


def chain_memory(n=10 ** 7, n_baseline=10 ** 6):
    """Peak RSS bytes/node and build+backward+free time of one huge chain, each run in its own process."""
    ops = _by_engine(fastgrad=n, reference=n_baseline)
    runs = {(name, gc_enabled): _run_chain_child(name, ops[name], gc_enabled)
            for name in ("fastgrad", "reference") for gc_enabled in (True, False)}
    nodes = _by_engine(**{name: runs[name, True]["nodes"] for name in ("fastgrad", "reference")})

    def total(key, gc_enabled):
        return _by_engine(**{name: sum(runs[name, gc_enabled][k] for k in key.split("+"))
                             for name in ("fastgrad", "reference")})

    return [_row("huge chain: peak RSS", BYTES_PER_NODE, ops, nodes,
                 total("bytes", True), total("bytes", False)),
            _row("huge chain: build+backward+free", NS_PER_OP, ops, nodes,
                 total("build_backward_s+free_s", True), total("build_backward_s+free_s", False))]


def run_all(quick=False):
    """Every workload; ``quick`` shrinks the sizes about tenfold (for a smoke run, not for reporting)."""
    scale, repeats = (10, 2) if quick else (1, 3)
    return [*mixed_graph(200_000 // scale, "full", repeats=repeats),
            *mixed_graph(200_000 // scale, "micrograd", repeats=repeats),
            *deep_chain(10 ** 6 // scale, 10 ** 5 // scale, repeats=repeats),
            *chain_memory(10 ** 7 // scale, 10 ** 6 // scale)]


# ---- compiled tapes: fg.compile's replay against eager mode, fg.vmap's threads ----
#
# Rows of their own (``compiled_markdown_table``): each compares one measurement with a baseline of the same
# engine, under the GC policy and with the GC off:
#   {"name", "size", "unit", "measured", "value", "baseline", "baseline_value", "ratio" (baseline / value),
#    "gc_off": {"value", "baseline_value", "ratio"}}, and the replay rows' "nodes" (the tape's)

REPLAY_FACTOR, REPLAY_STEP = 0.9999999, 1e-7


def _affine_chain(x, n_nodes):
    """``y = y * 0.9999999 + 1e-7`` from x: two nodes per link, ``n_nodes`` nodes besides x."""
    y = x
    for _ in range(n_nodes // 2):
        y = y * REPLAY_FACTOR + REPLAY_STEP
    return y


def _compiled_row(name, size, unit, measured, baseline, values, **extra):
    """``values``: {gc_enabled: (value, baseline value)}; ``extra``: more fields of the row."""
    def figures(gc_enabled):
        value, base = values[gc_enabled]
        return {"value": value, "baseline_value": base, "ratio": base / value}

    return {"name": name, "size": size, "unit": unit, "measured": measured, "baseline": baseline,
            **figures(True), "gc_off": figures(False), **extra}


def compiled_replay(n_nodes=10 ** 6, repeats=5):
    """ns per node of ``fg.compile``'s replay, forward and backward in one call, of a chain of ``n_nodes``
    nodes (``y = y * 0.9999999 + 1e-7``, divided by the tape's nodes, ``tape.n``), against eager mode's
    backward of the same graph, and its build + backward (divided by the graph's nodes, counted): best of
    ``repeats``. The replay is timed as a training loop meets it, after its first call (untimed), which
    allocates and first touches its 16 MB of scratch: that call's page faults cost 2-4 times a replay.
    The replay's gradient must equal eager mode's bit for bit (checked)."""
    x = fastgrad.Var(0.5)  # a parameter of the compiled function: the replay adds its gradient to x.grad
    compiled = fastgrad.compile(lambda: _affine_chain(x, n_nodes))
    tape_nodes = compiled.tape().n  # traced here, untimed
    values, eager_grad, eager_nodes = {}, None, None
    clock = time.perf_counter
    for gc_enabled in (True, False):
        eager = []
        for _ in range(repeats):
            gc.collect()
            live_before = _live_nodes()
            x.grad = 0.0
            with gc_policy(gc_enabled):
                t0 = clock()
                y = _affine_chain(x, n_nodes)
                t1 = clock()
                y.backward()
                t2 = clock()
            eager.append({"backward": t2 - t1, "build+backward": t2 - t0})
            if eager_nodes is None:
                eager_nodes = graph_nodes(fastgrad, y, live_before) + 1  # x was made before: count it
            eager_grad = x.grad
            del y
        replay = []
        compiled()                  # the first call: scratch allocated and touched (untimed, as the trace)
        for _ in range(repeats):
            gc.collect()
            x.grad = 0.0
            with gc_policy(gc_enabled):
                t0 = clock()
                compiled()
                t1 = clock()
            replay.append(t1 - t0)
            if x.grad != eager_grad:
                raise RuntimeError(f"compiled replay: x.grad {x.grad!r}, eager {eager_grad!r}")
        best = _best(eager)
        values[gc_enabled] = (1e9 * min(replay) / tape_nodes,
                              {k: 1e9 * t / eager_nodes for k, t in best.items()})
    if eager_nodes != tape_nodes:
        raise RuntimeError(f"compiled replay: the tape has {tape_nodes} nodes, the eager graph {eager_nodes}")
    size = f"{tape_nodes:,} nodes"
    name = "chain y·0.9999999 + 1e-7"
    return [_compiled_row(name, size, NS_PER_NODE, "fg.compile replay, forward + backward", f"eager {phase}",
                          {g: (v, base[phase]) for g, (v, base) in values.items()}, nodes=tape_nodes)
            for phase in ("backward", "build+backward")]


def vmap_threads(n_samples=10 ** 4, rounds=5, block=3, threads=2, seed=0):
    """ms per call of ``fg.vmap`` over ``n_samples`` two-moons points (the moons step's per-point hinge loss
    through MLP 2-16-16-1, forward and backward, mean) on ``threads`` threads against one thread: the best
    call. Timed as the moons steps are (bench.py): under the GC policy (one full collection first; GC off:
    a collection of the youngest generation, untimed, before each call), ``rounds`` rounds in which each
    thread count in turn makes one untimed call, then times ``block`` calls one by one, as a training loop
    makes them. Taking turns exposes both thread counts to the same drift of this shared machine's core
    speed. The gradients must be the same bits for both thread counts (checked)."""
    from fastgrad.app.backends import BatchedBackend, initial_weights, moons

    X, y = moons(seed, n=n_samples)
    weights = initial_weights(2, (16, 16), seed)
    values = {}
    for gc_enabled in (True, False):
        backends = {t: BatchedBackend(weights, X, y, 1, threads=t) for t in (1, threads)}
        for backend in backends.values():
            backend.data_loss(backend.X, backend.labels)  # traced here, untimed
        players = [(functools.partial(b.data_loss, b.X, b.labels), block, contextlib.nullcontext,
                    b.optimizer.zero_grad) for b in backends.values()]
        with gc_policy(gc_enabled):
            times = dict(zip(backends, time_in_turns(players, rounds, gc_enabled)))
        best = {t: 1e3 * min(v) for t, v in times.items()}
        grads = {t: [p.grad for p in backend.params] for t, backend in backends.items()}
        if grads[1] != grads[threads]:
            raise RuntimeError(f"fg.vmap: the gradients on {threads} threads differ from one thread's")
        values[gc_enabled] = (best[threads], best[1])
    return [_compiled_row("fg.vmap moons loss (MLP 2-16-16-1)", f"{n_samples:,} samples", "ms / call",
                          f"threads={threads}", "threads=1", values)]


def run_compiled(quick=False):
    """The compiled-tape rows; ``quick``: a 10^5-node chain (tracing 10^6 nodes takes a second or two)."""
    return [*compiled_replay(10 ** 5 if quick else 10 ** 6, repeats=3 if quick else 5),
            *vmap_threads(10 ** 4, rounds=2 if quick else 5)]


def compiled_markdown_table(rows):
    """The compiled-tape rows as a Markdown table."""
    lines = ["| measurement | size | unit | measured | value | baseline | value | baseline / measured "
             "| GC off: baseline / measured |",
             "|---|---:|---|---|---:|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['size']} | {r['unit']} | {r['measured']} | {_format(r['value'])} | "
                     f"{r['baseline']} | {_format(r['baseline_value'])} | {_ratio(r['ratio'])} | "
                     f"{_ratio(r['gc_off']['ratio'])} |")
    return "\n".join(lines)


def _format(x, digits=1):
    return "—" if x is None else f"{x:,.{digits}f}"


def _ratio(x):
    return "—" if x is None else f"{x:,.1f}×"


def _sizes(counts, engines):
    """'n' when every engine that ran has the same count, else 'a / b / c' in ``engines`` order."""
    ran = [counts[e] for e in engines if counts.get(e) is not None]
    if len(set(ran)) == 1 and len(ran) == len(engines):
        return f"{ran[0]:,}"
    return " / ".join("—" if counts.get(e) is None else f"{counts[e]:,}" for e in engines)


def markdown_table(rows):
    """The rows as a Markdown table: sizes per engine, figures under the GC policy, ratios under both."""
    lines = [("| workload | program ops (fastgrad / reference) "
              "| graph nodes (fastgrad / reference / micrograd) | unit | fastgrad | reference | micrograd "
              "| reference / fastgrad | micrograd / fastgrad "
              "| GC off: reference / fastgrad | GC off: micrograd / fastgrad |"),
             "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        off = r["gc_off"]
        lines.append(f"| {r['name']} | {_sizes(r['ops'], ENGINES[:2])} | {_sizes(r['nodes'], ENGINES)} | "
                     f"{r['unit']} | {_format(r['fastgrad'])} | {_format(r['reference'])} | "
                     f"{_format(r['micrograd'])} | {_ratio(r['ratio'])} | {_ratio(r['ratio_micrograd'])} | "
                     f"{_ratio(off['ratio'])} | {_ratio(off['ratio_micrograd'])} |")
    return "\n".join(lines)
