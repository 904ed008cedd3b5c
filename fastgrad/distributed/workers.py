"""`GradientWorkers`: N model replicas (Ray actors) that return the gradient sums of their shards of a batch.

Each replica is a `_Replica`: the model (unpickled from the driver's, or built by a factory), its parameter
list, and the per-sample loss replayed over a shard by ``fg.vmap(reduce="sum")`` (the fastest single-process
path: one C call, node-major), or evaluated eagerly when the loss cannot be traced (a Python ``if`` on a
value raises ``fg.TraceError`` during the trace; the replica then stays eager). A call loads the parameters
it is given into the replica, zeroes the gradients, and returns (sum of the shard's losses, flat float64
gradient sum, compute seconds).

Order, the crux of "N workers equal one process": the batch is cut into N contiguous shards
(``np.array_split``), shard i always goes to worker i, and the driver adds the returned sums in shard
order, whatever order they arrive in. A replica's own sum is in a fixed order too (fg.vmap adds its blocks in
a fixed order for any thread count). So the result depends on N, never on timing, and ``local=True`` (the
same replicas run one after another in this process, no Ray) reproduces it bit for bit.

Faults: a call that fails because its actor died (``RayActorError``: ``ray.kill``, a crashed process or
node) starts a new actor in that slot, which receives the same parameters, and only the lost shards are
computed again; the other shards' results are kept (they are deterministic). After ``max_retries`` rounds
of losses within one step, `WorkerLostError` names the step. An exception raised by the user's code
(the loss function, the model) is not a fault: it propagates unchanged (Ray re-raises it as a subclass of its
own type) and is never retried.
"""
from __future__ import annotations

import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import ray
import ray.exceptions

import fastgrad as fg
from fastgrad import _optim
from fastgrad._engine import Var, param_index
from fastgrad.nn.module import Module
from fastgrad.tracing import sample_arrays

__all__ = ["GradientWorkers", "WorkerLostError"]

# what a lost actor raises in ray.get (ActorDiedError is a RayActorError; ActorUnavailableError exists
# from Ray 2.30 on, for actors that are restarting)
_LOST: Tuple[type, ...] = tuple(
    t for t in (ray.exceptions.RayActorError, getattr(ray.exceptions, "ActorUnavailableError", None))
    if t is not None)

ModelSpec = Union[Module, Callable[[], Module]]


class WorkerLostError(RuntimeError):
    """Workers kept dying during one step and could not be replaced within the allowed retries; ``step`` is
    the 1-based number of the step that could not be computed (the parameters are those after ``step - 1``).
    """

    def __init__(self, message: str, step: Optional[int]):
        super().__init__(message)
        self.step = step


def build_model(model: ModelSpec) -> Module:
    """The model a spec names: a Module itself, or what a zero-argument factory returns (TypeError for
    anything else, or a factory that returns no Module)."""
    if isinstance(model, Module):
        return model
    if callable(model):
        built = model()
        if not isinstance(built, Module):
            raise TypeError(f"the model factory must return a fastgrad.nn.Module, got {type(built).__name__}")
        return built
    raise TypeError("model must be a fastgrad.nn.Module or a function returning one, "
                    f"got {type(model).__name__}")


def flat_parameters(params: Sequence[Var], index: Optional[np.ndarray] = None) -> np.ndarray:
    """The parameters' values as one float64 array (the order of ``params``); ``index``, their
    ``param_index`` if the caller keeps one, makes it one C loop."""
    if index is None:
        index = param_index(params)
    out = np.empty(len(index))
    _optim.get_values(index, out)
    return out


class _Replica:
    """One replica: a model, its parameters, and the compiled per-sample loss of a shard (see the module
    docstring). Runs inside a Ray actor, or in the driver's process with ``GradientWorkers(local=True)``."""

    def __init__(self, model: ModelSpec, sample_loss: Callable[..., Var], compiled: bool, threads: int):
        self.model = build_model(model)
        self.params = self.model.parameters()
        self.index = param_index(self.params)
        self.sample_loss = sample_loss
        self.batched = fg.vmap(self._loss_of_one, reduce="sum", threads=threads) if compiled else None
        self.mode = "compiled (fg.vmap)" if compiled else "eager"
        self.data: Optional[Tuple[np.ndarray, ...]] = None

    def _loss_of_one(self, *sample: Any) -> Var:
        return self.sample_loss(self.model, *sample)

    def ready(self) -> Tuple[int, str]:
        """(number of parameters, how gradients are computed): the driver's start-up check."""
        return len(self.params), self.mode

    def gradient(self, flat: np.ndarray, *arrays: np.ndarray) -> Tuple[float, np.ndarray, float]:
        """(sum of the losses, flat gradient sum, seconds) of the samples (rows of ``arrays``) at the
        parameter values ``flat``."""
        start = time.perf_counter()
        if len(flat) != len(self.params):
            raise ValueError(f"got {len(flat)} parameter values for a model of {len(self.params)} parameters")
        _optim.set_values(self.index, np.ascontiguousarray(flat, dtype=np.float64))
        _optim.zero_grad(self.index)
        total = None
        if self.batched is not None:
            try:
                total = self.batched(*arrays).data
            except fg.TraceError:
                # NOTE: raised while tracing, before any gradient is written; eager from now on
                self.batched = None
                self.mode = "eager (the loss does not trace: fg.TraceError)"
                _optim.zero_grad(self.index)
        if total is None:
            total = self._eager(arrays)
        grad = np.empty(len(self.index))
        _optim.get_grads(self.index, grad)
        return total, grad, time.perf_counter() - start

    def set_data(self, *data: np.ndarray) -> int:
        """Keep the data arrays that `gradient_rows` takes its rows from (on an actor: zero-copy views of
        the object store's copy, resolved once instead of at every step); returns the number of rows."""
        self.data = data
        return len(data[0])

    def gradient_rows(self, flat: np.ndarray, rows: np.ndarray) -> Tuple[float, np.ndarray, float]:
        """`gradient` of the rows ``rows`` of the arrays given to `set_data`."""
        if self.data is None:
            raise RuntimeError("gradient_rows before set_data: this replica holds no data")
        return self.gradient(flat, *[d[rows] for d in self.data])

    def _eager(self, arrays: Sequence[np.ndarray]) -> float:
        """The shard's losses built as ordinary graphs, summed (fg.sum) and backpropagated once."""
        n = len(arrays[0])
        losses = [self.sample_loss(self.model, *[a[i] for a in arrays]) for i in range(n)]
        total = fg.sum(losses)
        total.backward()
        return total.data


class GradientWorkers:
    """N replicas of a model that compute the gradient sums of the shards of a batch (see the module
    docstring).

    ``model``: a ``fg.nn.Module`` (pickled to every worker; its values do not matter, every call sends the
    parameters) or a zero-argument factory returning one (pickled with cloudpickle, called in each worker).
    ``sample_loss(model, *sample)`` returns the loss of ONE sample as a scalar Var; under fg.vmap each
    argument arrives as one row of the batch arrays (a number, or an array of Vars). ``num_workers``:
    actors (shards). ``compiled``: try fg.vmap first (False: always eager). ``threads_per_worker``: fg.vmap
    threads in each actor. ``cpus_per_worker``: the CPUs Ray reserves for each actor. ``max_retries``:
    rounds of worker replacement allowed within one step. ``start_timeout``: seconds a new actor may take to
    start.
    ``local``: run the replicas one after another in this process, without Ray (the reference).
    ``actor_options``: more ``ray.remote`` options for the actors (``resources``, ``scheduling_strategy``).

    Raises TypeError/ValueError for bad arguments; whatever a worker's model or loss raises at start-up;
    RuntimeError if the actors do not start within ``start_timeout`` (not enough free CPUs in the cluster).
    """

    def __init__(self, model: ModelSpec, sample_loss: Callable[..., Var], num_workers: int = 2, *,
                 compiled: bool = True, threads_per_worker: int = 1, cpus_per_worker: float = 1,
                 max_retries: int = 3, start_timeout: float = 60.0, local: bool = False,
                 actor_options: Optional[Dict[str, Any]] = None):
        if not isinstance(model, Module) and not callable(model):
            raise TypeError(
                f"model must be a fastgrad.nn.Module or a function returning one, got {type(model).__name__}")
        if not callable(sample_loss):
            raise TypeError(f"sample_loss must be a function (model, *sample) -> Var, got "
                            f"{type(sample_loss).__name__}")
        self.num_workers = _positive_int("num_workers", num_workers)
        self.threads_per_worker = _positive_int("threads_per_worker", threads_per_worker)
        self.max_retries = _positive_int("max_retries", max_retries, minimum=0)
        if isinstance(cpus_per_worker, bool) or not isinstance(cpus_per_worker, (int, float)) \
                or not cpus_per_worker >= 0:
            raise ValueError(f"cpus_per_worker must be a non-negative number, got {cpus_per_worker!r}")
        if isinstance(start_timeout, bool) or not isinstance(start_timeout, (int, float)) \
                or not start_timeout > 0:
            raise ValueError(f"start_timeout must be a positive number of seconds, got {start_timeout!r}")
        self.local = bool(local)
        self.compiled = bool(compiled)
        self.start_timeout = float(start_timeout)
        self.replacements = 0               # actors replaced after a loss, over the lifetime
        self.last_timing: Dict[str, float] = {}
        self._closed = False
        self._data: Optional[Tuple[Any, ...]] = None     # what gradient_rows takes rows of
        self._has_data = [False] * self.num_workers      # which replicas hold self._data
        if self.local:
            self._replicas = [_Replica(model, sample_loss, self.compiled, self.threads_per_worker)
                              for _ in range(self.num_workers)]
            self.workers: List[Any] = []
            counts = [r.ready()[0] for r in self._replicas]
        else:
            _ensure_ray()
            options = {"num_cpus": cpus_per_worker, "max_restarts": 0, "max_task_retries": 0}
            options.update(actor_options or {})
            self._actor = ray.remote(_Replica).options(**options)
            self._model_ref = ray.put(model)
            self._loss_ref = ray.put(sample_loss)
            self.workers = [self._start() for _ in range(self.num_workers)]
            try:
                counts = [c for c, _ in ray.get([w.ready.remote() for w in self.workers],
                                                timeout=self.start_timeout)]
            except ray.exceptions.GetTimeoutError:
                self.shutdown()
                free = ray.available_resources().get("CPU", 0)
                raise RuntimeError(
                    f"the {self.num_workers} workers did not start within {self.start_timeout:g} s "
                    f"(start_timeout): each reserves cpus_per_worker={cpus_per_worker} CPU and Ray has "
                    f"{free:g} free; other actors (an unfinished trainer?) may hold them") from None
            except BaseException:
                self.shutdown()
                raise
        if len(set(counts)) != 1:
            self.shutdown()
            raise ValueError(f"the replicas have different numbers of parameters: {counts} (a factory must "
                             "build the same architecture every time)")
        self.num_parameters = counts[0]

    # ---- the two calls ----

    def gradient(self, params: np.ndarray, *batch: Any,
                 step: Optional[int] = None) -> Tuple[float, np.ndarray]:
        """(sum of the losses, flat float64 gradient sum) over the rows of the batch arrays, at parameter
        values ``params``: the batch is cut into ``num_workers`` contiguous shards, added in shard order.
        ``step`` only names the step in errors. Raises WorkerLostError when workers cannot be replaced."""
        params = self._check_params(params)
        arrays = check_batch(batch)
        bounds = _shard_bounds(len(arrays[0]), self.num_workers)
        calls = [(i, "gradient", tuple(a[lo:hi] for a in arrays)) for i, (lo, hi) in enumerate(bounds)
                 if hi > lo]
        return self._run(params, calls, step)

    def gradient_rows(self, params: np.ndarray, rows: np.ndarray, data: Sequence[Any],
                      step: Optional[int] = None) -> Tuple[float, np.ndarray]:
        """`gradient` of the rows ``rows`` of ``data``: arrays, or their Ray object references (put once per
        run, so a step sends only the row numbers); ``rows`` is cut into contiguous shards. Each replica
        resolves object references once and keeps the arrays until a call passes other references (compared
        by identity) or the workers shut down; plain arrays are sent with every call."""
        params = self._check_params(params)
        rows = np.asarray(rows, dtype=np.intp)
        data = tuple(data)
        # NOTE: object references are immutable, so replicas may keep what they resolved; plain arrays could
        # be changed in place between calls, so they are sent again with every call
        kept = not self.local and all(isinstance(d, ray.ObjectRef) for d in data)
        if not kept or self._data is None or len(data) != len(self._data) \
                or any(a is not b for a, b in zip(data, self._data)):
            self._data, self._has_data = data, [False] * self.num_workers
        calls = [(i, "gradient_rows", (part,))
                 for i, part in enumerate(np.array_split(rows, self.num_workers)) if len(part)]
        return self._run(params, calls, step)

    def modes(self) -> List[str]:
        """How each worker computes gradients: "compiled (fg.vmap)" or why it is eager."""
        if self.local:
            return [r.mode for r in self._replicas]
        return [mode for _, mode in ray.get([w.ready.remote() for w in self.workers])]

    def shutdown(self) -> None:
        """Stop the actors (idempotent). The object is unusable afterwards."""
        if not self._closed and not self.local:
            for w in self.workers:
                _kill(w)
        self._closed = True
        self._data = None

    def __enter__(self) -> GradientWorkers:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        where = "local" if self.local else "Ray actors"
        return (f"GradientWorkers({self.num_workers} workers, {where}, "
                f"{getattr(self, 'num_parameters', '?')} parameters)")

    # ---- internals ----

    def _check_params(self, params: Any) -> np.ndarray:
        if self._closed:
            raise RuntimeError("these GradientWorkers were shut down")
        params = np.ascontiguousarray(params, dtype=np.float64)
        if params.shape != (self.num_parameters,):
            raise ValueError(f"params must be a flat array of the model's {self.num_parameters} parameter "
                             f"values, got shape {params.shape}")
        return params

    def _needs_data(self, i: int, method: str) -> bool:
        """Must replica i be sent the data of gradient_rows before this call?"""
        return method == "gradient_rows" and not self._has_data[i]

    def _start(self) -> Any:
        return self._actor.remote(self._model_ref, self._loss_ref, self.compiled, self.threads_per_worker)

    def _run(self, params: np.ndarray, calls: List[Tuple[int, str, Tuple[Any, ...]]],
             step: Optional[int]) -> Tuple[float, np.ndarray]:
        """Run the shard calls, replacing lost workers, and add the results in shard order."""
        t0 = time.perf_counter()
        if self.local:
            for i, method, _ in calls:
                if self._needs_data(i, method):
                    self._replicas[i].set_data(*self._data)
                    self._has_data[i] = True
            results = {i: getattr(self._replicas[i], method)(params, *args) for i, method, args in calls}
            t1 = t2 = t0
        else:
            # NOTE: a small array goes inline in each call's message; a large one once into the object
            # store, read by every worker without copies (Ray itself would put it once per call)
            params_arg = params if params.nbytes <= _INLINE_BYTES else ray.put(params)
            t1 = time.perf_counter()
            results = self._remote(params_arg, calls, step)
            t2 = time.perf_counter()
        order = sorted(results)
        loss = 0.0
        grad = results[order[0]][1].copy()
        for i in order:
            loss += results[i][0]
        for i in order[1:]:
            grad += results[i][1]
        t3 = time.perf_counter()
        compute = max(results[i][2] for i in order)
        self.last_timing = {"put": t1 - t0, "wait": t2 - t1, "compute": compute, "reduce": t3 - t2}
        return loss, grad

    def _remote(self, params_arg: Any, calls: List[Tuple[int, str, Tuple[Any, ...]]],
                step: Optional[int]) -> Dict[int, Tuple[float, np.ndarray, float]]:
        results: Dict[int, Tuple[float, np.ndarray, float]] = {}
        pending = calls
        losses: List[str] = []
        for attempt in range(self.max_retries + 1):
            futures = []
            for i, method, args in pending:
                # NOTE: an actor runs one caller's calls in the order sent, so its data arrive first
                load = self.workers[i].set_data.remote(*self._data) if self._needs_data(i, method) else None
                futures.append((i, method, args, load,
                                getattr(self.workers[i], method).remote(params_arg, *args)))
            lost = []
            for i, method, args, load, future in futures:
                try:
                    if load is not None:
                        ray.get(load)
                        self._has_data[i] = True
                    results[i] = ray.get(future)
                except _LOST as exc:
                    lost.append((i, method, args))
                    losses.append(f"worker {i}: {type(exc).__name__}")
                except Exception as exc:
                    _note(exc, f"fastgrad.distributed: raised by worker {i}"
                               + (f" in step {step}" if step is not None else ""))
                    raise
            if not lost:
                return results
            if attempt == self.max_retries:
                break
            for i, _, _ in lost:
                try:
                    self._replace(i)
                except Exception as exc:
                    raise WorkerLostError(
                        f"{_where(step)} failed: worker {i} was lost ({losses[-1]}) and no replacement "
                        f"started ({type(exc).__name__}: {exc}); nothing was applied for this step, the "
                        "parameters are those before it", step) from exc
            pending = lost
        raise WorkerLostError(
            f"{_where(step)} failed: workers were lost {len(losses)} time(s) and the step was retried "
            f"{self.max_retries} time(s) (max_retries); nothing was applied for this step, the parameters "
            "are those before it. Lost: " + "; ".join(losses[-6:]), step)

    def _replace(self, i: int) -> None:
        """A new actor in slot i (the old one killed, if it still runs), checked ready."""
        _kill(self.workers[i])
        self.workers[i] = self._start()
        self._has_data[i] = False
        ray.get(self.workers[i].ready.remote(), timeout=self.start_timeout)
        self.replacements += 1


# parameter arrays up to this size travel inside each call's message (below Ray's own 100 KiB limit for
# inline arguments); larger ones go to the object store once per step
_INLINE_BYTES = 100_000


def check_batch(batch: Sequence[Any]) -> List[np.ndarray]:
    """The batch as arrays of real numbers sharing a first (sample) axis of length >= 1 (fg.vmap's check)."""
    return sample_arrays(tuple(batch), "batch")


def _shard_bounds(n: int, parts: int) -> List[Tuple[int, int]]:
    """np.array_split's contiguous [lo, hi) ranges of n rows in `parts` shards."""
    cuts = np.cumsum([0] + [len(p) for p in np.array_split(np.empty(n, dtype=np.int8), parts)])
    return [(int(cuts[i]), int(cuts[i + 1])) for i in range(parts)]


def _where(step: Optional[int]) -> str:
    return f"step {step}" if step is not None else "a gradient call"


def _positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        what = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return value


def _ensure_ray() -> None:
    """Start a local Ray instance (dashboard off) unless this process is already connected to one."""
    if not ray.is_initialized():
        ray.init(include_dashboard=False)


def _kill(actor: Any) -> None:
    try:
        ray.kill(actor, no_restart=True)
    except Exception:   # NOTE: already dead, or Ray shut down: nothing left to stop
        pass


def _note(exc: BaseException, text: str) -> None:
    """Attach a note to an exception where Python supports it (3.11+)."""
    if sys.version_info >= (3, 11):
        exc.add_note(text)
