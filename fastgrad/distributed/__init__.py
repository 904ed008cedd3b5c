"""Scale out on Ray: data-parallel training equal to one process, fault tolerance, checkpoints, sweeps.

Install the extra: ``pip install 'fastgrad[distributed]'`` (it pulls ``ray``). Without Ray, importing this
module raises ImportError naming that extra. Nothing else in fastgrad imports it.

- `DataParallel`: N Ray actors hold replicas of the model; each step the driver broadcasts the parameters
  (one float64 array, put in the object store once), every actor returns the gradient SUM of its shard of
  the batch (computed by ``fg.vmap`` where the per-sample loss traces, eagerly otherwise), the driver adds the
  shards in a fixed order, divides once by the global batch size, writes ``p.grad`` and takes ONE step of a
  fastgrad optimizer (and scheduler). So N workers give one process's parameters to rounding (1e-12), and
  bit for bit the parameters of the same shards summed in one process (`GradientWorkers` with
  ``local=True``).
- Faults: a dead actor (``ray.kill``, a crashed node) is replaced, given the current parameters, and the step
  is retried; after ``max_retries`` failed rounds `WorkerLostError` names the step. Checkpoints every K steps
  (model, optimizer and scheduler ``state_dict``, the step) go to a directory, written atomically, and
  ``resume=`` continues from the newest one: the same batches, the same parameters.
- `sweep` over configurations with Ray tasks (``grid`` builds them, ``results_table`` prints them);
  `fastgrad.distributed.digits` is the digits model the sweep, the tests and the benchmark use.

docs/scaling.md has the paper model for many machines and the security notes (what Ray exposes; pickled
payloads are code execution: connect only to clusters you trust).
"""
from __future__ import annotations

try:
    import ray  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "fastgrad.distributed needs Ray, which is not installed: pip install 'fastgrad[distributed]' "
        "(or pip install ray)"
    ) from exc

from fastgrad.distributed.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from fastgrad.distributed.sweep import grid, results_table, sweep
from fastgrad.distributed.trainer import DataParallel
from fastgrad.distributed.workers import GradientWorkers, WorkerLostError

__all__ = [
    "DataParallel",
    "GradientWorkers",
    "WorkerLostError",
    "grid",
    "latest_checkpoint",
    "load_checkpoint",
    "results_table",
    "save_checkpoint",
    "sweep",
]
