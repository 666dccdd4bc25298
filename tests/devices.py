"""The devices the compiled-op tests run on: the CPU always, CUDA where a GPU and a CUDA build of
asr._C are both present.

`@DEVICES` parametrizes a test over `device` in ("cpu", "cuda"); `@CUDA` marks a test that needs
CUDA. Where there is no GPU, or asr._C was built without its CUDA kernels (CI, and any machine
without a CUDA toolkit), the CUDA cases skip with that reason. On a GPU, `pytest -k cuda` selects
them by their ids (scripts/gpu_session.sh does).
"""

from __future__ import annotations

import pytest
import torch

from asr._ext import ops


def cuda_skip_reason() -> str | None:
    """Why the CUDA cases cannot run here, or None when they can."""
    if not torch.cuda.is_available():
        return "no GPU visible to torch"
    if not ops().with_cuda:
        return "asr._C was built without CUDA kernels (no CUDA toolkit at build time)"
    return None


CUDA = pytest.mark.skipif(cuda_skip_reason() is not None, reason=cuda_skip_reason() or "")
DEVICES = pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
