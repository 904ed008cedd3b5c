"""`DataParallel`: synchronous data-parallel training on Ray, equal to one process.

One step: the driver gathers its model's parameters into one float64 array, `GradientWorkers` computes the
gradient sum of every shard of the batch on its actor (the array is put in Ray's object store once and read
by all of them without copies) and adds the shards in a fixed order; the driver divides once by the global
batch size, writes each ``p.grad``, and takes ONE step of the fastgrad optimizer (then the scheduler). The
optimizer, its state and the scheduler live only in the driver, so every optimizer and scheduler works
unchanged, and the replicas need nothing but the parameters.

Equality: the per-sample values are bit for bit one process's (fg.vmap replays eager arithmetic), and the
sums differ from one process's only by the order of additions: 1e-12 relative or better after many steps
(tests/test_distributed.py). The same shards summed in this process (``local=True``) give the same bits.

Checkpoints (``checkpoint_dir``, ``checkpoint_every``): after every K-th step, the model's, optimizer's and
scheduler's ``state_dict`` with the step count (see `fastgrad.distributed.checkpoint`). ``resume=`` loads one
before training; `fit` derives every batch from (seed, epoch, step within the epoch), so a resumed run
sees the same batches and ends with the same parameters as an uninterrupted one.
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import numpy as np
import ray

from fastgrad import _optim
from fastgrad._engine import Var, param_index
from fastgrad.distributed.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from fastgrad.distributed.workers import GradientWorkers, ModelSpec, build_model, check_batch, flat_parameters
from fastgrad.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau
from fastgrad.optim.optimizer import Optimizer

__all__ = ["DataParallel"]

_TIMING_KEYS = ("gather", "put", "wait", "compute", "reduce", "apply", "total")


class DataParallel:
    """Train ``model`` on Ray actors, one synchronous optimizer step per global batch (module docstring).

    ``model``: a ``fg.nn.Module`` (trained in place: it is the driver's copy) or a zero-argument factory.
    ``sample_loss(model, *sample) -> Var``: the loss of ONE sample; a step minimises the mean over the batch.
    ``optimizer``: a fastgrad Optimizer over (some of) the model's parameters, or a function
    ``params -> Optimizer``. ``scheduler``: None, an LRScheduler on that optimizer, or a function
    ``optimizer -> LRScheduler``; stepped after every optimizer step (``scheduler_interval="step"``) or, in
    `fit`, after every epoch (``"epoch"``); ReduceLROnPlateau is given the step's (epoch's) mean loss.
    ``workers``: the number of actors, or a `GradientWorkers` to share (not shut down by this trainer).
    ``compiled``, ``threads_per_worker``, ``cpus_per_worker``, ``max_retries``, ``local``: passed to
    `GradientWorkers`.
    ``checkpoint_dir``/``checkpoint_every``: save every K steps (0: never); ``keep_checkpoints``: how many
    to keep. ``resume``: None or False (start fresh), True (the newest checkpoint in ``checkpoint_dir``;
    fresh if there is none), or the path of a checkpoint file or directory (which must hold one).

    Raises TypeError/ValueError for bad arguments (an optimizer over Vars that are not the model's
    parameters, a workers pool for another model size), FileNotFoundError for a ``resume`` path without a
    checkpoint.
    """

    def __init__(self, model: ModelSpec, sample_loss: Callable[..., Var],
                 optimizer: Union[Optimizer, Callable[[List[Var]], Optimizer]], *,
                 scheduler: Union[None, LRScheduler, Callable[[Optimizer], LRScheduler]] = None,
                 scheduler_interval: str = "step", workers: Union[int, GradientWorkers] = 2,
                 compiled: bool = True, threads_per_worker: int = 1, cpus_per_worker: float = 1,
                 max_retries: int = 3, local: bool = False, checkpoint_dir: Optional[str] = None,
                 checkpoint_every: int = 0,
                 keep_checkpoints: Optional[int] = 3, resume: Union[None, bool, str] = None):
        self.model = build_model(model)
        self.params = self.model.parameters()
        self._index = param_index(self.params)      # the parameters' nodes: one C loop to gather or set them
        if not self.params:
            raise ValueError("the model has no parameters to train")
        self.optimizer = optimizer if isinstance(optimizer, Optimizer) else _built(optimizer, self.params,
                                                                                   Optimizer, "optimizer")
        _check_optimizer_params(self.optimizer, self.params)
        if scheduler is None or isinstance(scheduler, LRScheduler):
            self.scheduler = scheduler
        else:
            self.scheduler = _built(scheduler, self.optimizer, LRScheduler, "scheduler")
        if self.scheduler is not None and self.scheduler.optimizer is not self.optimizer:
            raise ValueError("the scheduler must be built on the trainer's optimizer")
        if scheduler_interval not in ("step", "epoch"):
            raise ValueError(f"scheduler_interval must be 'step' or 'epoch', got {scheduler_interval!r}")
        self.scheduler_interval = scheduler_interval
        if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int) \
                or checkpoint_every < 0:
            raise ValueError(f"checkpoint_every must be an int >= 0 (0: never), got {checkpoint_every!r}")
        if checkpoint_every and checkpoint_dir is None:
            raise ValueError("checkpoint_every needs a checkpoint_dir")
        if resume is True and checkpoint_dir is None:
            raise ValueError("resume=True reads checkpoint_dir, which is not set (or pass resume=<path>)")
        if resume is not None and not isinstance(resume, (bool, str)):
            raise TypeError(f"resume must be None, a bool or a path, got {type(resume).__name__}")
        self.checkpoint_dir = checkpoint_dir
        self.checkpoint_every = checkpoint_every
        self.keep_checkpoints = keep_checkpoints
        self.step_count = 0                 # optimizer steps taken (the checkpoints' "step")
        self.resumed_from: Optional[str] = None
        self._epoch_losses: List[float] = []    # the current epoch's step losses (fit; for "epoch" schedules)
        self._data_signature: Optional[Dict[str, Any]] = None
        self._timing_sum = dict.fromkeys(_TIMING_KEYS, 0.0)
        self._timed_steps = 0
        if resume:
            path = latest_checkpoint(checkpoint_dir) if resume is True else resume
            if path is not None:
                self.load_state_dict(load_checkpoint(path))
                self.resumed_from = path
        if isinstance(workers, GradientWorkers):
            if workers.num_parameters != len(self.params):
                raise ValueError(f"the workers hold a model of {workers.num_parameters} parameters, this "
                                 f"model has {len(self.params)}")
            self.workers, self._owns_workers = workers, False
        else:
            self.workers = GradientWorkers(model, sample_loss, workers, compiled=compiled,
                                           threads_per_worker=threads_per_worker,
                                           cpus_per_worker=cpus_per_worker, max_retries=max_retries,
                                           local=local)
            self._owns_workers = True

    # ---- training ----

    def step(self, *batch: Any) -> float:
        """One optimizer step on this global batch (arrays with one row per sample, as ``sample_loss``
        takes them); returns the batch's mean loss. Raises WorkerLostError if workers cannot be replaced
        (then no step was taken)."""
        start = time.perf_counter()
        arrays = check_batch(batch)
        flat = flat_parameters(self.params, self._index)
        gathered = time.perf_counter()
        loss_sum, grad_sum = self.workers.gradient(flat, *arrays, step=self.step_count + 1)
        return self._apply(loss_sum, grad_sum, len(arrays[0]), start, gathered)

    def fit(self, *data: Any, batch_size: int, epochs: int = 1, shuffle: bool = True, seed: int = 0,
            callback: Optional[Callable[[DataParallel, float], Any]] = None) -> List[float]:
        """Train until ``epochs`` epochs over ``data`` are done in total, counting the steps already taken
        (a resumed trainer continues where its checkpoint stopped). Returns the mean losses of the steps
        run by this call.

        Every batch is a function of (``seed``, epoch, step within the epoch): epoch e visits the rows in
        the order of ``np.random.default_rng([seed, e]).permutation(n)`` (``shuffle``; else in order), in
        batches of ``batch_size`` (the last one smaller). The data are put in Ray's object store once; a step
        sends only row numbers. ``callback(trainer, loss)`` runs after every step.
        """
        arrays = check_batch(data)
        n = len(arrays[0])
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
            raise ValueError(f"epochs must be an int >= 0, got {epochs!r}")
        signature = {"samples": n, "batch_size": batch_size, "shuffle": bool(shuffle), "seed": seed}
        if self._data_signature is not None and self._data_signature != signature:
            raise ValueError(f"this trainer was fit (or its checkpoint saved) with {self._data_signature}; "
                             f"now {signature}: the batches would differ from the interrupted run")
        self._data_signature = signature
        per_epoch = math.ceil(n / batch_size)
        refs = arrays if self.workers.local else [ray.put(a) for a in arrays]
        losses: List[float] = []
        order, order_epoch = None, -1
        while self.step_count < epochs * per_epoch:
            epoch, k = divmod(self.step_count, per_epoch)
            if epoch != order_epoch:
                order, order_epoch = _epoch_order(n, seed, epoch, shuffle), epoch
            start = time.perf_counter()
            flat = flat_parameters(self.params, self._index)
            gathered = time.perf_counter()
            rows = order[k * batch_size:(k + 1) * batch_size]
            loss_sum, grad_sum = self.workers.gradient_rows(flat, rows, refs, step=self.step_count + 1)
            loss = self._apply(loss_sum, grad_sum, len(rows), start, gathered,
                               end_of_epoch=k == per_epoch - 1)
            losses.append(loss)
            if callback is not None:
                callback(self, loss)
        return losses

    def _apply(self, loss_sum: float, grad_sum: np.ndarray, n: int, start: float, gathered: float,
               end_of_epoch: bool = False) -> float:
        """Mean gradient into p.grad, one optimizer step, scheduler, checkpoint; returns the mean loss."""
        applying = time.perf_counter()
        loss = loss_sum / n
        _optim.set_grads(self._index, grad_sum / n)        # frozen parameters take none
        self.optimizer.step()
        self._epoch_losses.append(loss)
        if self.scheduler is not None and self.scheduler_interval == "step":
            self._step_scheduler(loss)
        self.step_count += 1
        if end_of_epoch:
            if self.scheduler is not None and self.scheduler_interval == "epoch":
                self._step_scheduler(sum(self._epoch_losses) / len(self._epoch_losses))
            self._epoch_losses = []
        done = time.perf_counter()
        if self.checkpoint_every and self.step_count % self.checkpoint_every == 0:
            self.save_checkpoint()
        timing = dict(self.workers.last_timing, gather=gathered - start, apply=done - applying,
                      total=done - start)
        for key in _TIMING_KEYS:
            self._timing_sum[key] += timing.get(key, 0.0)
        self._timed_steps += 1
        return loss

    def _step_scheduler(self, loss: float) -> None:
        if isinstance(self.scheduler, ReduceLROnPlateau):
            self.scheduler.step(loss)
        else:
            self.scheduler.step()

    # ---- state ----

    def state_dict(self) -> Dict[str, Any]:
        """{"step", "model", "optimizer", "scheduler" (None without one), "epoch_losses", "data"}: plain
        values, as saved in a checkpoint."""
        return {
            "format": "fastgrad.distributed/1",
            "step": self.step_count,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "epoch_losses": list(self._epoch_losses),
            "data": None if self._data_signature is None else dict(self._data_signature),
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore a `state_dict` (or a loaded checkpoint): model, optimizer, scheduler and step count.
        Raises ValueError if it does not fit (a scheduler saved but none here, or the reverse) and the
        state_dicts' own errors for a different model or optimizer."""
        if not isinstance(state, dict) or "step" not in state or "model" not in state:
            raise ValueError("not a DataParallel state (a dict with 'step', 'model', 'optimizer', "
                             "'scheduler')")
        if (state.get("scheduler") is None) != (self.scheduler is None):
            saved, here = ("with", "none") if self.scheduler is None else ("without", "one")
            raise ValueError(f"the checkpoint was saved {saved} a scheduler, this trainer has {here}")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.step_count = int(state["step"])
        self._epoch_losses = list(state.get("epoch_losses", []))
        self._data_signature = state.get("data")

    def save_checkpoint(self) -> str:
        """Write the `state_dict` into ``checkpoint_dir`` now; returns the file's path."""
        if self.checkpoint_dir is None:
            raise ValueError("this trainer has no checkpoint_dir")
        return save_checkpoint(self.checkpoint_dir, self.state_dict(), keep=self.keep_checkpoints)

    def timing(self) -> Dict[str, float]:
        """Mean seconds per step since the start (or `reset_timing`): ``gather`` (parameters into one
        array), ``put`` (into the object store), ``wait`` (from sending the calls to having every result),
        ``compute`` (the slowest worker's own time, inside ``wait``), ``reduce`` (adding the shards),
        ``apply`` (p.grad, optimizer, scheduler), ``total``; ``overhead`` = total - compute."""
        n = max(self._timed_steps, 1)
        means = {k: v / n for k, v in self._timing_sum.items()}
        means["overhead"] = means["total"] - means["compute"]
        means["steps"] = self._timed_steps
        return means

    def reset_timing(self) -> None:
        """Start the `timing` means afresh."""
        self._timing_sum = dict.fromkeys(_TIMING_KEYS, 0.0)
        self._timed_steps = 0

    def shutdown(self) -> None:
        """Stop the worker actors (unless they were passed in to be shared)."""
        if self._owns_workers:
            self.workers.shutdown()

    def __enter__(self) -> DataParallel:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        return (f"DataParallel({type(self.model).__name__}, {len(self.params)} parameters, "
                f"{self.workers.num_workers} workers, {type(self.optimizer).__name__}, "
                f"step {self.step_count})")


def _epoch_order(n: int, seed: Any, epoch: int, shuffle: bool) -> np.ndarray:
    if not shuffle:
        return np.arange(n)
    return np.random.default_rng([int(seed), epoch]).permutation(n)


def _built(factory: Any, argument: Any, kind: type, what: str) -> Any:
    if not callable(factory):
        raise TypeError(f"{what} must be a fastgrad {kind.__name__} or a function building one, got "
                        f"{type(factory).__name__}")
    built = factory(argument)
    if not isinstance(built, kind):
        raise TypeError(f"the {what} function must return a fastgrad {kind.__name__}, "
                        f"got {type(built).__name__}")
    return built


def _check_optimizer_params(optimizer: Optimizer, params: Sequence[Var]) -> None:
    ids = {id(p) for p in params}
    for group in optimizer.param_groups:
        for p in group["params"]:
            if id(p) not in ids:
                raise ValueError("the optimizer holds a Var that is not a parameter of the model (build it "
                                 "on model.parameters(), or pass a function params -> optimizer)")
