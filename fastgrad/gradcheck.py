"""gradcheck and gradgradcheck: derivatives against central differences, in float64.

`gradcheck` compares reverse mode (always) and forward mode (where it can run: every custom op in the way
has a jvp rule) with central differences of f, entry by entry (which locates an error) and along random
cotangents and tangents, as JAX's check_vjp/check_jvp do: every entry seeded with 1 would bless a custom
backward rule that ignores its incoming gradient. `gradgradcheck` compares second derivatives
(forward-over-reverse, built from the jvp rules) with central differences of the gradient computed by the
reverse sweep (the backward rules): the two sides come from different rules, so a wrong jvp rule shows.

The defaults are tighter than PyTorch's (rtol=1e-3 would pass a derivative wrong by 0.05%): with central
differences at eps=1e-6 the truncation error is ~eps**2 and the rounding error ~1e-10 relative, so rtol=1e-5
catches a 5e-4 relative error with a wide margin, as HIPS autograd's check does. A point where the one-sided
slopes differ (relu or abs at 0, a tie of maximum) is a kink: no derivative exists there, and the checks fail
rather than bless whichever subgradient the engine picked. So does a point where f or a derivative is nan or
inf: there is nothing to compare.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

import fastgrad as fg
from fastgrad import _symbolic, transforms

__all__ = ["gradcheck", "gradgradcheck", "GradcheckError", "GradcheckResult"]


class GradcheckError(RuntimeError):
    """A derivative disagrees with finite differences; attributes say where and by how much.

    mode: 'reverse', 'forward', 'kink', 'nonfinite' (gradcheck) or 'hessian' (gradgradcheck).
    input_index / output_index: None where every input (a random tangent) or every output (a random
    cotangent) takes part, or for a non-finite value of f itself. second_input_index: the second input of a
    second derivative. direction: the random cotangent u, tangent v, or pair (u, v) of the failing check.
    """

    def __init__(self, message: str, input_index: Optional[int], output_index: Optional[int], mode: str,
                 analytic: float, numeric: float, *, second_input_index: Optional[int] = None,
                 direction: Optional[Tuple[Any, ...]] = None):
        super().__init__(message)
        self.input_index = input_index
        self.output_index = output_index
        self.mode = mode
        self.analytic = analytic
        self.numeric = numeric
        self.second_input_index = second_input_index
        self.direction = direction


class GradcheckResult:
    """What a passing check covered. Always truthy.

    checked: the modes compared with central differences: ('reverse', 'forward') or ('reverse',) from
    gradcheck, ('hessian',) from gradgradcheck;
    skipped: {mode: why it was not checked}, e.g. {'forward': "custom op 'f' has no jvp rule"}.
    """

    __slots__ = {
        "check": "Which check ran: 'gradcheck' or 'gradgradcheck'.",
        "checked": "The modes compared with central differences, e.g. ('reverse', 'forward').",
        "skipped": "{mode: why it was not checked}.",
        "num_inputs": "How many scalar inputs the function has.",
        "num_outputs": "How many scalar outputs the function has.",
        "seed": "The seed of the random directions.",
    }

    def __init__(self, check: str, checked: Sequence[str], skipped: Dict[str, str], num_inputs: int,
                 num_outputs: int, seed: int):
        self.check = check                  # 'gradcheck' or 'gradgradcheck'
        self.checked = tuple(checked)
        self.skipped = dict(skipped)
        self.num_inputs = num_inputs
        self.num_outputs = num_outputs
        self.seed = seed                    # of the random directions

    def __bool__(self) -> bool:
        return True

    def __repr__(self) -> str:
        return f"GradcheckResult(checked={self.checked!r}, skipped={self.skipped!r})"

    def __str__(self) -> str:
        what = " and ".join(_MODE_TEXT.get(mode, mode) for mode in self.checked)
        lines = [f"{self.check} passed: {what} checked at {self.num_inputs} input(s) and {self.num_outputs} "
                 f"output(s), entry by entry and along random directions (seed={self.seed})"]
        lines += [f"{_MODE_TEXT.get(mode, mode)} not checked: {why}" for mode, why in self.skipped.items()]
        return "\n".join(lines)


_MODE_TEXT = {"reverse": "reverse mode", "forward": "forward mode",
              "hessian": "second derivatives (forward-over-reverse)"}


# ---------------------------------------------------------------------------------------------------------
# Helpers shared by both checks
# ---------------------------------------------------------------------------------------------------------

def _point(f: Any, inputs: Any, eps: float, who: str) -> List[float]:
    """Validate the arguments; the point as floats."""
    if not callable(f):
        raise TypeError(f"{who}: f must be callable, got {type(f).__name__}")
    if not eps > 0:
        raise ValueError(f"{who}: eps must be positive, got {eps}")
    if isinstance(inputs, (fg.Var, numbers.Real)):
        inputs = (inputs,)
    point = _symbolic.values_of(inputs, who)
    if not point:
        raise ValueError(f"{who}: no inputs to check")
    return point


def _start(f: Any, inputs: Any, eps: float, who: str) -> Tuple[List[float], List[float]]:
    """The checked arguments: (the point, f's outputs there), failing where f is not finite there."""
    point = _point(f, inputs, eps, who)
    base = _evaluate(f, point, who)
    m = len(base)
    if m == 0:
        raise ValueError(f"{who}: f returned no outputs")
    _require_finite(who, point, base, [f"output {j}" if m > 1 else "f" for j in range(m)],
                    [(None, j) for j in range(m)], "a derivative cannot be checked where f is not finite")
    return point, base


def _outputs(result: Any, who: str) -> List[Any]:
    """f's outputs, flat (numbers or Vars); TypeError for anything else."""
    outs = list(result) if isinstance(result, (tuple, list)) else [result]
    for o in outs:
        if not (isinstance(o, fg.Var) or isinstance(o, numbers.Real)):
            raise TypeError(f"{who}: f must return a number, a Var or a tuple/list of them, "
                            f"got {type(o).__name__}")
    return outs


def _evaluate(f: Callable, point: Sequence[float], who: str = "gradcheck") -> List[float]:
    """f at `point` (called with fresh leaf Vars, so Var methods work), its outputs as floats."""
    return [float(o) for o in _outputs(f(*[fg.Var(v) for v in point]), who)]


def _moved(point: Sequence[float], direction: Sequence[float], step: float) -> List[float]:
    """point + step * direction."""
    return [x + step * d for x, d in zip(point, direction)]


def _unit(k: int, n: int) -> List[float]:
    return [1.0 if i == k else 0.0 for i in range(n)]


def _matrix(rows: Sequence[Sequence[Any]], m: int, n: int) -> np.ndarray:
    """An (m, n) float array from a Jacobian's rows (floats, or constant Vars under an enclosing trace)."""
    return np.array([[float(x) for x in row] for row in rows], dtype=np.float64).reshape(m, n)


def _close(a: float, b: float, atol: float, rtol: float) -> bool:
    return abs(a - b) <= atol + rtol * abs(b)   # False for nan: non-finite values never agree


def _directions(rng: np.random.Generator, k: int) -> Tuple[List[float], List[float]]:
    """Two random directions of length k, for the checks along random cotangents/tangents.

    NOTE: no entry is near 0 or +-1, and each entry takes both signs (the second draw flips the signs of
    the first): a rule that treats its incoming gradient as 1, or uses its absolute value, cannot agree by
    chance.
    """
    signs = rng.choice((-1.0, 1.0), size=k)
    small = signs * rng.uniform(0.25, 0.75, size=k)
    large = -signs * rng.uniform(1.25, 2.5, size=k)
    return [float(x) for x in small], [float(x) for x in large]


def _show(direction: Sequence[float]) -> str:
    return "(" + ", ".join(f"{x:.6g}" for x in direction) + ")"


def _settings(eps: float, atol: float, rtol: float, seed: Optional[int] = None) -> str:
    return f"(eps={eps}, atol={atol}, rtol={rtol}" + (f", seed={seed})" if seed is not None else ")")


def _first_nonfinite(values: Sequence[float]) -> Optional[int]:
    """Index of the first nan or inf in values, or None."""
    return next((j for j, v in enumerate(values) if not math.isfinite(v)), None)


def _stencil_message(who: str, where: str, what: str, value: float, point: Sequence[float], i: int,
                     step: float) -> str:
    """Why central differences cannot be taken: f is not finite at a point of the stencil."""
    return (f"{who} failed for {where}: {what} is {value!r} at input {i} = {point[i] + step!r} (a step of "
            f"{step!r}), so central differences are not defined: the point is at the edge of the domain")


def _require_finite(who: str, point: Sequence[float], values: Sequence[float], labels: Sequence[str],
                    indices: Sequence[Tuple[Optional[int], Optional[int]]], what: str) -> None:
    """Fail on a nan or inf among ``values``: nothing can be checked where they are not finite.

    labels[k] says what value k is; indices[k] is its (input_index, output_index).
    """
    k = _first_nonfinite(values)
    if k is not None:
        raise GradcheckError(f"{who} failed: {labels[k]} is {values[k]!r} at the point {tuple(point)!r}; "
                             f"{what}", *indices[k], "nonfinite", values[k], math.nan)


def _check_kink(who: str, i: int, j: Optional[int], where: str, f0: float, fp: float, fm: float, fp2: float,
                fm2: float, analytic: float, eps: float, atol: float, rtol: float, *, mode_text: str,
                second_input_index: Optional[int] = None, what: str = "a kink, no derivative exists there"
                ) -> None:
    """Fail where the right and left slopes differ by a jump that does not shrink with the step.

    For a smooth f, right - left ~ eps * f'' (halves with the step); at a kink it tends to the jump.
    """
    values = (f0, fp, fm, fp2, fm2)
    right, left = (fp - f0) / eps, (f0 - fm) / eps
    right2, left2 = (fp2 - f0) / (eps / 2), (f0 - fm2) / (eps / 2)
    jump, jump2 = right - left, right2 - left2
    scale = max(abs(right), abs(left))
    noise = 64 * np.finfo(float).eps * max(abs(v) for v in values) / eps  # rounding in the differences
    if abs(jump) > max(atol + rtol * scale, noise) and abs(jump2) > 0.75 * abs(jump):
        raise GradcheckError(
            f"{who} failed for {where}: {what}: the slope from the right is {right!r}, from the left "
            f"{left!r} ({mode_text} gives {analytic!r})",
            i, j, "kink", analytic, (right + left) / 2, second_input_index=second_input_index)


# ---------------------------------------------------------------------------------------------------------
# gradcheck: first derivatives
# ---------------------------------------------------------------------------------------------------------

def gradcheck(f: Callable, inputs: Any, eps: float = 1e-6, atol: float = 1e-8, rtol: float = 1e-5,
              check_forward: bool = True, seed: int = 0) -> GradcheckResult:
    """Check the first derivatives of ``f(*inputs)`` against central differences; return a truthy
    GradcheckResult saying which modes were checked, or raise GradcheckError naming the input, the output and
    both numbers.

    inputs: a number, a Var, or a sequence of them (the point; Vars contribute their values).
    f may return a number/Var or a tuple/list of them (every output is checked).
    Reverse mode is always checked; forward mode too unless ``check_forward=False`` or it cannot run (a
    custom op in the way has no jvp rule: ``result.skipped`` says so). Each mode is checked entry by entry
    and along two random cotangents (reverse: u·J) or tangents (forward: J·v) drawn with ``seed``.
    Also fails at a kink (one-sided slopes that differ), where no derivative exists, and where f or a
    derivative is nan or inf (mode 'nonfinite').
    """
    who = "gradcheck"
    point, base = _start(f, inputs, eps, who)
    n, m = len(point), len(base)
    trace = transforms._Trace(f, tuple(point), {}, None, False, who)  # one tape for every sweep below

    def where(i: Optional[int], j: Optional[int]) -> str:
        text = "all inputs" if i is None else f"input {i} (value {point[i]!r})"
        return text + (f", output {j}" if m > 1 and j is not None else "")

    jacobians: Dict[str, np.ndarray] = {"reverse": _matrix(trace.jacobian("rev"), m, n)}
    skipped: Dict[str, str] = {}
    if not check_forward:
        skipped["forward"] = "check_forward=False"
    else:
        try:
            jacobians["forward"] = _matrix(trace.jacobian("fwd"), m, n)
        except NotImplementedError as err:
            missing = sorted({c.op.name for c in trace.customs if c.op.jvp is None})
            skipped["forward"] = (f"custom op {', '.join(map(repr, missing))} has no jvp rule" if missing
                                  else str(err))
    for mode, jac in jacobians.items():
        for j, i in zip(*np.nonzero(~np.isfinite(jac))):
            value = float(jac[j, i])
            raise GradcheckError(f"{who} failed for {where(int(i), int(j))}: {mode} mode gives {value!r}, "
                                 f"not a finite number", int(i), int(j), "nonfinite", value, math.nan)

    numeric = np.empty((m, n))
    # NOTE: the rounding error of each difference (~ulp(f) / eps) joins the tolerance: f = x + 1e8 has a
    # derivative of exactly 1, but its differences are only good to ~1e-2. Where |f| ~ 1 it is ~1e-8.
    noise = np.empty((m, n))
    for i in range(n):
        step = _unit(i, n)
        shifted = {s: _evaluate(f, _moved(point, step, s)) for s in (eps, -eps, eps / 2, -eps / 2)}
        for s, values in shifted.items():
            j = _first_nonfinite(values)
            if j is not None:
                raise GradcheckError(_stencil_message(who, where(i, j), "f", values[j], point, i, s),
                                     i, j, "nonfinite", math.nan, values[j])
        plus, minus, plus2, minus2 = shifted.values()
        for j in range(m):
            numeric[j, i] = (plus[j] - minus[j]) / (2 * eps)
            noise[j, i] = 64 * np.finfo(float).eps * max(abs(plus[j]), abs(minus[j])) / eps
            for mode, jac in jacobians.items():
                analytic = float(jac[j, i])
                if not _close(analytic, numeric[j, i], atol + noise[j, i], rtol):
                    raise GradcheckError(
                        f"{who} failed for {where(i, j)}: {mode} mode gives {analytic!r}, central difference "
                        f"gives {float(numeric[j, i])!r} {_settings(eps, atol, rtol)}",
                        i, j, mode, analytic, float(numeric[j, i]))
            _check_kink(who, i, j, where(i, j), base[j], plus[j], minus[j], plus2[j], minus2[j],
                        float(jacobians["reverse"][j, i]), eps, atol, rtol, mode_text="reverse mode")

    # Along random directions: the cotangent (tangent) enters the sweep, so a rule that misuses its
    # incoming gradient shows, which unit seeds cannot reveal.
    rng = np.random.default_rng(seed)
    for u in _directions(rng, m):
        swept = [float(g) for g in trace.vjp(u)]
        for i in range(n):
            expected = float(np.dot(u, numeric[:, i]))
            tol = (atol * float(np.sum(np.abs(u))) + rtol * float(np.dot(np.abs(u), np.abs(numeric[:, i])))
                   + float(np.dot(np.abs(u), noise[:, i])))
            if not abs(swept[i] - expected) <= tol:
                raise GradcheckError(
                    f"{who} failed for {where(i, None)}: reverse mode with the random cotangent "
                    f"u = {_show(u)} gives u·J = {swept[i]!r}, central differences give {expected!r} "
                    f"{_settings(eps, atol, rtol, seed)}: does a backward rule ignore or misuse its incoming "
                    f"gradient g?",
                    i, None, "reverse", swept[i], expected, direction=tuple(u))
    if "forward" in jacobians:
        for v in _directions(rng, n):
            swept = [float(t) for t in trace.jvp(v)]
            for j in range(m):
                expected = float(np.dot(numeric[j], v))
                tol = (atol * float(np.sum(np.abs(v))) + rtol * float(np.dot(np.abs(numeric[j]), np.abs(v)))
                       + float(np.dot(noise[j], np.abs(v))))
                if not abs(swept[j] - expected) <= tol:
                    raise GradcheckError(
                        f"{who} failed for {where(None, j)}: forward mode with the random tangent "
                        f"v = {_show(v)} gives J·v = {swept[j]!r}, central differences give {expected!r} "
                        f"{_settings(eps, atol, rtol, seed)}",
                        None, j, "forward", swept[j], expected, direction=tuple(v))
    return GradcheckResult(who, list(jacobians), skipped, n, m, seed)


# ---------------------------------------------------------------------------------------------------------
# gradgradcheck: second derivatives
# ---------------------------------------------------------------------------------------------------------

def _weighted(f: Callable, weights: Sequence[float], who: str) -> Callable:
    """The scalar function x -> weights · f(x)."""
    def weighted(*xs: Any) -> Any:
        return fg.dot(list(weights), _outputs(f(*xs), who))
    return weighted


def _output(f: Callable, j: int, who: str) -> Callable:
    """The scalar function x -> f(x)[j]."""
    def output(*xs: Any) -> Any:
        return _outputs(f(*xs), who)[j]
    return output


def gradgradcheck(f: Callable, inputs: Any, eps: float = 1e-6, atol: float = 1e-8, rtol: float = 1e-5,
                  seed: int = 0) -> GradcheckResult:
    """Check the second derivatives of ``f(*inputs)``; return a truthy GradcheckResult or raise
    GradcheckError (mode 'hessian', 'kink' or 'nonfinite') naming the output, both inputs and both numbers.

    The analytic side is forward-over-reverse (`fg.hessian` for every output, `fg.hvp` of u·f along a random
    v), built from the ops' jvp rules; the numeric side is central differences of the gradient computed by
    the reverse sweep at plain numbers (the custom backward rules). A jvp rule that disagrees with its own
    backward rule to second order therefore fails, which ``gradcheck(fg.grad(f), x)`` cannot see (its
    differences run through the same jvp rule). Raises NotImplementedError where second derivatives cannot
    be computed (a custom op in the way without a jvp rule). First derivatives are gradcheck's job.
    """
    who = "gradgradcheck"
    point, base = _start(f, inputs, eps, who)
    n, m = len(point), len(base)
    argnums = tuple(range(n))

    def gradient(s: Callable, at: Sequence[float]) -> List[float]:
        return [float(g) for g in transforms.grad(s, argnums)(*at)]

    def second_order(transform: Callable, *args: Any) -> Any:
        try:
            return transform(*args)
        except NotImplementedError as err:
            raise NotImplementedError(f"{who}: second derivatives of f cannot be computed, so they cannot be "
                                      f"checked: {err}") from err

    def where(i: int, k: int, j: int) -> str:
        at = f"input {i} = {point[i]!r}" + (f", input {k} = {point[k]!r}" if k != i else "")
        return f"d²/d(input {i}) d(input {k}) at {at}" + (f", output {j}" if m > 1 else "")

    hessians = []
    for j in range(m):
        s = _output(f, j, who)
        hessian = _matrix(second_order(transforms.hessian(s, argnums), *point), n, n)
        hessians.append(hessian)
        g0 = gradient(s, point)
        _require_finite(who, point, g0, [f"d/d(input {i})" + (f" of output {j}" if m > 1 else "")
                                         for i in range(n)],
                        [(i, j) for i in range(n)],
                        "a second derivative cannot be checked where the gradient is not finite")
        for (i, k) in zip(*np.nonzero(~np.isfinite(hessian))):
            value = float(hessian[i, k])
            raise GradcheckError(f"{who} failed for {where(int(i), int(k), j)}: forward-over-reverse gives "
                                 f"{value!r}, not a finite number", int(i), j, "nonfinite", value, math.nan,
                                 second_input_index=int(k))
        for k in range(n):
            step = _unit(k, n)
            shifted = {d: gradient(s, _moved(point, step, d)) for d in (eps, -eps, eps / 2, -eps / 2)}
            for d, values in shifted.items():
                i = _first_nonfinite(values)
                if i is not None:
                    raise GradcheckError(
                        _stencil_message(who, where(i, k, j), f"d/d(input {i})", values[i], point, k, d),
                        i, j, "nonfinite", math.nan, values[i], second_input_index=k)
            plus, minus, plus2, minus2 = shifted.values()
            for i in range(n):
                numeric = (plus[i] - minus[i]) / (2 * eps)
                analytic = float(hessian[i, k])
                # NOTE: rounding in the gradient's differences is relative to the gradient, not to the
                # second derivative (which may be ~0 beside a large gradient): allow it explicitly.
                noise = 64 * np.finfo(float).eps * max(abs(plus[i]), abs(minus[i])) / eps
                if not abs(analytic - numeric) <= atol + rtol * abs(numeric) + noise:
                    raise GradcheckError(
                        f"{who} failed for {where(i, k, j)}: forward-over-reverse gives {analytic!r}, "
                        f"central difference of the reverse-mode gradient gives {numeric!r} "
                        f"{_settings(eps, atol, rtol)}",
                        i, j, "hessian", analytic, numeric, second_input_index=k)
                _check_kink(who, i, j, where(i, k, j), g0[i], plus[i], minus[i], plus2[i], minus2[i],
                            analytic, eps, atol, rtol, mode_text="forward-over-reverse",
                            second_input_index=k,
                            what=f"a kink in d/d(input {i}), no second derivative exists there")

    # Along random directions: u weights the outputs (it enters the backward rules as their incoming
    # gradient), v is the direction of the Hessian-vector product of u·f.
    rng = np.random.default_rng(seed)
    for u, v in zip(_directions(rng, m), _directions(rng, n)):
        s = _weighted(f, u, who)
        hv = [float(h) for h in second_order(transforms.hvp, s, tuple(point), tuple(v))]
        plus, minus = gradient(s, _moved(point, v, eps)), gradient(s, _moved(point, v, -eps))
        # |u|·|H|·|v|: the scale of each entry of u·H·v without cancellation (the entries were checked above)
        scale = sum(abs(u[j]) * np.abs(hessians[j]) for j in range(m)) @ np.abs(v)
        for i in range(n):
            numeric = (plus[i] - minus[i]) / (2 * eps)
            noise = 64 * np.finfo(float).eps * max(abs(plus[i]), abs(minus[i])) / eps
            tol = atol * float(np.sum(np.abs(u)) * np.sum(np.abs(v))) + rtol * float(scale[i]) + noise
            if not abs(hv[i] - numeric) <= tol:
                raise GradcheckError(
                    f"{who} failed for input {i} (value {point[i]!r}): with the random cotangent "
                    f"u = {_show(u)} and tangent v = {_show(v)}, forward-over-reverse gives (H·v)_{i} = "
                    f"{hv[i]!r} for the Hessian H of u·f, the central difference of the reverse-mode "
                    f"gradient of u·f along v gives {numeric!r} {_settings(eps, atol, rtol, seed)}: does a "
                    f"backward rule ignore or misuse its incoming gradient g?",
                    i, None, "hessian", hv[i], numeric, direction=(tuple(u), tuple(v)))
    return GradcheckResult(who, ["hessian"], {}, n, m, seed)
