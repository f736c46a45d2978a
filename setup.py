"""Builds the one native extension, ``hvx._native``, from ``csrc/*.cpp``.

All metadata lives in pyproject.toml. Switches (environment variables):
``HVX_DEBUG=1`` builds with -O0 -g; ``HVX_SANITIZE=1`` adds
-fsanitize=address,undefined (run the tests with the sanitizer runtime preloaded);
``HVX_NO_OPENMP=1`` builds without OpenMP; ``MAX_JOBS`` bounds parallel compiles.
"""

import os
import sys
import tempfile
from glob import glob

from pybind11.setup_helpers import ParallelCompile, Pybind11Extension, build_ext
from setuptools import setup
from setuptools.errors import CompileError


def _flag_works(compiler, flags: list[str]) -> bool:
    """Returns True when ``compiler`` compiles and links a tiny OpenMP program."""
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.cpp")
        with open(src, "w") as f:
            f.write("#include <omp.h>\nint main(){return omp_get_max_threads() > 0 ? 0 : 1;}\n")
        try:
            objs = compiler.compile([src], output_dir=tmp, extra_postargs=flags)
            compiler.link_executable(objs, os.path.join(tmp, "probe"), extra_postargs=flags)
        except Exception:
            return False
    return True


class HvxBuildExt(build_ext):
    """build_ext that requires C++17 and adds OpenMP when the compiler has it."""

    def build_extensions(self):
        ct = self.compiler.compiler_type
        if ct == "msvc":
            cflags, lflags, omp = ["/O2", "/std:c++17"], [], ["/openmp"]
        else:
            debug = os.environ.get("HVX_DEBUG") == "1"
            cflags = ["-O0", "-g"] if debug else ["-O3"]
            lflags = []
            if os.environ.get("HVX_SANITIZE") == "1":
                san = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-g"]
                cflags += san
                lflags += san
            omp = ["-fopenmp"]
        use_omp = os.environ.get("HVX_NO_OPENMP") != "1" and _flag_works(self.compiler, omp)
        if not use_omp:
            print(
                "hvx: building WITHOUT OpenMP (compiler has no working OpenMP or "
                "HVX_NO_OPENMP=1); batch functions will run on one thread.",
                file=sys.stderr,
            )
        for ext in self.extensions:
            ext.extra_compile_args += cflags + (omp if use_omp else [])
            ext.extra_link_args += lflags + (omp if use_omp and ct != "msvc" else [])
        try:
            super().build_extensions()
        except CompileError as err:
            raise CompileError(
                "hvx: building the native extension hvx._native failed. It needs a "
                "C++17 compiler (g++ >= 8 or clang >= 7) and the Python headers "
                f"(python3-dev). Original error: {err}"
            ) from err


ParallelCompile("MAX_JOBS", default=0).install()

setup(
    ext_modules=[
        Pybind11Extension(
            "hvx._native",
            sorted(glob("csrc/*.cpp")),
            include_dirs=["csrc"],
            cxx_std=17,
        )
    ],
    cmdclass={"build_ext": HvxBuildExt},
)
