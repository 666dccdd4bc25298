"""Transducer head: a predictor (label context) and a joint network, trained with the
full RNN-T, pruned RNN-T, TDT or pruned TDT loss (strategies in transducer_loss.py).

Shapes: enc[B, T, D_enc] from the encoder, targets[B, U]. The predictor reads the
label history with a leading blank ("start of sequence"), so it yields U+1 outputs.
The joint combines them into logits[B, T, U+1, V] (V + len(durations) for TDT).

Decoding never calls `Joint.forward`: it projects encoder frames once
(`Joint.project_enc`) and the predictor output once per emitted label
(`Joint.project_pred`), then only `Joint.combine` runs per search step.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .base import Head
from .export import DecoderGraph, Joiner, LSTMDecoder, NotExportable, StatelessDecoder, TransducerGraphs
from .transducer_loss import build_transducer_loss


class Predictor(nn.Module):
    """What the transducer searches call on a predictor: init_state(batch, device),
    forward(tokens[N, U], state) -> (out[N, U, dim], state), select_state, merge_state, and
    attend. Predictors that read only labels inherit attend as it is here."""

    def attend(self, state: Any, enc: torch.Tensor, enc_lens: torch.Tensor) -> tuple[Any, torch.Tensor | None]:
        """The next encoder frames enc[B, T, D_enc] (enc_lens[B] valid; a search calls this once per
        chunk, before reading the chunk) -> (state, out[N, dim] for every row's current labels, or
        None when the outputs do not depend on the encoder, as here). TAED's predictor attends to
        them."""
        return state, None

    def export_decoder(self, pred_proj: nn.Module) -> DecoderGraph:
        """The ONNX decoder graph of this predictor followed by the joint's projection pred_proj.

        Raises:
            NotExportable: a predictor without one (TAED's attention decoder, whose outputs depend
                on the encoder frames of each chunk).
        """
        raise NotExportable(
            f"its {type(self).__name__} has no ONNX decoder graph (exported: stateless and LSTM predictors)"
        )


class StatelessPredictor(Predictor):
    """Embedding + depthwise causal conv over the last `context_size` labels (icefall's
    "stateless" decoder, Ghodsi et al. 2020): a bigram-like predictor with no recurrence.

    State: the previous `context_size - 1` labels, int64 [B, context_size - 1] (blank at start).
    forward(tokens[B, U], state) -> (out[B, U, dim], new_state).
    """

    def __init__(self, vocab_size: int, dim: int, context_size: int = 2, blank: int = 0, dropout: float = 0.0):
        super().__init__()
        if context_size < 1:
            raise ValueError("context_size must be >= 1")
        self.blank = blank
        self.context_size = context_size
        self.dim = dim
        self.embed = nn.Embedding(vocab_size, dim)
        # groups=dim: each channel mixes its own embedding over the context (cheap, as in icefall)
        self.conv = nn.Conv1d(dim, dim, context_size, groups=dim, bias=False) if context_size > 1 else None
        self.drop = nn.Dropout(dropout)

    def init_state(self, batch_size: int, device: torch.device | str = "cpu") -> torch.Tensor:
        return torch.full((batch_size, self.context_size - 1), self.blank, dtype=torch.int64, device=device)

    def forward(self, tokens: torch.Tensor, state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if state is None:
            state = self.init_state(tokens.shape[0], tokens.device)
        ctx = torch.cat([state, tokens.to(torch.int64)], dim=1)  # [B, C-1+U]
        x = self.embed(ctx)
        if self.conv is not None:
            x = self.conv(x.transpose(1, 2)).transpose(1, 2)  # [B, U, dim]: unpadded, hence causal
        return self.drop(torch.relu(x)), ctx[:, ctx.shape[1] - (self.context_size - 1) :]

    def export_decoder(self, pred_proj: nn.Module) -> DecoderGraph:
        return DecoderGraph(StatelessDecoder(self, pred_proj, self.blank), self.context_size)

    def select_state(self, state: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Reorder a batched state by hypothesis index[N] (beam search)."""
        return state[index]

    def merge_state(self, mask: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
        """new where mask[B] else old."""
        return torch.where(mask[:, None], new, old)


class LSTMPredictor(Predictor):
    """Embedding + LSTM + linear projection. State: (h, c), each [layers, B, hidden].
    forward(tokens[B, U], state) -> (out[B, U, dim], new_state)."""

    def __init__(
        self, vocab_size: int, dim: int, hidden: int = 320, num_layers: int = 1, blank: int = 0, dropout: float = 0.0
    ):
        super().__init__()
        self.blank = blank
        self.dim = dim
        self.embed = nn.Embedding(vocab_size, hidden)
        self.lstm = nn.LSTM(hidden, hidden, num_layers, batch_first=True, dropout=dropout if num_layers > 1 else 0.0)
        self.proj = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)

    def init_state(self, batch_size: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        z = torch.zeros(self.lstm.num_layers, batch_size, self.lstm.hidden_size, device=device)
        return z, z.clone()

    def forward(self, tokens: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None):
        if state is None:
            state = self.init_state(tokens.shape[0], tokens.device)
        y, new_state = self.lstm(self.drop(self.embed(tokens.to(torch.int64))), state)
        return self.proj(self.drop(y)), new_state

    def export_decoder(self, pred_proj: nn.Module) -> DecoderGraph:
        return DecoderGraph(LSTMDecoder(self, pred_proj), 1, (self.lstm.num_layers, self.lstm.hidden_size))

    def select_state(self, state, index: torch.Tensor):
        return state[0][:, index], state[1][:, index]

    def merge_state(self, mask: torch.Tensor, new, old):
        m = mask[None, :, None]
        return torch.where(m, new[0], old[0]), torch.where(m, new[1], old[1])


PREDICTORS = {"stateless": StatelessPredictor, "lstm": LSTMPredictor}


def _build_predictor(spec: dict | None, vocab_size: int, dim: int, blank: int, dropout: float) -> Predictor:
    """A predictor from its config {"kind": stateless|lstm, **kwargs}."""
    spec = dict(spec or {"kind": "stateless"})
    kind = spec.pop("kind", "stateless")
    if kind not in PREDICTORS:
        raise ValueError(f"unknown predictor {kind!r}; choose from {sorted(PREDICTORS)}")
    spec.setdefault("dropout", dropout)
    return PREDICTORS[kind](vocab_size, dim, blank=blank, **spec)


class Joint(nn.Module):
    """logits = out(tanh(enc_proj(enc) + pred_proj(pred))).

    forward(enc[B, T, D_enc], pred[B, U+1, D_pred] or per frame [B, T, U+1, D_pred]) ->
    logits[B, T, U+1, num_outputs]. Per-frame predictor outputs are TAED's, whose decoder
    states depend on the chunk a frame is in.
    """

    def __init__(self, enc_dim: int, pred_dim: int, joint_dim: int, num_outputs: int):
        super().__init__()
        self.enc_proj = nn.Linear(enc_dim, joint_dim)
        self.pred_proj = nn.Linear(pred_dim, joint_dim)
        self.out = nn.Linear(joint_dim, num_outputs)

    def project_enc(self, enc: torch.Tensor) -> torch.Tensor:
        return self.enc_proj(enc)

    def project_pred(self, pred: torch.Tensor) -> torch.Tensor:
        return self.pred_proj(pred)

    def combine(self, enc_p: torch.Tensor, pred_p: torch.Tensor) -> torch.Tensor:
        """Already projected inputs, any broadcastable shapes [..., joint_dim] -> [..., num_outputs]."""
        return self.out(torch.tanh(enc_p + pred_p))

    def forward(self, enc: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        pred_p = self.project_pred(pred)
        return self.combine(self.project_enc(enc)[:, :, None], pred_p if pred.dim() == 4 else pred_p[:, None])


class TransducerHead(Head):
    """Predictor + joint over encoder frames, trained with one transducer loss strategy.

    Args:
        enc_dim, vocab_size: encoder width and tokenizer size (blank = 0).
        loss: the criterion, "rnnt" | "pruned_rnnt" | "tdt" | "pruned_tdt" or {"kind": ..., **its options}
            (asr/nn/heads/transducer_loss.py). TDT's durations add outputs to the joint.
        predictor: {"kind": stateless|lstm, **kwargs of that predictor}, or a built Predictor
            (TAED passes its attention decoder's).
        pred_dim, joint_dim: predictor output and joint hidden widths.
        max_symbols: default cap of labels emitted on one frame by the searches.
    """

    kind = "transducer"

    def __init__(
        self,
        enc_dim: int,
        vocab_size: int,
        loss: str | dict = "rnnt",
        predictor: dict | Predictor | None = None,
        pred_dim: int = 256,
        joint_dim: int = 256,
        max_symbols: int = 10,
        blank: int = 0,
        dropout: float = 0.0,
    ):
        super().__init__()
        if max_symbols < 1:
            raise ValueError(f"max_symbols must be >= 1, not {max_symbols}")
        self.vocab_size = vocab_size
        self.blank = blank
        self.max_symbols = int(max_symbols)
        self.criterion = build_transducer_loss(loss, enc_dim, pred_dim, vocab_size)
        self.predictor = (
            predictor
            if isinstance(predictor, Predictor)
            else _build_predictor(predictor, vocab_size, pred_dim, blank, dropout)
        )
        self.drop = nn.Dropout(dropout)
        self.joint = Joint(enc_dim, pred_dim, joint_dim, vocab_size + len(self.durations))

    def symbols_per_frame(self, requested: int | None = None) -> int:
        """Most labels a search may emit on one frame: `requested` (None: max_symbols), capped at what
        the criterion's lattice allows (1 for the one-output-per-frame topologies: modified, rna,
        constrained)."""
        cap = int(requested or self.max_symbols)
        limit = self.criterion.symbols_per_frame
        return cap if limit is None else min(cap, limit)

    @property
    def durations(self) -> tuple[int, ...]:
        """Frame advances the joint predicts after the vocab_size token logits (TDT); () when it
        predicts tokens only, and blank advances one frame (RNN-T)."""
        return self.criterion.durations

    def export_graphs(self) -> TransducerGraphs:
        """Encoder projection, decoder and joiner graphs (sherpa-onnx's icefall transducer format;
        with an LSTM predictor's state or TDT durations, graphs only `asr transcribe --onnx` runs).

        Raises:
            NotExportable: a predictor without a decoder graph (Predictor.export_decoder).
        """
        dec = self.predictor.export_decoder(self.joint.pred_proj)
        return TransducerGraphs(
            enc_proj=self.joint.enc_proj,
            decoder=dec.module,
            joiner=Joiner(self.joint),
            vocab_size=self.vocab_size,
            context_size=dec.context_size,
            joiner_dim=self.joint.enc_proj.out_features,
            decoder_state=dec.state,
            durations=tuple(self.durations),
        )

    def predict(self, targets: torch.Tensor) -> torch.Tensor:
        """targets[B, U] -> predictor outputs [B, U+1, pred_dim] for the contexts <blank> y_1..y_U."""
        sos = torch.full((targets.shape[0], 1), self.blank, dtype=torch.int64, device=targets.device)
        out, _ = self.predictor(torch.cat([sos, targets.to(torch.int64)], dim=1))
        return out

    def loss(
        self,
        enc: torch.Tensor,
        enc_lens: torch.Tensor,
        targets: torch.Tensor,
        target_lens: torch.Tensor,
        step: int = 0,
        chunk_size: int = -1,
    ) -> dict[str, torch.Tensor]:
        """{"loss": scalar per target token of the batch, plus the criterion's parts for logging}."""
        enc = self.drop(enc)
        tokens = target_lens.sum().clamp(min=1)
        targets = targets[:, : int(target_lens.max())] if targets.shape[1] else targets
        out = self.criterion(self.joint, enc, self.predict(targets), targets, enc_lens, target_lens, self.blank, step)
        return {k: v / tokens for k, v in out.items()}
