"""SpecAugment on batched features (speed perturbation lives in asr.data.audio)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class SpecAugmentOptions:
    freq_masks: int = 2  # number of frequency masks per utterance
    freq_width: int = 27  # max width of each frequency mask (bins)
    time_masks: int = 10  # max number of time masks per utterance
    time_width: float = 0.05  # max width of a time mask as a fraction of the utterance


class SpecAugment(nn.Module):
    """Frequency and time masking (Park et al. 2019), vectorized over the batch.

    Time masks scale with each utterance's own length, so padding never changes how
    much of a real utterance is masked. Masked values are set to 0, i.e. the mean of
    normalized features. Active only in training mode.
    forward(feats[B, T, F], lens[B]) -> feats[B, T, F]
    """

    def __init__(self, opts: SpecAugmentOptions | None = None, **kwargs):
        super().__init__()
        self.opts = opts or SpecAugmentOptions(**kwargs)

    def forward(self, feats: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return feats
        o = self.opts
        b, t, f = feats.shape
        dev = feats.device
        mask = torch.zeros(b, t, f, dtype=torch.bool, device=dev)
        fidx = torch.arange(f, device=dev)[None, :]
        for _ in range(o.freq_masks):
            w = torch.randint(0, o.freq_width + 1, (b, 1), device=dev)
            start = (torch.rand(b, 1, device=dev) * (f - w + 1)).long()
            mask |= ((fidx >= start) & (fidx < start + w))[:, None, :]
        tidx = torch.arange(t, device=dev)[None, :]
        lens = lens.to(dev)
        max_w = (lens.float() * o.time_width).long().clamp(min=1)[:, None]  # [B, 1]
        for _ in range(o.time_masks):
            w = (torch.rand(b, 1, device=dev) * (max_w + 1).float()).long()
            start = (torch.rand(b, 1, device=dev) * (lens[:, None] - w + 1).clamp(min=1).float()).long()
            mask |= ((tidx >= start) & (tidx < start + w))[:, :, None]
        return feats.masked_fill(mask, 0.0)
