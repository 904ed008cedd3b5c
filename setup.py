"""Build the Cython extensions: every src/fastgrad/_*.pyx becomes fastgrad._*.

First the op-dependent sources are generated from the op table (src/fastgrad/codegen.py; never committed).
Compiler directives live here and only here: no function overrides them. Division is always C division
(IEEE: x / 0 is inf, never ZeroDivisionError), which is the library's semantics, not a speed switch.
FASTGRAD_DEBUG=1 turns the safety checks back on (bounds, wraparound, initialized memoryviews), builds with
-O0 -g, and makes the op-table switches abort on an op code the table does not know.
"""
import glob
import os
import runpy

from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("FASTGRAD_DEBUG", "") not in ("", "0")

directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": True,
    "infer_types": True,
    "embedsignature": True,
}

runpy.run_path(os.path.join("src", "fastgrad", "codegen.py"))["render"](debug=DEBUG)

extensions = [
    Extension(
        "fastgrad." + os.path.splitext(os.path.basename(path))[0],
        [path],
        # NOTE: -ffp-contract=off: no fused multiply-add contractions (the default on aarch64, and on x86-64
        # with -march=native), so every value stays bit-identical to the same expression on Python floats.
        extra_compile_args=(["-O0", "-g"] if DEBUG else ["-O3"]) + ["-ffp-contract=off"],
    )
    for path in sorted(glob.glob(os.path.join("src", "fastgrad", "_*.pyx")))
]

setup(
    ext_modules=cythonize(extensions, include_path=["src"], compiler_directives=directives),
)
