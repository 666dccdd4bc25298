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
    searches, every surviving (tokens, score), best first (the first is this hypothesis);
    empty for greedy searches.
    """

    tokens: list[int]
    score: float
    nbest: list[tuple[list[int], float]] = field(default_factory=list)


class Search(Protocol):
    """A resumable search over encoder frames enc[B, T, D] with lengths enc_lens[B]."""

    def init(self, batch_size: int, device: torch.device | str) -> Any:
        """The state before any frame."""
        ...

    def advance(self, state: Any, enc: torch.Tensor, enc_lens: torch.Tensor, final: torch.Tensor) -> Any:
        """The state after the next frames; final[B] marks utterances whose frames end here."""
        ...

    def hypotheses(self, state: Any) -> list[Hypothesis]:
        """The results so far (while streaming: partial; a beam search's best may still change)."""
        ...


def run_search(search: Search, enc: torch.Tensor, enc_lens: torch.Tensor) -> list[Hypothesis]:
    """Offline decoding: all frames in one advance."""
    state = search.init(enc.shape[0], enc.device)
    final = torch.ones(enc.shape[0], dtype=torch.bool, device=enc.device)
    return search.hypotheses(search.advance(state, enc, enc_lens, final))
