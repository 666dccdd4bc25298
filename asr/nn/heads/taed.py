"""TAED head: a transducer whose predictor is an attention encoder-decoder's decoder (Tang et al.
2023, "Hybrid Transducer and Attention based Encoder-Decoder Modeling for Speech-to-Text Tasks").

The transducer and the AED share the encoder, and the transducer's predictor *is* the AED's
Transformer decoder: its state for the labels <sos> y_1..y_u comes from causal self-attention
over them and cross-attention to the speech, so the joint combines an encoder frame with a
speech-conditioned label state instead of an unconditioned label LM's.

Streaming: the decoder states used at frame t attend only to the encoder frames up to the end
of t's chunk. Training runs the decoder once per chunk c over all U+1 label positions, with the
frames after chunk c masked, so the joint sees states that depend on (chunk, u):
pred[B, T, U+1, d] with pred[b, t] = states of chunk t // chunk_size (one chunk: [B, U+1, d]).
The transducer searches call the predictor's `attend` once per chunk of encoder frames, which
recomputes every hypothesis's states against the frames seen so far (one pass over its labels,
keeping the keys and values), and feed the decoder one position whenever a hypothesis emits a
label (the earlier positions' keys and values cached); so chunked decoding makes the decisions of one
offline pass over the chunk-masked encoder output (tests check it).

The loss is the transducer loss (full rnnt or tdt, full-sum or Viterbi: the pruned losses' simple
joiner reads one predictor output per label, not per chunk) plus `aed_weight` times the AED's label-smoothed
cross-entropy over the full encoder output (`AttentionHead.loss`: both directions with
`reverse_weight`). The AED also decodes on its own (`--method attention`) and rescores the
transducer's n-best (`attention_rescoring`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ..encoders.chunking import FULL, chunk_attention_mask
from .attention import AttentionHead, DecoderCache, decoder_prefill, decoder_step
from .transducer import Predictor, TransducerHead


@dataclass
class DecoderPrefix:
    """A TAED predictor's state for N hypotheses of B utterances (N = B * hypotheses per utterance,
    rows of one utterance adjacent, as the searches lay them out)."""

    ys: torch.Tensor  # [N, L] int64: <sos> and the labels, right-padded (the causal mask keeps padding unread)
    lens: torch.Tensor  # [N] int64: valid positions of ys
    memory: torch.Tensor | None  # [B, Tm, d]: the projected encoder frames seen so far (None: none yet)
    valid: torch.Tensor | None  # [B, Tm] bool
    cache: DecoderCache | None  # the decoder's keys and values for ys against that memory


def some_key(valid: torch.Tensor) -> torch.Tensor:
    """valid[..., T] with the first frame made visible where a row has none (an utterance without
    frames): cross-attention over no key at all gives NaN, which would reach the gradients."""
    none = ~valid.any(-1)
    if not bool(none.any()):
        return valid
    valid = valid.clone()
    valid[..., 0] |= none
    return valid


class AttentionPredictor(Predictor):
    """The AED's decoder as a transducer predictor: forward(tokens[N, U], state) appends the labels
    to each row's prefix and returns the decoder's states [N, U, d] at the new positions (blank, the
    transducer's start symbol, becomes <sos>). Outputs need encoder frames: before the first
    `attend` they are zeros, which no search reads (it attends before its first joint call)."""

    def __init__(self, aed: AttentionHead):
        super().__init__()
        self.aed = aed
        self.dim = aed.decoder.d_model
        self.blank = aed.blank

    def init_state(self, batch_size: int, device: torch.device | str = "cpu") -> DecoderPrefix:
        zeros = torch.zeros(batch_size, dtype=torch.int64, device=device)
        return DecoderPrefix(zeros[:, None][:, :0], zeros, None, None, None)

    def forward(self, tokens: torch.Tensor, state: DecoderPrefix | None = None) -> tuple[torch.Tensor, DecoderPrefix]:
        n, u = tokens.shape
        if state is None:
            state = self.init_state(n, tokens.device)
        tokens = tokens.long().masked_fill(tokens == self.blank, self.aed.sos)
        width = int(state.lens.max()) + u if n else u
        ys = torch.full((n, width), self.aed.sos, dtype=torch.int64, device=tokens.device)
        keep = min(width, state.ys.shape[1])
        ys[:, :keep] = state.ys[:, :keep]
        ys.scatter_(1, state.lens[:, None] + torch.arange(u, device=tokens.device), tokens)
        if state.cache is None or n == 0:
            out = torch.zeros(n, u, self.dim, device=tokens.device)
            return out, replace(state, ys=ys, lens=state.lens + u)
        cache, outs = state.cache, []
        for j in range(u):  # one position a step, the earlier ones' keys and values cached
            out, cache = decoder_step(self.aed.decoder, cache, tokens[:, j])
            outs.append(out)
        return torch.stack(outs, 1), replace(state, ys=ys, lens=state.lens + u, cache=cache)

    def attend(
        self, state: DecoderPrefix, enc: torch.Tensor, enc_lens: torch.Tensor
    ) -> tuple[DecoderPrefix, torch.Tensor | None]:
        """Append the chunk's frames to the memory and run every row's prefix against it again (each
        decoder state depends on the memory): [N, d] for each row's last label."""
        if enc.shape[1] == 0:
            return state, None
        memory, valid = self.aed.memory(enc, enc_lens)
        if state.memory is not None:
            memory, valid = torch.cat([state.memory, memory], 1), torch.cat([state.valid, valid], 1)
        valid = some_key(valid)
        k = state.ys.shape[0] // memory.shape[0]  # rows per utterance
        states, cache = decoder_prefill(
            self.aed.decoder,
            state.ys,
            state.lens,
            memory.repeat_interleave(k, 0),
            valid.repeat_interleave(k, 0),
        )
        rows = torch.arange(state.ys.shape[0], device=enc.device)
        return replace(state, memory=memory, valid=valid, cache=cache), states[rows, state.lens - 1]

    def select_state(self, state: DecoderPrefix, index: torch.Tensor) -> DecoderPrefix:
        """Reorder rows by index[N]; a row keeps its utterance (beam search picks parents within it)."""
        cache = state.cache.select(index) if state.cache is not None else None
        return replace(state, ys=state.ys[index], lens=state.lens[index], cache=cache)

    def merge_state(self, mask: torch.Tensor, new: DecoderPrefix, old: DecoderPrefix) -> DecoderPrefix:
        """new where mask[N] else old."""
        width = max(new.ys.shape[1], old.ys.shape[1])
        pad = lambda ys: torch.nn.functional.pad(ys, (0, width - ys.shape[1]), value=self.aed.sos)  # noqa: E731
        ys = torch.where(mask[:, None], pad(new.ys), pad(old.ys))
        cache = new.cache.merge(mask, old.cache) if new.cache is not None else None
        return replace(new, ys=ys, lens=torch.where(mask, new.lens, old.lens), cache=cache)


class TAEDHead(TransducerHead):
    """Transducer + attention decoder with one decoder: TAED (module docstring).

    Args:
        enc_dim, vocab_size: encoder width and tokenizer size (blank = 0; <sos/eos> = vocab_size).
        loss: the transducer criterion, "rnnt" or "tdt" (or {"kind": ..., **options}).
        decoder: AttentionHead options (d_model, num_layers, num_heads, ff_mult, dropout,
            label_smoothing, reverse_weight, r_num_layers); d_model is the predictor's width.
        aed_weight: weight of the AED cross-entropy added to the transducer loss.
        joint_dim, max_symbols, blank, dropout: as TransducerHead.
    """

    kind = "taed"

    def __init__(
        self,
        enc_dim: int,
        vocab_size: int,
        loss: str | dict = "rnnt",
        decoder: dict | None = None,
        aed_weight: float = 0.3,
        joint_dim: int = 256,
        max_symbols: int = 10,
        blank: int = 0,
        dropout: float = 0.0,
    ):
        if aed_weight < 0:
            raise ValueError(f"aed_weight must be >= 0, not {aed_weight}")
        aed = AttentionHead(enc_dim, vocab_size, **dict(decoder or {}))
        super().__init__(
            enc_dim,
            vocab_size,
            loss=loss,
            predictor=AttentionPredictor(aed),
            pred_dim=aed.decoder.d_model,
            joint_dim=joint_dim,
            max_symbols=max_symbols,
            blank=blank,
            dropout=dropout,
        )
        if self.criterion.kind not in ("rnnt", "tdt"):
            raise ValueError(
                f"TAED trains with the full rnnt or tdt loss, not {self.criterion.kind}: the pruned losses' "
                "simple joiner takes one predictor output per label, TAED's depend on the chunk too"
            )
        self.aed_weight = float(aed_weight)

    @property
    def aed(self) -> AttentionHead:
        """The attention decoder (it is the predictor)."""
        return self.predictor.aed

    def attention_decoder(self) -> AttentionHead:
        return self.aed

    def predict_chunks(
        self,
        enc: torch.Tensor,
        enc_lens: torch.Tensor,
        targets: torch.Tensor,
        target_lens: torch.Tensor,
        chunk_size: int,
    ) -> torch.Tensor:
        """Decoder states for <sos> y_1..y_U: [B, U+1, d] with full context (chunk_size -1 or one chunk
        covers T), else [B, T, U+1, d] where frame t's states attend to frames < (t // chunk + 1) * chunk."""
        memory, valid = self.aed.memory(enc, enc_lens)
        ys = self.aed._io(targets, target_lens)[0]  # [B, U+1]: <sos> y_1..y_U
        b, t = valid.shape
        if chunk_size == FULL or chunk_size >= t:
            return self.aed.decoder.hidden(ys, memory, some_key(valid))
        c = -(-t // chunk_size)
        frames = torch.arange(t, device=enc.device)
        # chunk c sees the frames the encoder's chunk mask shows a query of chunk c (left context aside)
        seen = chunk_attention_mask(torch.arange(c, device=enc.device) * chunk_size, frames, chunk_size)  # [C, T]
        valid_c = some_key(valid[:, None, :] & seen[None])  # [B, C, T]
        states = self.aed.decoder.hidden(
            ys.repeat_interleave(c, 0), memory.repeat_interleave(c, 0), valid_c.flatten(0, 1)
        ).unflatten(0, (b, c))  # [B, C, U+1, d]
        return states[:, torch.div(frames, chunk_size, rounding_mode="floor")]

    def loss(
        self,
        enc: torch.Tensor,
        enc_lens: torch.Tensor,
        targets: torch.Tensor,
        target_lens: torch.Tensor,
        step: int = 0,
        chunk_size: int = FULL,
    ) -> dict[str, torch.Tensor]:
        """{"loss": transducer loss per target token + aed_weight * AED cross-entropy per output token,
        "transducer", "aed", "acc" (the AED's token accuracy) and the AED's direction losses}."""
        enc = self.drop(enc)
        targets = targets[:, : int(target_lens.max())] if targets.shape[1] else targets
        aed = self.aed.loss(enc, enc_lens, targets, target_lens)
        pred = self.predict_chunks(enc, enc_lens, targets, target_lens, chunk_size)
        out = self.criterion(self.joint, enc, pred, targets, enc_lens, target_lens, self.blank, step)
        transducer = out["loss"] / target_lens.sum().clamp(min=1)
        parts = {k: v.detach() for k, v in aed.items() if k != "loss"}
        return {
            "loss": transducer + self.aed_weight * aed["loss"],
            "transducer": transducer.detach(),
            "aed": aed["loss"].detach(),
            **parts,
        }
