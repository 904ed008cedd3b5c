"""gradcheck: compare reverse mode AND forward mode against central differences, in float64.

The defaults are tighter than PyTorch's (rtol=1e-3 would pass a derivative wrong by 0.05%): with central
differences at eps=1e-6 the truncation error is ~eps**2 and the rounding error ~1e-10 relative, so rtol=1e-5
catches a 5e-4 relative error with a wide margin, as HIPS autograd's check does. A point where the one-sided
slopes differ (relu or abs at 0, a tie of maximum) is a kink: no derivative exists there, and gradcheck
fails rather than bless whichever subgradient the engine picked.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Callable, List, Sequence

import numpy as np

import fastgrad as fg
from fastgrad import _symbolic, transforms

__all__ = ["gradcheck", "GradcheckError"]


class GradcheckError(RuntimeError):
    """A derivative disagrees with finite differences; attributes say where and by how much."""

    def __init__(self, message: str, input_index: int, output_index: int, mode: str,
                 analytic: float, numeric: float):
        super().__init__(message)
        self.input_index = input_index
        self.output_index = output_index
        self.mode = mode            # 'reverse', 'forward' or 'kink'
        self.analytic = analytic
        self.numeric = numeric


def _evaluate(f: Callable, point: Sequence[float]) -> List[float]:
    """f at `point` (called with fresh leaf Vars, so Var methods work), its outputs as floats."""
    out = f(*[fg.Var(v) for v in point])
    outs = list(out) if isinstance(out, (tuple, list)) else [out]
    values = []
    for o in outs:
        if not (isinstance(o, fg.Var) or isinstance(o, numbers.Real)):
            raise TypeError(f"gradcheck: f must return a number, a Var or a tuple/list of them, "
                            f"got {type(o).__name__}")
        values.append(float(o))
    return values


def _close(a: float, b: float, atol: float, rtol: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= atol + rtol * abs(b)


def gradcheck(f: Callable, inputs: Any, eps: float = 1e-6, atol: float = 1e-8, rtol: float = 1e-5,
              check_forward: bool = True) -> bool:
    """Check every partial derivative of ``f(*inputs)`` (reverse mode and forward mode) against central
    differences; return True, or raise GradcheckError naming the input, the output and both numbers.

    inputs: a number, a Var, or a sequence of them (the point; Vars contribute their values).
    f may return a number/Var or a tuple/list of them (every output is checked).
    Also fails at a kink (one-sided slopes that differ), where no derivative exists.
    """
    if not callable(f):
        raise TypeError(f"gradcheck: f must be callable, got {type(f).__name__}")
    if not eps > 0:
        raise ValueError(f"gradcheck: eps must be positive, got {eps}")
    if isinstance(inputs, (fg.Var, numbers.Real)):
        inputs = (inputs,)
    point = _symbolic.values_of(inputs, "gradcheck")
    n = len(point)
    if n == 0:
        raise ValueError("gradcheck: no inputs to check")
    base = _evaluate(f, point)
    m = len(base)

    argnums = tuple(range(n))
    rev = np.asarray(transforms.jacobian(f, argnums, mode="rev")(*point), dtype=np.float64).reshape(m, n)
    fwd = (np.asarray(transforms.jacobian(f, argnums, mode="fwd")(*point), dtype=np.float64).reshape(m, n)
           if check_forward else None)

    def shifted(i: int, delta: float) -> List[float]:
        """f with input i moved by delta."""
        moved = list(point)
        moved[i] = point[i] + delta
        return _evaluate(f, moved)

    for i in range(n):
        plus, minus = shifted(i, eps), shifted(i, -eps)
        plus2, minus2 = shifted(i, eps / 2), shifted(i, -eps / 2)
        for j in range(m):
            numeric = (plus[j] - minus[j]) / (2 * eps)
            where = f"input {i} (value {point[i]!r})" + (f", output {j}" if m > 1 else "")
            for mode, jac in (("reverse", rev), ("forward", fwd)):
                if jac is None:
                    continue
                analytic = float(jac[j, i])
                if not _close(analytic, numeric, atol, rtol):
                    raise GradcheckError(
                        f"gradcheck failed for {where}: {mode} mode gives {analytic!r}, central difference "
                        f"gives {numeric!r} (eps={eps}, atol={atol}, rtol={rtol})",
                        i, j, mode, analytic, numeric)
            _check_kink(i, j, where, point[i], base[j], plus[j], minus[j], plus2[j], minus2[j],
                        float(rev[j, i]), eps, atol, rtol)
    return True


def _check_kink(i: int, j: int, where: str, x: float, f0: float, fp: float, fm: float, fp2: float,
                fm2: float, analytic: float, eps: float, atol: float, rtol: float) -> None:
    """Fail where the right and left slopes differ by a jump that does not shrink with the step.

    For a smooth f, right - left ~ eps * f'' (halves with the step); at a kink it tends to the jump.
    """
    values = (f0, fp, fm, fp2, fm2)
    if not all(math.isfinite(v) for v in values):
        return
    right, left = (fp - f0) / eps, (f0 - fm) / eps
    right2, left2 = (fp2 - f0) / (eps / 2), (f0 - fm2) / (eps / 2)
    jump, jump2 = right - left, right2 - left2
    scale = max(abs(right), abs(left))
    noise = 64 * np.finfo(float).eps * max(abs(v) for v in values) / eps  # rounding in the differences
    if abs(jump) > max(atol + rtol * scale, noise) and abs(jump2) > 0.75 * abs(jump):
        raise GradcheckError(
            f"gradcheck failed for {where}: a kink, no derivative exists there: the slope from the right is "
            f"{right!r}, from the left {left!r} (reverse mode gives {analytic!r})",
            i, j, "kink", analytic, (right + left) / 2)
