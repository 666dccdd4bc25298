"""What a streaming encoder hands to ONNX export (asr/export.py): one chunk step with fixed-size caches.

sherpa-onnx's streaming `conformer` transducer (icefall's streaming Conformer layout) calls the
encoder graph once a chunk with four inputs, in this order:

- x[N, T, F]: T = decode_chunk_len + pad_length feature frames from frame `processed_lens`;
  consecutive calls overlap by pad_length frames (the runtime shifts by decode_chunk_len);
- attn_cache[L, left_context, N, D]: one D-wide vector per layer and cached frame;
- cnn_cache[L, K-1, N, D]: the last K-1 inputs of each layer's causal depthwise conv;
- processed_lens[N] int64: feature frames of the stream before x (k * decode_chunk_len at the
  k-th call; the runtime passes feature frames, not encoder frames);

and reads encoder_out[N, chunk, J], attn_cache', cnn_cache' back. Both caches start as zeros.

Our Conformer caches rotated keys and values (2 D per frame), so the step caches each layer's
normalized attention input instead and recomputes keys and values (RotarySelfAttention.
forward_inputs_cached), rotated at absolute positions taken from processed_lens; cached frames
before position 0 (the zeros of the first chunks) are masked. The subsampling needs no cache:
pad_length = 3 is the carry-over of Conv2dSubsampling4.forward_chunk, which the runtime's
overlapping windows provide. The step equals ConformerEncoder.forward_chunk over whole chunks
(tests/test_export.py checks it through onnxruntime).
"""

from __future__ import annotations

import torch
from torch import nn

from .. import NotExportable
from .chunking import chunk_attention_mask
from .subsampling import Conv2dSubsampling4


class ConformerStreamingStep(nn.Module):
    """forward(x[N, T, F] normalized features, attn_cache[L, C, N, D], cnn_cache[L, K-1, N, D],
    processed_lens[N]) -> (y[N, chunk_size, D], attn_cache', cnn_cache') for one whole chunk.

    Args:
        encoder: a causal ConformerEncoder (its layers are used as they are, no copies).
        chunk_size: encoder frames per chunk. left_context: cached encoder frames (C > 0).
    """

    def __init__(self, encoder: nn.Module, chunk_size: int, left_context: int):
        super().__init__()
        c = encoder.config
        if not c.causal:
            raise NotExportable("the Conformer is not causal (causal: false): it cannot stream")
        if c.downsample_at or any(g > 1 for g in c.groups):
            raise NotExportable(
                "sherpa-onnx's streaming conformer runs one frame rate and ungrouped attention; this Conformer "
                f"downsamples at blocks {list(c.downsample_at)} / groups attention {list(c.groups)} (Efficient "
                "Conformer): export it offline (without --streaming)"
            )
        if chunk_size <= 0 or left_context <= 0:
            raise NotExportable(
                f"sherpa-onnx's streaming conformer needs a chunk and a fixed left context of at least one "
                f"encoder frame each, not chunk {chunk_size} and left context {left_context} (-1, unlimited, "
                "has no fixed cache size)"
            )
        self.encoder = encoder
        self.chunk_size, self.left_context = chunk_size, left_context
        self.num_layers, self.dim, self.kernel = c.num_layers, c.d_model, c.conv_kernel
        sub = Conv2dSubsampling4
        self.subsampling_factor = sub.STRIDE
        self.pad_length = sub.RECEPTIVE - sub.STRIDE  # frames the next window re-reads
        self.decode_chunk_len = sub.STRIDE * chunk_size  # feature frames the runtime shifts by
        self.input_frames = self.decode_chunk_len + self.pad_length  # T
        # the one chunk mask: within one step every query sees the whole chunk and all C cached
        # frames (a constant; only the cache's validity varies, by stream)
        q = torch.arange(chunk_size) + chunk_size * (-(-left_context // chunk_size))
        k = torch.arange(-left_context, chunk_size) + q[0]
        self.register_buffer("visible", chunk_attention_mask(q, k, chunk_size, left_context), persistent=False)

    def forward(
        self, x: torch.Tensor, attn_cache: torch.Tensor, cnn_cache: torch.Tensor, processed_lens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        enc, n, c, left = self.encoder, x.shape[0], self.chunk_size, self.left_context
        y, _ = enc.subsampling(x, torch.full((n,), x.shape[1], dtype=torch.long, device=x.device))  # [N, c, D]
        offset = torch.div(processed_lens, self.subsampling_factor, rounding_mode="floor")  # encoder frames
        k_pos = offset[:, None] + torch.arange(-left, c, device=x.device)[None, :]  # [N, C + c]
        key_valid = k_pos >= 0  # the zeros cached before the stream's start are no frames
        attn_mask = (key_valid[:, None, :] & self.visible[None])[:, None]  # [N, 1, c, C + c]
        rope_k = enc.layers[0].attn.rope(k_pos)  # every layer has the same head size and base
        rope_q = (rope_k[0][:, left:], rope_k[1][:, left:])
        valid = torch.ones(n, c, dtype=torch.bool, device=x.device)
        attn_out, conv_out = [], []
        for i, layer in enumerate(enc.layers):
            y = torch.add(y, layer.ff1(y), alpha=0.5)
            a, ctx = layer.attn.forward_inputs_cached(y, attn_cache[i].transpose(0, 1), attn_mask, rope_q, rope_k)
            y = y + a
            h, conv = layer.conv(y, valid, cnn_cache[i].permute(1, 2, 0))  # ours [N, D, K-1]
            y = y + h
            y = layer.norm(torch.add(y, layer.ff2(y), alpha=0.5))
            attn_out.append(ctx[:, c:].transpose(0, 1))  # the last C frames, [C, N, D]
            conv_out.append(conv.permute(2, 0, 1))  # [K-1, N, D]
        return y, torch.stack(attn_out), torch.stack(conv_out)


class NoStreamingExport:
    """export_streaming_step for encoders without one: NotExportable naming the encoder."""

    def export_streaming_step(self, chunk_size: int, left_context: int) -> nn.Module:
        raise NotExportable(
            f"the {type(self).__name__} has no streaming ONNX export (sherpa-onnx's streaming conformer "
            "layout is written for the causal Conformer only)"
        )
