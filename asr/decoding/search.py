"""What every search returns, and the one interface searches share.

A search runs over encoder frames of a batch of utterances. It is resumable: `init` makes
the state before any frame, `advance` consumes the next frames (one call offline, one per
chunk when streaming), and `hypotheses` reads the results so far. Feeding frames in chunks
gives exactly the hypotheses of one call over all of them (tests check it per search).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch


@dataclass
class Hypothesis:
    """One utterance's decoding result.

    tokens: the best token ids. score: its log-probability under the search (greedy: of the
    best path; beam: the merged probability of the label sequence). nbest: for beam
    searches, every surviving hypothesis, best first (the first is this one, with an empty
    nbest of its own); empty for greedy searches.

    Per token (None where a search cannot say, e.g. the attention decoder's own searches):
    frames: the encoder frame it was emitted on, counted from the utterance's first frame
        (CTC: the first frame of its run; transducers: the frame the joint read).
    durations: the frames it covers (CTC: its run of frames; TDT: its predicted duration, 0
        for a label that stays on its frame; RNN-T: 1).
    confidence: how sure the model was where it emitted the token, in [0, 1]
        (asr.decoding.confidence: 1 - normalized entropy; CTC: the highest over its run; TDT: of
        the token's distribution, not the duration's).
    """

    tokens: list[int]
    score: float
    nbest: list[Hypothesis] = field(default_factory=list)
    frames: list[int] | None = None
    durations: list[int] | None = None
    confidence: list[float] | None = None

    def __post_init__(self) -> None:
        for name in ("frames", "durations", "confidence"):
            v = getattr(self, name)
            if v is not None and len(v) != len(self.tokens):
                raise ValueError(f"{name} has {len(v)} entries for {len(self.tokens)} tokens")

    @property
    def timed(self) -> bool:
        """Whether the search gave each token's frame (word times can be made)."""
        return self.frames is not None

    def with_score(self, score: float) -> Hypothesis:
        """The same tokens and times with another score (rescoring)."""
        return Hypothesis(self.tokens, score, [], self.frames, self.durations, self.confidence)


class Search(Protocol):
    """A resumable search over encoder frames enc[B, T, D] with lengths enc_lens[B]."""

    def init(self, batch_size: int, device: torch.device | str) -> Any:
        """The state before any frame."""
        ...

    def advance(self, state: Any, enc: torch.Tensor, enc_lens: torch.Tensor, final: torch.Tensor) -> Any:
        """The state after the next frames; final[B] marks utterances whose frames end here.
        The state passed in may be updated in place (its growing lists): use the one returned."""
        ...

    def hypotheses(self, state: Any) -> list[Hypothesis]:
        """The results so far (while streaming: partial; a beam search's best may still change)."""
        ...


def run_search(search: Search, enc: torch.Tensor, enc_lens: torch.Tensor) -> list[Hypothesis]:
    """Offline decoding: all frames in one advance."""
    state = search.init(enc.shape[0], enc.device)
    final = torch.ones(enc.shape[0], dtype=torch.bool, device=enc.device)
    return search.hypotheses(search.advance(state, enc, enc_lens, final))
