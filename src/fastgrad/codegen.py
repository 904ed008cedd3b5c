"""Generate the engine's op-dependent sources from the op table (fastgrad/_optable.py).

    python src/fastgrad/codegen.py [--debug]     (setup.py runs it before every build)

Each template ``X.in`` is expanded with Cython's Tempita into ``X`` (the stub template's output goes into the
package, next to the compiled module it describes). The outputs are build products: never committed, written
only when their text changes (so an unchanged table triggers no recompilation). ``--debug`` makes every
op-table switch abort with a message on an op code the table does not know (FASTGRAD_DEBUG=1 builds).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from typing import Any, Dict, List, Tuple

from Cython import Tempita

HERE = os.path.dirname(os.path.abspath(__file__))           # src/fastgrad
ROOT = os.path.dirname(os.path.dirname(HERE))               # the repository (or unpacked sdist)

# (template, output), relative to ROOT
TEMPLATES: Tuple[Tuple[str, str], ...] = (
    ("src/fastgrad/_ops.pxd.in", "src/fastgrad/_ops.pxd"),
    ("src/fastgrad/_var.pxi.in", "src/fastgrad/_var.pxi"),
    ("src/fastgrad/_tensor_ops.pxi.in", "src/fastgrad/_tensor_ops.pxi"),
    ("src/fastgrad/_engine.pyi.in", "fastgrad/_engine.pyi"),
)


def load_table() -> Any:
    """fastgrad/_optable.py as a module of its own (the package cannot be imported before it is built)."""
    path = os.path.join(ROOT, "fastgrad", "_optable.py")
    spec = importlib.util.spec_from_file_location("_fastgrad_optable", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load the op table from {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module     # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


def context(table: Any, debug: bool) -> Dict[str, Any]:
    """What the templates see."""
    ops = table.OPS
    valued = [op for op in ops if op.form in (table.UNARY, table.BINARY, table.CONST)]
    return {
        "GENERATED": "GENERATED from fastgrad/_optable.py by src/fastgrad/codegen.py: do not edit; edit the "
                     "table or the template (this file's name + .in).",
        "ops": ops,
        "valued": valued,
        "curved": [op for op in valued if op.second_order],
        "unary_ops": [op for op in ops if op.form == table.UNARY],
        "binary_functions": [op for op in ops if op.form == table.BINARY and op.function],
        "operators": table.OPERATORS,
        "public_functions": table.PUBLIC_FUNCTIONS,
        "code": lambda name: table.BY_NAME[name].code,
        "width": max(len(op.code) for op in ops),
        "debug": debug,
        "repr": repr,
    }


def render(debug: bool = False, root: str = ROOT) -> List[str]:
    """Expand every template; return the outputs whose text changed."""
    ctx = context(load_table(), debug)
    changed = []
    for template, output in TEMPLATES:
        with open(os.path.join(root, template), encoding="utf-8") as f:
            text = Tempita.Template(f.read(), name=template).substitute(ctx)
        path = os.path.join(root, output)
        try:
            with open(path, encoding="utf-8") as f:
                if f.read() == text:
                    continue
        except FileNotFoundError:
            pass
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        changed.append(output)
    return changed


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="abort on op codes the table does not know")
    args = parser.parse_args(argv)
    for output in render(args.debug):
        print(f"codegen: wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
