"""Heads over encoder output. Each has `loss(enc, enc_lens, targets, target_lens, step)` returning a
scalar, or a dict with "loss" and parts to log; `step` is the training step (for loss schedules)."""
from __future__ import annotations

from torch import nn

from .ctc import CTCHead
from .transducer import TransducerHead

HEADS: dict[str, type[nn.Module]] = {"ctc": CTCHead, "transducer": TransducerHead}


def build_head(kind: str, enc_dim: int, vocab_size: int, **kwargs) -> nn.Module:
    if kind not in HEADS:
        raise ValueError(f"unknown head {kind!r}; choose from {sorted(HEADS)}")
    return HEADS[kind](enc_dim, vocab_size, **kwargs)
