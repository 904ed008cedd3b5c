"""Graph-building derivatives: every op's local partials as NEW Var expressions, for nested transforms.

`_engine.partials(v)` gives the local derivatives of a node as floats, which is all one reverse or tangent
sweep needs. A derivative that must itself be differentiated (``fg.grad(fg.grad(f))``) needs them as graph
nodes instead: this module holds one rule per op name in `RULES`, mirroring the engine's numeric table (the
test suite checks the two against each other at random points, op by op), and the two sweeps built on them:
`reverse` (vector-Jacobian products) and `forward` (Jacobian-vector products). Both return expressions that
are themselves differentiable, so transforms nest to any order.

An expression is a `float` (a constant: nothing to differentiate) or a `Var`. Constants are folded as the
graph is built (``1 * g`` is ``g``, a zero partial contributes nothing), so the graphs stay small.

The module also keeps the tracing state the transforms share: how deeply they are nested, and which custom
ops were applied while a transformed function ran (their nodes, so a sweep can find their jvp rules).
"""
from __future__ import annotations

import numbers
import threading
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import fastgrad as fg
from fastgrad import _engine, _optable

Expr = Union[float, Any]  # float (a constant) or Var
# one `_engine.tape` row: (handle, op name, parent positions, aux constant)
Entry = Tuple[Any, str, Tuple[int, ...], float]


# ---------------------------------------------------------------------------------------------------------
# Expression helpers: arithmetic on float | Var with constant folding.
# ---------------------------------------------------------------------------------------------------------

def is_var(x: Any) -> bool:
    """True for a graph node handle."""
    return isinstance(x, fg.Var)


def values_of(inputs: Sequence[Any], who: str) -> List[float]:
    """The float value of each input (a Var or a real number); TypeError naming ``who`` and the position."""
    values = []
    for k, x in enumerate(inputs):
        if isinstance(x, fg.Var):
            values.append(x.data)
        elif isinstance(x, numbers.Real):
            values.append(float(x))
        else:
            raise TypeError(f"{who}: input {k} must be a Var or a real number, got {type(x).__name__}")
    return values


def scale(x: Expr, c: float) -> Expr:
    """x * c for a constant c, folding 0, 1 and -1.

    NOTE: a zero constant is a structural zero: ``0 * x`` is 0 even where x is inf or nan (as in JAX).
    """
    if c == 0.0:
        return 0.0
    if not is_var(x):
        return x * c
    if c == 1.0:
        return x
    if c == -1.0:
        return -x
    return x * c


def mul(a: Expr, b: Expr) -> Expr:
    """a * b."""
    if not is_var(a):
        return scale(b, a)
    if not is_var(b):
        return scale(a, b)
    return a * b


def total(terms: Sequence[Expr]) -> Expr:
    """Sum of expressions: constants added up front, Vars in ONE fused n-ary 'sum' node."""
    const = 0.0
    nodes = []
    for t in terms:
        if is_var(t):
            nodes.append(t)
        else:
            const += t
    if not nodes:
        return const
    node = nodes[0] if len(nodes) == 1 else fg.sum(nodes)
    return node + const if const != 0.0 else node


def is_zero(x: Expr) -> bool:
    """True for the constant 0 (a structural zero)."""
    return not is_var(x) and x == 0.0


# ---------------------------------------------------------------------------------------------------------
# RULES: op name -> rule(args, out, aux) -> local partial d out / d args[k], one per parent (tape order),
# read from the op table (fastgrad/_optable.py), which the engine's numeric switches are generated from. The
# test suite checks the two against each other at random points, op by op.
# ---------------------------------------------------------------------------------------------------------

RULES: Dict[str, Callable[[Sequence[Any], Any, float], Tuple[Expr, ...]]] = {
    op.name: op.rule for op in _optable.OPS if op.rule is not None}
# 'leaf' has no parents; 'custom' is looked up per node (see `local_partials`).


def local_partials(op: str, args: Sequence[Any], out: Any, aux: float,
                   custom: Optional["CustomCall"] = None) -> Tuple[Expr, ...]:
    """The local derivatives of one node w.r.t. each parent, as expressions."""
    if op == "custom":
        if custom is None:
            raise NotImplementedError(
                "differentiating through a custom node with no known jvp rule (made outside the transformed "
                "function, or with _engine.custom directly): forward mode, Hessians and nested transforms "
                "need one; see fastgrad.custom_op(..., jvp=...)")
        return custom.partials(args)
    rule = RULES.get(op)
    if rule is None:
        raise NotImplementedError(f"no graph-building derivative rule for op {op!r}")
    return rule(args, out, aux)


# ---------------------------------------------------------------------------------------------------------
# Sweeps over a tape (`_engine.tape` rows). Positions index the tape. Seed nodes are treated as independent
# variables: nothing flows through them to their own parents, which is what keeps a nested transform's
# inputs apart from the outer Vars they were made from (no perturbation confusion).
# ---------------------------------------------------------------------------------------------------------

def _depends(tape: Sequence[Entry], sources: Sequence[int]) -> List[bool]:
    """dep[i]: node i is a source or depends on one."""
    dep = [False] * len(tape)
    if not sources:
        return dep
    for s in sources:
        dep[s] = True
    for i in range(min(sources), len(tape)):
        if not dep[i]:
            for p in tape[i][2]:
                if dep[p]:
                    dep[i] = True
                    break
    return dep


def _partials_at(tape: Sequence[Entry], i: int, custom: Dict[int, "CustomCall"]) -> Tuple[Expr, ...]:
    handle, op, parents, aux = tape[i]
    return local_partials(op, [tape[p][0] for p in parents], handle, aux, custom.get(i))


def reverse(tape: Sequence[Entry], seeds: Dict[int, Expr], wrt: Sequence[int],
            custom: Optional[Dict[int, "CustomCall"]] = None) -> List[Expr]:
    """Vector-Jacobian product: sum_j seeds[j] * d node_j / d node_w for each w in wrt, as expressions."""
    custom = custom or {}
    if not wrt:
        return []
    dep = _depends(tape, wrt)
    terminal = set(wrt)
    pending: Dict[int, List[Expr]] = {}
    for pos, seed in seeds.items():
        if dep[pos] and not is_zero(seed):
            pending.setdefault(pos, []).append(seed)
    lo = min(wrt)
    for i in range(len(tape) - 1, lo - 1, -1):
        if i in terminal or i not in pending:
            continue
        g = total(pending.pop(i))
        if is_zero(g):
            continue
        parents = tape[i][2]
        for p, d in zip(parents, _partials_at(tape, i, custom)):
            if dep[p]:
                term = mul(g, d)
                if not is_zero(term):
                    pending.setdefault(p, []).append(term)
    return [total(pending.get(w, ())) for w in wrt]


def forward(tape: Sequence[Entry], tangents: Dict[int, Expr], outs: Sequence[int],
            custom: Optional[Dict[int, "CustomCall"]] = None) -> List[Expr]:
    """Jacobian-vector product: d node_o along the seeded tangents for each o in outs, as expressions."""
    custom = custom or {}
    tangent: Dict[int, Expr] = {p: t for p, t in tangents.items() if not is_zero(t)}
    if not tangent or not outs:
        return [0.0 for _ in outs]
    seeded = set(tangents)
    last = max(outs)
    for i in range(min(tangent), last + 1):
        if i in seeded:
            continue
        parents = tape[i][2]
        if not any(p in tangent for p in parents):
            continue
        terms = []
        for p, d in zip(parents, _partials_at(tape, i, custom)):
            if p in tangent:
                term = mul(d, tangent[p])
                if not is_zero(term):
                    terms.append(term)
        t = total(terms)
        if not is_zero(t):
            tangent[i] = t
    return [tangent.get(o, 0.0) for o in outs]


def anchored_tape(nodes: Sequence[Any]) -> Tuple[List[Entry], List[int]]:
    """One tape holding every given node, and each node's position in it.

    Handles returned by `_engine.tape` need not be the objects the caller holds, so the nodes are found
    through a temporary fused 'sum' node whose parents are exactly `nodes`, in order; it is dropped from the
    returned tape (it is the last entry, so no position changes).
    """
    if len(nodes) == 1:
        tape = _engine.tape(nodes[0])
        return tape, [len(tape) - 1]
    tape = _engine.tape(fg.sum(list(nodes)))
    _, op, parents, _ = tape[-1]
    if op != "sum" or len(parents) != len(nodes):
        raise RuntimeError(f"fastgrad internal error: anchor node is {op!r} with {len(parents)} parents, "
                           f"expected 'sum' with {len(nodes)}")
    return tape[:-1], list(parents)


def leaf_indices(handles: Sequence[Any]) -> List[int]:
    """Arena indices of leaf handles (identity of leaves across different handle objects)."""
    if not handles:
        return []
    return [int(i) for i in _engine.param_index(list(handles))]


# ---------------------------------------------------------------------------------------------------------
# Tracing state shared by the transforms and custom ops (one per thread).
# ---------------------------------------------------------------------------------------------------------

class CustomCall:
    """One application of a custom op: the op (name, jvp rule) and the input handles it was applied to."""

    __slots__ = ("op", "node")

    def __init__(self, op: Any, node: Any):
        self.op = op
        self.node = node

    def partials(self, args: Sequence[Any]) -> Tuple[Expr, ...]:
        """Local partials from the op's jvp rule, applied to each unit tangent."""
        return self.op.symbolic_partials(args)


class _State(threading.local):
    def __init__(self) -> None:
        self.recordings: List[List[CustomCall]] = []   # one per running transform, innermost last


_state = _State()


def depth() -> int:
    """How many transformed functions are running on this thread (0 outside every transform)."""
    return len(_state.recordings)


@contextmanager
def tracing() -> Iterator[List[CustomCall]]:
    """Run a transformed function: one level deeper, recording the custom ops it applies."""
    recording: List[CustomCall] = []
    _state.recordings.append(recording)
    try:
        yield recording
    finally:
        _state.recordings.pop()


def record_custom(call: CustomCall) -> None:
    """Tell every running trace that a custom op node was made."""
    for recording in _state.recordings:
        recording.append(call)
