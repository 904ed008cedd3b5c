"""Functional transforms (JAX-style): grad, value_and_grad, vjp, jvp, jacobian, hessian, hvp.

Every transform runs the user's function once on fresh input nodes, then sweeps the recorded tape.

- **Fast path** (the arguments are plain numbers, the usual case): the sweeps are the engine's C loops:
  `_engine.grad` (reverse), `_engine.jvp` (tangents in creation order), `_engine.hvp` (forward-over-reverse,
  k directions in one sweep). Results are Python floats (NumPy arrays for array arguments).
- **Differentiable path** (an argument or tangent is a `Var`, or the function closes over Vars of an
  enclosing transform): the sweeps of `fastgrad._symbolic` build the derivative as NEW graph nodes, so an
  outer transform can differentiate it again: ``fg.grad(fg.grad(f))`` works to any order. Results are Vars.

Inputs are kept apart from the Vars they came from (each gets its own node), so
``fg.grad(lambda x: x * fg.grad(lambda y: x * y)(x))(5.0) == 10.0`` (no perturbation confusion).
Outside every transform, a function called with numbers that closes over Vars gets a float result: a
constant as far as those Vars are concerned. Pass a Var argument to keep the result differentiable.

Arguments may be numbers, Vars, or (nested) tuples, lists, dicts and real NumPy arrays of them; results have
the structure of the arguments, as in JAX. What cannot be differentiated raises `NotImplementedError` naming
it (a custom op without a jvp rule under forward mode, a Hessian or nesting), never a silently wrong number.
"""
from __future__ import annotations

import functools
import numbers
import re
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

import fastgrad as fg
from fastgrad import _engine, _symbolic
from fastgrad._pytree import LEAF, TreeDef, contains_var, flatten
from fastgrad._symbolic import Expr
from fastgrad.grad_mode import _grad_on

__all__ = ["grad", "value_and_grad", "vjp", "jvp", "jacobian", "jacfwd", "jacrev", "hessian", "hvp"]

ArgNums = Union[int, Sequence[int]]


# ---------------------------------------------------------------------------------------------------------
# Validation (messages follow JAX's where JAX has one)
# ---------------------------------------------------------------------------------------------------------

def _check_callable(fun: Any, name: str) -> None:
    if not callable(fun):
        raise TypeError(f"{name} requires a callable as its first argument, "
                        f"got {type(fun).__name__} {fun!r:.60}")


def _check_argnums(argnums: Any, name: str) -> Tuple[int, ...]:
    nums = argnums if isinstance(argnums, (tuple, list)) else (argnums,)
    for n in nums:
        if isinstance(n, bool) or not isinstance(n, numbers.Integral):
            raise TypeError(f"{name}: argnums must be an int or a tuple of ints, got {argnums!r}")
    if isinstance(argnums, (tuple, list)) and not argnums:
        raise ValueError(f"{name}: argnums must not be empty")
    return tuple(int(n) for n in nums)


def _resolve_argnums(nums: Tuple[int, ...], nargs: int, name: str) -> Tuple[int, ...]:
    out = []
    for n in nums:
        if not -nargs <= n < nargs:
            raise TypeError(f"{name}: differentiating with respect to argnums={nums} requires at least "
                            f"{max(nums) + 1 if n >= 0 else -min(nums)} positional arguments to be passed by "
                            f"the caller, but got only {nargs} positional arguments.")
        out.append(n % nargs)
    if len(set(out)) != len(out):
        raise ValueError(f"{name}: argnums {nums} names an argument twice")
    return tuple(out)


def _check_mode(mode: Any) -> str:
    if mode not in ("auto", "fwd", "rev"):
        raise ValueError(f"jacobian: mode must be 'auto', 'fwd' or 'rev', got {mode!r}")
    return mode


def _scalar_output(trace: "_Trace", name: str) -> None:
    if trace.out_def != LEAF:
        raise TypeError(f"{name} requires a scalar-output function (a number or a Var), but it returned "
                        f"the structure {trace.out_def!r}")


def _structure(tree_def: TreeDef) -> str:
    """The tree structure with arrays as single leaves, as JAX compares them (shapes are checked apart)."""
    return re.sub(r"array\([^)]*\)", "array", repr(tree_def))


def _check_pair(primals: Any, tangents: Any, name: str) -> Tuple[List[Any], TreeDef]:
    """Validate jvp-style (primals, tangents): both tuples/lists of the same structure and shapes."""
    if not isinstance(primals, (tuple, list)) or not isinstance(tangents, (tuple, list)):
        raise TypeError(f"primal and tangent arguments to {name} must be tuples or lists; found "
                        f"{type(primals).__name__} and {type(tangents).__name__}.")
    p_leaves, p_def = flatten(tuple(primals), f"{name}: primal")
    t_leaves, t_def = flatten(tuple(tangents), f"{name}: tangent")
    if _structure(p_def) != _structure(t_def):
        raise TypeError(f"primal and tangent arguments to {name} must have the same tree structure; "
                        f"primals have tree structure {p_def!r} whereas tangents have tree structure "
                        f"{t_def!r}.")
    if p_def != t_def:
        raise ValueError(f"{name} called with different primal and tangent shapes: primals {p_def!r}, "
                         f"tangents {t_def!r}")
    return t_leaves, t_def


# ---------------------------------------------------------------------------------------------------------
# One evaluation of the user's function on fresh input nodes
# ---------------------------------------------------------------------------------------------------------

def _fresh(x: Any) -> Any:
    """A new node equal to x: a leaf for a number; for a Var, an identity node that depends on it.

    The node is distinct from `x`, so the inner derivative is taken w.r.t. the new node only, while an
    outer transform still sees the dependence on `x` (derivative 1).
    """
    if not isinstance(x, fg.Var):
        return fg.Var(x)
    return x + 0.0   # always a new 'addc' node


class _Trace:
    """Calls ``fun(*args, **kwargs)`` with the differentiated leaves replaced by fresh nodes.

    Attributes: ``ins`` (fresh input nodes, flat), ``in_def`` (their structure), ``outs`` (flat outputs:
    Vars or floats), ``out_def``, ``aux``, ``customs`` (custom-op applications made while fun ran) and
    ``symbolic``: True when the derivatives must be built as graph nodes (see the module docstring).
    """

    def __init__(self, fun: Callable, args: Tuple[Any, ...], kwargs: Dict[str, Any],
                 argnums: Optional[Tuple[int, ...]], single: bool, name: str, has_aux: bool = False):
        if argnums is None:  # jvp, vjp, hvp: every positional argument is differentiated
            argnums, single = tuple(range(len(args))), False
        diff = args[argnums[0]] if single else tuple(args[i] for i in argnums)
        self.in_leaves, self.in_def = flatten(diff, f"{name}: argument")
        others = [a for i, a in enumerate(args) if i not in argnums] + list(kwargs.values())
        self.concrete_in = not contains_var(self.in_leaves + others)
        self.ins = [_fresh(v) for v in self.in_leaves]
        new_diff = self.in_def.unflatten(self.ins)
        call_args = list(args)
        if single:
            call_args[argnums[0]] = new_diff
        else:
            for i, part in zip(argnums, new_diff):
                call_args[i] = part
        with _symbolic.tracing() as recording:
            result = fun(*call_args, **kwargs)
        self.customs = recording
        self.aux = None
        if has_aux:
            if not (isinstance(result, (tuple, list)) and len(result) == 2):
                raise TypeError(f"{name} with has_aux=True requires the function to return a pair "
                                f"(output, aux), got {type(result).__name__}")
            result, self.aux = result
        self.outs, self.out_def = flatten(result, f"{name}: function output")
        self._located: Optional[Located] = None
        self.symbolic = not self.concrete_in
        if not self.symbolic and _symbolic.depth() > 0 and any(isinstance(o, fg.Var) for o in self.outs):
            # Nested in another transform: stay differentiable if the output reaches Vars made outside.
            self.symbolic = self._has_foreign_leaves()

    # --- where the inputs, outputs and custom ops sit on one tape (differentiable path and fallbacks)
    def located(self) -> Located:
        """The trace's outputs, inputs and custom-op nodes on one tape (made once, on first use)."""
        if self._located is None:
            self._located = _locate(self.outs, self.ins, self.customs)
        return self._located

    def _has_foreign_leaves(self) -> bool:
        tape = self.located().tape
        leaves = [h for h, op, _, _ in tape if op == "leaf"]
        ours = set(_symbolic.leaf_indices(self.ins))
        return any(i not in ours for i in _symbolic.leaf_indices(leaves))

    def value(self) -> Any:
        """The function's output, in the structure it was returned (floats on the fast path)."""
        return self.out_def.unflatten(self.outs if self.symbolic else [float(o) for o in self.outs])

    def aux_value(self) -> Any:
        return self.aux if self.symbolic else _map_vars(float, self.aux)

    # --- sweeps: each returns a flat list of floats (fast) or of Exprs (differentiable)
    def vjp(self, cotangents: Sequence[Any]) -> List[Expr]:
        """sum_j ct_j * d out_j / d in_i for every input i."""
        symbolic = self.symbolic or any(isinstance(c, fg.Var) for c in cotangents)
        if not symbolic:
            weighted = [(c, o) for c, o in zip(cotangents, self.outs) if isinstance(o, fg.Var) and c != 0.0]
            if not weighted:
                return [0.0] * len(self.ins)
            if len(weighted) == 1:
                c, o = weighted[0]
                return [float(g) for g in _engine.grad(o, self.ins, c)]
            node = fg.dot([c for c, _ in weighted], [o for _, o in weighted])
            return [float(g) for g in _engine.grad(node, self.ins)]
        loc = self.located()
        seeds: Dict[int, Expr] = {}
        for c, p in zip(cotangents, loc.outs):
            if p is not None:
                seeds[p] = _symbolic.total([seeds.get(p, 0.0), c])
        return _symbolic.reverse(loc.tape, seeds, loc.ins, loc.custom)

    def jvp(self, tangents: Sequence[Any]) -> List[Expr]:
        """sum_i d out_j / d in_i * t_i for every output j."""
        symbolic = self.symbolic or any(isinstance(t, fg.Var) for t in tangents)
        var_outs = [o for o in self.outs if isinstance(o, fg.Var)]
        if not symbolic:
            try:
                swept = _engine.jvp(var_outs, self.ins, [float(t) for t in tangents]) if var_outs else []
                sweep = iter(swept)
                return [float(next(sweep)) if isinstance(o, fg.Var) else 0.0 for o in self.outs]
            except NotImplementedError:
                pass  # a custom op depends on the inputs: the Python sweep below applies its jvp rule
        loc = self.located()
        sweep = iter(_symbolic.forward(loc.tape, dict(zip(loc.ins, tangents)),
                                       [p for p in loc.outs if p is not None], loc.custom))
        result = [next(sweep) if p is not None else 0.0 for p in loc.outs]
        return result if symbolic else [float(r) for r in result]

    def jacobian(self, mode: str) -> List[List[Expr]]:
        """J[j][i] = d out_j / d in_i: by rows (reverse mode) or by columns (forward mode)."""
        m, n = len(self.outs), len(self.ins)
        if mode == "auto":
            mode = "fwd" if n < m else "rev"
        if mode == "rev":
            return [self.vjp([1.0 if k == j else 0.0 for k in range(m)]) for j in range(m)]
        var_outs = [o for o in self.outs if isinstance(o, fg.Var)]
        if not self.symbolic and var_outs:
            try:  # every column in ONE tangent sweep (n directions at once)
                swept = _engine.jvp(var_outs, self.ins, np.eye(n))
                cols = []
                for row in swept:
                    it = iter(row)
                    cols.append([float(next(it)) if isinstance(o, fg.Var) else 0.0 for o in self.outs])
                return [[cols[i][j] for i in range(n)] for j in range(m)]
            except NotImplementedError:
                pass  # a custom op depends on the inputs: column by column, through its jvp rule
        cols = [self.jvp([1.0 if k == i else 0.0 for k in range(n)]) for i in range(n)]
        return [[cols[i][j] for i in range(n)] for j in range(m)]

    def hessian_vector(self, directions: Sequence[Sequence[Any]]) -> List[List[Expr]]:
        """H @ v for each direction v (scalar output): forward-over-reverse."""
        n = len(self.ins)
        out = self.outs[0]
        symbolic = self.symbolic or any(isinstance(t, fg.Var) for v in directions for t in v)
        if not isinstance(out, fg.Var):
            return [[0.0] * n for _ in directions]
        if not symbolic:
            V = np.array([[float(t) for t in v] for v in directions], dtype=np.float64).reshape(-1, n)
            try:
                _, HV = _engine.hvp(out, self.ins, V)
                return [[float(h) for h in row] for row in HV]
            except NotImplementedError:
                pass  # a custom op depends on the inputs (see jvp above)
        # The gradient as graph nodes, then its derivative along each direction (a tangent sweep).
        loc = self.located()
        grads = _symbolic.reverse(loc.tape, {loc.outs[0]: 1.0}, loc.ins, loc.custom)
        g = _locate(grads, self.ins, self.customs)
        wanted = [p for p in g.outs if p is not None]
        rows = []
        for v in directions:
            sweep = iter(_symbolic.forward(g.tape, dict(zip(g.ins, v)), wanted, g.custom))
            row = [next(sweep) if p is not None else 0.0 for p in g.outs]
            rows.append(row if symbolic else [float(h) for h in row])
        return rows


class Located(NamedTuple):
    """A trace's outputs, inputs and custom-op nodes found on one tape (for the Python sweeps)."""

    tape: list                      # `_engine.tape` rows, oldest first
    ins: List[int]                  # position of each input
    outs: List[Optional[int]]       # position of each output (None for an output that is a constant)
    custom: Dict[int, Any]          # the custom-op call (CustomCall) at each custom node's position


def _locate(outs: Sequence[Any], ins: Sequence[Any], customs: Sequence[_symbolic.CustomCall]) -> Located:
    """One tape holding every Var output, every input and every custom-op node."""
    var_outs = [o for o in outs if isinstance(o, fg.Var)]
    tape, pos = _symbolic.anchored_tape(var_outs + list(ins) + [c.node for c in customs])
    k, n = len(var_outs), len(ins)
    it = iter(pos[:k])
    out_pos = [next(it) if isinstance(o, fg.Var) else None for o in outs]
    custom = dict(zip(pos[k + n:], customs))
    return Located(tape, pos[k:k + n], out_pos, custom)


def _finish(values: Sequence[Expr], symbolic: bool) -> List[Any]:
    """Floats on the fast path; Vars (constants wrapped as leaves) on the differentiable path."""
    if symbolic:
        return [v if isinstance(v, fg.Var) else fg.Var(float(v)) for v in values]
    return [float(v) for v in values]


def _map_vars(fn: Callable, tree: Any) -> Any:
    """Apply fn to the Vars in a tree, keep everything else (for has_aux outputs)."""
    if isinstance(tree, fg.Var):
        return fn(tree)
    if isinstance(tree, tuple):
        mapped = [_map_vars(fn, x) for x in tree]
        return type(tree)(*mapped) if hasattr(tree, "_fields") else tuple(mapped)
    if isinstance(tree, list):
        return [_map_vars(fn, x) for x in tree]
    if isinstance(tree, dict):
        return {k: _map_vars(fn, v) for k, v in tree.items()}
    return tree


# ---------------------------------------------------------------------------------------------------------
# Public transforms
# ---------------------------------------------------------------------------------------------------------

def value_and_grad(fun: Callable, argnums: ArgNums = 0, has_aux: bool = False) -> Callable:
    """Return a function computing ``(fun(*args), gradient of fun w.r.t. args[argnums])``.

    `fun` must return a scalar (number or Var). With ``has_aux=True`` it returns ``(output, aux)`` and the
    transformed function returns ``((value, aux), gradient)``. The gradient has the structure of
    ``args[argnums]`` (a tuple of such when argnums is a tuple).
    """
    _check_callable(fun, "value_and_grad")
    nums = _check_argnums(argnums, "value_and_grad")
    single = not isinstance(argnums, (tuple, list))

    @functools.wraps(fun)
    @_grad_on
    def value_and_grad_fun(*args: Any, **kwargs: Any) -> Any:
        trace = _Trace(fun, args, kwargs, _resolve_argnums(nums, len(args), "grad"), single, "grad", has_aux)
        _scalar_output(trace, "grad")
        gradient = trace.in_def.unflatten(_finish(trace.vjp([1.0]), trace.symbolic))
        value = trace.value()
        return ((value, trace.aux_value()), gradient) if has_aux else (value, gradient)

    return value_and_grad_fun


def grad(fun: Callable, argnums: ArgNums = 0, has_aux: bool = False) -> Callable:
    """Return a function computing the gradient of scalar-valued `fun` w.r.t. ``args[argnums]``.

    ``fg.grad(f)(2.0)`` is a float; ``fg.grad(f)(x)`` for a Var x is a Var, differentiable again, so
    ``fg.grad(fg.grad(f))`` is the second derivative. With ``has_aux=True``: returns ``(gradient, aux)``.
    """
    _check_callable(fun, "grad")
    value_and_grad_fun = value_and_grad(fun, argnums, has_aux)

    @functools.wraps(fun)
    @_grad_on
    def grad_fun(*args: Any, **kwargs: Any) -> Any:
        value, gradient = value_and_grad_fun(*args, **kwargs)
        return (gradient, value[1]) if has_aux else gradient

    return grad_fun


@_grad_on
def vjp(fun: Callable, *primals: Any, has_aux: bool = False) -> Tuple[Any, ...]:
    """Return ``(fun(*primals), vjp_fn)``; ``vjp_fn(ct)`` is the tuple of ``ct``-weighted gradients w.r.t.
    each primal (reverse mode). With ``has_aux=True``: ``(value, vjp_fn, aux)``.

    The cotangent must have the structure of the output (TypeError otherwise).
    """
    _check_callable(fun, "vjp")
    trace = _Trace(fun, primals, {}, None, False, "vjp", has_aux)

    @_grad_on
    def vjp_fn(cotangent: Any) -> Tuple[Any, ...]:
        leaves, ct_def = flatten(cotangent, "vjp: cotangent")
        if _structure(ct_def) != _structure(trace.out_def):
            raise TypeError(f"vjp: the cotangent must have the structure of the function output "
                            f"{trace.out_def!r}, got {ct_def!r}")
        if ct_def != trace.out_def:
            raise ValueError(f"vjp: cotangent shapes {ct_def!r} differ from the output's {trace.out_def!r}")
        symbolic = trace.symbolic or any(isinstance(c, fg.Var) for c in leaves)
        return trace.in_def.unflatten(_finish(trace.vjp(leaves), symbolic))

    if has_aux:
        return trace.value(), vjp_fn, trace.aux_value()
    return trace.value(), vjp_fn


@_grad_on
def jvp(fun: Callable, primals: Sequence[Any], tangents: Sequence[Any],
        has_aux: bool = False) -> Tuple[Any, ...]:
    """Return ``(fun(*primals), J @ tangents)``: forward mode, one tangent sweep over the tape (in C).

    `primals` and `tangents` are tuples or lists of the same structure (TypeError otherwise); the output
    tangent has the structure of the output. With ``has_aux=True``: ``(value, tangent, aux)``.
    """
    _check_callable(fun, "jvp")
    t_leaves, _ = _check_pair(primals, tangents, "jvp")
    trace = _Trace(fun, tuple(primals), {}, None, False, "jvp", has_aux)
    symbolic = trace.symbolic or any(isinstance(t, fg.Var) for t in t_leaves)
    tangent_out = trace.out_def.unflatten(_finish(trace.jvp(t_leaves), symbolic))
    if has_aux:
        return trace.value(), tangent_out, trace.aux_value()
    return trace.value(), tangent_out


def jacobian(fun: Callable, argnums: ArgNums = 0, mode: str = "auto", has_aux: bool = False) -> Callable:
    """Return a function computing the Jacobian of `fun` w.r.t. ``args[argnums]``.

    mode: 'rev' (one reverse sweep per output), 'fwd' (one tangent sweep per input) or 'auto' (forward
    mode when there are fewer inputs than outputs). The result nests the argument structure inside the
    output structure, as JAX's jacobian (arrays: shape ``out.shape + in.shape``).
    """
    _check_callable(fun, "jacobian")
    nums = _check_argnums(argnums, "jacobian")
    mode = _check_mode(mode)
    single = not isinstance(argnums, (tuple, list))

    @functools.wraps(fun)
    @_grad_on
    def jacobian_fun(*args: Any, **kwargs: Any) -> Any:
        trace = _Trace(fun, args, kwargs, _resolve_argnums(nums, len(args), "jacobian"), single, "jacobian",
                       has_aux)
        rows = [trace.in_def.unflatten(_finish(row, trace.symbolic)) for row in trace.jacobian(mode)]
        jac = trace.out_def.unflatten(rows)
        return (jac, trace.aux_value()) if has_aux else jac

    return jacobian_fun


def jacfwd(fun: Callable, argnums: ArgNums = 0, has_aux: bool = False) -> Callable:
    """`jacobian` in forward mode."""
    return jacobian(fun, argnums, "fwd", has_aux)


def jacrev(fun: Callable, argnums: ArgNums = 0, has_aux: bool = False) -> Callable:
    """`jacobian` in reverse mode."""
    return jacobian(fun, argnums, "rev", has_aux)


def hessian(fun: Callable, argnums: ArgNums = 0) -> Callable:
    """Return a function computing the Hessian of scalar-valued `fun` w.r.t. ``args[argnums]``.

    Forward-over-reverse: all n tangent directions pushed through the reverse sweep in ONE C sweep
    (`_engine.hvp`). Structure as ``jacobian(grad(fun))``.
    """
    _check_callable(fun, "hessian")
    nums = _check_argnums(argnums, "hessian")
    single = not isinstance(argnums, (tuple, list))

    @functools.wraps(fun)
    @_grad_on
    def hessian_fun(*args: Any, **kwargs: Any) -> Any:
        trace = _Trace(fun, args, kwargs, _resolve_argnums(nums, len(args), "hessian"), single, "hessian")
        _scalar_output(trace, "hessian")
        n = len(trace.ins)
        columns = trace.hessian_vector([[1.0 if k == i else 0.0 for k in range(n)] for i in range(n)])
        symbolic = trace.symbolic
        rows = [trace.in_def.unflatten(_finish([columns[j][i] for j in range(n)], symbolic))
                for i in range(n)]
        return trace.in_def.unflatten(rows)

    return hessian_fun


@_grad_on
def hvp(fun: Callable, primals: Sequence[Any], tangents: Sequence[Any]) -> Tuple[Any, ...]:
    """Hessian-vector product of scalar-valued `fun` at `primals` along `tangents` (forward-over-reverse).

    `primals` and `tangents` are tuples or lists of the same structure, as for `jvp`; the result has that
    structure too: ``hvp(f, (x, y), (u, v))`` is ``(H_xx u + H_xy v, H_yx u + H_yy v)``.
    """
    _check_callable(fun, "hvp")
    t_leaves, _ = _check_pair(primals, tangents, "hvp")
    trace = _Trace(fun, tuple(primals), {}, None, False, "hvp")
    _scalar_output(trace, "hvp")
    symbolic = trace.symbolic or any(isinstance(t, fg.Var) for t in t_leaves)
    return trace.in_def.unflatten(_finish(trace.hessian_vector([t_leaves])[0], symbolic))
