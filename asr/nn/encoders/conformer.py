"""Conformer encoder (Gulati et al. 2020) with rotary self-attention.

Block: x + FF/2 -> x + MHSA -> x + Conv -> x + FF/2 -> LayerNorm (macaron).
Differences from the paper, and why:
- rotary position embedding (RoPE) instead of Transformer-XL relative positions:
  it is relative by construction, costs nothing extra with torch's fused attention,
  and stays exact with cached keys in chunked streaming;
- LayerNorm instead of BatchNorm in the conv module, so statistics never depend on
  padding or batch composition (training, offline and streaming agree).
Padding is masked in attention keys and zeroed before every convolution.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .subsampling import Conv2dSubsampling4


@dataclass(frozen=True)
class ConformerConfig:
    in_features: int = 80  # fbank bins
    d_model: int = 144  # model width
    num_layers: int = 8  # conformer blocks
    num_heads: int = 4  # attention heads (d_model % num_heads == 0)
    ff_mult: int = 4  # feed-forward hidden = ff_mult * d_model
    conv_kernel: int = 15  # depthwise conv kernel (odd)
    dropout: float = 0.1  # residual/attention dropout
    subsampling_channels: int = 64  # conv2d subsampling channels
    rope_base: float = 10000.0  # rotary frequency base


def padding_mask(lens: torch.Tensor, t: int) -> torch.Tensor:
    """valid[B, T]: True on real frames."""
    return torch.arange(t, device=lens.device)[None, :] < lens[:, None]


class RotaryEmbedding(nn.Module):
    """cos/sin tables for rotary position embedding over head dim `dim`."""

    def __init__(self, dim: int, base: float = 10000.0):
        super().__init__()
        inv = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
        self.register_buffer("inv_freq", inv, persistent=False)

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """positions[T] -> (cos[T, dim], sin[T, dim])."""
        ang = positions.float()[:, None] * self.inv_freq[None, :]
        ang = torch.cat([ang, ang], dim=-1)
        return ang.cos(), ang.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x[B, H, T, Dh] rotated by position."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


class FeedForward(nn.Module):
    def __init__(self, d: int, mult: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, d * mult), nn.SiLU(), nn.Dropout(dropout),
                                 nn.Linear(d * mult, d), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class RotarySelfAttention(nn.Module):
    """Multi-head self-attention with RoPE. forward(x[B,T,D], attn_mask[B,1,T,T] bool) -> [B,T,D]."""

    def __init__(self, d: int, heads: int, dropout: float, rope_base: float):
        super().__init__()
        assert d % heads == 0, "d_model must be divisible by num_heads"
        self.h, self.dh = heads, d // heads
        self.norm = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.rope = RotaryEmbedding(self.dh, rope_base)
        self.dropout = dropout
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm(x)).view(b, t, 3, self.h, self.dh).permute(2, 0, 3, 1, 4)
        cos, sin = self.rope(torch.arange(t, device=x.device))
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0)
        return self.drop(self.out(y.transpose(1, 2).reshape(b, t, d)))


class ConvModule(nn.Module):
    """Pointwise(2x) + GLU -> depthwise conv -> LayerNorm -> SiLU -> pointwise.

    forward(x[B,T,D], valid[B,T]) -> [B,T,D]; padded frames are zeroed before the
    depthwise conv so they never leak into real frames.
    """

    def __init__(self, d: int, kernel: int, dropout: float):
        super().__init__()
        assert kernel % 2 == 1, "conv kernel must be odd"
        self.norm = nn.LayerNorm(d)
        self.pw1 = nn.Linear(d, 2 * d)
        self.dw = nn.Conv1d(d, d, kernel, padding=kernel // 2, groups=d)
        self.norm2 = nn.LayerNorm(d)
        self.pw2 = nn.Linear(d, d)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        y = F.glu(self.pw1(self.norm(x)), dim=-1)
        y = y.masked_fill(~valid[..., None], 0.0)
        y = self.dw(y.transpose(1, 2)).transpose(1, 2)
        y = self.pw2(F.silu(self.norm2(y)))
        return self.drop(y)


class ConformerBlock(nn.Module):
    def __init__(self, c: ConformerConfig):
        super().__init__()
        self.ff1 = FeedForward(c.d_model, c.ff_mult, c.dropout)
        self.attn = RotarySelfAttention(c.d_model, c.num_heads, c.dropout, c.rope_base)
        self.conv = ConvModule(c.d_model, c.conv_kernel, c.dropout)
        self.ff2 = FeedForward(c.d_model, c.ff_mult, c.dropout)
        self.norm = nn.LayerNorm(c.d_model)

    def forward(self, x: torch.Tensor, valid: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        x = x + 0.5 * self.ff1(x)
        x = x + self.attn(x, attn_mask)
        x = x + self.conv(x, valid)
        x = x + 0.5 * self.ff2(x)
        return self.norm(x)


class ConformerEncoder(nn.Module):
    """forward(x[B, T, F], x_lens[B]) -> (y[B, T', d_model], y_lens[B]) with T' ~ T/4."""

    def __init__(self, **kwargs):
        super().__init__()
        self.config = c = ConformerConfig(**kwargs)
        self.subsampling = Conv2dSubsampling4(c.in_features, c.d_model, c.subsampling_channels)
        self.drop = nn.Dropout(c.dropout)
        self.layers = nn.ModuleList(ConformerBlock(c) for _ in range(c.num_layers))
        self.output_dim = c.d_model
        self.subsampling_factor = 4

    def forward(self, x: torch.Tensor, x_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y, lens = self.subsampling(x, x_lens)
        valid = padding_mask(lens, y.shape[1])
        attn_mask = valid[:, None, None, :]  # keys only; padded queries still see real keys
        y = self.drop(y)
        for layer in self.layers:
            y = layer(y, valid, attn_mask)
        return y.masked_fill(~valid[..., None], 0.0), lens
