"""The `fastgrad` command (also `python -m fastgrad`): `demo` trains on two moons (or, `demo digits`, on
scikit-learn's handwritten digits), `bench` measures speed."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

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
    demo.add_argument("dataset", nargs="?", choices=["moons", "digits"], default="moons",
                      help="moons (default): micrograd's two moons; digits: scikit-learn's 8x8 digits, "
                           "MLP 64-128-10 with Tensor parameters, Adam, minibatches (needs scikit-learn: "
                           "pip install 'fastgrad[data]')")
    demo.add_argument("--steps", type=_positive_int, default=None, help="training steps (default 100; moons)")
    demo.add_argument("--epochs", type=_positive_int, default=None,
                      help=f"passes over the training images (default {DIGITS_EPOCHS}; digits)")
    demo.add_argument("--batch-size", type=_positive_int, default=None,
                      help="images per minibatch (default 64; digits)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the data and of the weights (default 0)")
    demo.add_argument("--hidden", type=_hidden, default=None, metavar="16,16",
                      help="hidden layer sizes (default 16,16 for moons, 128 for digits)")
    demo.add_argument("--optimizer", choices=["sgd", "adam"], default=None, help="default sgd (moons)")
    demo.add_argument("--lr", type=_nonnegative_float, default=None,
                      help=f"initial learning rate (default 1.0 for sgd, 0.05 for adam; {DIGITS_LR:g} for "
                           "digits)")
    engine = demo.add_mutually_exclusive_group()
    engine.add_argument("--compile", action="store_true",
                        help="compile the loss with fg.compile: traced once, replayed in C (the same losses)")
    engine.add_argument("--batched", action="store_true",
                        help="replay one point's loss over the batch with fg.vmap (the same losses to "
                             "rounding)")
    engine.add_argument("--tensor", action="store_true",
                        help="train the model with Tensor parameters on the points as one matrix (the same "
                             "losses to rounding)")
    demo.add_argument("--compare", action="store_true",
                      help="also run the same steps on the other fastgrad backends, hand-written NumPy, "
                           "fastgrad.reference, micrograd-style fg.Value code and micrograd (if installed), "
                           "and print the speedups")
    demo.add_argument("--plot", metavar="PNG",
                      help="write the decision boundary to this file (needs matplotlib)")
    demo.add_argument("--no-progress", action="store_true", help="do not draw progress bars")

    bench = commands.add_parser(
        "bench", help="run the benchmarks and print a Markdown table",
        description="Time the engine workloads, fg.compile's replay and fg.vmap's threads, the two-moons "
                    "training step on fastgrad (eager, compiled, batched, Tensor), hand-written NumPy and "
                    "the pure-Python reference (and micrograd / torch / jax when installed), with the "
                    "cyclic GC on as in any Python program, and again with it off; the fastgrad Tensor "
                    "per-op overhead on 4x4 arrays, and a digits epoch (MLP 64-128-10, Adam; needs "
                    "scikit-learn), each against hand-written NumPy and torch eager.")
    bench.add_argument("--quick", action="store_true", help="smaller sizes and fewer repeats (a rough table)")
    bench.add_argument("--only", choices=["engine", "compiled", "moons", "tensor", "digits"],
                       help="run only the engine workloads, only the compiled tapes' replay and threads, "
                            "only the two-moons training step, only the Tensor rows (per-op overhead and "
                            "the digits epoch), or only the digits epoch")
    bench.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    bench.add_argument("--plot", metavar="PNG", help="also draw the timings (needs matplotlib)")
    return parser


# the digits demo's defaults: ≥ 97% test accuracy with seed 0, and on average over seeds 0..9
# (tests/test_digits.py)
DIGITS_EPOCHS = 20
DIGITS_LR = 2e-3
_MOONS_ONLY = ("steps", "optimizer", "compile", "batched", "tensor", "compare", "plot")
_DIGITS_ONLY = ("epochs", "batch_size")


def _demo(args: argparse.Namespace) -> int:
    given = {name for name in (*_MOONS_ONLY, *_DIGITS_ONLY) if getattr(args, name) not in (None, False)}
    wrong = given & set(_MOONS_ONLY if args.dataset == "digits" else _DIGITS_ONLY)
    if wrong:
        options = ", ".join("--" + name.replace("_", "-") for name in sorted(wrong))
        print(f"error: {options} do(es) not apply to the {args.dataset} demo", file=sys.stderr)
        return 2
    if args.dataset == "digits":
        from fastgrad.app.digits import run_digits

        return run_digits(epochs=args.epochs or DIGITS_EPOCHS, batch_size=args.batch_size or 64,
                          hidden=args.hidden or [128], lr=DIGITS_LR if args.lr is None else args.lr,
                          seed=args.seed, progress=not args.no_progress)
    from fastgrad.app import demo

    backend = ("compiled" if args.compile else "batched" if args.batched else "tensor" if args.tensor
               else "fused")
    return demo.run(steps=args.steps or 100, seed=args.seed, hidden=args.hidden or [16, 16],
                    optimizer=args.optimizer or "sgd", lr=args.lr, compare=args.compare, plot=args.plot,
                    progress=not args.no_progress, backend=backend)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        return _demo(args)
    if args.command == "bench":
        from fastgrad.app.bench import run_bench

        return run_bench(quick=args.quick, json_path=args.json, plot_path=args.plot, only=args.only)
    raise AssertionError(args.command)  # argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
