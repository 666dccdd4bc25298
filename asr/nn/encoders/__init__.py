"""Encoders: forward(x[B, T, F], x_lens[B]) -> (y[B, T', D], y_lens[B])."""
from __future__ import annotations

from torch import nn

from .conformer import ConformerEncoder

ENCODERS: dict[str, type[nn.Module]] = {"conformer": ConformerEncoder}


def build_encoder(name: str, **kwargs) -> nn.Module:
    """Encoder by registry name with typed keyword arguments (from the config)."""
    if name not in ENCODERS:
        raise ValueError(f"unknown encoder {name!r}; choose from {sorted(ENCODERS)}")
    return ENCODERS[name](**kwargs)
