"""Encoders: forward(x[B, T, F], x_lens[B]) -> (y[B, T', D], y_lens[B])."""
from __future__ import annotations

from collections.abc import Callable
from functools import partial

from torch import nn

from .conformer import ConformerEncoder
from .recurrent import LSTMEncoder, MinRNNEncoder

ENCODERS: dict[str, Callable[..., nn.Module]] = {
    "conformer": ConformerEncoder,
    "lstm": LSTMEncoder,
    "mingru": partial(MinRNNEncoder, cell="gru"),
    "minlstm": partial(MinRNNEncoder, cell="lstm"),
}


def build_encoder(name: str, **kwargs) -> nn.Module:
    """Encoder by registry name with typed keyword arguments (from the config)."""
    if name not in ENCODERS:
        raise ValueError(f"unknown encoder {name!r}; choose from {sorted(ENCODERS)}")
    return ENCODERS[name](**kwargs)
