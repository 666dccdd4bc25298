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
            nn.Conv2d(1, channels, 3, stride=2), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, stride=2), nn.ReLU(),
        )
        f_out = ((in_features - 1) // 2 - 1) // 2
        self.out = nn.Linear(channels * f_out, d_model)

    def forward(self, x: torch.Tensor, lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.conv(x.unsqueeze(1))  # [B, C, T', F']
        b, c, t, f = y.shape
        y = self.out(y.permute(0, 2, 1, 3).reshape(b, t, c * f))
        return y, conv2d_subsampling_lengths(lens)
