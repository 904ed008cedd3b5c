"""Data sets for demos and tests: two interleaving half circles (scikit-learn's `make_moons`), and the 8x8
handwritten digits that scikit-learn ships (`load_digits`, which needs scikit-learn: the `data` extra).

`make_moons` needs no scikit-learn: the algorithm is sklearn's, step for step, with a
`numpy.random.RandomState`, so the same `random_state` gives the same points as `sklearn.datasets.make_moons`.
"""
from __future__ import annotations

import numbers

import numpy as np

__all__ = ["load_digits", "make_moons"]


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


def load_digits(test_fraction: float = 0.2, seed: int = 0
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes; the data ship inside scikit-learn, no
    download), split for training: (X_train, y_train, X_test, y_test). Pixels are scaled to [0, 1] (64
    float64 columns), labels are integers 0..9 (intp); the split is a shuffle by
    ``np.random.default_rng(seed)``, ``round(1797 * test_fraction)`` images held out.

    Raises ImportError naming the extra without scikit-learn (``pip install 'fastgrad[data]'``), ValueError
    for a fraction outside (0, 1).
    """
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) \
            or not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be a number in (0, 1), got {test_fraction!r}")
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError as exc:
        raise ImportError("the digits data come with scikit-learn, which is not installed: "
                          "pip install 'fastgrad[data]' (or pip install scikit-learn)") from exc
    digits = sklearn_digits()
    X = digits.data.astype(np.float64) / 16.0
    y = digits.target.astype(np.intp)
    order = np.random.default_rng(seed).permutation(len(y))
    n_test = int(round(len(y) * test_fraction))
    test, train = order[:n_test], order[n_test:]
    return X[train], y[train], X[test], y[test]
