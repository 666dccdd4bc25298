"""CTC loss. Until the FSA-based kernels land (csrc/fsa), this is torch's CTC."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .precision import float32_loss


@float32_loss
def ctc_loss(
    log_probs: torch.Tensor,
    targets: torch.Tensor,
    input_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    blank: int = 0,
    reduction: str = "mean",
    zero_infinity: bool = True,
) -> torch.Tensor:
    """CTC negative log-likelihood.

    Args:
        log_probs: [B, T, V] log-softmax outputs.
        targets: [B, U] padded token ids (padding ignored via target_lengths).
        input_lengths, target_lengths: [B] int64.
        reduction: "none" ([B]), "sum", or "mean" (torch's: each loss divided by its
            target length, then averaged over the batch).
    """
    per_utt = F.ctc_loss(
        log_probs.transpose(0, 1),
        targets,
        input_lengths,
        target_lengths,
        blank=blank,
        reduction="none",
        zero_infinity=zero_infinity,
    )
    if reduction == "none":
        return per_utt
    if reduction == "sum":
        return per_utt.sum()
    if reduction == "mean":
        return (per_utt / target_lengths.clamp(min=1).to(per_utt.dtype)).mean()
    raise ValueError(f"reduction must be none|mean|sum, not {reduction!r}")
