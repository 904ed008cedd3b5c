"""The `fastgrad` command (also `python -m fastgrad`): `demo` trains on two moons, `bench` measures speed."""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

import fastgrad

__all__ = ["build_parser", "main"]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _hidden(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes like 16,16, got {text!r}") from None
    if any(n < 1 for n in sizes):
        raise argparse.ArgumentTypeError(f"hidden sizes must be positive, got {text!r}")
    return sizes


def _nonnegative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative number, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastgrad",
        description="fastgrad: a compiled autodiff engine with micrograd's and PyTorch's API.")
    parser.add_argument("--version", action="version", version=f"fastgrad {fastgrad.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = commands.add_parser(
        "demo", help="train an MLP on two moons (micrograd's recipe), with progress and timing",
        description="Train MLP(2, [16, 16, 1]) on 100 two-moons points with micrograd's recipe: hinge loss + "
                    "1e-4*L2, full-batch SGD with lr falling linearly from 1.0 to 0.1.")
    demo.add_argument("--steps", type=_positive_int, default=100, help="training steps (default 100)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the data and of the weights (default 0)")
    demo.add_argument("--hidden", type=_hidden, default=[16, 16], metavar="16,16",
                      help="hidden layer sizes (default 16,16)")
    demo.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd", help="default sgd")
    demo.add_argument("--lr", type=_nonnegative_float, default=None,
                      help="initial learning rate (default 1.0 for sgd, 0.05 for adam)")
    demo.add_argument("--compare", action="store_true",
                      help="also run the same steps on fastgrad.reference, micrograd-style fg.Value code and "
                           "micrograd (if installed), and print the speedups")
    demo.add_argument("--plot", metavar="PNG",
                      help="write the decision boundary to this file (needs matplotlib)")
    demo.add_argument("--no-progress", action="store_true", help="do not draw progress bars")

    bench = commands.add_parser(
        "bench", help="run the benchmarks and print a Markdown table",
        description="Time the engine workloads and the two-moons training step on fastgrad and on the "
                    "pure-Python reference (and micrograd / torch when installed), with the cyclic GC on "
                    "as in any Python program, and again with it off.")
    bench.add_argument("--quick", action="store_true", help="smaller sizes and fewer repeats (a rough table)")
    bench.add_argument("--only", choices=["engine", "moons"],
                       help="run only the engine workloads or only the two-moons training step")
    bench.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    bench.add_argument("--plot", metavar="PNG", help="also draw the timings (needs matplotlib)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from fastgrad import demo

        return demo.run(steps=args.steps, seed=args.seed, hidden=args.hidden, optimizer=args.optimizer,
                        lr=args.lr, compare=args.compare, plot=args.plot, progress=not args.no_progress)
    if args.command == "bench":
        return run_bench(quick=args.quick, json_path=args.json, plot_path=args.plot, only=args.only)
    raise AssertionError(args.command)  # argparse rejects unknown commands


# ---------------------------------------------------------------------------------------------------
# bench: rows are dicts; the engine workloads come from fastgrad.benchmark, the training
# step from fastgrad.demo
# ---------------------------------------------------------------------------------------------------

def run_bench(quick: bool = False, json_path: str | None = None, plot_path: str | None = None,
              only: str | None = None, out: TextIO | None = None) -> int:
    """`python -m fastgrad bench`: Markdown tables of the engine workloads and of the two-moons training
    step; optionally the rows as JSON and a plot."""
    out = out if out is not None else sys.stdout
    if plot_path and importlib.util.find_spec("matplotlib") is None:
        print("error: --plot needs matplotlib, which is not installed: "
              "pip install matplotlib (or pip install 'fastgrad[plot]')", file=sys.stderr)
        return 2
    from fastgrad import benchmark, demo

    info = machine_info()
    print(f"fastgrad {info['fastgrad']} bench{' --quick' if quick else ''}, {info['date']}, "
          f"on {info['machine']}", file=out)
    print(f"GC policy, every engine, every table: {benchmark.GC_POLICY}.", file=out)
    out.flush()
    engine: list[dict[str, Any]] = []
    moons: list[dict[str, Any]] = []
    if only != "moons":
        _status("engine workloads")
        engine = [dict(r) for r in benchmark.run_all(quick=quick)]
        print("\n## Engine workloads\n", file=out)
        print("ns/op (program): time / the ops of the program as written, the same for every engine. "
              "ns/node, bytes/node (own graph): / the nodes of that engine's own graph, leaves and constants "
              "included (counted). Best of repeats.\n", file=out)
        print(benchmark.markdown_table(engine), file=out)
    if only != "engine":
        moons = demo.bench_moons_step(quick=quick, progress=lambda name: _status(f"moons step: {name}"))
        _status("")
        print(f"\n## Training step: {demo.MOONS_WORKLOAD}\n", file=out)
        print("zero_grad + forward over the 100 points + backward + update (+ freeing the graph); "
              "median of the timed steps. Graph nodes: one step's graph, leaves included (torch: autograd "
              "nodes, one per tensor op). GC off: a collection between steps, untimed, frees micrograd's "
              "graphs (reference cycles) outside its times.\n", file=out)
        print(moons_table(moons), file=out)
        print("\n" + "\n".join(moons_targets(moons)), file=out)
    _status("")
    if json_path:
        with open(json_path, "w") as f:
            json.dump({"machine": info, "quick": quick, "engine": engine, "moons_step": moons}, f, indent=2)
        print(f"\nrows written to {json_path}", file=out)
    if plot_path:
        plot_bench(engine, moons, plot_path, f"fastgrad bench on {info['machine']}")
        print(f"plot written to {plot_path}", file=out)
    return 0


def machine_info() -> dict[str, str]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {
        "machine": f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
                   f"Python {platform.python_version()}",
        "fastgrad": fastgrad.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }


def moons_table(rows: list[dict[str, Any]]) -> str:
    """The moons-step rows as a Markdown table: under the GC policy, then with the GC off (whose best step is
    in the JSON only)."""
    mg = next((r for r in rows if r["implementation"] == "micrograd"), None)
    columns: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("implementation", lambda r: r["implementation"]),
        ("graph nodes / step", lambda r: "" if r.get("nodes") is None else f"{r['nodes']:,}"),
        ("steps timed", lambda r: str(r["repeats"])),
    ]
    for key, label in [("", "")] + ([("gc_off_", "GC off: ")] if all("gc_off_ms" in r for r in rows) else []):
        columns.append((f"{label}ms / step (median)", lambda r, k=key: f"{r[k + 'ms']:.3f}"))
        if not key:
            columns.append(("best", lambda r: "" if r.get("best_ms") is None else f"{r['best_ms']:.3f}"))
        columns.append((f"{label}speedup vs reference.py", lambda r, k=key: f"{r[k + 'vs_reference']:.1f}x"))
        if mg is not None:
            columns.append((f"{label}speedup vs micrograd",
                            lambda r, k=key: f"{mg[k + 'ms'] / r[k + 'ms']:.1f}x"))
    lines = ["| " + " | ".join(name for name, _ in columns) + " |",
             "|---|" + "---:|" * (len(columns) - 1)]
    lines += ["| " + " | ".join(cell(r) for _, cell in columns) + " |" for r in rows]
    return "\n".join(lines)


def moons_targets(rows: list[dict[str, Any]]) -> list[str]:
    """The issue's targets for the moons step, checked against this run."""
    from fastgrad.demo import MOONS_WORKLOAD

    speed = {r["implementation"]: r["vs_reference"] for r in rows if r.get("workload") == MOONS_WORKLOAD}
    lines = []
    targets = (("fastgrad.nn (one fused call per layer)", 250), ("fg.Value, micrograd-style per-scalar", 40))
    for name, target in targets:
        if name in speed:
            verdict = "met" if speed[name] >= target else "NOT met"
            lines.append(f"target: {name} >= {target}x faster than reference.py: "
                         f"{speed[name]:.1f}x ({verdict})")
    return lines


def plot_bench(engine: list[dict[str, Any]], moons: list[dict[str, Any]], path: str, title: str) -> None:
    """Two panels: the engine workloads' speedups over reference.py, and the moons step's time per
    implementation (log scales)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [p for p in (engine, moons) if p]
    fig, axes = plt.subplots(len(panels), 1, squeeze=False,
                             figsize=(9, 1.5 + 0.4 * sum(len(p) for p in panels) + 0.8 * len(panels)))
    for ax, rows in zip(axes[:, 0], panels):
        if rows is engine:
            names = [f"{r['name']} ({r['unit']})" for r in rows]
            values = [r["ratio"] for r in rows]
            ax.set_xlabel("reference.py / fastgrad (log scale; higher is better)")
            ax.set_title("engine workloads", fontsize=10)
            labels = [f" {_short(v)}x" for v in values]
        else:
            names = [r["implementation"] for r in rows]
            values = [r["ms"] for r in rows]
            ax.set_xlabel("ms per step (log scale; lower is better)")
            ax.set_title("two-moons training step", fontsize=10)
            labels = [f" {_short(v)} ms" for v in values]
        ax.barh(range(len(rows)), values, color="#4c72b0")
        ax.set_yticks(range(len(rows)), names, fontsize=8)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set_xlim(right=max(values) * 4)  # room for the labels
        for i, (v, label) in enumerate(zip(values, labels)):
            ax.text(v, i, label, va="center", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _short(value: float) -> str:
    """3 significant digits, without an exponent below a million."""
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def _status(text: str) -> None:
    """A transient status line on a terminal's stderr (nothing when stderr is not a terminal)."""
    if sys.stderr.isatty():
        sys.stderr.write("\r\033[K" + (f"running {text} ..." if text else ""))
        sys.stderr.flush()


if __name__ == "__main__":
    sys.exit(main())
