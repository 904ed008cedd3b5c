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
import sysconfig

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

# NOTE: the op table's value/partials switches are inline functions that GCC's default limits no longer
# inline into the sweeps once the table passed ~30 ops: backward then cost 46% more instructions per node
# (callgrind). Raising the limit restores the old code. GCC only (clang has no such --param).
_cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or ""
INLINE = [] if "clang" in _cc else ["--param=max-inline-insns-single=1000"]

# the batched replay splits its samples across threads with OpenMP (cython.parallel.prange)
OPENMP = {os.path.join("src", "fastgrad", "_replay.pyx"): ["-fopenmp"]}

runpy.run_path(os.path.join("src", "fastgrad", "codegen.py"))["render"](debug=DEBUG)

extensions = [
    Extension(
        "fastgrad." + os.path.splitext(os.path.basename(path))[0],
        [path],
        # NOTE: -ffp-contract=off: no fused multiply-add contractions (the default on aarch64, and on x86-64
        # with -march=native), so every value stays bit-identical to the same expression on Python floats.
        extra_compile_args=(["-O0", "-g"] if DEBUG else ["-O3", *INLINE]) + ["-ffp-contract=off"]
        + OPENMP.get(path, []),
        extra_link_args=OPENMP.get(path, []),
    )
    for path in sorted(glob.glob(os.path.join("src", "fastgrad", "_*.pyx")))
]

setup(
    ext_modules=cythonize(extensions, include_path=["src"], compiler_directives=directives),
)
