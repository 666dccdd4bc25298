"""Builds the compiled ops (csrc/) as the extension `asr._C` against the installed torch.

Install with `pip install --no-build-isolation -e .` after `pip install torch==...`
(`make setup` does this), so the extension is compiled against the torch you run.
CUDA sources (csrc/**/*_cuda.cu: the kernels) are added when torch has CUDA and a toolkit is found
(ASR_FORCE_CUDA=1 forces it), with the macro ASR_WITH_CUDA, which also compiles the torch-facing
wrappers (csrc/**/*_cuda_host.cpp; empty units without it) and their dispatch in bindings.cpp.
A regular (non-editable) build also copies the top-level conf/, the configs' one source, into
the package as asr/conf (asr/configs.py finds it there; editable installs read conf/ itself).
"""

from __future__ import annotations

import glob
import os
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py

try:
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
except ImportError as e:  # pragma: no cover - build-time message
    raise SystemExit(
        "asr's build needs torch installed first, and --no-build-isolation: "
        "`pip install torch==2.13.0 && pip install --no-build-isolation -e .` (or `make setup`)"
    ) from e

here = os.path.dirname(os.path.abspath(__file__))
cpp = sorted(glob.glob(os.path.join("csrc", "**", "*.cpp"), recursive=True))
cu = sorted(glob.glob(os.path.join("csrc", "**", "*_cuda.cu"), recursive=True))
with_cuda = bool(cu) and torch.cuda.is_available() and CUDA_HOME is not None or os.environ.get("ASR_FORCE_CUDA") == "1"
cxx = ["-O3", "-fopenmp", "-std=c++17"]
macros = [("ASR_WITH_CUDA", None)] if with_cuda else []
if with_cuda:
    ext = CUDAExtension(
        "asr._C",
        cpp + cu,
        define_macros=macros,
        include_dirs=[os.path.join(here, "csrc")],
        # no --use_fast_math: the lattices' exp/log must round as on the CPU (the kernels are latency-bound,
        # not arithmetic-bound, so it would buy nothing)
        extra_compile_args={"cxx": cxx, "nvcc": ["-O3", "-std=c++17"]},
        extra_link_args=["-fopenmp"],
    )
else:
    ext = CppExtension(
        "asr._C", cpp, include_dirs=[os.path.join(here, "csrc")], extra_compile_args=cxx, extra_link_args=["-fopenmp"]
    )


class BuildPyWithConf(build_py):
    """build_py that also ships conf/ as the package data asr/conf (wheels, `pip install .`)."""

    def run(self):
        super().run()
        if not self.editable_mode:
            target = os.path.join(self.build_lib, "asr", "conf")
            shutil.rmtree(target, ignore_errors=True)  # nothing stale from an earlier build
            self.copy_tree(os.path.join(here, "conf"), target)


setup(
    ext_modules=[ext], cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True), "build_py": BuildPyWithConf}
)
