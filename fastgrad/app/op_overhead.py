"""The Tensor per-op overhead of `python -m fastgrad bench`: what one fastgrad Tensor op costs, forward and
backward, above the same work done by hand in NumPy, on 4x4 float64 arrays.

For each op a chain of K links is built and differentiated three ways:

- fastgrad: leaf Tensors A and B (requires_grad), the chain, `.sum().backward()`;
- NumPy by hand: the same chain storing what the backward needs, then the backward written out (the
  gradients of A and B accumulated link by link, as an autodiff engine does);
- torch eager (float64, one thread), when installed: the same chain as fastgrad's.

A link is one op except for `sum`, whose result is a number: its link `s = s + X.sum()` is a sum and a 0-d
add, two ops, and its figures are per op (the chain's time / 2K). Overhead per op = (fastgrad - NumPy) / ops.
Best of repeats (each repeat the mean of several chains), GC on.
"""
from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

__all__ = ["LINKS", "OPS", "autodiff_chain", "bench_op_overhead", "numpy_chain", "op_inputs",
           "op_overhead_table", "op_overhead_targets"]

OPS = ("add", "mul", "tanh", "relu", "matmul", "sum")
LINKS = {"add": "x = x + B", "mul": "x = x * B", "tanh": "x = tanh(x)", "relu": "x = relu(x)",
         "matmul": "x = x @ B", "sum": "s = s + B.sum()"}
OPS_PER_LINK = {op: 2 if op == "sum" else 1 for op in OPS}
CHAIN = 100                 # K: links per chain
TARGET_US = 2.0             # the target: overhead per op, forward + backward
OVERHEAD_WORKLOAD = "Tensor per-op overhead (4x4 float64, forward + backward)"


def op_inputs(op: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(A, B): 4x4 float64 arrays that keep a chain of `op` finite and away from kinks: B near 1 for mul,
    orthogonal for matmul; A centred at 0 (relu and tanh see both signs)."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((4, 4))
    if op == "mul":
        b = rng.uniform(0.95, 1.05, (4, 4))
    elif op == "matmul":
        b = np.linalg.qr(rng.standard_normal((4, 4)))[0]
    else:
        b = rng.standard_normal((4, 4))
    return a, b


def autodiff_chain(op: str, A: Any, B: Any, k: int = CHAIN) -> Any:
    """The chain of `k` links of `op` from the leaves A and B, then `.sum().backward()`: the output. The same
    code runs on fastgrad Tensors and on torch tensors (both have `.tanh()`, `.relu()`, `@`, `.sum()`)."""
    x = A
    if op == "add":
        for _ in range(k):
            x = x + B
    elif op == "mul":
        for _ in range(k):
            x = x * B
    elif op == "tanh":
        for _ in range(k):
            x = x.tanh()
    elif op == "relu":
        for _ in range(k):
            x = x.relu()
    elif op == "matmul":
        for _ in range(k):
            x = x @ B
    elif op == "sum":
        x = B.sum()
        for _ in range(k - 1):
            x = x + B.sum()
    else:
        raise ValueError(f"unknown op {op!r}")
    out = x.sum()
    out.backward()
    return out


def numpy_chain(op: str, a: np.ndarray, b: np.ndarray, k: int = CHAIN
                ) -> tuple[float, np.ndarray, np.ndarray]:
    """The chain by hand: forward keeping what the backward needs, then the backward link by link.
    Returns (output, d out / d A, d out / d B)."""
    ga, gb = np.zeros_like(a), np.zeros_like(b)
    x = a
    if op == "add":
        for _ in range(k):
            x = x + b
        out = x.sum()
        g = np.ones_like(x)
        for _ in range(k):
            gb += g                     # d(x + B) passes g to both
        ga += g
    elif op == "mul":
        saved = []
        for _ in range(k):
            saved.append(x)
            x = x * b
        out = x.sum()
        g = np.ones_like(x)
        for xk in reversed(saved):
            gb += g * xk
            g = g * b
        ga += g
    elif op == "tanh":
        saved = []
        for _ in range(k):
            x = np.tanh(x)
            saved.append(x)
        out = x.sum()
        g = np.ones_like(x)
        for yk in reversed(saved):
            g = g * (1.0 - yk * yk)
        ga += g
    elif op == "relu":
        saved = []
        for _ in range(k):
            saved.append(x > 0.0)       # relu'(0) = 0
            x = np.maximum(x, 0.0)
        out = x.sum()
        g = np.ones_like(x)
        for mask in reversed(saved):
            g = g * mask
        ga += g
    elif op == "matmul":
        saved = []
        for _ in range(k):
            saved.append(x)
            x = x @ b
        out = x.sum()
        g = np.ones_like(x)
        for xk in reversed(saved):
            gb += xk.T @ g
            g = g @ b.T
        ga += g
    elif op == "sum":
        s = b.sum()
        for _ in range(k - 1):
            s = s + b.sum()
        out = s
        gs = 1.0
        for _ in range(k):
            gb += gs                    # d B.sum() / d B = ones
    else:
        raise ValueError(f"unknown op {op!r}")
    return float(out), ga, gb


def _best_in_turns(runs: list[Callable[[], Any]], repeats: int, number: int) -> list[float]:
    """Seconds per call of each of `runs`: the best over `repeats` rounds of the mean of `number` calls; in
    each round the runs take turns, so a change in the (shared) machine's load reaches each of them alike."""
    clock = time.perf_counter
    best = [float("inf")] * len(runs)
    for _ in range(repeats):
        for i, run in enumerate(runs):
            t0 = clock()
            for _ in range(number):
                run()
            best[i] = min(best[i], (clock() - t0) / number)
    return best


def bench_op_overhead(quick: bool = False, k: int = CHAIN, progress: Callable[[str], None] | None = None
                      ) -> list[dict[str, Any]]:
    """One row per op: "numpy_us", "fastgrad_us", "torch_us" (None without torch): microseconds per op of the
    chain, forward + backward; "overhead_us" = fastgrad - numpy per op; "link", "ops_per_link", "chain"."""
    import fastgrad
    from fastgrad.app.bench import _one_torch_thread
    from fastgrad.app.workloads import gc_policy

    repeats, number = (3, 5) if quick else (7, 20)
    have_torch = importlib.util.find_spec("torch") is not None
    rows = []
    with gc_policy(True):           # one collection before all the chains; GC on while timing
        for op in OPS:
            if progress:
                progress(op)
            a, b = op_inputs(op)
            A, B = fastgrad.Tensor(a, requires_grad=True), fastgrad.Tensor(b, requires_grad=True)
            runs = [partial(numpy_chain, op, a, b, k), partial(autodiff_chain, op, A, B, k)]
            if have_torch:
                import torch

                TA = torch.tensor(a, dtype=torch.float64, requires_grad=True)
                TB = torch.tensor(b, dtype=torch.float64, requires_grad=True)
                runs.append(partial(autodiff_chain, op, TA, TB, k))
            with _one_torch_thread(have_torch):
                numpy_s, fastgrad_s, *rest = _best_in_turns(runs, repeats, number)
            torch_s = rest[0] if rest else None
            ops = k * OPS_PER_LINK[op]
            rows.append({"workload": OVERHEAD_WORKLOAD, "op": op, "link": LINKS[op], "chain": k,
                         "ops_per_link": OPS_PER_LINK[op], "repeats": repeats,
                         "numpy_us": 1e6 * numpy_s / ops, "fastgrad_us": 1e6 * fastgrad_s / ops,
                         "torch_us": None if torch_s is None else 1e6 * torch_s / ops,
                         "overhead_us": 1e6 * (fastgrad_s - numpy_s) / ops})
    return rows


def op_overhead_table(rows: list[dict[str, Any]]) -> str:
    """The per-op rows as a Markdown table (µs per op, forward + backward)."""
    torch_col = any(r["torch_us"] is not None for r in rows)
    head = ["op", "link (K times)", "numpy µs/op", "fastgrad µs/op", "overhead µs/op"]
    if torch_col:
        head += ["torch µs/op", "torch / fastgrad"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    for r in rows:
        cells = [r["op"], f"`{r['link']}`", f"{r['numpy_us']:.2f}", f"{r['fastgrad_us']:.2f}",
                 f"{r['overhead_us']:+.2f}"]
        if torch_col:
            t = r["torch_us"]
            cells += ["" if t is None else f"{t:.2f}", "" if t is None else f"{t / r['fastgrad_us']:.1f}x"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def op_overhead_targets(rows: list[dict[str, Any]]) -> list[str]:
    """The issue's target, per op: overhead <= 2 µs above NumPy, forward + backward."""
    lines = []
    for r in rows:
        verdict = "met" if r["overhead_us"] <= TARGET_US else "NOT met"
        lines.append(f"target: {r['op']} overhead <= {TARGET_US:g} µs/op above numpy: "
                     f"{r['overhead_us']:+.2f} µs ({verdict})")
    return lines
