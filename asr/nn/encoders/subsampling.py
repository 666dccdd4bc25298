"""Convolutional front-ends that reduce the frame rate."""

from __future__ import annotations

import torch
from torch import nn


def conv2d_subsampling_lengths(lens: torch.Tensor) -> torch.Tensor:
    """Frames after two 3x3 stride-2 unpadded convolutions: ((T - 1) // 2 - 1) // 2."""
    return torch.clamp(((lens - 1) // 2 - 1) // 2, min=0)


class Conv2dSubsampling4(nn.Module):
    """4x time subsampling: two Conv2d(3x3, stride 2) + ReLU, then a linear projection.

    forward(x[B, T, F], lens[B]) -> (y[B, T', d_model], lens'[B]), T' = ((T-1)//2-1)//2.
    """

    def __init__(self, in_features: int, d_model: int, channels: int = 64):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, channels, 3, stride=2),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, stride=2),
            nn.ReLU(),
        )
        f_out = ((in_features - 1) // 2 - 1) // 2
        self.out = nn.Linear(channels * f_out, d_model)

    def forward(self, x: torch.Tensor, lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.conv(x.unsqueeze(1))  # [B, C, T', F']
        b, c, t, f = y.shape
        y = self.out(y.permute(0, 2, 1, 3).reshape(b, t, c * f))
        return y, conv2d_subsampling_lengths(lens)

    # streaming ---------------------------------------------------------------------
    # Output frame j reads input frames 4j .. 4j+6 (two unpadded 3x3 stride-2 convs), so
    # the stream is cut at multiples of 4 input frames and the 3 frames an output still
    # needs are carried over. Output frames then equal those of one pass over the whole input.
    RECEPTIVE = 7
    STRIDE = 4

    @staticmethod
    def chunk_input_frames(out_frames: int, first: bool) -> int:
        """Feature frames one call needs to yield `out_frames` frames (the first call has no carry-over)."""
        return Conv2dSubsampling4.STRIDE * out_frames + (
            Conv2dSubsampling4.RECEPTIVE - Conv2dSubsampling4.STRIDE if first else 0
        )

    def forward_chunk(
        self, x: torch.Tensor, lens: torch.Tensor, cache: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x[B, T, F] new feature frames (lens[B] valid), cache[B, S, F] carried frames (S = 0 at first).

        Returns (y[B, T', d_model], lens'[B], new cache). Streams may end with a shorter
        final chunk (lens[b] < T); the cache is cut for the streams still running, which
        all have the full T frames.
        """
        full = torch.cat([cache, x], dim=1)
        n_out = int(conv2d_subsampling_lengths(torch.tensor(full.shape[1])))
        if n_out > 0:
            y, _ = self.forward(full, lens)
        else:
            y = full.new_zeros(full.shape[0], 0, self.out.out_features)
        new_cache = full[:, self.STRIDE * n_out :]
        return y, conv2d_subsampling_lengths(lens + cache.shape[1]), new_cache
