"""Encoders behind one interface (asr/nn/encoders/base.py): forward(x[B, T, F], x_lens[B]) ->
(y[B, T', D], y_lens[B]); streaming encoders add init_state / chunk_input_frames / forward_chunk."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from .base import Encoder, StreamingEncoder
from .conformer import ConformerEncoder
from .recurrent import LSTMEncoder, MinRNNEncoder

ENCODERS: dict[str, Callable[..., Encoder]] = {
    "conformer": ConformerEncoder,
    "lstm": LSTMEncoder,
    "mingru": partial(MinRNNEncoder, cell="gru"),
    "minlstm": partial(MinRNNEncoder, cell="lstm"),
}

__all__ = ["ENCODERS", "Encoder", "StreamingEncoder", "build_encoder"]


def build_encoder(name: str, **kwargs) -> Encoder:
    """Encoder by registry name with typed keyword arguments (from the config)."""
    if name not in ENCODERS:
        raise ValueError(f"unknown encoder {name!r}; choose from {sorted(ENCODERS)}")
    return ENCODERS[name](**kwargs)
