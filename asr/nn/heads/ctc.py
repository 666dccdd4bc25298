"""CTC head: a linear layer over encoder frames to log-probabilities."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...losses import ctc_loss


class CTCHead(nn.Module):
    """forward(enc[B, T, D]) -> log_probs[B, T, V] (blank = 0)."""

    def __init__(self, enc_dim: int, vocab_size: int, dropout: float = 0.0):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.proj = nn.Linear(enc_dim, vocab_size)

    def forward(self, enc: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.proj(self.drop(enc)).float(), dim=-1)

    def loss(self, enc: torch.Tensor, enc_lens: torch.Tensor, targets: torch.Tensor, target_lens: torch.Tensor,
             step: int = 0) -> torch.Tensor:
        """Scalar CTC loss per target token of the batch: long and short batches weigh the same per token."""
        total = ctc_loss(self(enc), targets, enc_lens, target_lens, blank=0, reduction="sum")
        return total / target_lens.sum().clamp(min=1)
