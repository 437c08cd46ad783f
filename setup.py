"""Build script: declares the compiled extensions (the Cython backend).

Everything else about the package lives in pyproject.toml.

The Cython backend's kernels (fastloss/backends/cython) are compiled from one source into
up to three extension modules: ``_kernels`` for the baseline of the platform (on x86-64:
SSE2, which every x86-64 CPU has), and on x86-64 also ``_kernels_avx2`` (AVX2 + FMA) and
``_kernels_avx512`` (AVX-512 F/DQ/VL/BW), which the package imports instead only where the
CPU supports them (runtime dispatch; never ``-march=native``, so a wheel runs anywhere).
The ISA variants are optional: a compiler that cannot build them only loses speed.

Flags, and why:
  -O3                   vectorisation.
  -fno-math-errno       libm calls need not set errno (lets GCC inline sqrt, fabs...).
  -fno-trapping-math    FP operations are assumed not to trap: without it GCC refuses to
                        if-convert a ternary next to arithmetic (it cannot evaluate both
                        arms), so no loop with a select vectorises. It changes no value,
                        rounding, NaN or infinity (clang's default).
  -fopenmp              prange (compile and link); also enables the `omp simd` reductions
                        of _fastmath.h.
  --param=vect-max-version-for-alias-checks=32
                        a kernel loop that reads five per-row arrays and writes two needs
                        more run-time alias checks than GCC's default of 10 to vectorise.
  never -ffast-math     it would delete NaN/inf handling and, linked into the module, set
                        flush-to-zero for the whole process on import.
"""

import os
import platform
import sys
import tempfile

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

BASE_FLAGS = [
    "-O3",
    "-fno-math-errno",
    "-fno-trapping-math",
    "-fopenmp",
    "--param=vect-max-version-for-alias-checks=32",
]
ISA_FLAGS = {
    "avx2": ["-mavx2", "-mfma"],
    "avx512": [
        "-mavx2",
        "-mfma",
        "-mavx512f",
        "-mavx512dq",
        "-mavx512vl",
        "-mavx512bw",
        "-mprefer-vector-width=512",
    ],
}
PKG = "fastloss.backends.cython"
SRC = "fastloss/backends/cython"


# Dropped (with their link counterpart) where the compiler rejects them: GCC's --param on
# another compiler; OpenMP where there is none (prange then runs on one thread).
OPTIONAL_FLAGS = ("--param=vect-max-version-for-alias-checks=32", "-fopenmp")


class BuildExt(build_ext):
    """build_ext that first drops the OPTIONAL_FLAGS this compiler does not accept."""

    def build_extensions(self):
        rejected = {flag for flag in OPTIONAL_FLAGS if not self._accepts(flag)}
        for flag in sorted(rejected):
            print(f"fastloss: the compiler rejects {flag}; building without it")
        for ext in self.extensions:
            ext.extra_compile_args = [f for f in ext.extra_compile_args if f not in rejected]
            ext.extra_link_args = [f for f in ext.extra_link_args if f not in rejected]
        super().build_extensions()

    def _accepts(self, flag):
        with tempfile.TemporaryDirectory() as tmp:
            src = os.path.join(tmp, "probe.c")
            with open(src, "w") as f:
                f.write("int main(void) { return 0; }\n")
            try:
                objs = self.compiler.compile([src], output_dir=tmp, extra_postargs=[flag])
                self.compiler.link_executable(objs, "probe", output_dir=tmp, extra_postargs=[flag])
            except Exception:
                return False
        return True


def _extension(module, flags, optional=False):
    import numpy

    return Extension(
        f"{PKG}.{module}",
        [f"{SRC}/{module}.pyx"],
        include_dirs=[numpy.get_include(), SRC],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=BASE_FLAGS + flags,
        extra_link_args=["-fopenmp"],
        libraries=["m"],
        optional=optional,
    )


def _ext_modules():
    from Cython.Build import cythonize

    extensions = [_extension("_kernels", [])]
    if platform.machine().lower() in ("x86_64", "amd64") and sys.platform != "win32":
        extensions += [
            _extension(f"_kernels_{isa}", flags, optional=True) for isa, flags in ISA_FLAGS.items()
        ]
    return cythonize(
        extensions,
        compiler_directives={
            "language_level": 3,
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
        quiet=True,
    )


setup(ext_modules=_ext_modules(), cmdclass={"build_ext": BuildExt})
