"""Build the Cython extensions: every src/fastgrad/_*.pyx becomes fastgrad._*.

Compiler directives live here and only here. FASTGRAD_DEBUG=1 turns the safety checks back on
(bounds, wraparound, initialized memoryviews, Python division semantics) and adds line tracing.
"""
import glob
import os

from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("FASTGRAD_DEBUG", "") not in ("", "0")

directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": not DEBUG,
    "infer_types": True,
    "embedsignature": True,
}

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
