"""Hyper-parameter sweeps on Ray tasks: one task per configuration, a results table.

NOTE: Ray Tune installs here (``ray[tune]`` adds pandas, pyarrow, pydantic, tensorboardX), but it is heavy
for trials that last a fraction of a second: on this 2-core machine ``import ray.tune`` took 2.4 s and a
Tuner over 4 trivial trials 13.4 s, against 2.7 s for the same 4 as Ray tasks (including their worker
start-up). Trials of a small scalar model are independent function calls, which is what a task is; Tune's
schedulers (ASHA, PBT) matter for long trials that report as they go. The trial functions here take a
config dict and return a metrics dict, so they also run as Tune function trainables unchanged
(docs/scaling.md shows how).
"""
from __future__ import annotations

import itertools
import math
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import ray

from fastgrad.distributed.workers import _ensure_ray

__all__ = ["grid", "results_table", "sweep"]


def grid(**axes: Sequence[Any]) -> List[Dict[str, Any]]:
    """Every combination of the values given for each name, the last name varying fastest:
    ``grid(lr=[0.1, 0.01], hidden=[(16,), (32,)])`` is 4 configs. Raises ValueError for an empty axis,
    TypeError for an axis that is not a list or tuple."""
    for name, values in axes.items():
        if not isinstance(values, (list, tuple)):
            raise TypeError(f"grid: the values of {name!r} must be a list or tuple, "
                            f"got {type(values).__name__}")
        if not values:
            raise ValueError(f"grid: {name!r} has no values")
    names = list(axes)
    return [dict(zip(names, combo)) for combo in itertools.product(*(axes[n] for n in names))]


def sweep(trial: Callable[[Dict[str, Any]], Dict[str, Any]], configs: Sequence[Dict[str, Any]], *,
          metric: Optional[str] = None, mode: str = "max", cpus_per_trial: float = 1,
          max_retries: int = 1) -> List[Dict[str, Any]]:
    """Run ``trial(config)`` for every config as Ray tasks (as many at once as the cluster's CPUs allow)
    and return one row per config: ``{"trial": index, **config, **metrics, "wall_seconds": s}``, or
    ``{"trial", **config, "error": "..."}`` for a trial that raised (the others still run). With
    ``metric``, rows are sorted best first by it (``mode`` "max" or "min"; errors last), else kept in config
    order. ``max_retries``: reruns of a trial whose worker process died (not of one that raised).

    ``trial`` must return a dict of metrics. It is pickled (cloudpickle) to the workers: a module-level
    function, or a closure over picklable values.
    """
    if not callable(trial):
        raise TypeError(f"trial must be a function config -> metrics, got {type(trial).__name__}")
    configs = list(configs)
    for k, config in enumerate(configs):
        if not isinstance(config, dict):
            raise TypeError(f"config {k} must be a dict, got {type(config).__name__}")
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
    _ensure_ray()
    remote = ray.remote(_timed).options(num_cpus=cpus_per_trial, max_retries=max_retries)
    trial_ref = ray.put(trial)
    futures = [remote.remote(trial_ref, config) for config in configs]
    rows = []
    for k, (config, future) in enumerate(zip(configs, futures)):
        row: Dict[str, Any] = {"trial": k, **config}
        try:
            metrics, seconds = ray.get(future)
        except ray.exceptions.RayError as exc:
            cause = getattr(exc, "cause", None) or exc
            row["error"] = f"{type(cause).__name__}: {cause}".splitlines()[0]
        else:
            if not isinstance(metrics, dict):
                row["error"] = (f"TypeError: the trial returned {type(metrics).__name__}, "
                                "not a dict of metrics")
            else:
                row.update(metrics)
                row["wall_seconds"] = seconds
        rows.append(row)
    if metric is not None:
        def key(row: Dict[str, Any]) -> Any:
            value = row.get(metric)
            if "error" in row or not isinstance(value, (int, float)) or math.isnan(value):
                return (1, 0.0)
            return (0, -value if mode == "max" else value)
        rows.sort(key=key)
    return rows


def _timed(trial: Callable[[Dict[str, Any]], Dict[str, Any]], config: Dict[str, Any]) -> Any:
    start = time.perf_counter()
    metrics = trial(dict(config))
    return metrics, time.perf_counter() - start


def results_table(rows: Sequence[Dict[str, Any]], columns: Optional[Sequence[str]] = None,
                  digits: int = 4) -> str:
    """The rows as a Markdown table; ``columns`` default to every key in order of first appearance.
    Floats get ``digits`` significant digits; a missing entry is blank."""
    if columns is None:
        columns = []
        for row in rows:
            columns.extend(k for k in row if k not in columns)
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        cells = []
        for c in columns:
            v = row.get(c, "")
            cells.append(f"{v:.{digits}g}" if isinstance(v, float) else str(v).replace("|", "\\|"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
