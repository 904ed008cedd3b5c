"""Differential fuzzing with hypothesis: random expression graphs over every op, each checked several ways.

A `Program` is a few leaf values and a list of instructions (op, args); an arg is a `Ref` to an earlier node
(leaves first) or a plain number (a constant). Programs are drawn by hypothesis strategies, so a failure
shrinks to a small graph, printed as Python code that reproduces it. Each graph is checked:

1. values: every node of the engine bit-identical to `fastgrad.reference` (any two NaNs count as equal);
2. gradients after ``out.backward()`` equal to the reference's (rel 1e-9 / abs 1e-12, or the same inf/nan);
3. reverse against forward mode (engine only): ``fg.jvp`` is the gradient dotted with the tangent, and
   ``fg.grad`` is the ``.grad`` of backward;
4. on smooth graphs, the gradient against central differences;
5. on smooth graphs, ``fg.hessian`` against central differences of the gradient, ``fg.hvp`` against H @ v.

Graphs are drawn in two kinds. "edge" graphs take leaves and constants from a pool of kinks and domain edges
(0 and -0.0, ties, negative numbers, ±inf, nan, huge numbers) next to random floats, and must follow DESIGN
§3's IEEE semantics exactly as the reference does. "smooth" graphs keep every op away from its kinks, poles
and domain edges (see `smooth_step`), so that finite differences are meaningful there.

Checks 1 and 2 run through every entry of `EVALUATORS` (only eager graph building today; a compiled replay
joins there). The default profile is fixed-seed and quick; the long one draws 10^5 graphs per test:

    FASTGRAD_FUZZ=long python -m pytest -q tests/test_fuzz.py

(add ``-p no:cacheprovider --hypothesis-show-statistics`` to see how many graphs were smooth, which edges
were hit, and how long each part took; ``--hypothesis-seed=N`` picks another sequence of graphs).
"""
import math
import operator
import os
import struct
from typing import NamedTuple, Tuple, Union

import numpy as np
from hypothesis import HealthCheck, Phase, assume, event, given, settings
from hypothesis import strategies as st

import fastgrad as fg
from fastgrad import reference

inf, nan = math.inf, math.nan

# ---------------------------------------------------------------------------------------------------------
# Profiles
# ---------------------------------------------------------------------------------------------------------

# NOTE: no deadline in either profile: the machine is shared and a timing failure is not an engine bug.
settings.register_profile("fastgrad-fuzz", derandomize=True, database=None, deadline=None, print_blob=True)
settings.register_profile("fastgrad-fuzz-long", max_examples=100_000, database=None, deadline=None,
                          print_blob=True, suppress_health_check=[HealthCheck.too_slow])
LONG = os.environ.get("FASTGRAD_FUZZ", "") == "long"
PROFILE = settings.get_profile("fastgrad-fuzz-long" if LONG else "fastgrad-fuzz")


def budget(examples):
    """The settings of one fuzz test: `examples` graphs in the default profile, the long profile's count
    otherwise."""
    return settings(PROFILE) if LONG else settings(PROFILE, max_examples=examples)


# ---------------------------------------------------------------------------------------------------------
# Programs
# ---------------------------------------------------------------------------------------------------------

class Ref(NamedTuple):
    """An operand that is an earlier node of the program (leaves are 0 .. n_leaves - 1)."""
    index: int

    def __repr__(self):
        return f"v{self.index}"


Arg = Union[Ref, float, int]


class Instruction(NamedTuple):
    op: str
    args: Tuple[Arg, ...]


BINARY = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv, "**": operator.pow}
METHODS = ("exp", "log", "sqrt", "sin", "cos", "tanh", "sigmoid", "relu")
FUNCTIONS = tuple(f"fg.{name}" for name in (*METHODS, "abs"))
PAIRWISE = (*BINARY, "+=", "fg.maximum", "fg.minimum", "mul_add")   # Var∘Var, Var∘number, number∘Var
UNARY = ("neg", "abs", *METHODS, *FUNCTIONS, "cube")
OPS = (*PAIRWISE, *UNARY, "fg.sum", "fg.dot")
FORMS = ("nn", "nk", "kn")      # n: a node operand, k: a number
MAX_INSTRUCTIONS = 40


def _cube_backward(g, x):
    """d(x*x*x) = g*(x*x) + x*(x*g) + x*(x*g): the terms the reference's two mul nodes give, in its order."""
    return g * (x * x) + x * (x * g) + x * (x * g)


def _mul_add_backward(g, x, y):
    """d(x*y + x): (g + y*g, x*g), summed in the reference's order."""
    return (g + y * g, x * g)


# Custom ops whose forward VALUE is bit-identical to the reference expression in REFERENCE_CUSTOM (the same
# float operations in the same order); their jvp rules use fastgrad operations, so they can be differentiated.
CUSTOM = {
    "cube": fg.custom_op(lambda x: x * x * x, _cube_backward, name="cube",
                         jvp=lambda primals, tangents: 3.0 * primals[0] * primals[0] * tangents[0]),
    "mul_add": fg.custom_op(lambda x, y: x * y + x, _mul_add_backward, name="mul_add",
                            jvp=lambda p, t: t[0] * (p[1] + 1.0) + p[0] * t[1]),
}
REFERENCE_CUSTOM = {"cube": lambda x: x * x * x, "mul_add": lambda x, y: x * y + x}


def apply(module, op, xs):
    """Run one instruction with `module` (fastgrad or fastgrad.reference) on resolved operands."""
    if op in BINARY:
        return BINARY[op](*xs)
    if op == "+=":
        a, b = xs
        a += b
        return a
    if op == "neg":
        return -xs[0]
    if op == "abs":
        return abs(xs[0])
    if op in METHODS:
        return getattr(xs[0], op)()
    if op in CUSTOM:
        return (CUSTOM if module is fg else REFERENCE_CUSTOM)[op](*xs)
    if op == "fg.dot":
        half = len(xs) // 2
        return module.dot(xs[:half], xs[half:])
    if op == "fg.sum":
        return module.sum(xs)
    return getattr(module, op[3:])(*xs)


def _code(op, args):
    """One instruction as Python source."""
    a = [repr(x) for x in args]
    if op in BINARY:
        return f"{a[0]} {op} {a[1]}"
    if op == "+=":
        return f"t = {a[0]}; t += {a[1]}"
    if op == "neg":
        return f"-{a[0]}"
    if op == "abs":
        return f"abs({a[0]})"
    if op in METHODS:
        return f"{a[0]}.{op}()"
    if op == "fg.dot":
        half = len(a) // 2
        return f"fg.dot([{', '.join(a[:half])}], [{', '.join(a[half:])}])"
    if op == "fg.sum":
        return f"fg.sum([{', '.join(a)}])"
    return f"{op}({', '.join(a)})"


class Program(NamedTuple):
    """Leaf values and instructions: node n_leaves + k is made by code[k]."""
    main: Tuple[float, ...]                 # the leaf values of every check
    extra: Tuple[Tuple[float, ...], ...]    # more leaf values for the checks against the reference
    code: Tuple[Instruction, ...]
    kind: str                               # "edge", "smooth" or "table": how it was drawn
    tangent: Tuple[float, ...]              # a direction for jvp and hvp
    summary: str = ""                       # what repr shows instead of the code, if given

    @property
    def n_leaves(self):
        return len(self.main)

    @property
    def points(self):
        return (self.main, *self.extra)

    @property
    def line(self):
        """Points main + t * LINE_DIRECTION for the steps t in LINE: cheap variety for the value check
        (hypothesis takes ~100 µs to draw a float, evaluating a node on both sides ~10 µs)."""
        return [tuple(x + t * d for x, d in zip(self.main, LINE_DIRECTION)) for t in LINE]

    @property
    def sinks(self):
        """Instruction nodes no later instruction uses; the output is their fg.sum."""
        used = {a.index for ins in self.code for a in ins.args if isinstance(a, Ref)}
        return [i for i in range(self.n_leaves, self.n_leaves + len(self.code)) if i not in used]

    def ancestors(self, node):
        """The nodes `node` depends on, itself included."""
        needed, stack = {node}, [node]
        while stack:
            i = stack.pop()
            if i >= self.n_leaves:
                for a in self.code[i - self.n_leaves].args:
                    if isinstance(a, Ref) and a.index not in needed:
                        needed.add(a.index)
                        stack.append(a.index)
        return needed

    def source(self, point=None, node=None):
        """Python code that builds this graph at `point` (default: main) and backpropagates (a reproducer);
        with `node`, only what the value of that node depends on."""
        point = self.main if point is None else point
        n = self.n_leaves
        keep = self.ancestors(node) if node is not None else set(range(n + len(self.code)))
        used = {a.index for ins in self.code for a in ins.args if isinstance(a, Ref)}
        lines = ["import fastgrad as fg", "from math import inf, nan"]
        if any(ins.op in CUSTOM for k, ins in enumerate(self.code) if n + k in keep):
            lines.append("from tests.test_fuzz import CUSTOM; cube, mul_add = CUSTOM.values()")
        lines += [f"v{i} = fg.Var({x!r})" for i, x in enumerate(point) if i in used and i in keep]
        for k, ins in enumerate(self.code):
            if n + k in keep:
                line = _code(ins.op, ins.args)
                lines.append(f"{line}; v{n + k} = t" if ins.op == "+=" else f"v{n + k} = {line}")
        if node is None:
            lines.append(f"out = fg.sum([{', '.join(f'v{i}' for i in self.sinks)}]); out.backward()")
        return "\n".join(lines)

    def __repr__(self):
        if self.summary:
            return f"Program({self.kind}, main={self.main!r}, tangent={self.tangent!r}: {self.summary})"
        others = "".join(f"\n# also at {p!r}" for p in self.extra)
        return f"Program({self.kind}, tangent={self.tangent!r}):\n{self.source()}{others}\n"


# the line of points main + t * LINE_DIRECTION: fixed steps spread over (-3, 3) with generic mantissas, and
# a direction that moves every leaf
LINE = tuple(3.0 * math.sin(k) for k in range(1, 25))
LINE_DIRECTION = (1.0, -0.75, 0.5, 1.25, -1.5, 0.625)


def build(module, program, point):
    """The program's nodes (leaves first), built with `module` at leaf values `point` (numbers or Vars)."""
    nodes = [x if isinstance(x, module.Var) else module.Var(x) for x in point]
    for ins in program.code:
        nodes.append(apply(module, ins.op, [nodes[a.index] if isinstance(a, Ref) else a for a in ins.args]))
    return nodes


def operand_values(ins, values):
    return [values[a.index] if isinstance(a, Ref) else float(a) for a in ins.args]


# ---------------------------------------------------------------------------------------------------------
# Kinks, poles and domain edges: what a point hits (edge graphs), and the smooth-graph domain filter
# ---------------------------------------------------------------------------------------------------------

def edges_hit(op, xs, y):
    """The kinks and domain edges instruction `op` meets with operand values `xs` (its value is `y`)."""
    hit = set()
    if any(math.isnan(x) for x in xs):
        hit.add("nan operand")
    if any(math.isinf(x) for x in xs):
        hit.add("inf operand")
    if op in ("relu", "fg.relu", "abs", "fg.abs") and xs[0] == 0:
        hit.add(f"{op.replace('fg.', '')} at 0")
    elif op in ("fg.maximum", "fg.minimum") and xs[0] == xs[1]:
        hit.add(f"{op[3:]} tie")
    elif op in ("log", "fg.log", "sqrt", "fg.sqrt") and xs[0] <= 0:
        hit.add(f"{op.replace('fg.', '')}({'0' if xs[0] == 0 else 'negative'})")
    elif op in ("exp", "fg.exp") and math.isinf(y) and math.isfinite(xs[0]):
        hit.add("exp overflow")
    elif op == "/" and xs[1] == 0:
        hit.add("0 / 0" if xs[0] == 0 else "x / 0")
    elif op == "**":
        base, exponent = xs
        if base == 0 and exponent < 0:
            hit.add("0 ** negative")
        elif base == 0 and exponent == 0:
            hit.add("0 ** 0")
        elif base < 0 and math.isfinite(exponent) and exponent != int(exponent):
            hit.add("negative ** fraction")
    return hit


MODERATE = 1e3      # smooth graphs keep every value within ±MODERATE
KINK_MARGIN = 0.05  # ... every relu/abs input and max/min difference at least this far from 0
POLE_MARGIN = 0.1   # ... every divisor and log/sqrt/pow base at least this far from 0


def smooth_step(ins, xs, y):
    """Is instruction `ins` (operand values `xs`, value `y`) smooth there, away from kinks and poles?"""
    if not (math.isfinite(y) and math.fabs(y) <= MODERATE):
        return False
    op = ins.op
    if op in ("relu", "fg.relu", "abs", "fg.abs"):
        return math.fabs(xs[0]) >= KINK_MARGIN
    if op in ("fg.maximum", "fg.minimum"):
        return math.fabs(xs[0] - xs[1]) >= KINK_MARGIN
    if op == "/":
        return math.fabs(xs[1]) >= POLE_MARGIN
    if op in ("log", "fg.log", "sqrt", "fg.sqrt"):
        return xs[0] >= POLE_MARGIN
    if op == "**":
        base, exponent = xs
        if not isinstance(ins.args[1], Ref) and exponent == int(exponent):   # x ** integer constant
            return exponent >= 0 or math.fabs(base) >= POLE_MARGIN
        return base >= POLE_MARGIN
    return True


def branches(program, values):
    """Which smooth piece every instruction is on (signs of kink arguments, divisors, log/pow bases)."""
    out = []
    for ins in program.code:
        xs = operand_values(ins, values)
        if ins.op in ("fg.maximum", "fg.minimum"):
            out.append(np.sign(xs[0] - xs[1]))
        elif ins.op in ("relu", "fg.relu", "abs", "fg.abs", "log", "fg.log", "sqrt", "fg.sqrt", "**"):
            out.append(np.sign(xs[0]))
        elif ins.op == "/":
            out.append(np.sign(xs[1]))
    return out


def is_smooth(program, values):
    """Are all values (leaves and nodes) finite and moderate, and every instruction smooth?"""
    if not all(math.isfinite(v) and math.fabs(v) <= MODERATE for v in values):
        return False
    return all(smooth_step(ins, operand_values(ins, values), values[program.n_leaves + k])
               for k, ins in enumerate(program.code))


# ---------------------------------------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------------------------------------

EDGE_NUMBERS = (0.0, -0.0, 1.0, -1.0, 2.0, 0.5, -2.0, 3.0, inf, -inf, nan, 800.0, -800.0, 1e300, -1e-300)
edge_numbers = st.one_of(st.sampled_from(EDGE_NUMBERS), st.floats(-4.0, 4.0), st.floats(), st.integers(-3, 3))
smooth_numbers = st.floats(-3.0, 3.0)

# x ** k: 2 is drawn most often: squares are the commonest power, the one engines special-case (a*a differs
# from libm's pow in ~0.1% of inputs, so it must be seen thousands of times); k ** x: bases at the edges
EDGE_EXPONENTS = (3.0, 2, 0.0, -1.0, 0.5, -0.5, 1.5, -2.0, 1.0, 0.3, inf, -inf, nan)
EDGE_BASES = (0.0, -0.0, 2.0, 0.5, -2.0, 1.0, math.e, inf, nan)
NUMBERS = {
    ("edge", "constant"): edge_numbers,
    ("edge", "exponent"): st.one_of(st.just(2.0), st.sampled_from(EDGE_EXPONENTS), st.floats(-3.0, 3.0)),
    ("edge", "base"): st.one_of(st.sampled_from(EDGE_BASES), st.floats(-3.0, 3.0)),
    ("smooth", "constant"): smooth_numbers,
    ("smooth", "exponent"): st.one_of(st.just(2.0), st.sampled_from((3.0, -1.0, 0.5, 1.5, -0.5, 0.0, 1.0)),
                                      st.floats(-3.0, 3.0)),
    ("smooth", "base"): st.one_of(st.sampled_from((2.0, 0.5, 3.0, 1.0, math.e)), st.floats(0.1, 4.0)),
}
LEAVES = {"edge": st.one_of(st.floats(-4.0, 4.0), edge_numbers.map(float)), "smooth": smooth_numbers}
# the binary operators have three forms each (and / and ** the most edges), so they are drawn more often
WEIGHTED_OPS = tuple(op for op in OPS for _ in range({"+": 2, "-": 2, "*": 2, "/": 3, "**": 4}.get(op, 1)))


class Back(NamedTuple):
    """A drawn node operand, relative: the node `steps` before the newest (modulo the nodes there are).

    Relative operands keep instructions independent of one another, so hypothesis can delete one (while
    shrinking) without the others changing their meaning much."""
    steps: int


# usually one of the last few nodes (deep graphs), else any earlier one (shared subexpressions)
backs = st.one_of(st.integers(0, 3), st.integers(0, MAX_INSTRUCTIONS + 5)).map(Back)


@st.composite
def raw_instructions(draw, kind):
    """One instruction with `Back` operands, and constants of the given kind ("edge" or "smooth")."""
    op = draw(st.sampled_from(WEIGHTED_OPS))
    if op in PAIRWISE:
        form = draw(st.sampled_from(FORMS))
        if form == "nn":
            a = draw(backs)
            return Instruction(op, (a, draw(st.one_of(st.just(a), backs))))   # x ∘ x as well
        k = draw(NUMBERS[kind, {"nk": "exponent", "kn": "base"}[form] if op == "**" else "constant"])
        return Instruction(op, (draw(backs), k) if form == "nk" else (k, draw(backs)))
    if op in ("fg.sum", "fg.dot"):
        size = draw(st.integers(1, 5)) * (2 if op == "fg.dot" else 1)
        args = draw(st.lists(st.one_of(backs, NUMBERS[kind, "constant"]), min_size=size, max_size=size))
        args[draw(st.integers(0, size - 1))] = draw(backs)    # at least one node
        return Instruction(op, tuple(args))
    return Instruction(op, (draw(backs),))


def resolve(ins, n):
    """The instruction as the (n+1)-th node: `Back` operands become `Ref`s to the n nodes before it."""
    args = tuple(Ref(n - 1 - a.steps % n) if isinstance(a, Back) else a for a in ins.args)
    return Instruction(ins.op, args)


@st.composite
def programs(draw, kind=None):
    """A program of 1-6 leaves and 1-MAX_INSTRUCTIONS instructions, with 0-3 extra points.

    A smooth program is checked step by step on the reference at the main point: an instruction that is
    not smooth there (see `smooth_step`) becomes ``-x`` of its first node operand, which is.
    """
    kind = kind or draw(st.sampled_from(("edge", "smooth")))
    main = tuple(draw(st.lists(LEAVES[kind], min_size=1, max_size=6)))
    # blocks of instructions: one flat list would average ~6 instructions; this averages ~12, up to 40
    blocks = draw(st.lists(st.lists(raw_instructions(kind), min_size=1, max_size=8), min_size=1, max_size=5))
    # the extra points and the tangent have 6 coordinates, cut to the leaves: independent of the other draws
    extra = draw(st.lists(st.lists(LEAVES["edge"], min_size=6, max_size=6), max_size=3))
    tangent = draw(st.lists(st.floats(-1.0, 1.0), min_size=6, max_size=6))
    n_leaves = len(main)
    nodes = [reference.Var(x) for x in main]
    code = []
    for ins in (ins for block in blocks for ins in block):
        ins = resolve(ins, len(nodes))
        y = apply(reference, ins.op, [nodes[a.index] if isinstance(a, Ref) else a for a in ins.args])
        if kind == "smooth" and not smooth_step(ins, operand_values(ins, [v.data for v in nodes]), y.data):
            first = next(a for a in ins.args if isinstance(a, Ref))
            ins, y = Instruction("neg", (first,)), -nodes[first.index]
        code.append(ins)
        nodes.append(y)
    return Program(main, tuple(tuple(p[:n_leaves]) for p in extra), tuple(code), kind,
                   tuple(tangent[:n_leaves]))


TABLE_CONSTANTS = (*EDGE_NUMBERS, 2, -1, 0.1, 1.5)
TABLE_EXPONENTS = (2.0, *EDGE_EXPONENTS)


@st.composite
def op_tables(draw):
    """One program that applies every op in every form to two leaves x, y: x ∘ y, x ∘ x, and x ∘ k, k ∘ x
    for every constant k of the pools (and one drawn); values are also checked on 100 points of the line.

    Random graphs meet a given op with a given constant rarely; here each example meets all of them."""
    main = (draw(LEAVES["edge"]), draw(LEAVES["edge"]))
    drawn = draw(edge_numbers)
    x, y = Ref(0), Ref(1)
    code = [Instruction(op, (v,)) for op in UNARY for v in (x, y)]
    for op in PAIRWISE:
        right, left = (TABLE_EXPONENTS, EDGE_BASES) if op == "**" else (TABLE_CONSTANTS, TABLE_CONSTANTS)
        code += [Instruction(op, (x, y)), Instruction(op, (x, x))]
        code += [Instruction(op, (x, k)) for k in (*right, drawn)]
        code += [Instruction(op, (k, x)) for k in (*left, drawn)]
    code += [Instruction("fg.sum", (x, y, x, drawn)), Instruction("fg.dot", (x, y, drawn, y, x, x))]
    tangent = tuple(draw(st.floats(-1.0, 1.0)) for _ in main)
    summary = f"every op in every form, x = v0, y = v1, k in the pools and {drawn!r}"
    return Program(main, (), tuple(code), "table", tangent, summary)


# ---------------------------------------------------------------------------------------------------------
# Evaluation and comparisons
# ---------------------------------------------------------------------------------------------------------

class Evaluation(NamedTuple):
    """At one point: the value of every node, then of the output; with backward, the .grad of every node
    after out.backward() (else None); for the reference, also the scale of each gradient (`scales`)."""
    values: list
    grads: list
    scales: list = None


def evaluate(module, program, point, backward=True):
    nodes = build(module, program, point)
    out = module.sum([nodes[i] for i in program.sinks])
    if not backward:
        return Evaluation([v.data for v in nodes] + [out.data], None)
    out.backward()
    scales = gradient_scales(out, nodes) if module is reference else None
    return Evaluation([v.data for v in nodes] + [out.data], [v.grad for v in nodes], scales)


def gradient_scales(out, nodes):
    """For each node of a reference graph: the sum over paths to `out` of |product of local derivatives|.

    A gradient is the sum of these products; the engine and the reference add them in different orders,
    so they may differ by a few ulps of this scale (not of the result) where the terms cancel: e.g. at
    v0 = 2**52 + 1, d/dv0 of dot([v0, v0], [v0, 1]) - v0 * v0 is exactly 1, the reference's order gives 2.
    NOTE: reads the reference's graph (`_prev`, `_partials`, `_order`): it is the project's own oracle.
    """
    seen, stack = {out}, [out]
    while stack:
        for p in stack.pop()._prev:
            if p not in seen:
                seen.add(p)
                stack.append(p)
    scale = {out: 1.0}
    for v in sorted(seen, key=lambda v: v._order, reverse=True):
        m = scale.get(v, 0.0)
        if m:
            for p, d in zip(v._prev, v._partials):
                scale[p] = scale.get(p, 0.0) + math.fabs(d) * m
    return [scale.get(v, 0.0) for v in nodes]


def eager(program, points, backward):
    """fastgrad as users run it: the graph built by its operators at every point."""
    return [evaluate(fg, program, point, backward) for point in points]


# Every way of running a program on the engine: evaluator(program, points, backward) -> [Evaluation].
# Checks 1 and 2 hold for each of them.
# NOTE: the compiled replay (fg.compile: trace once at points[0], replay at the other points) goes here.
EVALUATORS = {"eager": eager}


def bits(x):
    return struct.pack("<d", x)


def same_value(x, y):
    """Bit-identical, or both NaN (of any sign and payload)."""
    return bits(x) == bits(y) or (math.isnan(x) and math.isnan(y))


def close_gradient(x, y, scale):
    """Equal within rel 1e-9 (of the larger of |y| and the terms' `scale`, see `gradient_scales`) / abs
    1e-12, or both NaN, or the same infinity."""
    if math.isnan(x) or math.isnan(y) or math.isinf(x) or math.isinf(y):
        return same_value(x, y) or x == y
    return math.fabs(x - y) <= 1e-9 * max(math.fabs(y), scale if scale == scale else 0.0) + 1e-12


def describe(x):
    return f"{x!r} ({bits(x).hex()})" if isinstance(x, float) else repr(x)


def engine_function(program):
    """f(xs) -> the program's output, built with fastgrad at leaf values xs (a list): for the transforms."""
    def f(xs):
        nodes = build(fg, program, xs)
        return fg.sum([nodes[i] for i in program.sinks])
    return f


def check_against_reference(program, evaluator):
    """Checks 1 and 2: values at the points and on the line, gradients at the points."""
    name, run = evaluator
    points, line = program.points, program.line
    results = run(program, points, True) + run(program, line, False)
    for point, got in zip([*points, *line], results):
        want = evaluate(reference, program, point, got.grads is not None)
        for i, (x, y) in enumerate(zip(got.values, want.values)):
            node = None if i == len(got.values) - 1 else i    # None: the output
            assert same_value(x, y), (
                f"[{name}] value of {'out' if node is None else f'v{i}'}: engine {describe(x)}, "
                f"reference {describe(y)}\n{program.source(point, node)}")
        for i, (x, y, scale) in enumerate(zip(got.grads or (), want.grads or (), want.scales or ())):
            assert close_gradient(x, y, scale), (
                f"[{name}] v{i}.grad: engine {describe(x)}, reference {describe(y)} (scale {scale!r})\n"
                f"{program.source(point)}")


def check_modes(program, backward, scales):
    """Check 3 at the main point: fg.grad is backward's .grad, fg.jvp is the gradient dotted with the
    tangent (where every value and gradient is finite; within 1e-9 of the terms' scale)."""
    f = engine_function(program)
    point, n = list(program.main), program.n_leaves
    leaf_grads = backward.grads[:n]
    grads = fg.grad(f)(point)
    assert all(same_value(g, b) or g == b for g, b in zip(grads, leaf_grads)), (
        f"fg.grad {grads} != .grad after backward {leaf_grads}\n{program.source()}")
    value, tangent_out = fg.jvp(f, (point,), (list(program.tangent),))
    assert same_value(value, backward.values[-1]), (value, backward.values[-1], program.source())
    if all(map(math.isfinite, backward.values + backward.grads)):
        dot = math.fsum(g * t for g, t in zip(leaf_grads, program.tangent))
        scale = math.fsum(m * math.fabs(t) for m, t in zip(scales, program.tangent))
        assert close_gradient(tangent_out, dot, scale), (
            f"jvp {tangent_out!r} != grad . tangent {dot!r}\n{program.source()}")
        event("jvp compared")


def check_graph(program):
    """Checks 1-3; returns the engine's evaluation at the main point."""
    for evaluator in EVALUATORS.items():
        check_against_reference(program, evaluator)
    backward = evaluate(fg, program, program.main)
    check_modes(program, backward, evaluate(reference, program, program.main).scales)
    return backward


# The same expressions on Python floats with math (DESIGN §3: a Var's value is bit-identical to them), where
# Python gives a float: no exception (ZeroDivisionError, OverflowError, a math domain error), no complex.
PYTHON_FLOATS = {**BINARY, "neg": operator.neg, "abs": math.fabs, "fg.abs": math.fabs,
                 **{name: getattr(math, name.replace("fg.", "")) for name in (*METHODS, *FUNCTIONS)
                    if hasattr(math, name.replace("fg.", ""))}}
# rare rounding differences (libm's pow against x*x differs in ~0.1% of squares) take thousands of operand
# values to show: the Python float check runs on DENSE_LINE steps, where each costs ~1 µs, not ~10 µs
DENSE_LINE = tuple(3.0 * math.sin(k) for k in range(1, 501))


def check_python_floats(program, center):
    """The value of every one-instruction node over leaf 0 (`op(x)`, `x ∘ k`, `k ∘ x`) at center + t for the
    steps t of DENSE_LINE, against the same expression on Python floats."""
    rows = [ins for ins in program.code if ins.op in PYTHON_FLOATS and Ref(1) not in ins.args]
    for t in DENSE_LINE:
        x = center + t
        v = fg.Var(x)
        for ins in rows:
            try:
                want = PYTHON_FLOATS[ins.op](*(x if isinstance(a, Ref) else a for a in ins.args))
            except (ArithmeticError, ValueError):
                continue
            got = apply(fg, ins.op, [v if isinstance(a, Ref) else a for a in ins.args]).data
            assert not isinstance(want, float) or same_value(got, want), (
                f"{_code(ins.op, ins.args)} at v0 = {x!r}: engine {describe(got)}, "
                f"Python floats {describe(want)}")


# ---------------------------------------------------------------------------------------------------------
# Finite differences (smooth graphs)
# ---------------------------------------------------------------------------------------------------------

def richardson(f, x, j, h):
    """d f / d x_j by central differences at steps h and h/2, extrapolated (error O(h^4)); also the points
    it evaluated. f maps a list of leaf values to a float or a NumPy array."""
    estimates, points = [], []
    for step in (h, h / 2):
        up, down = list(x), list(x)
        up[j] += step
        down[j] -= step
        estimates.append((np.asarray(f(up)) - np.asarray(f(down))) / (up[j] - down[j]))
        points += [up, down]
    return (4.0 * estimates[1] - estimates[0]) / 3.0, points


def step_for(x):
    return 2.0 ** -12 * max(1.0, math.fabs(x))


def values_at(program, point):
    return [v.data for v in build(fg, program, point)]


# ---------------------------------------------------------------------------------------------------------
# The tests
# ---------------------------------------------------------------------------------------------------------

@budget(300)
@given(programs())
def test_random_graphs_agree_with_reference_and_between_modes(program):
    """Checks 1-3 on edge and smooth graphs, at every point, through every evaluator."""
    backward = check_graph(program)
    for k, ins in enumerate(program.code):
        xs = operand_values(ins, backward.values)
        for hit in edges_hit(ins.op, xs, backward.values[program.n_leaves + k]):
            event(hit)


# NOTE: no shrinking: the table's shape is fixed and every message names the instruction and the point
@settings(budget(30), phases=(Phase.explicit, Phase.generate))
@given(op_tables(), st.floats(-4.0, 4.0))
def test_every_op_form_and_constant_agrees_with_reference(program, center):
    """Checks 1-3 on the op table: every op, form and special constant, at edge points and on a line;
    and its value against Python floats on a dense line around `center`."""
    check_graph(program)
    check_python_floats(program, center)


@budget(100)
@given(programs("smooth"))
def test_smooth_graphs_match_finite_differences(program):
    """Checks 4 and 5: gradient, Hessian and Hessian-vector products against central differences."""
    f = engine_function(program)
    point = list(program.main)
    values = values_at(program, point)
    assume(is_smooth(program, values))
    n = program.n_leaves
    grads = fg.grad(f)(point)
    H = np.array(fg.hessian(f)(point))
    center = branches(program, values)
    for j in range(n):
        h = step_for(point[j])
        fd, around = richardson(lambda xs: f(xs).data, point, j, h)
        # the steps must stay on the same smooth piece of every kink (else the graph is not smooth enough)
        assume(all(branches(program, values_at(program, p)) == center for p in around))
        assert math.isclose(grads[j], fd, rel_tol=1e-6, abs_tol=1e-6), (
            f"d out / d v{j}: engine {grads[j]!r}, central difference {fd!r}\n{program.source()}")
        column, _ = richardson(lambda xs: np.array(fg.grad(f)(xs)), point, j, h)
        assert np.allclose(H[:, j], column, rtol=1e-5, atol=1e-5), (
            f"Hessian column {j}: fg.hessian {H[:, j]}, central differences of fg.grad {column}\n"
            f"{program.source()}")
    (hv,) = fg.hvp(f, (point,), (list(program.tangent),))
    want = H @ np.array(program.tangent)
    assert np.allclose(hv, want, rtol=1e-9, atol=1e-12), (
        f"fg.hvp {hv} != hessian @ v {want}\n{program.source()}")
