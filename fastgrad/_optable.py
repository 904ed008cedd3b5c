"""The op table: every scalar op of fastgrad, declared once.

Each `Op` row says what the op is called, how it is applied (its form and public names), its forward value,
its first and second partial derivatives (Cython expressions, compiled into the engine's switches) and its
graph-building derivative rule (Python, used by nested transforms). Everything else is generated from this
table or reads it at import time:

- at build time (`src/fastgrad/codegen.py`, run by setup.py): the op-code enum and the value / partials /
  second-partials switches (`_ops.pxd`), the `Var` methods and operators and the `fg.` functions
  (`_var.pxi`), and the type stubs (`fastgrad/_engine.pyi`);
- at import time: `fastgrad.__all__`, `_symbolic`'s rules, the inspection tables (constant operands, flop
  estimates, graph symbols) and the tests' op lists.

`fastgrad/reference.py` is NOT generated: it is the independent, hand-written oracle.

This module must stay importable on its own (setup.py loads it before anything is compiled): it imports
nothing from fastgrad.

Expressions. In the Cython snippets, `a` and `b` are the parents' values, `k` the op's constant (the `aux`
of the node: the `k` of `x + k`, a parameter such as leaky_relu's slope), `y` the node's own value, and `cm`
is `libc.math`. The snippets are pasted into `noexcept nogil` inline functions, so they must not raise:
IEEE results (inf, nan) are the answer everywhere. Second partials that are 0 are left out.

Rules. `rule(args, out, k)` returns d out / d args[i] for each parent, as floats (constants) or Vars built
from the parents' handles `args` and the node's handle `out`, so that they can be differentiated again.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple

__all__ = ["Op", "OPS", "BY_NAME", "OPERATORS", "Operator", "PUBLIC_FUNCTIONS", "apply", "LEAF", "UNARY",
           "BINARY", "CONST", "NARY"]

Rule = Callable[[Tuple[Any, ...], Any, float], Tuple[Any, ...]]

# forms: how an op is applied, which fixes its parents and the meaning of k
LEAF = "leaf"          # no parents: a user-made value
UNARY = "unary"        # f(a), or f(a; k) for an op with a parameter (leaky_relu's slope)
BINARY = "binary"      # f(a, b)
CONST = "const"        # a op k, or k op a: one parent and a constant k
NARY = "nary"          # operands in the side array (sum, dot, custom)


@dataclass(frozen=True)
class Op:
    """One row of the op table."""

    name: str                          # the op's name: `v.op`, graph tables, `OP_<NAME>` in C
    form: str                          # LEAF, UNARY, BINARY, CONST or NARY
    comment: str                       # what it computes, for the enum and docs ("a * k")
    value: str = ""                    # forward value (Cython expression in a, b, k)
    d0: str = "0.0"                    # d y / d a   (may use y)
    d1: str = "0.0"                    # d y / d b
    h00: str = "0.0"                   # d2 y / d a2
    h01: str = "0.0"                   # d2 y / d a d b
    h11: str = "0.0"                   # d2 y / d b2
    rule: Optional[Rule] = None        # graph-building partials (see the module docstring)
    method: Optional[str] = None       # Var method: v.exp()
    function: Optional[str] = None     # fastgrad function: fg.exp(v), fg.maximum(a, b)
    dunder: Optional[str] = None       # Python operator of a unary op: __neg__, __abs__
    param: Optional[Tuple[str, float]] = None   # (name, default) of a parameter stored as k
    doc: str = ""                      # one-line docstring of the method and function
    flops: int = 1                     # forward cost estimate (fg.stats: one flop per elementary op)
    partial_flops: int = 0             # cost of computing its local partials (fg.stats)
    symbol: Optional[str] = None       # short label in Graphviz pictures (default: the name)
    # the forward value as a Python expression on floats with `math` (a, b, k): the engine's value must be
    # bit-identical to it wherever Python does not raise (tests evaluate it)
    python: str = ""
    # ---- for tests (they read these; nothing else does)
    domain: Tuple[float, float] = (-2.5, 2.5)   # where the op is smooth and moderate in every operand
    k_values: Tuple[float, ...] = ()   # constants whose partials are special cases (powc: 0, 1, 2, -1)
    special: Tuple[Tuple[float, ...], ...] = ()  # operand values at kinks, ties and special cases

    @property
    def code(self) -> str:
        """The C enum constant: OP_EXP."""
        return "OP_" + self.name.upper()

    @property
    def arity(self) -> int:
        """Number of parent slots used (n-ary ops: variable, reported as -1)."""
        return {LEAF: 0, UNARY: 1, CONST: 1, BINARY: 2, NARY: -1}[self.form]

    @property
    def second_order(self) -> bool:
        """Has any nonzero second partial (else the op is piecewise linear)."""
        return any(h != "0.0" for h in (self.h00, self.h01, self.h11))


def _sign(x: float) -> float:
    return 1.0 if x > 0 else (-1.0 if x < 0 else 0.0)


def _pow_rule(args: Tuple[Any, ...], out: Any, k: float) -> Tuple[Any, ...]:
    """a ** b: (b * a**(b-1), out * log a); at a == 0 the IEEE-safe zeros (x**0 and 0**y have gradient 0)."""
    a, b = args
    if a.data == 0.0:
        return (0.0 if b.data == 0.0 else b * a ** (b - 1.0), 0.0)
    return (b * a ** (b - 1.0), out * a.log())


def _powc_rule(args: Tuple[Any, ...], out: Any, k: float) -> Tuple[Any, ...]:
    """a ** k: k * a**(k-1), folded for the common exponents."""
    a = args[0]
    if k == 0.0:
        return (0.0,)
    if k == 1.0:
        return (1.0,)
    if k == 2.0:
        return (a * 2.0,)
    if k == -1.0:
        return (-(out * out),)
    return (a ** (k - 1.0) * k,)


def _rpowc_rule(args: Tuple[Any, ...], out: Any, k: float) -> Tuple[Any, ...]:
    """k ** a: out * log k (0 ** y has gradient 0)."""
    if k == 0.0:
        return (0.0,)
    return (out * (math.log(k) if k > 0 else math.nan),)


def _div(a: float, b: float) -> float:
    """a / b for float constants with IEEE results (Python raises ZeroDivisionError)."""
    try:
        return a / b
    except ZeroDivisionError:
        return math.nan if a == 0 or a != a else math.copysign(math.inf, a) * math.copysign(1.0, b)


def _max_rule(args: Tuple[Any, ...], out: Any, k: float) -> Tuple[Any, ...]:
    """max(a, b): 1 to the larger, 0.5 each at a tie (or a nan)."""
    a, b = args[0].data, args[1].data
    d = 1.0 if a > b else (0.0 if a < b else 0.5)
    return (d, 1.0 - d)


def _min_rule(args: Tuple[Any, ...], out: Any, k: float) -> Tuple[Any, ...]:
    """min(a, b): 1 to the smaller, 0.5 each at a tie (or a nan)."""
    a, b = args[0].data, args[1].data
    d = 1.0 if a < b else (0.0 if a > b else 0.5)
    return (d, 1.0 - d)


_SQRT_PI_2 = 2.0 / math.sqrt(math.pi)

OPS: Tuple[Op, ...] = (
    Op("leaf", LEAF, "a user-made value (no parents)", flops=0),
    # ---- binary arithmetic
    Op("add", BINARY, "a + b", "a + b", d0="1.0", d1="1.0", rule=lambda x, y, k: (1.0, 1.0), symbol="+",
       python="a + b"),
    Op("sub", BINARY, "a - b", "a - b", d0="1.0", d1="-1.0", rule=lambda x, y, k: (1.0, -1.0), symbol="-",
       python="a - b"),
    Op("mul", BINARY, "a * b", "a * b", d0="b", d1="a", h01="1.0", rule=lambda x, y, k: (x[1], x[0]),
       symbol="*",
       python="a * b"),
    Op("div", BINARY, "a / b", "a / b", d0="1.0 / b", d1="-y / b", h01="-1.0 / (b * b)",
       h11="2.0 * y / (b * b)", rule=lambda x, y, k: (1.0 / x[1], -(y / x[1])), partial_flops=2, symbol="/",
       domain=(0.3, 2.5),
       python="a / b"),
    Op("pow", BINARY, "a ** b (IEEE pow: nan for a negative base and a fractional exponent)", "cm.pow(a, b)",
       d0="0.0 if b == 0 else b * cm.pow(a, b - 1.0)", d1="0.0 if a == 0 else y * cm.log(a)",
       h00="b * (b - 1.0) * cm.pow(a, b - 2.0) if b != 0 and b != 1 else 0.0",
       h01="cm.pow(a, b - 1.0) * (1.0 + b * cm.log(a)) if a != 0 else 0.0",
       h11="y * cm.log(a) * cm.log(a) if a != 0 else 0.0", rule=_pow_rule, partial_flops=5, symbol="**",
       domain=(0.2, 2.5), special=((0.0, 2.0), (0.0, 0.0), (2.0, 0.0)),
       python="a ** b"),
    # ---- one parent and a constant k
    Op("addc", CONST, "a + k (and a - k, as a + (-k): the same IEEE result)", "a + k", d0="1.0",
       rule=lambda x, y, k: (1.0,),
       python="a + k"),
    Op("mulc", CONST, "a * k", "a * k", d0="k", rule=lambda x, y, k: (k,),
       python="a * k"),
    Op("divc", CONST, "a / k (IEEE division, never a * (1/k))", "a / k", d0="1.0 / k",
       rule=lambda x, y, k: (_div(1.0, k),), partial_flops=1,
       python="a / k"),
    Op("rsubc", CONST, "k - a", "k - a", d0="-1.0", rule=lambda x, y, k: (-1.0,),
       python="k - a"),
    Op("rdivc", CONST, "k / a", "k / a", d0="-y / a", h00="2.0 * y / (a * a)",
       rule=lambda x, y, k: (-(y / x[0]),), partial_flops=2, domain=(0.3, 2.5),
       python="k / a"),
    Op("powc", CONST, "a ** k (libm pow even for k == 2, as Python's ** is)", "cm.pow(a, k)",
       d0="2.0 * a if k == 2 else (-y * y if k == -1 else (0.0 if k == 0 else k * cm.pow(a, k - 1.0)))",
       h00="k * (k - 1.0) * cm.pow(a, k - 2.0) if k != 0 and k != 1 else 0.0", rule=_powc_rule,
       partial_flops=2, domain=(0.2, 2.5), k_values=(2.0, 3.0, -1.0, 0.5, 1.5, 0.0, 1.0, -2.5),
       python="a ** k"),
    Op("rpowc", CONST, "k ** a", "cm.pow(k, a)", d0="0.0 if k == 0 else y * cm.log(k)",
       h00="y * cm.log(k) * cm.log(k) if k != 0 else 0.0", rule=_rpowc_rule, partial_flops=1,
       k_values=(0.5, 2.0, 3.0),
       python="k ** a"),
    # ---- unary
    Op("neg", UNARY, "-a", "-a", d0="-1.0", rule=lambda x, y, k: (-1.0,), dunder="__neg__", symbol="neg",
       python="-a"),
    Op("abs", UNARY, "|a|; abs'(0) = 0", "cm.fabs(a)", d0="1.0 if a > 0 else (-1.0 if a < 0 else 0.0)",
       rule=lambda x, y, k: (_sign(x[0].data),), dunder="__abs__", function="abs", doc="|x|; abs'(0) = 0.",
       special=((0.0,),),
       python="abs(a)"),
    Op("exp", UNARY, "e ** a", "cm.exp(a)", d0="y", h00="y", rule=lambda x, y, k: (y,), method="exp",
       function="exp", doc="e**x (overflow gives inf).",
       python="math.exp(a)"),
    Op("log", UNARY, "natural log", "cm.log(a)", d0="1.0 / a", h00="-1.0 / (a * a)",
       rule=lambda x, y, k: (1.0 / x[0],), method="log", function="log", partial_flops=1,
       doc="Natural log (log(0) = -inf, negative -> nan).", domain=(0.2, 2.5),
       python="math.log(a)"),
    Op("sqrt", UNARY, "square root", "cm.sqrt(a)", d0="0.5 / y", h00="-0.25 / (y * y * y)",
       rule=lambda x, y, k: (0.5 / y,), method="sqrt", function="sqrt", partial_flops=1,
       doc="Square root (negative -> nan).", domain=(0.2, 2.5),
       python="math.sqrt(a)"),
    Op("sin", UNARY, "sine", "cm.sin(a)", d0="cm.cos(a)", h00="-y", rule=lambda x, y, k: (x[0].cos(),),
       method="sin", function="sin", partial_flops=1, doc="Sine.",
       python="math.sin(a)"),
    Op("cos", UNARY, "cosine", "cm.cos(a)", d0="-cm.sin(a)", h00="-y", rule=lambda x, y, k: (-x[0].sin(),),
       method="cos", function="cos", partial_flops=2, doc="Cosine.",
       python="math.cos(a)"),
    Op("tanh", UNARY, "hyperbolic tangent", "cm.tanh(a)", d0="1.0 - y * y", h00="-2.0 * y * (1.0 - y * y)",
       rule=lambda x, y, k: (1.0 - y * y,), method="tanh", function="tanh", partial_flops=2,
       doc="Hyperbolic tangent.",
       python="math.tanh(a)"),
    Op("sigmoid", UNARY, "1 / (1 + e ** -a), without overflow", "sigmoid_value(a)", d0="y * (1.0 - y)",
       h00="y * (1.0 - y) * (1.0 - 2.0 * y)", rule=lambda x, y, k: (y * (1.0 - y),), method="sigmoid",
       function="sigmoid", partial_flops=2, doc="1 / (1 + e**-x), computed without overflow.",
       python="1.0 / (1.0 + math.exp(-a)) if a >= 0 else math.exp(a) / (1.0 + math.exp(a))"),
    Op("relu", UNARY, "max(a, 0); relu'(0) = 0", "a if a > 0 or a != a else 0.0", d0="1.0 if a > 0 else 0.0",
       rule=lambda x, y, k: (1.0 if x[0].data > 0 else 0.0,), method="relu", function="relu",
       doc="max(x, 0); relu'(0) = 0.", special=((0.0,),),
       python="a if a > 0 or a != a else 0.0"),
    # ---- unary, added through this table (issue 8)
    Op("log1p", UNARY, "log(1 + a), accurate near 0", "cm.log1p(a)", d0="1.0 / (1.0 + a)",
       h00="-1.0 / ((1.0 + a) * (1.0 + a))", rule=lambda x, y, k: (1.0 / (x[0] + 1.0),), method="log1p",
       function="log1p", partial_flops=2, doc="log(1 + x), accurate near 0 (x = -1 gives -inf).",
       domain=(-0.8, 2.5),
       python="math.log1p(a)"),
    Op("expm1", UNARY, "e ** a - 1, accurate near 0", "cm.expm1(a)", d0="cm.exp(a)", h00="cm.exp(a)",
       rule=lambda x, y, k: (x[0].exp(),), method="expm1", function="expm1", partial_flops=1,
       doc="e**x - 1, accurate near 0.",
       python="math.expm1(a)"),
    Op("tan", UNARY, "tangent", "cm.tan(a)", d0="1.0 + y * y", h00="2.0 * y * (1.0 + y * y)",
       rule=lambda x, y, k: (y * y + 1.0,), method="tan", function="tan", partial_flops=2, doc="Tangent.",
       domain=(-1.2, 1.2),
       python="math.tan(a)"),
    Op("asin", UNARY, "arcsine (nan outside [-1, 1])", "cm.asin(a)", d0="1.0 / cm.sqrt(1.0 - a * a)",
       h00="a / ((1.0 - a * a) * cm.sqrt(1.0 - a * a))",
       rule=lambda x, y, k: (1.0 / (1.0 - x[0] * x[0]).sqrt(),), method="asin", function="asin",
       partial_flops=4, doc="Arcsine (nan outside [-1, 1]).", domain=(-0.9, 0.9),
       python="math.asin(a)"),
    Op("acos", UNARY, "arccosine (nan outside [-1, 1])", "cm.acos(a)", d0="-1.0 / cm.sqrt(1.0 - a * a)",
       h00="-a / ((1.0 - a * a) * cm.sqrt(1.0 - a * a))",
       rule=lambda x, y, k: (-1.0 / (1.0 - x[0] * x[0]).sqrt(),), method="acos", function="acos",
       partial_flops=4, doc="Arccosine (nan outside [-1, 1]).", domain=(-0.9, 0.9),
       python="math.acos(a)"),
    Op("atan", UNARY, "arctangent", "cm.atan(a)", d0="1.0 / (1.0 + a * a)",
       h00="-2.0 * a / ((1.0 + a * a) * (1.0 + a * a))", rule=lambda x, y, k: (1.0 / (x[0] * x[0] + 1.0),),
       method="atan", function="atan", partial_flops=3, doc="Arctangent.",
       python="math.atan(a)"),
    Op("sinh", UNARY, "hyperbolic sine", "cm.sinh(a)", d0="cm.cosh(a)", h00="y",
       rule=lambda x, y, k: (x[0].cosh(),), method="sinh", function="sinh", partial_flops=1,
       doc="Hyperbolic sine.",
       python="math.sinh(a)"),
    Op("cosh", UNARY, "hyperbolic cosine", "cm.cosh(a)", d0="cm.sinh(a)", h00="y",
       rule=lambda x, y, k: (x[0].sinh(),), method="cosh", function="cosh", partial_flops=1,
       doc="Hyperbolic cosine.",
       python="math.cosh(a)"),
    Op("erf", UNARY, "the error function", "cm.erf(a)", d0=f"{_SQRT_PI_2!r} * cm.exp(-a * a)",
       h00=f"-2.0 * a * {_SQRT_PI_2!r} * cm.exp(-a * a)",
       rule=lambda x, y, k: ((-(x[0] * x[0])).exp() * _SQRT_PI_2,), method="erf", function="erf",
       partial_flops=3, doc="The error function.",
       python="math.erf(a)"),
    Op("softplus", UNARY, "log(1 + e ** a), as max(a, 0) + log1p(e ** -|a|): no overflow",
       "softplus_value(a)", d0="sigmoid_value(a)", h00="sigmoid_value(a) * (1.0 - sigmoid_value(a))",
       rule=lambda x, y, k: (x[0].sigmoid(),), method="softplus", function="softplus", flops=4,
       partial_flops=2, doc="log(1 + e**x), computed as max(x, 0) + log1p(e**-|x|) (no overflow).",
       python="(a if a > 0 else 0.0) + math.log1p(math.exp(-abs(a)))"),
    Op("leaky_relu", UNARY, "a if a > 0 else k * a, k the negative slope; leaky_relu'(0) = k",
       "a if a > 0 or a != a else k * a", d0="1.0 if a > 0 else k",
       rule=lambda x, y, k: (1.0 if x[0].data > 0 else k,), method="leaky_relu", function="leaky_relu",
       param=("negative_slope", 0.01), k_values=(0.01, 0.2),
       doc="x if x > 0 else negative_slope * x; its derivative at 0 is negative_slope.", special=((0.0,),),
       python="a if a > 0 else k * a"),
    # ---- binary selections: ties split the gradient evenly
    Op("max", BINARY, "max(a, b); a tie splits the gradient", "a if a >= b or a != a else b",
       d0="1.0 if a > b else (0.0 if a < b else 0.5)", d1="0.0 if a > b else (1.0 if a < b else 0.5)",
       rule=_max_rule,
       function="maximum", doc="The larger of two values; a tie splits the gradient evenly.",
       special=((1.0, 1.0),),
       python="a if a >= b or a != a else b"),
    Op("min", BINARY, "min(a, b); a tie splits the gradient", "a if a <= b or a != a else b",
       d0="1.0 if a < b else (0.0 if a > b else 0.5)", d1="0.0 if a < b else (1.0 if a > b else 0.5)",
       rule=_min_rule,
       function="minimum", doc="The smaller of two values; a tie splits the gradient evenly.",
       special=((-1.0, -1.0),),
       python="a if a <= b or a != a else b"),
    # ---- n-ary (operands in the side array; their sweeps are written by hand in the engine)
    Op("sum", NARY, "sum_k args[k]            (p0 = first arg slot, p1 = n)",
       rule=lambda x, y, k: (1.0,) * len(x), function="sum"),
    Op("dot", NARY, "sum_k args[2k] * args[2k+1] (p0 = first arg slot, p1 = n pairs)",
       rule=lambda x, y, k: tuple(x[i + 1 if i % 2 == 0 else i - 1] for i in range(len(x))), function="dot"),
    Op("custom", NARY, "a Python-defined op          (p0 = first arg slot, p1 = n)"),
)

BY_NAME: Dict[str, Op] = {op.name: op for op in OPS}
assert len(BY_NAME) == len(OPS), "op names must be unique"
assert len(OPS) <= 255, "op codes are u8"


@dataclass(frozen=True)
class Operator:
    """A binary Python operator: Var op Var, Var op k (with k transformed), and the reflected k op Var."""

    dunder: str          # "add": __add__ and __radd__
    var_var: str         # op of Var op Var
    var_const: str       # op of Var op k
    const_sign: float    # k is stored multiplied by this (x - k is x + (-k))
    const_var: str       # op of k op Var (the reflected form)


OPERATORS: Tuple[Operator, ...] = (
    Operator("add", "add", "addc", 1.0, "addc"),
    Operator("sub", "sub", "addc", -1.0, "rsubc"),
    Operator("mul", "mul", "mulc", 1.0, "mulc"),
    Operator("truediv", "div", "divc", 1.0, "rdivc"),
    Operator("pow", "pow", "powc", 1.0, "rpowc"),
)

# The `fastgrad.<name>` functions of the table, in table order ("abs", "exp", ..., "maximum", "sum", "dot").
PUBLIC_FUNCTIONS: Tuple[str, ...] = tuple(op.function for op in OPS if op.function)


def apply(fg: Any, op: Op, args: Any, k: float = 1.5) -> Any:
    """Apply row ``op`` to ``args`` through the public API of module ``fg`` (fastgrad), as a user would: its
    operator (``a + b``, ``a + k``, ``k - a``), its method (``a.exp()``, ``a.leaky_relu(k)``), its dunder
    (``-a``) or its function (``fg.maximum(a, b)``, ``fg.sum(args)``; ``fg.dot`` pairs ``args[0::2]`` with
    ``args[1::2]``). ``k`` is the constant of a constant-operand op (as the node stores it) or the parameter.
    Tests build every op this way, and ``fg.compile`` rebuilds a tape's graph with it."""
    name = op.name
    if name == "sum":
        return fg.sum(list(args))
    if name == "dot":
        return fg.dot(list(args[0::2]), list(args[1::2]))
    if op.form == CONST:
        for o in OPERATORS:
            if o.var_const == name and o.const_sign > 0:
                return getattr(operator, o.dunder)(args[0], k)
            if o.const_var == name:
                return getattr(operator, o.dunder)(k, args[0])
        raise ValueError(f"no operator makes {name}")
    if op.form == BINARY:
        for o in OPERATORS:
            if o.var_var == name:
                return getattr(operator, o.dunder)(args[0], args[1])
        return getattr(fg, op.function)(args[0], args[1])
    if op.form != UNARY:
        raise ValueError(f"apply(): {name} is not an op of the public API")
    if op.method:
        return getattr(args[0], op.method)(*([k] if op.param else []))
    if op.dunder:
        return getattr(operator, op.dunder.strip("_"))(args[0])
    return getattr(fg, op.function)(args[0], *([k] if op.param else []))
