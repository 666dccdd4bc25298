"""The encoder interface every encoder implements, and the extra one streaming encoders add.

Shapes: features x[B, T, F] with lengths x_lens[B] (int64) -> y[B, T', D] with y_lens[B],
T' = T / subsampling_factor (rounded as the encoder's subsampling does). Padding is
masked inside and zero in the output.

Streaming (`init_state` / `chunk_input_frames` / `forward_chunk`) has one signature for
every encoder, so the streaming runner never asks which encoder it drives:

    state = enc.init_state(batch, chunk_size, left_context, device)
    while audio:
        n = enc.chunk_input_frames(state)       # feature frames for the next whole chunk
        y, y_lens, state = enc.forward_chunk(x[:, :n], x_lens, state)

`chunk_size` and `left_context` count encoder frames (-1 = unlimited left context). An
encoder whose output does not depend on how its input is chunked (the recurrent ones)
still uses `chunk_size` to size its calls and ignores `left_context`. How many frames a
call needs depends on the state (the first call has no frames carried over from the
previous one), hence `chunk_input_frames(state)`. States are dataclasses of tensors:
batchable, savable, exportable.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch

from .chunking import FULL


@runtime_checkable
class Encoder(Protocol):
    """forward(x[B, T, F], x_lens[B], chunk_size, left_context) -> (y[B, T', output_dim], y_lens[B]).

    chunk_size / left_context (encoder frames, -1 = full) give the chunk mask of an encoder that
    has one (Conformer); None is full context, except in training with dynamic chunks, where the
    encoder samples. Encoders without a mask (the recurrent ones are causal by construction) take
    and ignore them.
    """

    output_dim: int  # D, the width of the output frames
    subsampling_factor: int  # input frames per output frame

    def __call__(
        self, x: torch.Tensor, x_lens: torch.Tensor, chunk_size: int | None = None, left_context: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]: ...

    def training_chunking(self) -> tuple[int, int]:
        """(chunk_size, left_context) for one training batch: a sample of the configured dynamic
        chunks, or (-1, -1). The model passes it to the encoder and to the heads, so that a head
        whose outputs depend on the chunks (TAED's decoder) sees the encoder's."""
        ...

    @property
    def streams(self) -> bool:
        """True when chunked inference (init_state / forward_chunk) equals the offline output under
        the same chunk mask; False for encoders that read the future (a non-causal Conformer
        conv, a bidirectional LSTM)."""
        ...


@runtime_checkable
class StreamingEncoder(Encoder, Protocol):
    """An encoder with cache-based chunked inference."""

    def init_state(
        self, batch_size: int, chunk_size: int, left_context: int, device: torch.device | str = "cpu"
    ) -> Any:
        """Empty caches for `batch_size` streams decoded in chunks of `chunk_size` encoder frames."""
        ...

    def chunk_input_frames(self, state: Any) -> int:
        """Feature frames the next forward_chunk call takes to yield one whole chunk."""
        ...

    def forward_chunk(
        self, x: torch.Tensor, x_lens: torch.Tensor, state: Any
    ) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """The next feature frames x[B, n, F] (x_lens[B] valid; a stream's last call may be
        shorter) -> (y[B, T', D], y_lens[B], next state)."""
        ...

    def export_streaming_step(self, chunk_size: int, left_context: int) -> Any:
        """forward_chunk as a module with fixed-size caches in sherpa-onnx's layout, for `asr export
        --streaming` (asr/nn/encoders/export.py); NotExportable for encoders without one."""
        ...


class Unchunked:
    """training_chunking for encoders without a chunk mask: always full context."""

    def training_chunking(self) -> tuple[int, int]:
        return FULL, FULL


def check_streaming_args(chunk_size: int, left_context: int) -> None:
    """The one validation of streaming arguments, shared by every streaming encoder."""
    if chunk_size <= 0:
        raise ValueError(f"streaming needs chunk_size > 0 encoder frames, not {chunk_size}")
    if left_context < -1:
        raise ValueError(f"left_context must be >= 0 frames, or -1 for unlimited, not {left_context}")
