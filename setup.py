"""Build the Cython extensions: every src/fastgrad/_*.pyx becomes fastgrad._*.

First the op-dependent sources are generated from the op table (src/fastgrad/codegen.py; never committed).
Compiler directives live here and only here: no function overrides them. Division is always C division
(IEEE: x / 0 is inf, never ZeroDivisionError), which is the library's semantics, not a speed switch.
FASTGRAD_DEBUG=1 turns the safety checks back on (bounds, wraparound, initialized memoryviews), builds with
-O0 -g, and makes the op-table switches abort on an op code the table does not know.
"""
import glob
import os
import platform
import runpy
import sysconfig

import numpy
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

# the batched replay splits its samples across threads with OpenMP (cython.parallel.prange); on x86-64 its
# kernels are also built with AVX2 (twice the vector width) as _replay_avx2, which fg.vmap uses only on a
# CPU that has AVX2. Same operations, same order: the same bits (no -mfma: no fused multiply-add).
_REPLAY = os.path.join("src", "fastgrad", "_replay.pyx")
_REPLAY_AVX2 = os.path.join("src", "fastgrad", "_replay_avx2.pyx")
X86_64 = platform.machine().lower() in ("x86_64", "amd64")
OPENMP = {_REPLAY: ["-fopenmp"], _REPLAY_AVX2: ["-fopenmp"]}      # compile and link flags
ISA = {_REPLAY_AVX2: ["-mavx2"]}                                    # compile flags
# the optimizers' loops: sqrt as the instruction (no errno to set), so Adam's loop over a Tensor's elements
# (adam_plain) vectorizes. sqrt is correctly rounded either way: the same bits.
_OPTIM = os.path.join("src", "fastgrad", "_optim.pyx")
MATH = {_OPTIM: ["-fno-math-errno"]}

runpy.run_path(os.path.join("src", "fastgrad", "codegen.py"))["render"](debug=DEBUG)

extensions = [
    Extension(
        "fastgrad." + os.path.splitext(os.path.basename(path))[0],
        [path],
        # NOTE: -ffp-contract=off: no fused multiply-add contractions (the default on aarch64, and on x86-64
        # with -march=native), so every value stays bit-identical to the same expression on Python floats.
        extra_compile_args=(["-O0", "-g"] if DEBUG else ["-O3", *INLINE]) + ["-ffp-contract=off"]
        + OPENMP.get(path, []) + ISA.get(path, []) + MATH.get(path, []),
        extra_link_args=OPENMP.get(path, []),
        # the NumPy C API (the Tensor fast paths): wheels built against NumPy 2 headers import with any
        # NumPy >= 1.22 (the oldest the package supports) only with this target version set
        include_dirs=[numpy.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION"),
                       ("NPY_TARGET_VERSION", "NPY_1_22_API_VERSION")],
    )
    for path in sorted(glob.glob(os.path.join("src", "fastgrad", "_*.pyx")))
    if path != _REPLAY_AVX2 or X86_64
]

setup(
    ext_modules=cythonize(extensions, include_path=["src"], compiler_directives=directives),
)
