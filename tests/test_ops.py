"""Every op of the op table (fastgrad/_optable.py), generated from the table: its value against the same
expression on Python floats with `math` (bit for bit), its first and second derivatives against central
differences, forward mode against reverse mode, and the engine against the hand-written reference.

An op added to the table is tested here with no test edit; `domain`, `k_values` and `special` in its row say
where to sample.
"""
import math
import random
import struct

import pytest
from conftest import DIFFERENTIABLE, call, central_difference, n_operands

import fastgrad as fg
from fastgrad import _engine, _optable, reference

VALUED = [op for op in _optable.OPS if op.form in (_optable.UNARY, _optable.BINARY, _optable.CONST)]
IDS = [op.name for op in VALUED]


def _bits(x):
    return struct.pack("<d", x)


def _same(x, y):
    """Bit-identical floats (any two NaNs count as the same)."""
    return (math.isnan(x) and math.isnan(y)) or _bits(x) == _bits(y)


def _samples(op, count, seed):
    """(operand values, k) pairs inside the op's smooth domain, with its special constants."""
    rng = random.Random(f"{op.name}-{seed}")
    lo, hi = op.domain
    out = []
    for _ in range(count):
        xs = [rng.uniform(lo, hi) for _ in range(n_operands(op))]
        k = rng.choice(op.k_values) if op.k_values else rng.choice([rng.uniform(-3.0, 3.0), 2.0, 0.5])
        out.append((xs, k))
    return out


def _python_value(op, xs, k):
    a = xs[0]
    b = xs[1] if len(xs) > 1 else 0.0
    return eval(op.python, {"math": math}, {"a": a, "b": b, "k": k})


@pytest.mark.parametrize("op", VALUED, ids=IDS)
def test_value_is_bit_identical_to_python_math(op):
    for xs, k in _samples(op, 300, "value"):
        try:
            expected = _python_value(op, xs, k)
        except (ValueError, OverflowError, ZeroDivisionError):
            continue  # Python raises where the engine gives the IEEE value: covered by the edge tests
        if isinstance(expected, complex):
            continue  # a negative base to a fractional power: the engine gives nan
        got = call(fg, op, [fg.Var(x) for x in xs], k).data
        assert _same(got, expected), (op.name, xs, k, got, expected)


@pytest.mark.parametrize("op", [op for op in VALUED if op.function], ids=lambda op: op.name)
def test_function_of_plain_numbers_gives_the_same_float(op):
    fn = getattr(fg, op.function)
    for xs, k in _samples(op, 20, "function"):
        args = [*xs, k] if op.param else xs
        by_number = fn(*args)
        by_var = fn(*[fg.Var(x) for x in xs], *([k] if op.param else []))
        assert type(by_number) is float and _same(by_number, by_var.data)


def _moved_value(op, xs, k, i, t):
    """The op's value with operand i moved to t."""
    moved = list(xs)
    moved[i] = t
    return call(fg, op, [fg.Var(v) for v in moved], k).data


@pytest.mark.parametrize("op", DIFFERENTIABLE, ids=lambda op: op.name)
def test_gradient_matches_central_differences(op):
    for xs, k in _samples(op, 12, "grad"):
        leaves = [fg.Var(x) for x in xs]
        call(fg, op, leaves, k).backward()
        for i in range(len(xs)):
            numeric = central_difference(lambda t, xs=xs, k=k, i=i: _moved_value(op, xs, k, i, t), xs[i])
            assert leaves[i].grad == pytest.approx(numeric, rel=1e-6, abs=1e-8), (op.name, xs, k, i)


@pytest.mark.parametrize("op", DIFFERENTIABLE, ids=lambda op: op.name)
def test_second_derivatives_match_differences_of_the_gradient(op):
    for xs, k in _samples(op, 4, "second"):
        assert fg.gradgradcheck(lambda *vs, k=k: call(fg, op, list(vs), k), xs, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("op", DIFFERENTIABLE, ids=lambda op: op.name)
def test_forward_mode_matches_reverse_mode(op):
    rng = random.Random(op.name)
    for xs, k in _samples(op, 8, "modes"):
        leaves = [fg.Var(x) for x in xs]
        out = call(fg, op, leaves, k)
        out.backward()
        tangent = [rng.uniform(-1.0, 1.0) for _ in xs]
        forward = _engine.jvp([out], leaves, tangent)[0]
        reverse = sum(v.grad * t for v, t in zip(leaves, tangent))
        assert forward == pytest.approx(reverse, rel=1e-12, abs=1e-14)


@pytest.mark.parametrize("op", DIFFERENTIABLE, ids=lambda op: op.name)
def test_engine_agrees_with_the_reference_including_kinks(op):
    points = _samples(op, 10, "reference") + [(list(xs), k) for xs in op.special
                                               for k in (op.k_values or (1.5,))]
    for xs, k in points:
        results = []
        for module in (fg, reference):
            leaves = [module.Var(x) for x in xs]
            out = call(module, op, leaves, k)
            out.backward()
            results.append((out.data, [v.grad for v in leaves]))
        (value, grads), (ref_value, ref_grads) = results
        assert _same(value, ref_value), (op.name, xs, k, value, ref_value)
        for g, r in zip(grads, ref_grads):
            assert g == pytest.approx(r, rel=1e-12, abs=1e-15) or (math.isnan(g) and math.isnan(r)), \
                (op.name, xs, k, grads, ref_grads)


@pytest.mark.parametrize("op", VALUED, ids=IDS)
def test_edges_give_the_references_ieee_values(op):
    edges = [0.0, -0.0, 1.0, -1.0, 1e-300, -1e-300, 710.0, -710.0, 1e308, math.inf, -math.inf, math.nan]
    for a in edges:
        for b in (edges if op.arity == 2 else [None]):
            xs = [a] if b is None else [a, b]
            for k in (op.k_values or (0.0, 2.0, -1.5)) if (op.form == _optable.CONST or op.param) else (1.0,):
                got = call(fg, op, [fg.Var(x) for x in xs], k).data
                want = call(reference, op, [reference.Var(x) for x in xs], k).data
                assert _same(got, want), (op.name, xs, k, got, want)


def test_every_row_is_reachable_through_the_public_api():
    for op in _optable.OPS:
        if op.form in (_optable.LEAF, _optable.NARY) and op.name != "sum" and op.name != "dot":
            continue
        if op.function:
            assert getattr(fg, op.function) is getattr(_engine, op.function)
            assert op.function in fg.__all__
            assert hasattr(reference, op.function), f"fastgrad.reference has no {op.function}"
        if op.method:
            assert hasattr(fg.Var, op.method) and hasattr(reference.Var, op.method)
        names = {o.var_var for o in _optable.OPERATORS} | {o.var_const for o in _optable.OPERATORS} | {
            o.const_var for o in _optable.OPERATORS}
        assert op.function or op.method or op.dunder or op.name in names, f"{op.name} has no public name"
    assert _engine.OP_NAMES == tuple(op.name for op in _optable.OPS)


def test_every_op_the_engine_can_make_has_a_row():
    x, y = fg.Var(0.7), fg.Var(1.3)
    made = {call(fg, op, [x, y, x, y, x, y][:n_operands(op)], 0.5).op for op in DIFFERENTIABLE}
    assert made == {op.name for op in DIFFERENTIABLE}


def test_the_generated_stub_lists_every_method_and_function():
    stub = open(_engine.__file__.rsplit("/", 1)[0] + "/_engine.pyi", encoding="utf-8").read()
    for op in _optable.OPS:
        if op.method:
            assert f"def {op.method}(self" in stub
        if op.function:
            assert f"def {op.function}(" in stub


def test_a_debug_build_aborts_on_an_op_code_the_table_does_not_know(tmp_path):
    import importlib.util
    import os
    import shutil

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    codegen_path = os.path.join(root, "src", "fastgrad", "codegen.py")
    if not os.path.exists(codegen_path):
        pytest.skip("the generator ships with the sources, not with an installed wheel")
    for rel in ("src/fastgrad", "fastgrad"):
        os.makedirs(tmp_path / rel)
    for name in os.listdir(os.path.join(root, "src", "fastgrad")):
        if name.endswith(".in"):
            shutil.copy(os.path.join(root, "src", "fastgrad", name), tmp_path / "src" / "fastgrad" / name)
    shutil.copy(os.path.join(root, "fastgrad", "_optable.py"), tmp_path / "fastgrad" / "_optable.py")
    spec = importlib.util.spec_from_file_location("_codegen_under_test", codegen_path)
    codegen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(codegen)
    for debug in (False, True):
        codegen.render(debug=debug, root=str(tmp_path))
        ops_pxd = (tmp_path / "src" / "fastgrad" / "_ops.pxd").read_text()
        for switch in ("op_value", "op_partials", "op_partials2"):
            assert (f'fastgrad_unknown_op(op, "{switch}")' in ops_pxd) == debug, (switch, debug)
        for op in _optable.OPS:
            assert f"{op.code} " in ops_pxd
