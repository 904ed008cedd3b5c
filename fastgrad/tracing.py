"""Trace once, replay many: ``fg.compile``.

``fg.compile(fn)`` returns a callable. Its first call with arguments of a given structure runs ``fn`` once
on fresh leaf Vars (a *trace*) and records the graph it builds as a tape (``fastgrad._replay.Tape``). Every
call then replays the tape in C on the new argument values, forward and backward, with no Python per node:
it returns the result as a new leaf Var (``.data`` is the value) and adds the gradient of the result to the
``.grad`` of every Var made outside ``fn`` that the result depends on (the model's parameters), exactly as
``fn(*args).backward()`` would, bit for bit. So ``opt.zero_grad()``, ``opt.step()`` and schedulers work
unchanged around it.

A call with Vars among its arguments (as ``fg.grad(compiled)`` makes), or made while another function
is being traced, runs ``fn`` eagerly instead, so the result stays connected to those Vars: the transforms
and an enclosing trace see through a compiled function. ``.graph(*args)`` rebuilds a tape as an ordinary
graph for ``fg.graph_table``, ``fg.stats`` and ``fg.to_dot``.

What a trace cannot see: Python decisions made on values. An ``if`` on a traced value, a comparison, a
``float(v)`` would be frozen at the traced value, so inside a trace they raise ``TraceError``; branch in the
graph instead (``relu``, ``maximum``, ``minimum`` and ``abs`` are ops: they replay correctly at any value).
Reading ``v.data`` is not caught (it cannot be told apart from printing): a value read that way is a
constant of the tape. ``fg.compile(fn, check=True)`` runs ``fn`` eagerly beside the first replays and
raises ``TraceError`` on any difference. Other things the tape keeps from the trace: which Vars ``fn``
reads (a parameter replaced by a new Var after tracing is not seen: call ``.clear()``), random numbers drawn
inside ``fn``, and anything ``fn`` does besides computing its result.
"""
from __future__ import annotations

import collections
import functools
import importlib
import math
import os
import threading
from typing import Any, Callable, List, Optional, Tuple

import numpy as np

from fastgrad import _engine, _optable, _pytree, _replay
from fastgrad._engine import Var
from fastgrad.grad_mode import _grad_on


def _has_avx2() -> bool:
    """Does this CPU have AVX2 (NumPy's runtime CPU detection; False when unknown)?"""
    for name in ("numpy._core._multiarray_umath", "numpy.core._multiarray_umath"):
        try:
            features = importlib.import_module(name).__cpu_features__
        except (ImportError, AttributeError):
            continue
        return bool(features.get("AVX2", False))
    return False


def _batch_kernels() -> Any:
    """The batched replay's module for this CPU: the AVX2 build where the CPU has it (same results, wider
    vectors), else the generic one. FASTGRAD_REPLAY=generic forces the generic build.

    NOTE: only fg.vmap's node-major loops gain from AVX2. The one-sample replay (fg.compile) is a scalar
    loop over an op switch, and its -mavx2 build ran 2.3x slower (10.6 against 4.7 ns/node forward on a
    10^6-node chain), so fg.compile always uses the generic build."""
    if os.environ.get("FASTGRAD_REPLAY", "") != "generic" and _has_avx2():
        try:
            from fastgrad import _replay_avx2
            return _replay_avx2
        except ImportError:     # not built (not x86-64)
            pass
    return _replay


Tape = _replay.Tape                 # fg.compile's tapes
BatchTape = _batch_kernels().Tape   # fg.vmap's tapes

__all__ = ["compile", "Compiled", "vmap", "Batched", "TraceError"]

_trace_lock = threading.RLock()


class TraceError(RuntimeError):
    """A compiled function did something a replay cannot reproduce (see ``fastgrad.tracing``)."""


def compile(fn: Optional[Callable[..., Any]] = None, *, check: bool = False, backward: bool = True,
            cache_size: int = 8):
    """Trace ``fn`` once per argument structure and replay it in C (see the module docstring).

    ``fn`` takes numbers, NumPy arrays, and tuples/lists/dicts of them (Vars too, but then it runs eagerly),
    and returns a scalar Var, or a
    pair ``(loss, aux)`` where ``aux`` is a tuple/list/dict of Vars: then the compiled call returns
    ``(Var(loss), aux as floats)`` (only ``loss`` is backpropagated).
    Inside the trace a NumPy array arrives as an object array of leaf Vars of the same shape.
    ``check``: compare the first 3 replays with eager evaluation (values and gradients, bit for bit).
    ``backward``: also backpropagate (False: forward only). ``cache_size``: tapes kept (least recently
    used dropped). Usable as a decorator, with or without arguments.
    """
    if fn is None:
        return functools.partial(compile, check=check, backward=backward, cache_size=cache_size)
    if not callable(fn):
        raise TypeError(f"fg.compile: expected a function, got {type(fn).__name__}")
    if not isinstance(cache_size, int) or isinstance(cache_size, bool) or cache_size < 1:
        raise ValueError(f"fg.compile: cache_size must be a positive int, got {cache_size!r}")
    return Compiled(fn, check=bool(check), backward=bool(backward), cache_size=cache_size)


class _Entry:
    """One traced structure: its tape, the arguments' structure, the auxiliary results' structure."""

    __slots__ = ("tape", "treedef", "aux_def", "aux_flat")

    def __init__(self, tape: Tape, treedef: Any, aux_def: Any):
        self.tape = tape
        self.treedef = treedef          # the arguments' structure (to rebuild them for eager runs)
        self.aux_def = aux_def          # structure of the auxiliary results (None: a Var result)
        # a flat list or tuple of Vars (the common case): its values come back as one list, without
        # walking the structure at every call
        self.aux_flat = aux_def is not None and aux_def.kind in ("list", "tuple") \
            and all(c.kind == "leaf" for c in aux_def.children)


class _Traced:
    """What fg.compile's and fg.vmap's callables share: the function and its tapes, one per argument
    structure, the least recently used dropped beyond ``cache_size``."""

    def __init__(self, fn: Callable[..., Any], backward: bool, cache_size: int):
        self.fn = fn
        self.backward = backward
        self.cache_size = cache_size
        self._cache: "collections.OrderedDict[Any, _Entry]" = collections.OrderedDict()
        self.traces = 0                 # how many times fn was traced
        functools.update_wrapper(self, fn)

    _tape_kind: Any = Tape

    def clear(self) -> None:
        """Forget every tape (the next call traces again)."""
        self._cache.clear()

    def _entry(self, key: Any, args: Tuple[Any, ...]) -> _Entry:
        """The tape of structure ``key``, traced on ``args`` if it is not cached."""
        entry = self._cache.get(key)
        if entry is None:
            self.traces += 1
            entry = _trace(self.fn, args, self._tape_kind)
            self._cache[key] = entry
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return entry


class Compiled(_Traced):
    """A function compiled by ``fg.compile``: call it like the function."""

    def __init__(self, fn: Callable[..., Any], *, check: bool, backward: bool, cache_size: int):
        super().__init__(fn, backward, cache_size)
        self.check = check
        self._checks_left = 3 if check else 0

    def tape(self, *args: Any) -> Tape:
        """The tape these (numeric) arguments replay, tracing it if needed."""
        key, _ = _numeric_arguments(args, "tape()")
        return self._entry(key, args).tape

    def graph(self, *args: Any) -> Any:
        """The tape rebuilt as an ordinary graph at these (numeric) arguments: its result Var (no backward),
        to inspect (``fg.graph_table``, ``fg.stats``, ``fg.to_dot``) or differentiate. Its external inputs are
        the very Vars the tape reads (the parameters); the arguments are new leaves."""
        key, x = _numeric_arguments(args, "graph()")
        return _rebuild(self._entry(key, args).tape, x)

    def __call__(self, *args: Any) -> Any:
        if _engine._is_tracing():
            return self._eager(args)
        plain = _plain_arguments(args)          # NOTE: numbers and real arrays hold no Var: no search
        if plain is None and _pytree.contains_var(args):
            return self._eager(args)
        key, x = plain if plain is not None else _tree_arguments(args, "fg.compile")
        entry = self._entry(key, args)
        if not _engine._is_grad_enabled():
            return self._replay(entry, x, backward=False)     # inside fg.no_grad: forward only
        if self._checks_left > 0:
            self._checks_left -= 1
            return self._checked(entry, x, args)
        return self._replay(entry, x)

    # -- internals ----------------------------------------------------------------------------------------

    def _eager(self, args: Tuple[Any, ...]) -> Any:
        """Called with Vars (by a transform such as fg.grad, or with a Var argument) or inside another
        trace: run fn itself, so the graph stays connected to those Vars (a replay's result would not be)."""
        loss, aux = _result(self.fn(*args))
        aux_leaves, aux_def = _aux_tree(aux)
        if self.backward and not _engine._is_tracing():
            loss.backward()
        if aux_def is None:
            return loss
        return loss, aux_def.unflatten([v.data for v in aux_leaves])

    def _replay(self, entry: _Entry, x: np.ndarray, backward: bool = True) -> Any:
        tape = entry.tape
        values = np.empty(len(tape.outputs)) if entry.aux_def is not None else None
        y = tape.run(x, self.backward and backward, 1.0, values)
        if entry.aux_def is None:
            return Var(y)
        return Var(y), _unflatten_values(entry, values[1:])

    def _checked(self, entry: _Entry, x: np.ndarray, args: Tuple[Any, ...]) -> Any:
        """Replay, and compare with eager evaluation of fn on the same arguments."""
        targets = [h for h in entry.tape.external if h.op == "leaf"]
        before = [t.grad for t in targets]
        leaves = _pytree.flatten(tuple(args), "fg.compile arguments")[0]
        loss, aux = _result(self.fn(*entry.treedef.unflatten([Var(v) for v in leaves])))   # as in the trace
        eager = [loss.data, *[v.data for v in _aux_tree(aux)[0]]]
        eager_grads = before
        if self.backward:
            loss.backward()
            eager_grads = [t.grad for t in targets]
            for t, g in zip(targets, before):
                t.grad = g
        del loss, aux
        result = self._replay(entry, x)
        replay = [result.data] if entry.aux_def is None else \
            [result[0].data, *_aux_tree(result[1], numbers=True)[0]]
        problems = []
        for q, (r, e) in enumerate(zip(replay, eager)):
            if not _same(r, e):
                what = "value" if q == 0 else f"auxiliary value {q - 1}"
                problems.append(f"{what}: replay {r!r}, eager {e!r}")
        for t, r, e in zip(targets, [t.grad for t in targets], eager_grads):
            if not _same(r, e):
                problems.append(f"grad of {t!r}: replay {r!r}, eager {e!r}")
        if problems:
            raise TraceError(
                f"fg.compile(check=True): the replay of {getattr(self.fn, '__qualname__', self.fn)!s} "
                "differs from running it eagerly (Python control flow on values, a .data read, randomness "
                "or a replaced parameter is frozen in the trace):\n  " + "\n  ".join(problems[:10]))
        return result

    def __repr__(self) -> str:
        return f"<fg.compile of {getattr(self.fn, '__qualname__', self.fn)!s}: {len(self._cache)} tape(s)>"


@_grad_on
def _trace(fn: Callable[..., Any], args: Tuple[Any, ...], kind: Any = Tape) -> _Entry:
    """Run fn on fresh leaves shaped like args (numbers and arrays only) and record the tape."""
    leaves, treedef = _pytree.flatten(tuple(args), "fg.compile arguments")
    with _trace_lock:
        floor = _engine._enter_trace()
        try:
            inputs = [Var(v) for v in leaves]          # every argument slot is a fresh leaf of the tape
            loss, aux = _result(fn(*treedef.unflatten(inputs)))
            aux_leaves, aux_def = _aux_tree(aux)
            arrays = _engine.record([loss, *aux_leaves], inputs, floor)
        finally:
            _engine._exit_trace()
    op, a, b, k, operands, external, out_pos = arrays
    return _Entry(kind(op, a, b, k, operands, external, len(leaves), out_pos), treedef, aux_def)


@_grad_on
def _rebuild(tape: Tape, x: np.ndarray) -> Var:
    """The tape's graph built again with the public API at argument values x; returns output 0."""
    import fastgrad as fg

    nodes: List[Any] = [Var(float(v)) for v in x] + list(tape.external)
    op, a, b, k, operands = tape.op, tape.a, tape.b, tape.k, tape.operands
    for i in range(tape.nin, tape.n):
        row = _optable.OPS[int(op[i])]
        if row.form == _optable.LEAF:
            nodes.append(Var(float(k[i])))
        elif row.form == _optable.NARY:
            slots = int(b[i]) * (2 if row.name == "dot" else 1)
            nodes.append(_optable.apply(fg, row, [nodes[p] for p in operands[a[i]:a[i] + slots]]))
        else:
            parents = [nodes[a[i]]] + ([nodes[b[i]]] if b[i] >= 0 else [])
            nodes.append(_optable.apply(fg, row, parents, float(k[i])))
    return nodes[tape.out]


def usable_cores() -> int:
    """The cores this process may run on (fg.vmap's default thread count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def vmap(fn: Optional[Callable[..., Any]] = None, *, reduce: str = "mean", backward: bool = True,
         threads: Optional[int] = None, block: int = 128, cache_size: int = 8):
    """Batched per-sample replay: trace ``fn`` on ONE sample, replay it over every sample in one C call.

    ``fn(*row)`` takes one sample (one row of each argument) and returns its loss as a scalar Var, or a
    pair ``(loss, aux)`` with ``aux`` a tuple/list/dict of Vars. The returned callable takes arrays whose
    first axis is the sample axis (N samples; every argument the same N) and returns the reduced loss as a
    Var: ``reduce="mean"`` (``fg.sum(losses) * (1 / N)``, as eager code writes it) or ``"sum"``; with aux,
    ``(Var(loss), aux)`` where each aux leaf is an array of N per-sample values. With ``backward`` the
    parameters' (Vars made outside fn) ``.grad`` gain the gradient of the reduced loss.

    The replay is node-major: each op runs over a block of ``block`` samples at once (contiguous, so the
    compiler vectorizes), and the blocks are split across ``threads`` threads (default: the usable cores).
    Per-sample values are those of eager mode bit for bit; the gradient sums over samples are added in a
    fixed block order, so they are the same bits for any thread count (and equal eager mode's, which adds
    the same terms in another order, to rounding: ~1e-15 relative).
    """
    if fn is None:
        return functools.partial(vmap, reduce=reduce, backward=backward, threads=threads, block=block,
                                 cache_size=cache_size)
    if not callable(fn):
        raise TypeError(f"fg.vmap: expected a function, got {type(fn).__name__}")
    if reduce not in ("mean", "sum"):
        raise ValueError(f"fg.vmap: reduce must be 'mean' or 'sum', got {reduce!r}")
    for name, value in (("block", block), ("cache_size", cache_size)) + (
            (("threads", threads),) if threads is not None else ()):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"fg.vmap: {name} must be a positive int, got {value!r}")
    return Batched(fn, reduce=reduce, backward=bool(backward), threads=threads, block=block,
                   cache_size=cache_size)


class Batched(_Traced):
    """A per-sample function replayed over batches by ``fg.vmap``: call it with the batch's arrays."""

    _tape_kind = BatchTape

    def __init__(self, fn: Callable[..., Any], *, reduce: str, backward: bool, threads: Optional[int],
                 block: int, cache_size: int):
        super().__init__(fn, backward, cache_size)
        self.reduce = reduce
        self.threads = threads
        self.block = block

    def __call__(self, *batch: Any) -> Any:
        arrays = sample_arrays(batch, "fg.vmap")
        n = arrays[0].shape[0]
        key = tuple(arr.shape[1:] for arr in arrays)
        entry = self._entry(key, tuple(arr[0] if arr.ndim > 1 else arr[0].item() for arr in arrays))
        X = np.ascontiguousarray(np.concatenate([arr.reshape(n, -1) for arr in arrays], axis=1),
                                 dtype=np.float64)
        tape = entry.tape
        scale = 1.0 / n if self.reduce == "mean" else 1.0
        values = np.empty((n, len(tape.outputs))) if entry.aux_def is not None else None
        losses = tape.run_batch(X, self.backward and _engine._is_grad_enabled(), scale, self.block,
                                self.threads or usable_cores(), values)
        total = _replay.sum_in_order(losses)       # 0.0 + losses[0] + ..., in sample order
        loss = Var(total * scale if self.reduce == "mean" else total)
        if entry.aux_def is None:
            return loss
        return loss, entry.aux_def.unflatten([values[:, q].copy() for q in range(1, values.shape[1])])

    def __repr__(self) -> str:
        return f"<fg.vmap of {getattr(self.fn, '__qualname__', self.fn)!s}: {len(self._cache)} tape(s)>"


def sample_arrays(batch: Tuple[Any, ...], who: str) -> List[np.ndarray]:
    """The arguments of a batched call as arrays of real numbers sharing a first (sample) axis of length >= 1;
    TypeError/ValueError, prefixed with ``who``, otherwise (fg.vmap's check; fastgrad.distributed's too)."""
    if not batch:
        raise TypeError(f"{who}: call with at least one array of samples")
    arrays = []
    for k, a in enumerate(batch):
        if isinstance(a, Var) or _pytree.contains_var([a]):
            raise TypeError(f"{who}: argument {k} holds Vars; pass the samples as numbers (arrays)")
        arr = np.asarray(a)
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"{who}: argument {k} must hold real numbers, got dtype {arr.dtype}")
        if arr.ndim == 0:
            raise ValueError(f"{who}: argument {k} is a scalar; each argument needs a sample axis")
        arrays.append(arr)
    n = arrays[0].shape[0]
    for k, arr in enumerate(arrays):
        if arr.shape[0] != n:
            raise ValueError(f"{who}: argument {k} has {arr.shape[0]} samples, argument 0 has {n}")
    if n == 0:
        raise ValueError(f"{who}: no samples (the sample axis has length 0)")
    return arrays


def _unflatten_values(entry: _Entry, values: np.ndarray) -> Any:
    """Auxiliary results as floats in their structure (a flat list or tuple of Vars, the common case, in one
    step)."""
    if entry.aux_flat:
        flat = values.tolist()
        return flat if entry.aux_def.kind == "list" else tuple(flat)
    return entry.aux_def.unflatten(values.tolist())


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1.0, a) == math.copysign(1.0, b))


def _result(out: Any) -> Tuple[Var, Any]:
    """(loss, aux) of what the function returned: a Var, or a (Var, auxiliary results) pair."""
    aux = None
    if isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], Var):
        out, aux = out
    if not isinstance(out, Var):
        raise TypeError("fg.compile: the function must return a scalar Var (its loss), or a pair (loss, aux) "
                        f"whose aux holds Vars; got {type(out).__name__}")
    return out, aux


def _aux_tree(aux: Any, numbers: bool = False):
    """Leaves and structure of the auxiliary results (None: no aux). Every leaf must be a Var (a number
    computed during the trace would be frozen), or with ``numbers`` a float (a replay's result)."""
    if aux is None:
        return [], None
    leaves, treedef = _pytree.flatten(aux, "fg.compile auxiliary results")
    if not numbers:
        for v in leaves:
            if not isinstance(v, Var):
                raise TraceError("fg.compile: the auxiliary results must be Vars; a number computed during "
                                 f"the trace ({v!r}) would be frozen at its traced value. Return the Vars "
                                 "and compute it from their values outside.")
    return leaves, treedef


def _plain_arguments(args: Tuple[Any, ...]) -> Optional[Tuple[Any, np.ndarray]]:
    """`_numeric_arguments` of arguments that are all real NumPy arrays or Python numbers (the key: their
    shapes), else None. One array is read in place (a view, when it is float64 and C-contiguous: the replay
    copies its input vector before it runs)."""
    if not all((type(a) is np.ndarray and a.dtype.kind in "biuf") or type(a) is float or type(a) is int
               for a in args):
        return None
    key = tuple([a.shape if type(a) is np.ndarray else None for a in args])
    if not args:
        return key, np.empty(0)
    if len(args) == 1 and type(args[0]) is np.ndarray:
        return key, np.ravel(args[0]).astype(np.float64, copy=False)
    return key, np.concatenate([np.ravel(a).astype(np.float64, copy=False) if type(a) is np.ndarray
                                else np.array([a], dtype=np.float64) for a in args])


def _numeric_arguments(args: Tuple[Any, ...], what: str) -> Tuple[Any, np.ndarray]:
    """(cache key, input vector) of a call's arguments (numbers, real arrays, and trees of them)."""
    plain = _plain_arguments(args)
    return plain if plain is not None else _tree_arguments(args, what)


def _tree_arguments(args: Tuple[Any, ...], what: str) -> Tuple[Any, np.ndarray]:
    """`_numeric_arguments` of arguments that `_plain_arguments` does not take: the key is their tree."""
    leaves, treedef = _pytree.flatten(tuple(args), f"{what} arguments")
    if any(isinstance(v, Var) for v in leaves):
        raise TypeError(f"{what}: takes numbers and arrays of numbers, not Vars")
    return treedef, np.array(leaves, dtype=np.float64)
