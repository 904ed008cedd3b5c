"""What is particular to the pure-Python reference (fastgrad.reference): the oracle and benchmark baseline."""
import math
import sys

import pytest
from conftest import run_python

import fastgrad
from fastgrad import _optable
from fastgrad import reference as ref

PUBLIC = ["Var", "Value", *_optable.PUBLIC_FUNCTIONS]
METHODS = ["backward", "detach", *(op.method for op in _optable.OPS if op.method)]


def test_reference_has_the_public_names_of_the_engine():
    assert sorted(ref.__all__) == sorted(PUBLIC)
    for name in PUBLIC:
        assert callable(getattr(ref, name)) and callable(getattr(fastgrad, name)), name
    for method in METHODS:
        assert callable(getattr(ref.Var, method)) and callable(getattr(fastgrad.Var, method)), method


def test_reference_runs_without_numpy():
    out = run_python(f"""
import importlib.util, sys
sys.modules["numpy"] = None  # any import of numpy now fails
spec = importlib.util.spec_from_file_location("reference", {ref.__file__!r})
ref = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ref)
x = ref.Var(2.0)
y = (x * x + 1).log()
y.backward()
print(y.data, x.grad, "numpy" in sys.modules and sys.modules["numpy"] is not None)
""")
    value, grad, numpy_loaded = out.split()
    assert float(value) == math.log(5.0) and float(grad) == 4.0 / 5.0 and numpy_loaded == "False"


def test_reference_deep_chain_needs_no_recursion():
    x = ref.Var(1.0)
    y = x
    for _ in range(10 ** 5):
        y = y * 1.0 + 0.0
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(100)  # backward is iterative: it needs no Python stack depth
    try:
        y.backward()
    finally:
        sys.setrecursionlimit(limit)
    assert x.grad == 1.0
    del y  # freeing a 10^5-deep chain of Python objects must not crash either


def test_reference_sum_and_dot_are_chains_of_binary_nodes():
    a, b, c = ref.Var(1.0), ref.Var(2.0), ref.Var(3.0)
    s = ref.sum([a, b, c])
    ops, v = [], s
    while not v.is_leaf:
        ops.append(v.op)
        assert len(v._prev) == 2
        v = v._prev[0]
    assert ops == ["add"] * 3 and v.data == 0.0  # ((0 + a) + b) + c
    d = ref.dot([a, b], [c, 4.0])
    assert d.op == "add" and [p.op for p in d._prev] == ["add", "mul"] and d.data == 11.0


def test_reference_dot_rejects_sequences_of_different_lengths():
    with pytest.raises(ValueError):
        ref.dot([ref.Var(1.0)], [1.0, 2.0])


def test_reference_functions_on_numbers_give_floats():
    assert ref.exp(0) == 1.0 and type(ref.exp(0)) is float
    assert ref.abs(-2) == 2.0 and ref.relu(-3) == 0.0 and ref.sigmoid(0) == 0.5
    assert ref.maximum(1, 2) == 2.0 and ref.minimum(1, 2.5) == 1.0 and type(ref.maximum(1, 2)) is float
    assert ref.log(0) == -math.inf and math.isnan(ref.sqrt(-1)) and ref.exp(1e4) == math.inf


def test_reference_backward_uses_the_values_of_the_forward_pass():
    x = ref.Var(2.0)
    y = x * x
    x.data = 5.0  # the escape hatch (docs/semantics.md, 2): the reference uses the forward values
    y.backward()
    assert x.grad == 4.0


def test_reference_gradients_are_floats_even_for_integer_leaves():
    x = ref.Var(3)
    (x * 2).backward()
    assert type(x.data) is float and type(x.grad) is float and x.grad == 2.0
