"""Helpers of the Tensor tests: gradients against central differences."""
import numpy as np

import fastgrad as fg

_RNG = np.random.default_rng(1234)


def numeric_grad(f, x, eps=1e-6):
    """Central differences of the scalar function f at array x."""
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[i] += eps
        xm[i] -= eps
        g[i] = (f(xp) - f(xm)) / (2 * eps)
    return g


def check_grads(build, *arrays, tol=1e-6):
    """build(*tensors) -> Tensor; each input's .grad of sum(build(...) * W), for random weights W, against
    central differences (and of the input's shape)."""
    shape = build(*[fg.Tensor(a) for a in arrays]).shape
    weights = _RNG.normal(size=shape)

    def value(*arrs):
        return float((build(*[fg.Tensor(a) for a in arrs]).data * weights).sum())

    ts = [fg.Tensor(a, requires_grad=True) for a in arrays]
    (build(*ts) * weights).sum().backward()
    for k, (t, a) in enumerate(zip(ts, arrays)):
        def f(x, k=k):
            arrs = list(arrays)
            arrs[k] = x
            return value(*arrs)
        assert t.grad.shape == a.shape
        np.testing.assert_allclose(t.grad, numeric_grad(f, a.astype(np.float64)), rtol=tol, atol=tol)
