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


class PairPooling(nn.Module):
    """2x time reduction between Conformer stages (the progressive downsampling of Efficient
    Conformer, Burchi & Vielzeuf 2021): y_j = w0 * x_2j + w1 * x_2j+1 + b per channel, a depthwise
    conv of kernel 2 and stride 2 initialized to the mean of the pair.

    The paper strides the depthwise conv of a stage's first block instead; a pair-wise reduction
    is used here because output j reads only frames 2j and 2j+1: a chunk of an even number of
    frames reduces to exactly the frames one pass over the whole input gives, so streaming needs
    no cache at this point. Padded frames are zeroed first, and the frame after an odd-length
    input's last is zero too, in one pass and in chunks alike.

    forward(x[B, T, D], lens[B]) -> (y[B, ceil(T / 2), D], ceil(lens / 2)).
    """

    def __init__(self, d_model: int):
        super().__init__()
        self.conv = nn.Conv1d(d_model, d_model, 2, stride=2, groups=d_model)
        with torch.no_grad():
            self.conv.weight.fill_(0.5)
            self.conv.bias.zero_()

    def forward(self, x: torch.Tensor, lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        valid = torch.arange(x.shape[1], device=x.device)[None, :] < lens[:, None]
        x = x.masked_fill(~valid[..., None], 0.0).transpose(1, 2)  # [B, D, T]
        # one zero frame always: the conv then makes ceil(T / 2) frames (no size computed from T in
        # Python, so an ONNX export keeps T dynamic)
        x = nn.functional.pad(x, (0, 1))
        return self.conv(x).transpose(1, 2), torch.div(lens + 1, 2, rounding_mode="floor")
