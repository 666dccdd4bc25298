"""Attention-decoder head: a Transformer decoder over the encoder output (the "AED" third of
CTC/transducer/attention models, as in WeNet's U2++ and ESPnet).

The decoder reads the label history (causal self-attention) and the encoder frames
(cross-attention, padding masked) and predicts the next token or end of sentence. `<sos/eos>`
is handled here: it is one extra id, `vocab_size`, beyond the tokenizer's ids, so the rest of
the toolkit never sees it. With `reverse_weight > 0` a second decoder reads the targets right
to left (U2++), and both directions score hypotheses in rescoring.

Shapes: enc[B, T, D_enc], tokens[B, U] (padded), lengths[B]; decoder logits [B, U+1, V+1].
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from ..encoders.conformer import padding_mask
from .base import Head
from .export import AttentionGraphs, DecoderLogProbs


def sinusoidal_positions(n: int, dim: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """[n, dim] sine/cosine position encodings (Vaswani et al. 2017)."""
    pos = torch.arange(n, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    out = torch.zeros(n, dim, device=device)
    out[:, 0::2] = torch.sin(pos * freq)
    out[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return out


class TransformerDecoder(nn.Module):
    """Token embedding + sinusoidal positions + pre-norm Transformer decoder layers + output layer.

    forward(ys[B, L] with sos first, ys_lens[B], memory[B, T, d], memory_valid[B, T]) ->
    logits[B, L, num_outputs] where position i predicts ys's token i+1 (or eos).
    """

    def __init__(self, num_outputs: int, d_model: int, num_layers: int, num_heads: int, ff_mult: int, dropout: float):
        super().__init__()
        self.d_model = d_model
        self.embed = nn.Embedding(num_outputs, d_model)
        layer = nn.TransformerDecoderLayer(
            d_model, num_heads, ff_mult * d_model, dropout, batch_first=True, norm_first=True
        )
        self.layers = nn.TransformerDecoder(layer, num_layers, norm=nn.LayerNorm(d_model))
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(d_model, num_outputs)

    def forward(
        self, ys: torch.Tensor, ys_lens: torch.Tensor, memory: torch.Tensor, memory_valid: torch.Tensor
    ) -> torch.Tensor:
        return self.out(self.hidden(ys, memory, memory_valid))

    def hidden(self, ys: torch.Tensor, memory: torch.Tensor, memory_valid: torch.Tensor) -> torch.Tensor:
        """The last layer's normalized states [B, L, d_model] before the output layer (TAED's
        predictor output). Right padding of ys needs no mask: the causal mask keeps it unread."""
        n = ys.shape[1]
        x = self.embed(ys) * math.sqrt(self.d_model) + sinusoidal_positions(n, self.d_model, ys.device)
        causal = torch.triu(torch.ones(n, n, dtype=torch.bool, device=ys.device), diagonal=1)
        y = self.layers(
            self.drop(x),
            memory,
            tgt_mask=causal,
            # padded label positions are only ever read by later padded positions (causal mask), so
            # they need no key mask; real ones see only real labels
            memory_key_padding_mask=~memory_valid,
            tgt_is_causal=True,
        )
        return y


@dataclass
class DecoderCache:
    """Incremental decoding state of a TransformerDecoder for N prefixes of their own lengths
    (searches): per layer the self-attention keys and values of the positions fed so far,
    [N, H, C, d/H] each (row n's first lens[n] positions are real, the rest is scratch), and the
    cross-attention keys and values of the memory, [N, H, T, d/H], projected once."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    mem_keys: list[torch.Tensor]
    mem_values: list[torch.Tensor]
    mem_valid: torch.Tensor  # [N, 1, 1, T] bool: the memory's real frames
    lens: torch.Tensor  # [N] int64: positions fed per row

    def select(self, index: torch.Tensor) -> DecoderCache:
        """Rows reordered by index[N'] (a beam's parents)."""
        pick = lambda xs: [x[index] for x in xs]  # noqa: E731
        return DecoderCache(
            pick(self.keys),
            pick(self.values),
            pick(self.mem_keys),
            pick(self.mem_values),
            self.mem_valid[index],
            self.lens[index],
        )

    def merge(self, mask: torch.Tensor, old: DecoderCache) -> DecoderCache:
        """This cache where mask[N], else `old`: a step after `old` leaves every row's earlier
        positions as they were, so only the lengths differ."""
        return replace(self, lens=torch.where(mask, self.lens, old.lens))


def _heads(x: torch.Tensor, attn: nn.MultiheadAttention) -> torch.Tensor:
    """[N, L, d] -> [N, H, L, d/H]."""
    return x.unflatten(-1, (attn.num_heads, attn.head_dim)).transpose(1, 2)


def _project(attn: nn.MultiheadAttention, x: torch.Tensor, part: int) -> torch.Tensor:
    """The query (0), key (1) or value (2) projection of nn.MultiheadAttention's packed in_proj, by heads."""
    d = attn.embed_dim
    w, b = attn.in_proj_weight[part * d : (part + 1) * d], attn.in_proj_bias[part * d : (part + 1) * d]
    return _heads(F.linear(x, w, b), attn)


def _attend(attn: nn.MultiheadAttention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask=None) -> torch.Tensor:
    """Scaled dot-product attention by heads (mask: True = attend), merged and through the output
    projection: [N, Lq, d]."""
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return attn.out_proj(y.transpose(1, 2).flatten(2))


def _run(
    decoder: TransformerDecoder,
    x: torch.Tensor,
    cache: DecoderCache,
    self_mask: torch.Tensor,
    store: Callable[[int, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """nn.TransformerDecoderLayer's pre-norm blocks (eval mode: dropout off) over the embedded
    positions x[N, Lq, d]. store(layer, k, v) puts the new positions' keys and values [N, H, Lq, d/H]
    beside the cached ones and returns all of them. Returns (final-norm states [N, Lq, d], keys, values)."""
    keys, values = [], []
    for i, layer in enumerate(decoder.layers.layers):
        h, sa, ca = layer.norm1(x), layer.self_attn, layer.multihead_attn
        k, v = store(i, _project(sa, h, 1), _project(sa, h, 2))
        keys.append(k)
        values.append(v)
        x = x + _attend(sa, _project(sa, h, 0), k, v, self_mask)
        x = x + _attend(ca, _project(ca, layer.norm2(x), 0), cache.mem_keys[i], cache.mem_values[i], cache.mem_valid)
        x = x + layer.linear2(layer.activation(layer.linear1(layer.norm3(x))))
    return decoder.layers.norm(x), keys, values


def decoder_start(decoder: TransformerDecoder, memory: torch.Tensor, valid: torch.Tensor) -> DecoderCache:
    """The cache before any token: the memory's cross-attention keys and values of every layer."""
    layers = decoder.layers.layers
    mem_k = [_project(layer.multihead_attn, memory, 1) for layer in layers]
    mem_v = [_project(layer.multihead_attn, memory, 2) for layer in layers]
    n, h = memory.shape[0], layers[0].self_attn.num_heads
    empty = memory.new_zeros(n, h, 0, layers[0].self_attn.head_dim)
    lens = torch.zeros(n, dtype=torch.int64, device=memory.device)
    return DecoderCache([empty] * len(layers), [empty] * len(layers), mem_k, mem_v, valid[:, None, None, :], lens)


def decoder_prefill(
    decoder: TransformerDecoder, ys: torch.Tensor, lens: torch.Tensor, memory: torch.Tensor, valid: torch.Tensor
) -> tuple[torch.Tensor, DecoderCache]:
    """Feed whole prefixes ys[N, L] (right-padded; row n's first lens[n] real) at once -> (states
    [N, L, d] as `decoder.hidden` gives them, the cache after them)."""
    cache = decoder_start(decoder, memory, valid)
    n = ys.shape[1]
    x = decoder.embed(ys) * math.sqrt(decoder.d_model) + sinusoidal_positions(n, decoder.d_model, ys.device)
    causal = torch.tril(torch.ones(n, n, dtype=torch.bool, device=ys.device))
    y, keys, values = _run(decoder, x, cache, causal, lambda i, k, v: (k, v))
    return y, replace(cache, keys=keys, values=values, lens=lens.clone())


def decoder_step(
    decoder: TransformerDecoder, cache: DecoderCache, tokens: torch.Tensor
) -> tuple[torch.Tensor, DecoderCache]:
    """Feed one token per row (tokens[N], <sos> first) at each row's next position -> (the final-norm
    state [N, d] there, cache). Gives what `decoder.hidden(ys, ...)[n, lens[n]]` gives for each row's
    prefix (eval mode), one position at a time: the earlier positions' keys and values come from the
    cache. The cache's tensors are not modified (scatter returns new ones)."""
    d, n = decoder.d_model, tokens.shape[0]
    lens = cache.lens
    cap = cache.keys[0].shape[2]
    top = int(lens.max()) + 1 if n else 1
    pad = 0 if top <= cap else max(top, 2 * cap) - cap  # room for the new positions (doubling)
    pos = sinusoidal_positions(top, d, tokens.device)[lens]  # [N, d]
    x = (decoder.embed(tokens) * math.sqrt(d) + pos)[:, None]  # [N, 1, d]
    at = lens[:, None, None, None]  # where each row's new key goes

    def store(i: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        old_k, old_v = F.pad(cache.keys[i], (0, 0, 0, pad)), F.pad(cache.values[i], (0, 0, 0, pad))
        return old_k.scatter(2, at.expand_as(k), k), old_v.scatter(2, at.expand_as(v), v)

    visible = torch.arange(cap + pad, device=tokens.device)[None, :] <= lens[:, None]  # [N, C]
    y, keys, values = _run(decoder, x, cache, visible[:, None, None, :], store)
    return y[:, 0], replace(cache, keys=keys, values=values, lens=lens + 1)


def reverse_padded(tokens: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
    """Each row's first lens[b] tokens reversed, the padding left in place: [B, U] -> [B, U]."""
    u = tokens.shape[1]
    idx = torch.arange(u, device=tokens.device)[None, :].expand(tokens.shape[0], -1)
    rev = (lens[:, None] - 1 - idx).clamp(min=0)
    return torch.where(idx < lens[:, None], tokens.gather(1, rev), tokens)


class AttentionHead(Head):
    """Attention decoder over encoder frames, trained with label-smoothed cross-entropy.

    Args:
        enc_dim, vocab_size: encoder width and tokenizer size; `<sos/eos>` is id vocab_size.
        d_model, num_layers, num_heads, ff_mult, dropout: the decoder's size.
        label_smoothing: mass spread over the other outputs in the cross-entropy.
        reverse_weight: > 0 adds a right-to-left decoder (r_num_layers layers) trained on
            reversed targets; the loss is (1 - w) * left-to-right + w * right-to-left.
        r_num_layers: layers of the right-to-left decoder.
    """

    kind = "attention"

    def __init__(
        self,
        enc_dim: int,
        vocab_size: int,
        d_model: int = 144,
        num_layers: int = 3,
        num_heads: int = 4,
        ff_mult: int = 4,
        dropout: float = 0.1,
        label_smoothing: float = 0.1,
        reverse_weight: float = 0.0,
        r_num_layers: int = 1,
    ):
        super().__init__()
        if not 0.0 <= reverse_weight < 1.0:
            raise ValueError(f"reverse_weight must be in [0, 1), not {reverse_weight}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), not {label_smoothing}")
        self.vocab_size = vocab_size
        self.blank = 0
        self.sos = self.eos = vocab_size
        self.label_smoothing = float(label_smoothing)
        self.reverse_weight = float(reverse_weight)
        self.enc_proj = nn.Linear(enc_dim, d_model) if enc_dim != d_model else nn.Identity()
        self.decoder = TransformerDecoder(vocab_size + 1, d_model, num_layers, num_heads, ff_mult, dropout)
        self.r_decoder = (
            TransformerDecoder(vocab_size + 1, d_model, r_num_layers, num_heads, ff_mult, dropout)
            if reverse_weight > 0
            else None
        )

    def attention_decoder(self) -> AttentionHead:
        return self

    def export_graphs(self) -> AttentionGraphs:
        """Both decoders over whole hypotheses, for rescoring a CTC n-best (asr/export.py adds the
        CTC head's graph as the first pass): the memory projection and DecoderLogProbs views."""
        r = DecoderLogProbs(self.r_decoder) if self.r_decoder is not None else None
        return AttentionGraphs(self.enc_proj, DecoderLogProbs(self.decoder), r, self.vocab_size, self.sos)

    def memory(self, enc: torch.Tensor, enc_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The decoders' cross-attention input: (projected enc [B, T, d], valid[B, T])."""
        return self.enc_proj(enc), padding_mask(enc_lens.to(enc.device), enc.shape[1])

    def _io(self, tokens: torch.Tensor, lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoder input [sos, y1..yU] and target [y1..yU, eos] (-1 past the end), both [B, U+1]."""
        b, u = tokens.shape
        sos = torch.full((b, 1), self.sos, dtype=torch.long, device=tokens.device)
        ys_in = torch.cat([sos, tokens.long()], dim=1)
        pos = torch.arange(u + 1, device=tokens.device)[None, :]
        ys_out = torch.cat([tokens.long(), torch.full_like(sos, -1)], dim=1)
        ys_out = torch.where(pos == lens[:, None], self.eos, torch.where(pos < lens[:, None], ys_out, -1))
        return ys_in, ys_out

    def loss(
        self,
        enc: torch.Tensor,
        enc_lens: torch.Tensor,
        tokens: torch.Tensor,
        token_lens: torch.Tensor,
        step: int = 0,
        chunk_size: int = -1,
    ) -> dict[str, torch.Tensor]:
        """{"loss": label-smoothed cross-entropy per output token (targets and eos), "acc": the
        left-to-right decoder's token accuracy, and each direction's loss when both train}."""
        tokens = tokens[:, : int(token_lens.max())] if tokens.shape[1] else tokens
        memory, valid = self.memory(enc, enc_lens)
        n = (token_lens + 1).sum()

        def direction(decoder: TransformerDecoder, ys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            ys_in, ys_out = self._io(ys, token_lens)
            logits = decoder(ys_in, token_lens + 1, memory, valid).float()
            ce = F.cross_entropy(
                logits.transpose(1, 2), ys_out, ignore_index=-1, label_smoothing=self.label_smoothing, reduction="sum"
            )
            correct = ((logits.argmax(-1) == ys_out) & (ys_out >= 0)).sum()
            return ce / n, correct / n

        l2r, acc = direction(self.decoder, tokens)
        if self.r_decoder is None:
            return {"loss": l2r, "acc": acc.detach()}
        r2l, _ = direction(self.r_decoder, reverse_padded(tokens, token_lens))
        w = self.reverse_weight
        return {"loss": (1 - w) * l2r + w * r2l, "acc": acc.detach(), "l2r": l2r.detach(), "r2l": r2l.detach()}

    def start(self, enc: torch.Tensor, enc_lens: torch.Tensor) -> DecoderCache:
        """The left-to-right decoder's search state before any token, for enc[N, T, D_enc]."""
        return decoder_start(self.decoder, *self.memory(enc, enc_lens))

    def step(self, cache: DecoderCache, tokens: torch.Tensor) -> tuple[torch.Tensor, DecoderCache]:
        """Feed tokens[N] (`sos` first) -> (log-probabilities [N, V+1] of the next token, cache)."""
        state, cache = decoder_step(self.decoder, cache, tokens)
        return self.decoder.out(state).float().log_softmax(-1), cache

    @torch.no_grad()
    def score(
        self, enc: torch.Tensor, enc_lens: torch.Tensor, hyps: list[list[list[int]]], reverse_weight: float = 0.0
    ) -> list[list[float]]:
        """Log-probability of each hypothesis followed by eos, per utterance: hyps[b] is a list of
        token lists for enc[b]. With a right-to-left decoder and reverse_weight > 0, the score is
        (1 - w) * left-to-right + w * right-to-left."""
        flat = [(b, h) for b, hs in enumerate(hyps) for h in hs]
        if not flat:
            return [[] for _ in hyps]
        idx = torch.tensor([b for b, _ in flat], device=enc.device)
        memory, valid = self.memory(enc[idx], enc_lens[idx])
        lens = torch.tensor([len(h) for _, h in flat], device=enc.device)
        tokens = torch.zeros(len(flat), max(1, int(lens.max())), dtype=torch.long, device=enc.device)
        for i, (_, h) in enumerate(flat):
            tokens[i, : len(h)] = torch.tensor(h, dtype=torch.long)

        def total(decoder: TransformerDecoder, ys: torch.Tensor) -> torch.Tensor:
            ys_in, ys_out = self._io(ys, lens)
            lp = decoder(ys_in, lens + 1, memory, valid).float().log_softmax(-1)
            picked = lp.gather(2, ys_out.clamp(min=0)[..., None])[..., 0]
            return picked.masked_fill(ys_out < 0, 0.0).sum(1)

        scores = total(self.decoder, tokens)
        if self.r_decoder is not None and reverse_weight > 0:
            scores = (1 - reverse_weight) * scores + reverse_weight * total(
                self.r_decoder, reverse_padded(tokens, lens)
            )
        out: list[list[float]] = [[] for _ in hyps]
        for (b, _), s in zip(flat, scores.tolist()):
            out[b].append(s)
        return out
