"""CTC head: a linear layer over encoder frames to log-probabilities, and its loss.

The loss is torch's CTC (`loss: ctc`, the default) or CTC over FSA graphs (`loss: ctc_fst`,
asr.losses.ctc_fst_loss), which adds the modified topology, a delay penalty, a repeat penalty
(blank regularization for frame skipping) and Viterbi (max-approximation) training.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...losses import ctc_fst_loss, ctc_loss
from ...losses.ctc_fst import check_repeat_penalty
from .base import Head
from .export import CTCGraphs


class CTCHead(Head):
    """forward(enc[B, T, D]) -> log_probs[B, T, V] (blank = 0).

    Args:
        loss: "ctc" (torch's) or "ctc_fst" (our FSA graphs); the options below need ctc_fst.
        topology: "standard" or "modified" (repeated tokens need no blank).
        delay_penalty: > 0 rewards emitting tokens on earlier frames (streaming latency).
        viterbi: train on the best path only.
        repeat_penalty: >= 0, log-space cost of each frame that repeats a token: blank-regularized
            CTC, whose blank frames a transducer beside it can skip (DecodeOptions.skip_blank).
    """

    kind = "ctc"

    def __init__(
        self,
        enc_dim: int,
        vocab_size: int,
        dropout: float = 0.0,
        loss: str = "ctc",
        topology: str = "standard",
        delay_penalty: float = 0.0,
        viterbi: bool = False,
        repeat_penalty: float = 0.0,
    ):
        super().__init__()
        if loss not in ("ctc", "ctc_fst"):
            raise ValueError(f"CTC head loss must be ctc|ctc_fst, not {loss!r}")
        repeat_penalty = check_repeat_penalty(repeat_penalty)
        if loss == "ctc" and (topology != "standard" or delay_penalty or viterbi or repeat_penalty):
            raise ValueError("topology, delay_penalty, repeat_penalty and viterbi need the FSA loss: set loss: ctc_fst")
        self.vocab_size, self.blank = vocab_size, 0
        self.loss_kind, self.topology, self.delay_penalty, self.viterbi = loss, topology, delay_penalty, viterbi
        self.repeat_penalty = repeat_penalty
        self.drop = nn.Dropout(dropout)
        self.proj = nn.Linear(enc_dim, vocab_size)

    def forward(self, enc: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.proj(self.drop(enc)).float(), dim=-1)

    def blank_posterior(self, enc: torch.Tensor) -> torch.Tensor:
        """enc[B, T, D] -> P(blank)[B, T], without dropout (what frame skipping reads, in training too)."""
        return F.softmax(self.proj(enc).float(), dim=-1)[..., self.blank]

    def export_graphs(self) -> CTCGraphs:
        """This head as it runs in the encoder graph: enc[N, T, D] -> log_probs[N, T, V]."""
        return CTCGraphs(log_probs=self, vocab_size=self.vocab_size)

    def loss(
        self,
        enc: torch.Tensor,
        enc_lens: torch.Tensor,
        targets: torch.Tensor,
        target_lens: torch.Tensor,
        step: int = 0,
        chunk_size: int = -1,
    ) -> dict[str, torch.Tensor]:
        """{"loss": CTC loss per target token of the batch}: long and short batches weigh the same per token."""
        if self.loss_kind == "ctc":
            total = ctc_loss(self(enc), targets, enc_lens, target_lens, blank=0, reduction="sum")
        else:
            total = ctc_fst_loss(
                self(enc),
                targets,
                enc_lens,
                target_lens,
                topology=self.topology,
                delay_penalty=self.delay_penalty,
                viterbi=self.viterbi,
                repeat_penalty=self.repeat_penalty,
                reduction="sum",
                zero_infinity=True,
            )
        return {"loss": total / target_lens.sum().clamp(min=1)}
