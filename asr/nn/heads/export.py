"""What a head hands to ONNX export (asr/export.py): the graphs of its runtime format.

A head that can be exported returns one of the `*Graphs` below from `Head.export_graphs()`;
the others raise `NotExportable` with the reason. asr/export.py writes each format by its
`format` key, so it never asks which class a head is. The modules here are thin views over
the head's own layers (no weights are copied): exporting them traces the trained model.

Formats (the ones sherpa-onnx reads; see README "Export"):
- "ctc": encoder frames enc[N, T, D] -> log_probs[N, T, V] inside the encoder graph.
- "transducer": icefall's stateless transducer as three graphs: the joint's encoder
  projection inside the encoder graph, a decoder y[N, context_size] -> decoder_out[N, J]
  with the predictor projection inside, and a joiner (encoder_out[N, J], decoder_out[N, J])
  -> logits[N, V]. Two variants only `asr transcribe --onnx` decodes (sherpa-onnx's icefall
  searches read neither): an LSTM predictor's decoder carries its state, (y[N, 1], h, c) ->
  (decoder_out[N, J], h', c') (`LSTMDecoder`), and a TDT joiner returns [N, V + D], the token
  logits then one logit per duration of `durations`.
- "attention": an attention decoder that rescores a CTC head's n-best (`asr transcribe --onnx`
  only; no sherpa-onnx recognizer rescores): the decoder's memory projection rides in the encoder
  graph, and a decoder graph scores whole hypotheses, (memory, memory_lens, ys_in) -> log_probs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from .. import NotExportable

__all__ = [
    "AttentionGraphs",
    "CTCGraphs",
    "DecoderLogProbs",
    "DecoderGraph",
    "Joiner",
    "LSTMDecoder",
    "NotExportable",
    "StatelessDecoder",
    "TransducerGraphs",
]


@dataclass(frozen=True)
class CTCGraphs:
    """A CTC head: `log_probs` maps enc[N, T, D] -> log-probabilities [N, T, V] (blank = 0)."""

    format: ClassVar[str] = "ctc"
    log_probs: nn.Module
    vocab_size: int

    @property
    def sherpa_onnx(self) -> bool:
        """Whether sherpa-onnx runs these graphs (always: its zipformer2_ctc interface)."""
        return True


@dataclass(frozen=True)
class DecoderGraph:
    """A predictor's decoder graph (Predictor.export_decoder): the module, the labels it reads,
    and the shape of the state it carries between calls (None: stateless)."""

    module: nn.Module  # stateless: y[N, context_size] -> decoder_out[N, J]; else LSTMDecoder's signature
    context_size: int
    state: tuple[int, int] | None = None  # (layers, hidden) of h and c, each [layers, N, hidden]


@dataclass(frozen=True)
class TransducerGraphs:
    """A transducer split as sherpa-onnx's icefall format wants it (a stateless predictor and no
    durations: what sherpa-onnx runs); an LSTM state or TDT durations ride along for `--onnx`."""

    format: ClassVar[str] = "transducer"
    enc_proj: nn.Module  # enc[N, T, D] -> encoder_out[N, T, J] (the joint's encoder projection)
    decoder: nn.Module  # y[N, context_size] int64 (-1 before the start) -> decoder_out[N, J]; or stateful
    joiner: nn.Module  # (encoder_out[N, J], decoder_out[N, J]) -> logits[N, V + len(durations)]
    vocab_size: int
    context_size: int
    joiner_dim: int
    decoder_state: tuple[int, int] | None = None  # (layers, hidden): the decoder is LSTMDecoder-like
    durations: tuple[int, ...] = ()  # TDT: frames each duration logit advances

    @property
    def sherpa_onnx(self) -> bool:
        """Whether sherpa-onnx's icefall transducer runs these graphs (stateless, no durations)."""
        return self.decoder_state is None and not self.durations


@dataclass(frozen=True)
class AttentionGraphs:
    """An attention decoder for rescoring another head's n-best (WeNet's attention rescoring):
    `memory` maps enc[N, T, D] -> memory[N, T, d] (runs in the encoder graph, once per utterance);
    `decoder` (and `r_decoder`, the right-to-left one, when trained) maps (memory[N, T, d],
    memory_lens[N], ys_in[N, L] = sos and the hypothesis, right-padded) -> log_probs[N, L, V + 1]
    of each next token, eos = sos = V last (`DecoderLogProbs`)."""

    format: ClassVar[str] = "attention"
    memory: nn.Module
    decoder: nn.Module
    r_decoder: nn.Module | None
    vocab_size: int
    sos: int
    sherpa_onnx: ClassVar[bool] = False  # no sherpa-onnx recognizer rescores with a decoder graph


class DecoderLogProbs(nn.Module):
    """forward(memory[N, T, d], memory_lens[N], ys_in[N, L]) -> log_probs[N, L, V + 1]: a
    TransformerDecoder (forward(ys, ys_lens, memory, memory_valid) -> logits) over whole prefixes,
    log-softmaxed in float32. Padding after a row's prefix needs no length: the causal mask keeps
    it from the real positions."""

    def __init__(self, decoder: nn.Module):
        super().__init__()
        self.decoder = decoder

    def forward(self, memory: torch.Tensor, memory_lens: torch.Tensor, ys_in: torch.Tensor) -> torch.Tensor:
        valid = torch.arange(memory.shape[1], device=memory.device)[None, :] < memory_lens[:, None]
        return self.decoder(ys_in, None, memory, valid).float().log_softmax(-1)


class StatelessDecoder(nn.Module):
    """forward(y[N, C] int64) -> decoder_out[N, J]: a stateless predictor's output for the last
    C labels, through the joint's predictor projection.

    sherpa-onnx starts every utterance with the context [-1, ..., -1, blank] (icefall pads the
    context with -1 and zeroes its embedding). Our predictor was trained with the context padded
    by blank (StatelessPredictor.init_state), so negative ids are mapped to blank here: the graph
    then gives exactly what our own searches compute.

    Args:
        predictor: forward(tokens[N, U], state[N, C-1]) -> (out[N, U, dim], state), the state
            being the C-1 labels before `tokens` (StatelessPredictor).
        pred_proj: the joint's projection dim -> J.
    """

    def __init__(self, predictor: nn.Module, pred_proj: nn.Module, blank: int):
        super().__init__()
        self.predictor, self.pred_proj, self.blank = predictor, pred_proj, blank

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        y = torch.where(y < 0, torch.full_like(y, self.blank), y)
        out, _ = self.predictor(y[:, -1:], y[:, :-1])  # [N, 1, dim]
        return self.pred_proj(out[:, 0])


class LSTMDecoder(nn.Module):
    """forward(y[N, 1] int64, h[L, N, H], c[L, N, H]) -> (decoder_out[N, J], h', c'): one step of
    an LSTM predictor from its state after the previous labels, through the joint's predictor
    projection. A search starts from h = c = 0 and y = blank (our searches' start).

    Args:
        predictor: forward(tokens[N, U], (h, c)) -> (out[N, U, dim], (h, c)) (LSTMPredictor).
        pred_proj: the joint's projection dim -> J.
    """

    def __init__(self, predictor: nn.Module, pred_proj: nn.Module):
        super().__init__()
        self.predictor, self.pred_proj = predictor, pred_proj

    def forward(self, y: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out, (h, c) = self.predictor(y, (h, c))
        return self.pred_proj(out[:, 0]), h, c


class Joiner(nn.Module):
    """forward(encoder_out[N, J], decoder_out[N, J]) -> logits[N, V]: both already projected
    (the projections live in the encoder and decoder graphs, so a search step runs only this).

    Args:
        joint: has combine(enc_p, pred_p) -> logits (asr.nn.heads.transducer.Joint).
    """

    def __init__(self, joint: nn.Module):
        super().__init__()
        self.joint = joint

    def forward(self, encoder_out: torch.Tensor, decoder_out: torch.Tensor) -> torch.Tensor:
        return self.joint.combine(encoder_out, decoder_out)
