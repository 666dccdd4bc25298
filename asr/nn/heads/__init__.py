"""Heads over encoder output behind one interface (asr/nn/heads/base.py): `loss(enc, enc_lens,
tokens, token_lens, step)` -> {"loss", parts}; each head `kind` has its searches registered in
asr.decoding.registry."""

from __future__ import annotations

from .attention import AttentionHead
from .base import Head
from .ctc import CTCHead
from .taed import TAEDHead
from .transducer import TransducerHead

HEADS: dict[str, type[Head]] = {
    CTCHead.kind: CTCHead,
    TransducerHead.kind: TransducerHead,
    AttentionHead.kind: AttentionHead,
    TAEDHead.kind: TAEDHead,
}

__all__ = ["HEADS", "Head", "build_head"]


def build_head(kind: str, enc_dim: int, vocab_size: int, **kwargs) -> Head:
    """A head of `kind` over enc_dim-wide frames with typed keyword arguments (from the config)."""
    if kind not in HEADS:
        raise ValueError(f"unknown head {kind!r}; choose from {sorted(HEADS)}")
    return HEADS[kind](enc_dim, vocab_size, **kwargs)
