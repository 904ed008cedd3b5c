"""Graph inspection: graph_table, to_dot, draw (optional graphviz), stats."""
import math
import pathlib
import sys
import types

import pytest
from conftest import run_python

import fastgrad as fg
from fastgrad.custom import custom_op
from fastgrad.inspection import GraphRow, draw, graph_table, stats, to_dot


def lecture_graph():
    a, x, b, c = fg.Var(1.0), fg.Var(2.0), fg.Var(3.0), fg.Var(4.0)
    y = (a * x + b) ** c
    return a, x, b, c, y


def test_graph_table_rows_for_the_lecture_example():
    a, x, b, c, y = lecture_graph()
    y.backward()
    t = graph_table(y, names={"a": a, "x": x, "b": b, "c": c, "y": y})
    assert len(t) == 7
    by_name = {r.name: r for r in t if r.name}
    assert by_name["a"].created == "leaf" and by_name["a"].grad == 1000.0
    assert by_name["x"].grad == 500.0 and by_name["b"].grad == 500.0
    assert math.isclose(by_name["c"].grad, 625 * math.log(5))
    mul = next(r for r in t if r.created != "leaf" and r.created[0] == "mul")
    add = next(r for r in t if r.created != "leaf" and r.created[0] == "add")
    pow_ = by_name["y"]
    assert mul.created == ("mul", (by_name["a"].id, by_name["x"].id)) and mul.value == 2.0
    assert add.created == ("add", (mul.id, by_name["b"].id)) and add.value == 5.0
    assert pow_.created == ("pow", (add.id, by_name["c"].id)) and pow_.value == 625.0
    # consumers and the local derivative of each consumer w.r.t. the node
    assert by_name["a"].consumers == (mul.id,) and by_name["a"].local == (2.0,)   # d(a x)/da = x
    assert by_name["x"].local == (1.0,)                                            # d(a x)/dx = a
    assert add.consumers == (pow_.id,) and add.local == (500.0,)                   # c (ax+b)^(c-1)
    assert math.isclose(by_name["c"].local[0], 625 * math.log(5))
    assert pow_.consumers == () and pow_.grad == 1.0
    assert [r.id for r in t] == list(range(7)) and t[-1] == pow_   # creation order, y last


LECTURE_TABLE = """\
id  name  value  created    consumers  d consumer/d node    grad
 0  a         1  leaf       4          2                    1000
 1  x         2  leaf       4          1                     500
 2  b         3  leaf       5          1                     500
 3  c         4  leaf       6          1005.9             1005.9
 4            2  mul(0, 1)  5          1                     500
 5            5  add(4, 2)  6          500                   500
 6  y       625  pow(5, 3)                                     1"""


def test_graph_table_prints_aligned_and_repr_is_the_table():
    a, x, b, c, y = lecture_graph()
    y.backward()
    t = graph_table(y, names={"a": a, "x": x, "b": b, "c": c, "y": y})
    assert str(t) == LECTURE_TABLE and repr(t) == LECTURE_TABLE
    unnamed = str(graph_table(y)).splitlines()
    assert unnamed[0].split()[:3] == ["id", "value", "created"]       # no name column without names
    assert len({len(line) for line in unnamed[:-1]}) == 1              # aligned (last row has no consumers)


def test_graph_table_node_used_twice_lists_the_consumer_once_with_summed_derivative():
    x = fg.Var(3.0)
    y = x * x
    t = graph_table(y, names={"x": x})
    assert t[0].consumers == (1,) and t[0].local == (6.0,)


def test_graph_table_constants_dot_and_sum():
    x = fg.Var(2.0)
    y = fg.sum([x * 3.0, fg.dot([x, 1.5], [x, x])])
    t = graph_table(y)
    text = str(t)
    assert "mulc(0, k=3)" in text and "dot(" in text and "sum(" in text
    assert t[0].local == (3.0, 2 * 2.0 + 1.5)   # d(3x)/dx, d(x*x + 1.5x)/dx


def test_graph_table_names_accept_both_directions_and_ignore_unreachable():
    a, x, b, c, y = lecture_graph()
    other = fg.Var(9.0)
    t = graph_table(y, names={a: "a", "zz": other})
    assert [r.name for r in t].count("a") == 1 and "zz" not in [r.name for r in t]


def test_graph_table_of_a_leaf_and_type_errors():
    t = graph_table(fg.Var(1.5))
    assert len(t) == 1 and t[0] == GraphRow(0, "", 1.5, "leaf", None, (), (), 0.0)
    with pytest.raises(TypeError):
        graph_table(1.0)
    with pytest.raises(TypeError):
        graph_table(fg.Var(1.0), names={"a": 2.0})


def test_graph_table_custom_op_consumer_has_no_local_derivative_table():
    op = custom_op(lambda x: 2 * x, lambda g, x: (2 * g,), name="twice")
    x = fg.Var(1.0)
    y = op(x)
    t = graph_table(y)
    assert t[1].created == ("custom", (0,))
    assert math.isnan(t[0].local[0])


def test_to_dot_contains_every_node_value_grad_and_edge():
    a, x, b, c, y = lecture_graph()
    y.backward()
    src = to_dot(y, names={"a": a, "y": y})
    assert src.startswith("digraph fastgrad {") and src.rstrip().endswith("}")
    for k in range(7):
        assert f"n{k} [" in src
    assert src.count("->") == 6 + 3          # 6 edges into ops, 3 op -> value
    assert "grad 1000" in src and "value 625" in src and '"**"' in src
    assert "{ a | value 1 | grad 1000 }" in src


def test_to_dot_escapes_record_characters_in_names():
    x = fg.Var(1.0)
    src = to_dot(x * 2, names={'w{1}|"<>': x})
    assert 'w\\{1\\}\\|\\"\\<\\>' in src


def test_draw_without_graphviz_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "graphviz", None)   # import graphviz -> ImportError
    y = fg.Var(2.0) * 3
    with pytest.raises(ImportError, match=r"pip install 'fastgrad\[graph\]'"):
        draw(y, tmp_path / "g.svg")
    with pytest.raises(ImportError, match="graphviz"):
        y.draw(str(tmp_path / "g.svg"))   # the Var method binds fastgrad.inspection.draw
    # .dot needs no graphviz
    out = y.draw(str(tmp_path / "g.dot"))
    assert pathlib.Path(out).read_text() == to_dot(y)


def test_draw_renders_through_graphviz_when_installed(monkeypatch, tmp_path):
    calls = []

    class Source:
        def __init__(self, source):
            self.source = source

        def pipe(self, format):
            calls.append(format)
            return b"<svg>" + self.source.encode() + b"</svg>"

    fake = types.ModuleType("graphviz")
    fake.Source = Source
    fake.ExecutableNotFound = type("ExecutableNotFound", (RuntimeError,), {})
    monkeypatch.setitem(sys.modules, "graphviz", fake)
    y = fg.Var(2.0).exp()
    path = y.draw(str(tmp_path / "g.svg"))
    assert calls == ["svg"] and pathlib.Path(path).read_bytes().startswith(b"<svg>digraph")
    assert isinstance(draw(y), Source)           # no path: a Source object (Jupyter displays it)
    with pytest.raises(ValueError, match="suffix"):
        draw(y, tmp_path / "noext")

    def missing(self, format):
        raise fake.ExecutableNotFound("dot")

    monkeypatch.setattr(Source, "pipe", missing)
    with pytest.raises(RuntimeError, match="'dot' program"):
        draw(y, tmp_path / "g.png")


def test_inspect_never_imports_graphviz():
    out = run_python("import sys, fastgrad, fastgrad.inspection, fastgrad.transforms; "
                     "print('graphviz' in sys.modules)")
    assert out.strip() == "False"


def test_stats_counts_ops_and_estimates_flops():
    *_, y = lecture_graph()
    s = stats(y)
    assert s.nodes == 7 and s.leaves == 4 and s.edges == 6
    assert s.ops == {"leaf": 4, "add": 1, "mul": 1, "pow": 1}
    assert list(s.ops)[0] == "leaf"                 # most frequent first
    assert s.forward_flops == 3                     # mul, add, pow
    assert s.backward_flops == 3 * 2 * 2 + 5        # 2 flops per edge + pow's partials
    text = str(s)
    assert "nodes 7" in text and "forward 3" in text and "pow" in text


def test_stats_of_fused_nodes_and_errors():
    xs = [fg.Var(float(k)) for k in range(4)]
    s = stats(fg.dot(xs, xs[::-1]) + fg.sum(xs))
    assert s.ops["dot"] == 1 and s.ops["sum"] == 1 and s.ops["add"] == 1
    assert s.forward_flops == 7 + 3 + 1
    with pytest.raises(TypeError):
        stats(3.0)
