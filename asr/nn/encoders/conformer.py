"""Conformer encoder (Gulati et al. 2020) with rotary self-attention.

Block: x + FF/2 -> x + MHSA -> x + Conv -> x + FF/2 -> LayerNorm (macaron).
Differences from the paper, and why:
- rotary position embedding (RoPE) instead of Transformer-XL relative positions:
  it is relative by construction, costs nothing extra with torch's fused attention,
  and stays exact with cached keys in chunked streaming;
- LayerNorm instead of BatchNorm in the conv module, so statistics never depend on
  padding or batch composition (training, offline and streaming agree).
Padding is masked in attention keys and zeroed before every convolution.

Streaming (Noroozi et al., "Stateful Conformer with Cache-based Inference"): with
`causal: true` the depthwise convolution sees no future frames, and attention is
chunked (asr/nn/encoders/chunking.py). `chunk_sizes` / `left_contexts` turn on dynamic
chunk training: each training batch samples one pair, so one model serves several
latencies and, with -1 in chunk_sizes, full context. `init_state` + `forward_chunk` run
the same computation chunk by chunk with explicit caches (subsampling carry-over frames,
per-layer rotated keys and values of the left context, the conv's last kernel-1 frames);
the outputs equal `forward(x, x_lens, chunk_size, left_context)` (tests check it).

Efficient Conformer (Burchi & Vielzeuf 2021): `downsample_at` names the blocks that start a
stage at half the frame rate (asr/nn/encoders/subsampling.py PairPooling), e.g. 4x at the input
and 8x from block 3 on; `attention_groups` gives each stage's attention group size g: g
consecutive frames' queries, keys and values are concatenated and attend as one, so attention
costs (T/g)^2 instead of T^2 where the frame rate is highest. Chunk sizes and left contexts
count output frames; stage s works at 2^(S-1-s) times that rate, and g must divide that ratio,
so chunks and groups line up at every stage and streaming stays exact.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from .base import check_streaming_args
from .chunking import FULL, chunk_attention_mask, sample_chunking
from .export import ConformerStreamingStep
from .subsampling import Conv2dSubsampling4, PairPooling


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
    causal: bool = False  # causal depthwise conv: required for streaming
    chunk_sizes: tuple[int, ...] = ()  # dynamic chunk training: chunk sizes (encoder frames, -1 = full) per batch
    left_contexts: tuple[int, ...] = ()  # ... and left contexts (frames, -1 = unlimited) sampled with them
    downsample_at: tuple[int, ...] = ()  # Efficient Conformer: blocks that start a 2x slower stage, e.g. (3,)
    attention_groups: tuple[int, ...] = ()  # frames per attention group, one per stage (() = 1 everywhere)

    def __post_init__(self) -> None:
        at, n = self.downsample_at, self.num_layers
        if any(b <= a for a, b in zip((0, *at), at)) or (at and at[-1] >= n):
            raise ValueError(f"downsample_at must be increasing block indices in 1..{n - 1}, not {list(at)}")
        stages = len(at) + 1
        if self.attention_groups and len(self.attention_groups) != stages:
            raise ValueError(
                f"attention_groups needs one group size per stage ({stages}: downsample_at {list(at)}), "
                f"not {list(self.attention_groups)}"
            )
        for s, g in enumerate(self.attention_groups):
            ratio = 2 ** (stages - 1 - s)  # stage frames per output frame
            if g < 1 or ratio % g:
                raise ValueError(
                    f"attention group {g} of stage {s} must divide {ratio} (that stage's frames per output "
                    "frame), so that groups never straddle a streaming chunk"
                )

    @property
    def groups(self) -> tuple[int, ...]:
        """The attention group size of each stage."""
        return self.attention_groups or (1,) * (len(self.downsample_at) + 1)


@dataclass
class ConformerState:
    """Streaming caches of a batch of streams (plain tensors: batchable, savable, exportable)."""

    sub_cache: torch.Tensor  # [B, S, F] feature frames carried to the next subsampling call
    keys: tuple[torch.Tensor, ...]  # per block [B, H, C, Dh]: rotated keys of its stage's last C frames
    values: tuple[torch.Tensor, ...]  # per block [B, H, C, Dh]
    key_valid: tuple[torch.Tensor, ...]  # per stage [B, C] bool: cached frame is a real frame of that stream
    conv: torch.Tensor  # [L, B, D, K-1] last inputs of each depthwise conv (zeros at the start)
    offsets: torch.Tensor  # [stages] int64: frames each stage has seen (absolute position of the next)
    chunk_size: torch.Tensor  # [] int64: encoder frames per chunk (-1 = full context)
    left_context: torch.Tensor  # [] int64: frames of left context (-1 = unlimited)


def padding_mask(lens: torch.Tensor, t: int) -> torch.Tensor:
    """valid[B, T]: True on real frames."""
    return torch.arange(t, device=lens.device)[None, :] < lens[:, None]


def pad_to_multiple(x: torch.Tensor, dim: int, m: int) -> torch.Tensor:
    """x with zeros (False) appended along `dim` up to a multiple of m frames. Pads m - 1 and cuts
    back, rather than padding by -T % m: no size computed from T in Python, so an ONNX export keeps
    T dynamic."""
    n = x.shape[dim]
    pad = x.new_zeros(*x.shape[:dim], m - 1, *x.shape[dim + 1 :])
    return torch.cat([x, pad], dim=dim).narrow(dim, 0, (n + m - 1) // m * m)


def attention_mask(
    q_pos: torch.Tensor, k_pos: torch.Tensor, key_valid: torch.Tensor, chunk_size: int, left_context: int, group: int
) -> torch.Tensor:
    """mask[B, 1, Tq', Tk'] for queries at frame positions q_pos[Tq] and keys at k_pos[Tk] (consecutive,
    each starting at a multiple of `group`), key_valid[B, Tk]. With group g > 1 the mask is over groups
    (Tq' = ceil(Tq / g)): a group is a real key when any of its frames is, and chunks and left
    context count groups. Each query also sees its own key: a padded query past every visible real
    key would otherwise have no key at all, and the NaN of an empty softmax would reach real frames.
    """
    if group > 1:
        n_q, n_k = (q_pos.shape[0] + group - 1) // group, (k_pos.shape[0] + group - 1) // group
        key_valid = pad_to_multiple(key_valid, 1, group).reshape(key_valid.shape[0], n_k, group).any(-1)
        q_pos = torch.div(q_pos[0], group, rounding_mode="floor") + torch.arange(n_q, device=q_pos.device)
        k_pos = torch.div(k_pos[0], group, rounding_mode="floor") + torch.arange(n_k, device=k_pos.device)
        chunk_size = chunk_size if chunk_size == FULL else chunk_size // group
        left_context = left_context if left_context == FULL else left_context // group
    visible = chunk_attention_mask(q_pos, k_pos, chunk_size, left_context)
    # a comparison, not torch.eye: ONNX's EyeLike has no bool kernel in onnxruntime
    own = q_pos[:, None] == k_pos[None, :]
    return (key_valid[:, None, None, :] & visible[None, None]) | own


class RotaryEmbedding(nn.Module):
    """cos/sin tables for rotary position embedding over head dim `dim`."""

    def __init__(self, dim: int, base: float = 10000.0):
        super().__init__()
        inv = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
        self.register_buffer("inv_freq", inv, persistent=False)

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """positions[..., T] -> (cos[..., T, dim], sin[..., T, dim]) (per stream in an export step)."""
        ang = positions.float()[..., None] * self.inv_freq
        ang = torch.cat([ang, ang], dim=-1)
        return ang.cos(), ang.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x[..., T, Dh] rotated by position (cos, sin: [T, Dh])."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


class FeedForward(nn.Module):
    def __init__(self, d: int, mult: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(d),
            nn.Linear(d, d * mult),
            nn.SiLU(),
            nn.Dropout(dropout),
            nn.Linear(d * mult, d),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class RotarySelfAttention(nn.Module):
    """Multi-head self-attention with RoPE. forward(x[B,T,D], attn_mask[B,1,T,T] bool) -> [B,T,D].

    group g > 1 (Efficient Conformer's grouped attention): after rotation at their own positions,
    the queries, keys and values of g consecutive frames are concatenated per head ([T, Dh] ->
    [T/g, g Dh]) and attend as one, so a group's score is the sum of its frames' scores against the
    other group's frames at the same offsets, which keeps rotary positions relative. The mask is
    then over groups (`attention_mask`); padded frames' queries, keys and values are zeroed first so
    that a group half past the end reads the same in a batch, alone, and in chunks.
    """

    def __init__(self, d: int, heads: int, dropout: float, rope_base: float, group: int = 1):
        super().__init__()
        assert d % heads == 0, "d_model must be divisible by num_heads"
        self.h, self.dh, self.group = heads, d // heads, group
        self.norm = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.rope = RotaryEmbedding(self.dh, rope_base)
        self.dropout = dropout
        self.drop = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: tuple[torch.Tensor, torch.Tensor] | None = None,
        key_valid: torch.Tensor | None = None,
    ):
        """x[B,T,D], attn_mask[B,1,T,T+C] over (cached + new) keys (over groups when grouped), rope =
        (cos, sin) [T, Dh] of the frames' positions (default: positions 0..T-1; the encoder computes it
        once for all layers); key_valid[B, C+T]: real frames among the keys (needed when grouped).

        With cache = (keys, values) [B,H,C,Dh] of earlier frames (rotated at their positions),
        returns (y, (keys, values) of cache + x); without, returns y.
        """
        b, t, d = x.shape
        qkv = self.qkv(self.norm(x)).view(b, t, 3, self.h, self.dh).permute(2, 0, 3, 1, 4)
        cos, sin = self.rope(torch.arange(t, device=x.device)) if rope is None else rope
        q, k = apply_rotary(qkv[:2], cos, sin)  # queries and keys rotated in one pass
        v = qkv[2]
        if cache is not None:
            k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
        p = self.dropout if self.training else 0.0
        if self.group == 1:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p)
        else:
            if key_valid is None:
                raise ValueError("grouped attention needs key_valid (the real frames among the keys)")
            # a group's score sums its frames' products: padded frames of a real group must add nothing
            pad = ~key_valid[:, None, :, None]
            q = q.masked_fill(pad[:, :, pad.shape[2] - t :], 0.0)
            k, v = k.masked_fill(pad, 0.0), v.masked_fill(pad, 0.0)
            g = self.group
            y = F.scaled_dot_product_attention(*(_grouped(z, g) for z in (q, k, v)), attn_mask=attn_mask, dropout_p=p)
            y = y.reshape(b, self.h, y.shape[2] * g, self.dh)[:, :, :t]
        y = self.drop(self.out(y.transpose(1, 2).reshape(b, t, d)))
        return y if cache is None else (y, (k, v))

    def forward_inputs_cached(
        self,
        x: torch.Tensor,
        cache: torch.Tensor,
        attn_mask: torch.Tensor,
        rope_q: tuple[torch.Tensor, torch.Tensor],
        rope_k: tuple[torch.Tensor, torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Attention over a cache of the earlier frames' normalized inputs (self.norm of them, D
        wide) instead of their rotated keys and values (2 D wide): the layout of sherpa-onnx's
        streaming conformer (asr/nn/encoders/export.py). Keys and values of the cached frames are
        recomputed here, rotated at their positions, so the output equals forward(x, ..., cache=kv).

        Args:
            x: [B, T, D] the chunk's frames; cache: [B, C, D] normalized inputs of the C frames before.
            attn_mask: [B, 1, T or 1, C+T] bool over (cached + new) keys.
            rope_q: (cos, sin) [B, T, Dh] at the chunk frames' positions; rope_k: [B, C+T, Dh].
        Returns: (y[B, T, D], normalized inputs of cache + chunk [B, C+T, D]).
        """
        b, t, d = x.shape
        ctx = torch.cat([cache, self.norm(x)], dim=1)  # [B, C+T, D]
        w_q, w_kv = self.qkv.weight.split([d, 2 * d])
        b_q, b_kv = self.qkv.bias.split([d, 2 * d])
        q = F.linear(ctx[:, cache.shape[1] :], w_q, b_q).view(b, t, self.h, self.dh).transpose(1, 2)
        kv = F.linear(ctx, w_kv, b_kv).view(b, ctx.shape[1], 2, self.h, self.dh).permute(2, 0, 3, 1, 4)
        q = apply_rotary(q, rope_q[0][:, None], rope_q[1][:, None])  # [B, H, T, Dh]
        k = apply_rotary(kv[0], rope_k[0][:, None], rope_k[1][:, None])
        y = F.scaled_dot_product_attention(q, k, kv[1], attn_mask=attn_mask)
        return self.out(y.transpose(1, 2).reshape(b, t, d)), ctx


def _grouped(x: torch.Tensor, group: int) -> torch.Tensor:
    """x[B, H, T, Dh] -> [B, H, ceil(T / group), group * Dh]: consecutive frames side by side (zeros
    pad the last group)."""
    b, h, t, dh = x.shape
    return pad_to_multiple(x, 2, group).reshape(b, h, (t + group - 1) // group, group * dh)


class ConvModule(nn.Module):
    """Pointwise(2x) + GLU -> depthwise conv -> LayerNorm -> SiLU -> pointwise.

    forward(x[B,T,D], valid[B,T]) -> [B,T,D]; padded frames are zeroed before the
    depthwise conv so they never leak into real frames. Causal: the conv reads the
    current and kernel-1 past frames (zeros before the start); with a cache [B,D,K-1]
    of the past frames' inputs it also returns the next cache.
    """

    def __init__(self, d: int, kernel: int, dropout: float, causal: bool = False):
        super().__init__()
        assert kernel % 2 == 1, "conv kernel must be odd"
        self.causal = causal
        self.norm = nn.LayerNorm(d)
        self.pw1 = nn.Linear(d, 2 * d)
        self.dw = nn.Conv1d(d, d, kernel, groups=d)  # padding applied in forward
        self.norm2 = nn.LayerNorm(d)
        self.pw2 = nn.Linear(d, d)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, valid: torch.Tensor, cache: torch.Tensor | None = None):
        y = F.glu(self.pw1(self.norm(x)), dim=-1)
        y = y.masked_fill(~valid[..., None], 0.0).transpose(1, 2)  # [B, D, T]
        k = self.dw.kernel_size[0]
        if cache is not None:
            y = torch.cat([cache, y], dim=2)
            new_cache = y[:, :, y.shape[2] - (k - 1) :]
            # a chunk has few frames: the windows times the taps directly beat a conv call's set-up
            # (2x on one thread at 4 frames, kernel 31); the same sums as self.dw up to rounding
            y = torch.einsum("bdtk,dk->btd", y.unfold(2, k, 1), self.dw.weight[:, 0]) + self.dw.bias
        else:
            y = F.pad(y, (k - 1, 0) if self.causal else (k // 2, k // 2))
            y = self.dw(y).transpose(1, 2)
        y = self.drop(self.pw2(F.silu(self.norm2(y))))
        return y if cache is None else (y, new_cache)


class ConformerBlock(nn.Module):
    def __init__(self, c: ConformerConfig, group: int = 1):
        super().__init__()
        self.ff1 = FeedForward(c.d_model, c.ff_mult, c.dropout)
        self.attn = RotarySelfAttention(c.d_model, c.num_heads, c.dropout, c.rope_base, group)
        self.conv = ConvModule(c.d_model, c.conv_kernel, c.dropout, c.causal)
        self.ff2 = FeedForward(c.d_model, c.ff_mult, c.dropout)
        self.norm = nn.LayerNorm(c.d_model)

    def forward(
        self,
        x: torch.Tensor,
        valid: torch.Tensor,
        attn_mask: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        x = torch.add(x, self.ff1(x), alpha=0.5)  # half-step FF (macaron), one op
        x = x + self.attn(x, attn_mask, rope, key_valid=valid)
        x = x + self.conv(x, valid)
        x = torch.add(x, self.ff2(x), alpha=0.5)
        return self.norm(x)

    def forward_chunk(
        self,
        x: torch.Tensor,
        valid: torch.Tensor,
        key_valid: torch.Tensor,
        attn_mask: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        kv: tuple[torch.Tensor, torch.Tensor],
        conv: torch.Tensor,
    ):
        """One chunk with caches (key_valid[B, C+T] over cached + new frames): returns (y, (keys,
        values) of cache + chunk, next conv cache)."""
        x = torch.add(x, self.ff1(x), alpha=0.5)  # half-step FF (macaron), one op
        a, kv = self.attn(x, attn_mask, rope, kv, key_valid)
        x = x + a
        c, conv = self.conv(x, valid, conv)
        x = x + c
        x = torch.add(x, self.ff2(x), alpha=0.5)
        return self.norm(x), kv, conv


class ConformerEncoder(nn.Module):
    """forward(x[B, T, F], x_lens[B]) -> (y[B, T', d_model], y_lens[B]) with T' ~ T / subsampling_factor
    (4, times 2 per entry of downsample_at)."""

    def __init__(self, **kwargs):
        super().__init__()
        for key in ("chunk_sizes", "left_contexts", "downsample_at", "attention_groups"):
            kwargs[key] = tuple(int(v) for v in kwargs.get(key, ()))
        self.config = c = ConformerConfig(**kwargs)
        if c.chunk_sizes and not c.causal:
            raise ValueError("dynamic chunk training (chunk_sizes) needs causal: true (a causal conv)")
        self.subsampling = Conv2dSubsampling4(c.in_features, c.d_model, c.subsampling_channels)
        self.drop = nn.Dropout(c.dropout)
        bounds = (0, *c.downsample_at, c.num_layers)
        # the blocks of each stage; stage s runs at 2^(S-1-s) frames per output frame
        self.stages = [range(a, b) for a, b in zip(bounds, bounds[1:])]
        self.layers = nn.ModuleList(ConformerBlock(c, g) for g, r in zip(c.groups, self.stages) for _ in r)
        self.pools = nn.ModuleList(PairPooling(c.d_model) for _ in c.downsample_at)
        self.output_dim = c.d_model
        self.subsampling_factor = Conv2dSubsampling4.STRIDE * 2 ** len(c.downsample_at)

    def training_chunking(self) -> tuple[int, int]:
        """One (chunk_size, left_context) sampled from the configured dynamic chunks, else full."""
        if self.config.chunk_sizes:
            return sample_chunking(self.config.chunk_sizes, self.config.left_contexts)
        return FULL, FULL

    def _stage_chunking(self, s: int, chunk_size: int, left_context: int) -> tuple[int, int]:
        """(chunk size, left context) in stage s's frames, from the output frames'."""
        ratio = 2 ** (len(self.stages) - 1 - s)
        return tuple(v if v == FULL else v * ratio for v in (chunk_size, left_context))

    def forward(
        self, x: torch.Tensor, x_lens: torch.Tensor, chunk_size: int | None = None, left_context: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """chunk_size / left_context: encoder (output) frames (-1 = full). Default: full context,
        except in training with `chunk_sizes` configured, where each call samples a pair."""
        if chunk_size is None:
            chunk_size, left_context = self.training_chunking() if self.training else (FULL, FULL)
        left_context = FULL if left_context is None else left_context
        y, lens = self.subsampling(x, x_lens)
        y = self.drop(y)
        for s, blocks in enumerate(self.stages):
            if s:
                y, lens = self.pools[s - 1](y, lens)
            valid = padding_mask(lens, y.shape[1])
            pos = torch.arange(y.shape[1], device=y.device)
            chunk, left = self._stage_chunking(s, chunk_size, left_context)
            attn_mask = attention_mask(pos, pos, valid, chunk, left, self.config.groups[s])
            rope = self.layers[0].attn.rope(pos)  # every layer has the same head size and base
            for i in blocks:
                y = self.layers[i](y, valid, attn_mask, rope)
        return y.masked_fill(~valid[..., None], 0.0), lens

    # streaming ---------------------------------------------------------------------
    @property
    def streams(self) -> bool:
        """Chunked inference matches offline only with the causal conv (`causal: true`)."""
        return self.config.causal

    def init_state(
        self, batch_size: int, chunk_size: int, left_context: int, device: torch.device | str = "cpu"
    ) -> ConformerState:
        """Empty caches for `batch_size` streams decoded in chunks of `chunk_size` encoder frames
        with `left_context` frames of attention left context (-1: unlimited)."""
        c = self.config
        if not c.causal:
            raise ValueError("this Conformer is not causal (causal: false): it cannot stream")
        check_streaming_args(chunk_size, left_context)
        n, h, dh = len(self.layers), c.num_heads, c.d_model // c.num_heads
        return ConformerState(
            sub_cache=torch.zeros(batch_size, 0, c.in_features, device=device),
            keys=tuple(torch.zeros(batch_size, h, 0, dh, device=device) for _ in range(n)),
            values=tuple(torch.zeros(batch_size, h, 0, dh, device=device) for _ in range(n)),
            key_valid=tuple(torch.zeros(batch_size, 0, dtype=torch.bool, device=device) for _ in self.stages),
            conv=torch.zeros(n, batch_size, c.d_model, c.conv_kernel - 1, device=device),
            offsets=torch.zeros(len(self.stages), dtype=torch.long),
            chunk_size=torch.tensor(chunk_size),
            left_context=torch.tensor(left_context),
        )

    def export_streaming_step(self, chunk_size: int, left_context: int) -> ConformerStreamingStep:
        """forward_chunk with fixed-size caches in sherpa-onnx's streaming conformer layout, for
        `asr export --streaming` (asr/nn/encoders/export.py)."""
        return ConformerStreamingStep(self, chunk_size, left_context)

    def chunk_input_frames(self, state: ConformerState) -> int:
        """Feature frames the next forward_chunk call takes to produce one whole chunk."""
        return self.subsampling.chunk_input_frames(
            int(state.chunk_size) * 2 ** (len(self.stages) - 1),
            first=int(state.offsets[0]) == 0 and state.sub_cache.shape[1] == 0,
        )

    def forward_chunk(
        self, x: torch.Tensor, x_lens: torch.Tensor, state: ConformerState
    ) -> tuple[torch.Tensor, torch.Tensor, ConformerState]:
        """The next chunk of feature frames x[B, T, F] (x_lens[B] valid) of each stream.

        Feed chunk_input_frames(state) frames per call so that each call makes one chunk
        of chunk_size encoder frames; a stream's last call may be shorter. Returns
        (y[B, T', D], y_lens[B], next state); y equals the matching frames of
        forward(whole input, chunk_size, left_context).
        """
        y, lens, sub_cache = self.subsampling.forward_chunk(x, x_lens, state.sub_cache)
        keys, values, convs, key_valids, offsets = [], [], [], [], []
        for s, blocks in enumerate(self.stages):
            if s:
                y, lens = self.pools[s - 1](y, lens)
            chunk, left = self._stage_chunking(s, int(state.chunk_size), int(state.left_context))
            t, offset, n_cached = y.shape[1], int(state.offsets[s]), state.key_valid[s].shape[1]
            valid = padding_mask(lens, t)
            q_pos = offset + torch.arange(t, device=y.device)
            k_pos = offset - n_cached + torch.arange(n_cached + t, device=y.device)
            key_valid = torch.cat([state.key_valid[s], valid], dim=1)  # [B, C + T]
            attn_mask = attention_mask(q_pos, k_pos, key_valid, chunk, left, self.config.groups[s])
            keep = n_cached + t if left == FULL else min(left, n_cached + t)  # the next chunk's left context
            rope = self.layers[0].attn.rope(q_pos)
            for i in blocks:
                y, (k, v), conv = self.layers[i].forward_chunk(
                    y, valid, key_valid, attn_mask, rope, (state.keys[i], state.values[i]), state.conv[i]
                )
                keys.append(k[:, :, k.shape[2] - keep :])
                values.append(v[:, :, v.shape[2] - keep :])
                convs.append(conv)
            key_valids.append(key_valid[:, key_valid.shape[1] - keep :])
            offsets.append(offset + t)
        new = replace(
            state,
            sub_cache=sub_cache,
            keys=tuple(keys),
            values=tuple(values),
            key_valid=tuple(key_valids),
            conv=torch.stack(convs),
            offsets=torch.tensor(offsets),
        )
        return y.masked_fill(~valid[..., None], 0.0), lens, new
