"""Check what the sdist holds: the Cython sources and the generator, never generated or compiled files.

    python .ci/check_sdist.py dist/fastgrad-X.Y.Z.tar.gz
"""
from __future__ import annotations

import sys
import tarfile

# generated at build time by src/fastgrad/codegen.py from the op table, or compiled: never shipped
GENERATED = {"src/fastgrad/_ops.pxd", "src/fastgrad/_var.pxi", "src/fastgrad/_tensor_ops.pxi",
             "fastgrad/_engine.pyi"}
FORBIDDEN_SUFFIXES = (".c", ".cpp", ".so", ".pyd", ".o", ".html", ".pyc")
# what a from-scratch build and the tests need
REQUIRED = [
    "pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "CHANGELOG.md",
    "src/fastgrad/codegen.py", "src/fastgrad/_engine.pyx", "src/fastgrad/_engine.pxd",
    "src/fastgrad/_types.pxd", "src/fastgrad/_ops.pxd.in", "src/fastgrad/_var.pxi.in",
    "src/fastgrad/_tensor_ops.pxi.in",
    "src/fastgrad/_engine.pyi.in", "src/fastgrad/_nn.pyx", "src/fastgrad/_optim.pyx",
    "src/fastgrad/_replay.pyx", "src/fastgrad/_replay_avx2.pyx",
    "fastgrad/__init__.py", "fastgrad/_optable.py", "fastgrad/py.typed",
    "tests/conftest.py", "docs/tutorial.md", "docs/conf.py",
]


def main(path: str) -> int:
    with tarfile.open(path) as tar:
        names = [m.name.split("/", 1)[1] for m in tar.getmembers() if m.isfile() and "/" in m.name]
    problems = [f"generated file shipped: {n}" for n in names if n in GENERATED]
    problems += [f"compiled or generated file shipped: {n}" for n in names if n.endswith(FORBIDDEN_SUFFIXES)]
    problems += [f"missing: {n}" for n in REQUIRED if n not in names]
    if problems:
        print("\n".join(f"check_sdist: {p}" for p in problems), file=sys.stderr)
        return 1
    pyx = sum(n.endswith((".pyx", ".pxd", ".pxi", ".in")) for n in names)
    print(f"check_sdist: {len(names)} files, {pyx} Cython sources and templates, "
          "no generated or compiled files")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
