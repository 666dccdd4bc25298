"""The head interface: what every head over encoder frames implements.

A head turns encoder output enc[B, T, D] (lengths enc_lens[B]) into a training loss, and is
decoded by the searches registered for its `kind` in asr.decoding.registry (greedy, beam, and
their resumable init/advance form that streaming uses). Nothing outside asr/nn/heads/ asks
which class a head is: the model, transcription, alignment, streaming and export go through
`kind`, `loss`, the search registry and `export_graphs`. Hybrids are several heads with weights (asr.model).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch
from torch import nn

from .export import AttentionGraphs, CTCGraphs, NotExportable, TransducerGraphs


class Head(nn.Module, ABC):
    """Base class of the heads.

    Class attributes:
        kind: the registry key of the head's searches ("ctc", "transducer", ...).
    Attributes:
        vocab_size: tokens the head scores (blank = `blank`, id 0 by convention).
    """

    kind: ClassVar[str]
    vocab_size: int
    blank: int

    @abstractmethod
    def loss(
        self,
        enc: torch.Tensor,
        enc_lens: torch.Tensor,
        tokens: torch.Tensor,
        token_lens: torch.Tensor,
        step: int = 0,
        chunk_size: int = -1,
    ) -> dict[str, torch.Tensor]:
        """{"loss": scalar per target token of the batch, **parts to log (detached)}.

        Args:
            enc: [B, T, D] encoder output; enc_lens: [B] valid frames.
            tokens: [B, U] target ids (padded); token_lens: [B].
            step: the training step (for loss schedules such as the pruned RNN-T warm-up).
            chunk_size: the encoder's chunk (encoder frames, -1 = full context) for this batch;
                only heads whose outputs depend on it (TAED) read it.
        """

    def export_graphs(self) -> CTCGraphs | TransducerGraphs | AttentionGraphs:
        """The head's graphs in the ONNX format of its kind (asr.nn.heads.export), for `asr export`.

        Raises:
            NotExportable: the head (or a part of it) has no export yet; the message says why.
        """
        raise NotExportable(
            f"the {self.kind} head has no ONNX export yet (exported: CTC heads, transducers and attention decoders)"
        )

    def attention_decoder(self) -> Head | None:
        """The attention decoder that the `attention`, `attention_rescoring` and `joint` methods
        use, when this head has one (an attention head is its own; TAED's predictor is one)."""
        return None
