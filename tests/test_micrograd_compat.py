"""micrograd's Value API on fg.Value: the constructor's _children/_op/label, and _prev, _op, label, grad
behaving so that the graph-drawing code of micrograd's lecture notebooks runs unchanged."""
import gc

import pytest

import fastgrad as fg
from fastgrad import _engine
from fastgrad import Value


# ---- draw_dot exactly as micrograd's lecture notebooks write it (Digraph replaced by a recorder) ----

class Digraph:
    """Records what draw_dot asks graphviz to draw."""

    def __init__(self, format="svg", graph_attr=None):
        self.nodes = {}
        self.edges = []

    def node(self, name, label, shape=None):
        self.nodes[name] = label

    def edge(self, a, b):
        self.edges.append((a, b))


def trace(root):
    # builds a set of all nodes and edges in a graph
    nodes, edges = set(), set()

    def build(v):
        if v not in nodes:
            nodes.add(v)
            for child in v._prev:
                edges.add((child, v))
                build(child)
    build(root)
    return nodes, edges


def draw_dot(root):
    dot = Digraph(format='svg', graph_attr={'rankdir': 'LR'})  # LR = left to right

    nodes, edges = trace(root)
    for n in nodes:
        uid = str(id(n))
        # for any value in the graph, create a rectangular ('record') node for it
        dot.node(name=uid, label="{ %s | data %.4f | grad %.4f }" % (n.label, n.data, n.grad), shape='record')
        if n._op:
            # if this value is a result of some operation, create an op node for it
            dot.node(name=uid + n._op, label=n._op)
            # and connect this node to it
            dot.edge(uid + n._op, uid)

    for n1, n2 in edges:
        # connect n1 to the op node of n2
        dot.edge(str(id(n1)), str(id(n2)) + n2._op)

    return dot


def labelled_graph():
    a = Value(2.0, label='a')
    b = Value(-3.0, label='b')
    c = Value(10.0, label='c')
    e = a * b
    e.label = 'e'
    d = e + c
    d.label = 'd'
    f = Value(-2.0, label='f')
    L = d * f
    L.label = 'L'
    return a, b, c, d, e, f, L


def test_the_lecture_graph_draws_as_micrograd_draws_it():
    a, b, c, d, e, f, L = labelled_graph()
    L.backward()
    dot = draw_dot(L)
    records = sorted(v for v in dot.nodes.values() if v.startswith("{"))
    assert records == sorted([
        "{ a | data 2.0000 | grad 6.0000 }", "{ b | data -3.0000 | grad -4.0000 }",
        "{ c | data 10.0000 | grad -2.0000 }", "{ d | data 4.0000 | grad -2.0000 }",
        "{ e | data -6.0000 | grad -2.0000 }", "{ f | data -2.0000 | grad 4.0000 }",
        "{ L | data -8.0000 | grad 1.0000 }",
    ])
    ops = sorted(v for v in dot.nodes.values() if not v.startswith("{"))
    assert ops == ["*", "*", "+"]
    # 3 op -> value edges, 6 value -> op edges, each labelled value is the very object the user holds
    assert len(dot.edges) == 9
    nodes, edges = trace(L)
    assert {id(n) for n in nodes} == {id(v) for v in (a, b, c, d, e, f, L)}
    assert {(id(x), id(y)) for x, y in edges} == {
        (id(a), id(e)), (id(b), id(e)), (id(e), id(d)), (id(c), id(d)), (id(d), id(L)), (id(f), id(L))}


def test_the_neuron_graph_with_tanh():
    x1, x2 = Value(2.0, label='x1'), Value(0.0, label='x2')
    w1, w2 = Value(-3.0, label='w1'), Value(1.0, label='w2')
    b = Value(6.8813735870195432, label='b')
    x1w1 = x1 * w1
    x1w1.label = 'x1*w1'
    x2w2 = x2 * w2
    x2w2.label = 'x2*w2'
    x1w1x2w2 = x1w1 + x2w2
    x1w1x2w2.label = 'x1*w1 + x2*w2'
    n = x1w1x2w2 + b
    n.label = 'n'
    o = n.tanh()
    o.label = 'o'
    o.backward()
    nodes, edges = trace(o)
    assert len(nodes) == 10 and len(edges) == 9
    assert o._op == 'tanh' and n._op == '+' and x1w1._op == '*' and x1._op == ''
    assert round(x1.grad, 4) == -1.5 and round(w1.grad, 4) == 1.0 and x2.grad == pytest.approx(0.5)


def test_unlabelled_interior_nodes_keep_one_identity_per_node():
    a = Value(3.0)
    shared = a * 2.0            # reached by two paths below
    y = shared * shared + shared
    nodes, edges = trace(y)
    # y, the product, shared, a: shared appears once although the walk meets it three times
    assert len(nodes) == 4
    assert len([n for n in nodes if n.data == 6.0]) == 1
    dup = a + a
    assert len(dup._prev) == 1


def test_op_symbols():
    a, b = Value(2.0), Value(3.0)
    assert (a + b)._op == '+' and (a + 1)._op == '+' and (1 + a)._op == '+'
    assert (a * b)._op == '*' and (a * 2)._op == '*'
    assert (a ** 2)._op == '**2' and (a ** 0.5)._op == '**0.5' and (a ** -1)._op == '**-1'
    assert a.relu()._op == 'ReLU' and a.tanh()._op == 'tanh' and a.exp()._op == 'exp'
    assert (a - b)._op == '-' and (a / b)._op == '/'
    assert a._op == '' and a._prev == set()


def test_constructor_children_and_op_are_reported_not_differentiated():
    a, b = Value(2.0), Value(3.0)
    c = Value(5.0, (a, b), '+')
    assert c._op == '+' and {id(x) for x in c._prev} == {id(a), id(b)}
    assert c.is_leaf
    c.backward()
    assert a.grad == 0.0 and b.grad == 0.0 and c.grad == 1.0   # micrograd: the op installs the rule
    d = Value(1.0, _children=[a], _op='custom', label='d')
    assert d.label == 'd' and d._op == 'custom'


def test_labels_belong_to_the_node():
    a = Value(1.0)
    a.label = 'x'
    y = a * 2.0
    (parent,) = y._prev
    assert parent is a and parent.label == 'x'
    a.label = ''
    assert a.label == ''
    assert Value(1.0).label == ''


@pytest.mark.parametrize("kwargs, match", [
    ({"_children": 3}, "_children must be an iterable"),
    ({"_children": [1.0]}, "_children must hold Vars"),
    ({"_op": 3}, "_op must be a str"),
    ({"label": 3}, "label must be a str"),
])
def test_constructor_errors(kwargs, match):
    with pytest.raises(TypeError, match=match):
        Value(1.0, **kwargs)


def test_label_setter_error():
    with pytest.raises(TypeError, match="label must be a str"):
        Value(1.0).label = None


def test_extras_are_freed_with_their_nodes():
    gc.collect()
    before = _engine.memory_stats()
    for k in range(5000):
        a = Value(float(k), label='a')
        b = Value(1.0, (a,), 'op', label='b')
        c = a * b
        c.label = 'c'
        del a, b, c
    after = _engine.memory_stats()
    assert after["micrograd_extras"] == before["micrograd_extras"]
    assert after["nodes_alive"] == before["nodes_alive"]


def test_value_is_var():
    assert fg.Value is fg.Var
