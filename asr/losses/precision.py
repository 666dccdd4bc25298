"""Mixed precision in the losses: bfloat16 and float16 inputs are computed on in float32.

Under `trainer.precision=bf16-mixed` (or 16-mixed) the encoder and the heads may run in half
precision, but a loss sums thousands of log-probs and subtracts log-totals of thousands of nats:
in bfloat16 (8 significant bits) that sum alone is off by nats. And the compiled kernels
(csrc/transducer, csrc/fsa) and torch's CPU CTC take float32/float64 only. So every loss of this
package goes through `float32_loss`, which
- upcasts its bf16/fp16 tensor arguments to float32, so the loss is computed and returned in
  float32, while autograd's backward of the cast hands the input its gradient in its own dtype;
- turns autocast off inside, so no op of the loss runs in low precision behind its back (the
  simple joiner's matmul normalizer, asr.losses.pruned_rnnt, would otherwise run in bfloat16);
- leaves float32 and float64 inputs as they are.
tests/test_mixed_precision.py checks each loss against float32 and float64 on the same rounded inputs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import torch

LossFn = TypeVar("LossFn", bound=Callable[..., Any])

LOW_PRECISION = (torch.bfloat16, torch.float16)


def upcast(x: Any) -> Any:
    """x as float32 if it is a bfloat16/float16 tensor (differentiably), else x itself."""
    return x.float() if isinstance(x, torch.Tensor) and x.dtype in LOW_PRECISION else x


def float32_loss(fn: LossFn) -> LossFn:
    """Decorate a loss so that it computes in float32 (at least) whatever its inputs' precision and
    whether autocast is on (see the module docstring). Tensors nested in lists are not touched."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        args = tuple(upcast(a) for a in args)
        kwargs = {k: upcast(v) for k, v in kwargs.items()}
        device = next((a.device.type for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)), "cpu")
        if not torch.is_autocast_enabled(device):
            return fn(*args, **kwargs)
        with torch.autocast(device, enabled=False):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
