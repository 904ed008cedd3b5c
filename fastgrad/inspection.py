"""Look inside a graph: the table a lecture draws to explain reverse mode, Graphviz pictures, op counts.

    y = (a * x + b) ** c
    y.backward()
    print(fg.graph_table(y, names={"a": a, "x": x, "b": b, "c": c, "y": y}))

Node ids are positions in creation (topological) order among the nodes `y` depends on, 0 for the first:
stable from run to run, so the tables can be quoted in documentation.
"""
from __future__ import annotations

import math
import os
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import fastgrad as fg
from fastgrad import _engine, _optable, _symbolic

__all__ = ["GraphRow", "GraphTable", "GraphStats", "graph_table", "to_dot", "draw", "stats"]

Names = Optional[Dict[str, Any]]

# Ops with a constant operand or a parameter k (the node's aux), shown as op(parent, k=...).
_CONST_OPS = {op.name for op in _optable.OPS if op.form == _optable.CONST or op.param}


class GraphRow(NamedTuple):
    """One node: how it was made, who uses it, and the local derivatives of those users w.r.t. it."""

    id: int
    name: str                                   # '' unless given in `names`
    value: float
    created: Union[str, Tuple[str, Tuple[int, ...]]]   # 'leaf' or (op, input ids)
    aux: Optional[float]                        # the constant k of addc, mulc, ... (None otherwise)
    consumers: Tuple[int, ...]                  # ids of the nodes that use this one
    local: Tuple[float, ...]                    # d consumer / d this node, one per consumer
    grad: float                                 # .grad (after backward(): d y / d this node)


def _fmt(x: float) -> str:
    if isinstance(x, float) and x.is_integer() and abs(x) < 1e15:
        return str(int(x))
    return f"{x:.6g}"


def _created(row: GraphRow) -> str:
    if row.created == "leaf":
        return "leaf"
    op, ids = row.created
    args = ", ".join(map(str, ids))
    if row.aux is not None:
        args += f", k={_fmt(row.aux)}"
    return f"{op}({args})"


class GraphTable:
    """Rows of `graph_table`, printable as an aligned table (str and repr are the table)."""

    HEADERS = ("id", "name", "value", "created", "consumers", "d consumer/d node", "grad")

    def __init__(self, rows: List[GraphRow]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self):
        return iter(self.rows)

    def __getitem__(self, i: int) -> GraphRow:
        return self.rows[i]

    def _cells(self) -> Tuple[Tuple[str, ...], List[Tuple[str, ...]]]:
        show_names = any(r.name for r in self.rows)
        headers = self.HEADERS if show_names else self.HEADERS[:1] + self.HEADERS[2:]
        body = []
        for r in self.rows:
            cells = [str(r.id), r.name, _fmt(r.value), _created(r), ", ".join(map(str, r.consumers)),
                     ", ".join(_fmt(d) for d in r.local), _fmt(r.grad)]
            if not show_names:
                del cells[1]
            body.append(tuple(cells))
        return headers, body

    def __str__(self) -> str:
        headers, body = self._cells()
        widths = [max(len(c) for c in col) for col in zip(headers, *body)]
        numeric = {"id", "value", "grad"}

        def line(cells: Sequence[str]) -> str:
            parts = [c.rjust(w) if h in numeric else c.ljust(w) for c, w, h in zip(cells, widths, headers)]
            return "  ".join(parts).rstrip()

        return "\n".join([line(headers)] + [line(b) for b in body])

    __repr__ = __str__


def _reachable(y: Any, names: Names) -> Tuple[list, List[int], Dict[int, str]]:
    """(tape, positions of the nodes y depends on in creation order, {position: name})."""
    if not isinstance(y, fg.Var):
        raise TypeError(f"expected a Var, got {type(y).__name__}")
    named = []
    if names:
        for name, v in names.items():
            if not isinstance(name, str):
                name, v = v, name  # {var: 'name'} works too
            if not isinstance(v, fg.Var):
                raise TypeError(f"names: {name!r} must name a Var, got {type(v).__name__}")
            named.append((str(name), v))
    tape, pos = _symbolic.anchored_tape([y] + [v for _, v in named])
    root = pos[0]
    keep = [False] * len(tape)
    keep[root] = True
    for i in range(root, -1, -1):
        if keep[i]:
            for p in tape[i][2]:
                keep[p] = True
    label: Dict[int, str] = {}
    for (name, _), p in zip(named, pos[1:]):
        label.setdefault(p, name)
    return tape, [i for i in range(root + 1) if keep[i]], label


def _local_partials(handle: Any, op: str) -> Tuple[float, ...]:
    try:
        return tuple(float(d) for d in _engine.partials(handle))
    except NotImplementedError:  # a custom op: its Python rule gives vector-Jacobian products only
        return ()


def graph_table(y: Any, names: Names = None) -> GraphTable:
    """One row per node `y` depends on (creation order, y last): id, value, how it was created, its
    consumers, the local derivative of each consumer w.r.t. it (`_engine.partials`) and its grad.

    names: optional ``{"a": a, ...}`` to label nodes (and shows a name column).
    """
    tape, order, label = _reachable(y, names)
    row_id = {p: k for k, p in enumerate(order)}
    consumers: Dict[int, List[int]] = {p: [] for p in order}
    local: Dict[int, List[float]] = {p: [] for p in order}
    for p in order:
        handle, op, parents, _ = tape[p]
        if not parents:
            continue
        partials = _local_partials(handle, op)
        seen: Dict[int, float] = {}
        for k, q in enumerate(parents):  # a node used twice (x * x): its local derivative is the sum
            d = partials[k] if k < len(partials) else math.nan
            seen[q] = seen.get(q, 0.0) + d
        for q, d in seen.items():
            consumers[q].append(row_id[p])
            local[q].append(d)
    rows = []
    for p in order:
        handle, op, parents, aux = tape[p]
        created = "leaf" if op == "leaf" else (op, tuple(row_id[q] for q in parents))
        rows.append(GraphRow(row_id[p], label.get(p, ""), float(handle.data), created,
                             float(aux) if op in _CONST_OPS else None,
                             tuple(consumers[p]), tuple(local[p]), float(handle.grad)))
    return GraphTable(rows)


# ---------------------------------------------------------------------------------------------------------
# Graphviz
# ---------------------------------------------------------------------------------------------------------

_SYMBOL = {op.name: op.symbol for op in _optable.OPS if op.symbol}


def _escape(text: str) -> str:
    for ch in '\\{}|<>"':
        text = text.replace(ch, "\\" + ch)
    return text


def to_dot(y: Any, names: Names = None, rankdir: str = "LR") -> str:
    """Graphviz source for the graph of `y`: a box per value (name, value, grad), an ellipse per op,
    edges labelled with the local derivative."""
    table = graph_table(y, names)
    lines = ["digraph fastgrad {", f"  rankdir={rankdir};",
             '  node [shape=record, fontname="Helvetica", fontsize=11];',
             '  edge [fontname="Helvetica", fontsize=9];']
    for r in table:
        title = f"{_escape(r.name)} | " if r.name else ""
        lines.append(f'  n{r.id} [label="{{ {title}value {_escape(_fmt(r.value))} | '
                     f'grad {_escape(_fmt(r.grad))} }}"];')
        if r.created != "leaf":
            op, ids = r.created
            text = _SYMBOL.get(op, op) + (f" k={_fmt(r.aux)}" if r.aux is not None else "")
            lines.append(f'  n{r.id}_op [label="{_escape(text)}", shape=ellipse];')
            lines.append(f"  n{r.id}_op -> n{r.id};")
    for r in table:
        for c, d in zip(r.consumers, r.local):
            lines.append(f'  n{r.id} -> n{c}_op [label="{_escape(_fmt(d))}"];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def draw(y: Any, path: Union[None, str, "os.PathLike[str]"] = None, names: Names = None,
         rankdir: str = "LR") -> Any:
    """Render the graph of `y` to `path` (format from the suffix: .svg, .png, .pdf, ...; .dot/.gv write the
    source without Graphviz) and return the path. Without a path, return a ``graphviz.Source`` (displayed
    inline by Jupyter). Needs the optional `graphviz` package (``pip install 'fastgrad[graph]'``) and
    Graphviz's ``dot`` program; says so clearly when either is missing."""
    source = to_dot(y, names, rankdir)
    fmt = ""
    if path is not None:
        path = os.fspath(path)
        fmt = os.path.splitext(path)[1].lstrip(".").lower()
        if not fmt:
            raise ValueError(f"draw: cannot tell the format from {path!r}; use a suffix such as .svg or .png")
        if fmt in ("dot", "gv"):
            with open(path, "w", encoding="utf-8") as f:
                f.write(source)
            return path
    try:
        import graphviz  # optional dependency: never imported at module level
    except ImportError as e:
        raise ImportError("fastgrad.draw needs the optional 'graphviz' package: "
                          "pip install 'fastgrad[graph]' (plus Graphviz's 'dot' program, "
                          "e.g. apt install graphviz); fastgrad.to_dot(y) gives the source without it") from e
    if path is None:
        return graphviz.Source(source)
    try:
        data = graphviz.Source(source).pipe(format=fmt)
    except getattr(graphviz, "ExecutableNotFound", ()) as e:
        raise RuntimeError("fastgrad.draw: Graphviz's 'dot' program was not found on PATH "
                           "(install Graphviz: apt install graphviz / brew install graphviz)") from e
    with open(path, "wb") as f:
        f.write(data)
    return path


# ---------------------------------------------------------------------------------------------------------
# Operation counts
# ---------------------------------------------------------------------------------------------------------

# Cost model (an estimate, in the spirit of Griewank's operation counts): every arithmetic operation,
# comparison or elementary function evaluation (exp, sin, ...) counts as one flop. Forward: the node's own
# evaluation. Backward: computing its local partials (below) plus a multiply and an add per parent edge.
# The per-op numbers are the op table's `flops` and `partial_flops`; n-ary ops count their terms.
_FORWARD = {op.name: op.flops for op in _optable.OPS}
_PARTIAL = {op.name: op.partial_flops for op in _optable.OPS}


class GraphStats(NamedTuple):
    """Node counts per op and flop estimates for one forward and one backward pass."""

    nodes: int
    leaves: int
    edges: int
    ops: Dict[str, int]
    forward_flops: int
    backward_flops: int

    def __str__(self) -> str:
        width = max([len(op) for op in self.ops] + [2])
        lines = [f"nodes {self.nodes} ({self.leaves} leaves), edges {self.edges}",
                 f"{'op'.ljust(width)}  count"]
        lines += [f"{op.ljust(width)}  {n:>5}" for op, n in self.ops.items()]
        lines.append(f"flops (estimate): forward {self.forward_flops}, backward {self.backward_flops}")
        return "\n".join(lines)


def stats(y: Any) -> GraphStats:
    """Counts per op (most frequent first) and forward/backward flop estimates for the graph of `y`."""
    if not isinstance(y, fg.Var):
        raise TypeError(f"stats expects a Var, got {type(y).__name__}")
    tape = _engine.tape(y)
    ops: Dict[str, int] = {}
    edges = fwd = bwd = 0
    for _, op, parents, _ in tape:
        ops[op] = ops.get(op, 0) + 1
        n = len(parents)
        edges += n
        if op in ("sum", "dot"):
            fwd += max(n - 1, 0)  # sum: n - 1 additions; dot: n/2 products and n/2 - 1 additions
        else:
            fwd += _FORWARD[op]
        if n:
            bwd += _PARTIAL.get(op, 0) + 2 * n
    ordered = dict(sorted(ops.items(), key=lambda kv: (-kv[1], kv[0])))
    return GraphStats(len(tape), ops.get("leaf", 0), edges, ordered, fwd, bwd)
