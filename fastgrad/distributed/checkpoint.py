"""Checkpoints of a training run: one file per saved step in a directory, written atomically.

A checkpoint is a dict of plain values (numbers, strings, lists, dicts: the ``state_dict`` of the model, the
optimizer and the scheduler, and the step), pickled to ``checkpoint-<step, 9 digits>.pkl``. Writing goes to a
temporary file in the same directory, is flushed to disk, then renamed over the final name (``os.replace``
is atomic on POSIX and Windows), so a crash leaves either the old set of files or the new one, never half a
file under a checkpoint's name. The newest checkpoint is the one with the largest step in its name.

NOTE: loading uses an unpickler that refuses every class and function reference: a state dict holds plain
values only, and unpickling anything else could run code (pickle is code execution). A file from
somewhere else is refused instead of executed.
"""
from __future__ import annotations

import io
import os
import pickle
import re
import tempfile
from typing import Any, Optional

__all__ = ["latest_checkpoint", "load_checkpoint", "save_checkpoint"]

_NAME = re.compile(r"^checkpoint-(\d{9,})\.pkl$")


def save_checkpoint(directory: str, state: dict[str, Any], keep: Optional[int] = None) -> str:
    """Write ``state`` (which must hold an int ``"step"`` and plain values) atomically into ``directory``
    (created if needed) as ``checkpoint-<step>.pkl``; keep only the ``keep`` newest checkpoints there
    (None: all). Returns the file's path. Raises TypeError for a state without an int step or with a value
    that is not plain data (it could not be loaded back)."""
    if not isinstance(state, dict):
        raise TypeError(f"a checkpoint is a dict, got {type(state).__name__}")
    step = state.get("step")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise TypeError(f"a checkpoint needs a non-negative int 'step', got {step!r}")
    if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 1):
        raise ValueError(f"keep must be a positive int or None, got {keep!r}")
    data = pickle.dumps(state, protocol=4)
    try:
        _loads(data)
    except pickle.UnpicklingError as exc:
        raise TypeError(f"a checkpoint must hold plain values only (numbers, strings, lists, dicts): {exc}") \
            from None
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"checkpoint-{step:09d}.pkl")
    fd, tmp = tempfile.mkstemp(prefix=".checkpoint-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    if keep is not None:
        for old in _checkpoints(directory)[:-keep]:
            os.unlink(old[1])
    return path


def latest_checkpoint(directory: str) -> Optional[str]:
    """The path of the newest checkpoint (largest step) in ``directory``, or None if it holds none (or does
    not exist)."""
    found = _checkpoints(directory)
    return found[-1][1] if found else None


def load_checkpoint(path: str) -> dict[str, Any]:
    """The state saved in a checkpoint file, or in the newest checkpoint of a directory. Raises
    FileNotFoundError if there is none, ValueError for a file that is not a fastgrad checkpoint (a class
    or function reference in it is refused, never executed)."""
    if os.path.isdir(path):
        found = latest_checkpoint(path)
        if found is None:
            raise FileNotFoundError(f"no checkpoint-*.pkl in {path!r}")
        path = found
    with open(path, "rb") as f:
        data = f.read()
    try:
        state = _loads(data)
    except (pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise ValueError(f"{path!r} is not a fastgrad checkpoint: {exc}") from None
    if not isinstance(state, dict) or "step" not in state:
        raise ValueError(f"{path!r} is not a fastgrad checkpoint (no 'step')")
    return state


def _checkpoints(directory: str) -> list[tuple[int, str]]:
    """(step, path) of every checkpoint in the directory, oldest first."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        match = _NAME.match(name)
        if match:
            found.append((int(match.group(1)), os.path.join(directory, name)))
    return sorted(found)


class _PlainUnpickler(pickle.Unpickler):
    """Unpickles plain values only: every reference to a class or function is refused."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(
            f"it refers to {module}.{name}; checkpoints hold plain values only, and loading a class or "
            "function could run code")


def _loads(data: bytes) -> Any:
    return _PlainUnpickler(io.BytesIO(data)).load()
