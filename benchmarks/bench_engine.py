"""Speed and memory of the compiled engine against the pure-Python reference (and micrograd when installed).

    python benchmarks/bench_engine.py [--quick] [--json out.json]

Prints a Markdown table of the workloads in fastgrad.app.workloads; --json also writes the rows.
"""
import argparse
import json
import platform
import sys

from fastgrad.app import workloads as benchmark


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="about tenfold smaller sizes (a smoke run)")
    parser.add_argument("--json", metavar="PATH", help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    rows = benchmark.run_all(quick=args.quick)
    print(benchmark.markdown_table(rows))
    mg = "micrograd " + ("installed" if benchmark.micrograd_value() else "not installed: its column is empty")
    print(f"\nPython {platform.python_version()} on {platform.machine()}; best of repeats; {mg}.")
    print(f"GC policy: {benchmark.GC_POLICY}.")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"python": platform.python_version(), "quick": args.quick, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
