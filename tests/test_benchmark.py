"""fastgrad.app.workloads: every figure divides by the right count, node counts are counted, one GC policy.

Tiny sizes only; speed is never asserted (shared, noisy machines).
"""
import gc
import types

import pytest

import fastgrad
from fastgrad import reference
from fastgrad.app import workloads as benchmark


@pytest.fixture(autouse=True)
def _frozen_heap():
    """Keep the collections before every timed run fast: the test process's objects (pytest, numpy, maybe
    torch) move out of the GC's reach, leaving it the workload's own. These tests check counts, not time."""
    gc.freeze()
    yield
    gc.unfreeze()


def _expression(mod):
    """(a - c) * 0.5: fastgrad makes a, c, sub, mul-by-constant; the reference a, c, neg, add, 0.5, mul."""
    a, c = mod.Var(0.3), mod.Var(-0.2)
    return (a - c) * 0.5


def test_graph_nodes_are_each_engines_own():
    live_before = benchmark._live_nodes()
    out = _expression(fastgrad)
    assert benchmark.graph_nodes(fastgrad, out, live_before) == fastgrad.stats(out).nodes == 4
    assert benchmark.graph_nodes(reference, _expression(reference), None) == 6


def test_walk_nodes_counts_micrograds_graph():
    value = benchmark.micrograd_value()
    if value is None:
        pytest.skip("micrograd is not installed")
    # micrograd: a - c is a + (c * -1) with a leaf for -1, and * 0.5 a leaf for 0.5: 7 nodes
    assert benchmark.walk_nodes(_expression(types.SimpleNamespace(Var=value))) == 7


def test_walk_nodes_needs_no_recursion():
    _, y = benchmark._chain(reference, 20_000)
    assert benchmark.walk_nodes(y) == 30_001  # a constant leaf for every other link


def _check_figures(row, figures):
    size_key, factor = benchmark.UNITS[row["unit"]]
    for engine in benchmark.ENGINES:
        total = figures["total"][engine]
        if total is None:
            assert figures[engine] is None
        else:
            assert figures[engine] == pytest.approx(total * factor / row[size_key][engine], rel=1e-12)
    assert figures["ratio"] == pytest.approx(figures["reference"] / figures["fastgrad"])


def test_mixed_graph_divides_each_engine_by_its_own_nodes():
    rows = benchmark.mixed_graph(n_ops=600, vocabulary="full", n_leaves=20, repeats=1)
    forward, backward = rows
    assert forward["unit"] == benchmark.NS_PER_OP and backward["unit"] == benchmark.NS_PER_NODE
    assert forward["ops"]["fastgrad"] == forward["ops"]["reference"] == 40 * 15
    # counted independently: 14 nodes per term, one fused sum, the leaves; the reference 19 per term, a chain
    # of + from a 0.0 leaf
    assert backward["nodes"]["fastgrad"] == 40 * 14 + 1 + 20
    assert backward["nodes"]["reference"] == 40 * 19 + 40 + 1 + 20
    for row in rows:
        _check_figures(row, row)
        _check_figures(row, row["gc_off"])


def test_mixed_graph_in_micrograds_vocabulary_counts_micrograd_too():
    rows = benchmark.mixed_graph(n_ops=240, vocabulary="micrograd", n_leaves=10, repeats=1)
    nodes = rows[1]["nodes"]
    assert nodes["fastgrad"] == 20 * 12 - 1 + 10  # 11 nodes per term, a tree of 19 binary +, the leaves
    if benchmark.micrograd_value() is None:
        assert nodes["micrograd"] is None and rows[1]["micrograd"] is None
    else:
        assert nodes["micrograd"] > nodes["reference"] > nodes["fastgrad"]
    for row in rows:
        _check_figures(row, row)
        _check_figures(row, row["gc_off"])


def test_deep_chain_counts_the_references_constant_leaves():
    rows = benchmark.deep_chain(n=400, n_baseline=200, repeats=1)
    assert [r["unit"] for r in rows] == [benchmark.NS_PER_OP, benchmark.NS_PER_NODE, benchmark.NS_PER_NODE]
    assert rows[0]["ops"]["fastgrad"] == 400 and rows[0]["ops"]["reference"] == 200
    assert rows[0]["nodes"]["fastgrad"] == 401 and rows[0]["nodes"]["reference"] == 301
    for row in rows:
        _check_figures(row, row)
        _check_figures(row, row["gc_off"])


def test_chain_child_reports_the_nodes_it_built():
    fg_run = benchmark._run_chain_child("fastgrad", 1000, True)
    ref_run = benchmark._run_chain_child("reference", 1000, False)
    assert fg_run["nodes"] == fastgrad.stats(benchmark._chain(fastgrad, 1000)[1]).nodes == 1001
    assert ref_run["nodes"] == benchmark.walk_nodes(benchmark._chain(reference, 1000)[1]) == 1501
    assert fg_run["grad"] == pytest.approx(ref_run["grad"], rel=1e-12)


@pytest.mark.parametrize("enabled", [True, False])
def test_gc_policy_holds_inside_and_restores_after(enabled):
    was = gc.isenabled()
    try:
        for outside in (True, False):
            (gc.enable if outside else gc.disable)()
            with benchmark.gc_policy(enabled):
                assert gc.isenabled() is enabled
            assert gc.isenabled() is outside
    finally:
        (gc.enable if was else gc.disable)()


def _fake_row(name, unit, ops, nodes, total, total_gc_off):
    by = benchmark._by_engine
    return benchmark._row(name, unit, by(**ops), by(**nodes), by(**total), by(**total_gc_off))


def test_markdown_table_shows_every_count_and_both_policies():
    rows = [_fake_row("chain: backward", benchmark.NS_PER_NODE, {"fastgrad": 100, "reference": 10},
                      {"fastgrad": 101, "reference": 16}, {"fastgrad": 1e-6, "reference": 1.6e-5},
                      {"fastgrad": 1e-6, "reference": 8e-6})]
    assert rows[0]["fastgrad"] == pytest.approx(1e-6 * 1e9 / 101)
    assert rows[0]["reference"] == pytest.approx(1000.0)
    table = benchmark.markdown_table(rows).splitlines()
    assert "GC off: reference / fastgrad" in table[0] and "graph nodes" in table[0]
    cells = [c.strip() for c in table[2].split("|")[1:-1]]
    assert cells[1:4] == ["100 / 10", "101 / 16 / —", "ns/node (own graph)"]
    assert cells[-4] == f"{1000 / (1e3 / 101):,.1f}×" and cells[-2] == f"{500 / (1e3 / 101):,.1f}×"


# ---- compiled tapes ----

def _check_compiled_row(row):
    for figures in (row, row["gc_off"]):
        assert figures["value"] > 0 and figures["baseline_value"] > 0
        assert figures["ratio"] == pytest.approx(figures["baseline_value"] / figures["value"], rel=1e-12)


def test_compiled_replay_divides_by_the_tapes_nodes():
    rows = benchmark.compiled_replay(n_nodes=2000, repeats=1)
    assert [r["baseline"] for r in rows] == ["eager backward", "eager build+backward"]
    for row in rows:
        assert row["size"] == "2,001 nodes" and row["unit"] == benchmark.NS_PER_NODE
        assert row["measured"] == "fg.compile replay, forward + backward"
        _check_compiled_row(row)
    # one replay measurement, two baselines; building costs more than backward alone
    assert rows[0]["value"] == rows[1]["value"]
    assert rows[1]["baseline_value"] > rows[0]["baseline_value"]


def test_affine_chain_has_the_nodes_it_says():
    x = fastgrad.Var(0.5)
    y = benchmark._affine_chain(x, 10)
    assert fastgrad.stats(y).nodes == 11
    assert fastgrad.compile(lambda: benchmark._affine_chain(x, 10)).tape().n == 11


def test_vmap_threads_row():
    (row,) = benchmark.vmap_threads(n_samples=300, rounds=1, block=1)
    assert row["size"] == "300 samples" and row["unit"] == "ms / call"
    assert (row["measured"], row["baseline"]) == ("threads=2", "threads=1")
    _check_compiled_row(row)


def test_compiled_markdown_table():
    row = benchmark._compiled_row("chain", "11 nodes", benchmark.NS_PER_NODE, "replay", "eager backward",
                                  {True: (2.0, 5.0), False: (2.0, 4.0)})
    table = benchmark.compiled_markdown_table([row]).splitlines()
    assert table[0].startswith("| measurement | size | unit | measured | value | baseline | value |")
    cells = [c.strip() for c in table[2].split("|")[1:-1]]
    assert cells == ["chain", "11 nodes", benchmark.NS_PER_NODE, "replay", "2.0", "eager backward", "5.0",
                     "2.5×", "2.0×"]
