"""Toy data sets for demos and tests: two interleaving half circles (scikit-learn's `make_moons`).

No scikit-learn needed: the algorithm is sklearn's, step for step, with a `numpy.random.RandomState`,
so the same `random_state` gives the same points as `sklearn.datasets.make_moons`.
"""
from __future__ import annotations

import numbers

import numpy as np

__all__ = ["make_moons"]


def make_moons(
    n_samples: int | tuple[int, int] = 100,
    *,
    shuffle: bool = True,
    noise: float | None = None,
    random_state: int | np.random.RandomState | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaving half circles: X of shape (n, 2) (float64) and labels y in {0, 1} (int).

    n_samples: total points (the outer moon gets n // 2), or a pair (n_outer, n_inner).
    noise: standard deviation of Gaussian noise added to every coordinate (None or 0: none).
    random_state: an int seed, a RandomState, or None (numpy's global generator), as in scikit-learn.
    """
    if isinstance(n_samples, numbers.Integral):
        n_out = int(n_samples) // 2
        n_in = int(n_samples) - n_out
    else:
        try:
            n_out, n_in = (int(n) for n in n_samples)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                "n_samples must be an int or a pair of ints (n_outer, n_inner), got " + repr(n_samples)
            ) from exc
    if n_out < 0 or n_in < 0:
        raise ValueError(f"n_samples must be non-negative, got {n_samples!r}")
    if noise is not None and noise < 0:
        raise ValueError(f"noise must be non-negative, got {noise}")
    generator = _check_random_state(random_state)

    outer_x = np.cos(np.linspace(0, np.pi, n_out))
    outer_y = np.sin(np.linspace(0, np.pi, n_out))
    inner_x = 1 - np.cos(np.linspace(0, np.pi, n_in))
    inner_y = 1 - np.sin(np.linspace(0, np.pi, n_in)) - 0.5

    X = np.vstack([np.append(outer_x, inner_x), np.append(outer_y, inner_y)]).T
    y = np.hstack([np.zeros(n_out, dtype=np.intp), np.ones(n_in, dtype=np.intp)])

    if shuffle:
        # NOTE: sklearn.utils.shuffle draws one permutation of the indices with random_state.shuffle.
        order = np.arange(n_out + n_in)
        generator.shuffle(order)
        X, y = X[order], y[order]
    if noise is not None:
        X += generator.normal(scale=noise, size=X.shape)
    return X, y


def _check_random_state(seed: int | np.random.RandomState | None) -> np.random.RandomState:
    """sklearn.utils.check_random_state: None → numpy's global RandomState, int → a new one."""
    if seed is None or seed is np.random:
        return np.random.mtrand._rand
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
        return np.random.RandomState(int(seed))
    if isinstance(seed, np.random.RandomState):
        return seed
    raise ValueError(f"{seed!r} cannot be used to seed a numpy.random.RandomState instance")
