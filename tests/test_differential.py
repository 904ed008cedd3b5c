"""Differential tests: random expression graphs give the same values and gradients in engine and reference.

A program is a list of instructions (op, args); an arg is an int (the index of an earlier node, leaves first)
or a float (a constant). Programs are generated with the reference, keeping every operand in its op's domain
(no poles, no negative logs) and every value finite and moderate; both engines then replay them.
"""
import math
import operator
import random

import pytest

import fastgrad
from fastgrad import reference

N_GRAPHS = 200
BINARY = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv, "**": operator.pow}
METHODS = ["exp", "log", "sqrt", "sin", "cos", "tanh", "sigmoid", "relu"]
OPS = [*BINARY, "neg", "abs", *METHODS, *(f"fg.{m}" for m in [*METHODS, "abs"]), "fg.maximum", "fg.minimum",
       "fg.sum", "fg.dot", "+="]
POW_EXPONENTS = [2.0, 3.0, -1.0, 0.5, 1.5, -0.5, 0.0]  # for node ** constant
POW_BASES = [0.5, 2.0, 3.0, 0.0]  # for constant ** node


def apply(fg, op, xs):
    """Run one instruction on resolved operands (Vars of module fg, or floats)."""
    if op in BINARY:
        return BINARY[op](*xs)
    if op == "neg":
        return -xs[0]
    if op == "abs":
        return abs(xs[0])
    if op == "+=":
        a, b = xs
        a += b
        return a
    if op == "fg.dot":
        half = len(xs) // 2
        return fg.dot(xs[:half], xs[half:])
    if op == "fg.sum":
        return fg.sum(xs)
    if op.startswith("fg."):
        return getattr(fg, op[3:])(*xs)
    return getattr(xs[0], op)()


def valid(op, args, values):
    """Is the instruction inside its op's domain, away from poles?"""
    if op == "/":
        return math.fabs(values[1]) >= 0.1
    if op == "**":
        base, exponent = values
        if isinstance(args[1], float) and exponent == int(exponent):
            return exponent >= 0 or math.fabs(base) >= 0.1  # integer constant: any base but near 0 ** -1
        return base >= 0.1 or (base == 0.0 and isinstance(args[0], float))  # 0 ** node only as a constant
    if op in ("log", "sqrt", "fg.log", "fg.sqrt"):
        return values[0] >= 0.1
    if op in ("exp", "fg.exp"):
        return values[0] <= 10.0
    return True


def random_instruction(rng, n):
    """An instruction over n existing nodes: an op and its args (node indices and constants)."""
    def node():
        return rng.randrange(max(0, n - 6), n) if rng.random() < 0.6 else rng.randrange(n)

    def constant():
        return round(rng.choice([-1.0, 1.0]) * rng.uniform(0.1, 3.0), 3)

    op = rng.choice(OPS)
    if op in BINARY or op in ("fg.maximum", "fg.minimum", "+="):
        form = rng.choice(["nn", "nn", "nk", "kn"]) if op != "+=" else rng.choice(["nn", "nk"])
        if op == "**" and form == "nk":
            return op, (node(), rng.choice(POW_EXPONENTS))
        if op == "**" and form == "kn":
            return op, (rng.choice(POW_BASES), node())
        return op, tuple(node() if f == "n" else constant() for f in form)
    if op in ("fg.sum", "fg.dot"):
        k = rng.randint(1, 5) if op == "fg.sum" else 2 * rng.randint(1, 4)
        args = [node() if rng.random() < 0.75 else constant() for _ in range(k)]
        args[rng.randrange(k)] = node()  # at least one node
        return op, tuple(args)
    return op, (node(),)


def random_program(seed):
    """Leaf values and a program of 5 to 60 instructions, generated (and checked) with the reference."""
    rng = random.Random(seed)
    leaves = [round(rng.uniform(-2.0, 2.0), 6) for _ in range(rng.randint(1, 6))]
    nodes = [reference.Var(x) for x in leaves]
    program = []
    for _ in range(rng.randint(5, 60)):
        while True:
            op, args = random_instruction(rng, len(nodes))
            xs = [nodes[a] if type(a) is int else a for a in args]
            if valid(op, args, [float(x) for x in xs]):
                y = apply(reference, op, xs)
                if math.isfinite(y.data) and math.fabs(y.data) <= 1e3:
                    break
        program.append((op, args))
        nodes.append(y)
    return leaves, program


def run(fg, leaves, program):
    """Replay a program with module fg, sum its sinks (nodes no instruction uses) and backpropagate."""
    nodes = [fg.Var(x) for x in leaves]
    used = set()
    for op, args in program:
        used.update(a for a in args if type(a) is int)
        nodes.append(apply(fg, op, [nodes[a] if type(a) is int else a for a in args]))
    out = fg.sum([v for i, v in enumerate(nodes) if i >= len(leaves) and i not in used])
    out.backward()
    return out, nodes


def close(x, y):
    return math.isclose(x, y, rel_tol=1e-12, abs_tol=1e-12)


@pytest.mark.parametrize("seed", range(N_GRAPHS))
def test_random_graph_agrees_with_reference(seed):
    leaves, program = random_program(seed)
    out, nodes = run(fastgrad, leaves, program)
    ref_out, ref_nodes = run(reference, leaves, program)
    assert close(out.data, ref_out.data), (out.data, ref_out.data, program)
    for i, (v, r) in enumerate(zip(nodes, ref_nodes)):
        assert close(v.data, r.data), (i, "value", v.data, r.data, program[:i - len(leaves) + 1])
        assert close(v.grad, r.grad), (i, "grad", v.grad, r.grad, program)


def test_random_graphs_mix_every_op_and_size():
    programs = [random_program(seed)[1] for seed in range(N_GRAPHS)]
    assert {op for program in programs for op, _ in program} == set(OPS)
    assert min(map(len, programs)) <= 10 and max(map(len, programs)) >= 50
    forms = {(op, tuple(type(a) for a in args)) for program in programs for op, args in program}
    assert all((op, (float, int)) in forms and (op, (int, float)) in forms for op in BINARY)  # reflected too
