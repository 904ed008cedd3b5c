"""NumPy's BLAS on one thread while the demos and the bench train small models.

OpenBLAS starts one thread per core for every matrix product; on matrices of a few thousand elements the
threads cost far more than they give, and on a shared or loaded machine they make it much worse (the
digits epoch took 0.5 s instead of 8 ms on a busy 2-core machine). threadpoolctl (a dependency of
scikit-learn) limits them for a block; without it nothing changes.
"""
from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator

__all__ = ["one_blas_thread"]


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """NumPy's BLAS on one thread inside the block (restored after), through threadpoolctl when it is
    installed (scikit-learn depends on it); nothing otherwise.

    NOTE: as torch's one intra-op thread: OpenBLAS's threads, on a shared or loaded machine, made the
    hand-written NumPy digits epoch 80x slower (0.5 s instead of 7 ms, 2 busy cores)."""
    if importlib.util.find_spec("threadpoolctl") is None:
        yield
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, user_api="blas"):
        yield
