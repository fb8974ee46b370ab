"""Build the Cython kernels. Metadata lives in pyproject.toml; this file is only
the extension list and the compiler flags.

Environment switches:
  FASTCONV_DEBUG=1    bounds/wraparound checks on, -O0 -g (a debug build)
  FASTCONV_NATIVE=1   -march=native (the machine's full vector width; not portable)
  FASTCONV_NO_OPENMP=1  build serial kernels even if the compiler has OpenMP
"""
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("FASTCONV_DEBUG", "0") not in ("", "0")
KERNELS = ["openmp_info", "gemm1x1", "stretch", "mapped", "batched", "col2im",
           "input_grad", "weight_grad", "depthwise", "fused", "direct", "winograd",
           "phased"]
# C headers a kernel includes: a change to one rebuilds the kernel
HEADERS = {"depthwise": ["_depthwise.h", "_depthwise_impl.h", "_depthwise_fixed.h"],
           "fused": ["_blocks.pxd", "_fused_kernels.h", "_fused_generic.h", "_fused_avx2.h", "_fused_avx512.h"],
           "direct": ["_blocks.pxd", "_direct_kernels.h", "_direct_generic.h", "_direct_vector.h",
                      "_direct_avx2.h", "_direct_avx512.h", "_fused_kernels.h",
                      "_fused_generic.h", "_fused_avx2.h", "_fused_avx512.h"],
           "winograd": ["_blocks.pxd", "_winograd.h", "_fused_kernels.h", "_fused_generic.h",
                        "_fused_avx2.h", "_fused_avx512.h"]}


def openmp_flags():
    """Compile and link flags for OpenMP, or none if the compiler lacks it.

    The kernels are written so that without OpenMP they still build and run
    serially (Cython's prange degrades to a plain loop), so a missing OpenMP is
    a slower build, not a broken one.
    """
    if os.environ.get("FASTCONV_NO_OPENMP", "0") not in ("", "0"):
        return []
    if sys.platform == "darwin":
        candidates = [["-Xpreprocessor", "-fopenmp"], ["-fopenmp"]]
    else:
        candidates = [["-fopenmp"]]
    compiler = sysconfig.get_config_var("CC") or "cc"
    compiler = compiler.split()[0]
    if shutil.which(compiler) is None:
        return []
    test = "#include <omp.h>\nint main(void){return omp_get_max_threads() > 0 ? 0 : 1;}\n"
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "t.c")
        with open(src, "w") as f:
            f.write(test)
        for flags in candidates:
            cmd = [compiler, *flags, src, "-o", os.path.join(tmp, "t"), *(["-lomp"] if sys.platform == "darwin" else [])]
            if subprocess.run(cmd, capture_output=True).returncode == 0:
                return flags
    print("fastconv: compiler has no OpenMP; building serial kernels", file=sys.stderr)
    return []


omp = openmp_flags()
compile_args = ["-O0", "-g"] if DEBUG else ["-O3"]
if os.environ.get("FASTCONV_NATIVE", "0") not in ("", "0"):
    compile_args.append("-march=native")
compile_args += omp
link_args = list(omp)

extensions = [
    Extension(
        f"fastconv._kernels.{name}",
        [f"fastconv/_kernels/{name}.pyx"],
        include_dirs=[numpy.get_include(), "fastconv/_kernels"],
        depends=[f"fastconv/_kernels/{header}" for header in HEADERS.get(name, [])],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=compile_args,
        extra_link_args=link_args,
    )
    for name in KERNELS
]

directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "nonecheck": DEBUG,
    "cdivision": not DEBUG,
    "cpow": True,
    "embedsignature": True,
}

setup(ext_modules=cythonize(extensions, compiler_directives=directives))
