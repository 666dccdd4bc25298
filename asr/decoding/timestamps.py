"""Words with times and confidences from a hypothesis's per-token frames.

Encoder frame i covers [i * shift, (i + 1) * shift) seconds, shift = feature hop x encoder
subsampling (40 ms for the default models). A token emitted on frame f with duration d
(Hypothesis.durations) covers [f, f + max(d, 1)) frames. A word runs from the start of its
first token with letters to the end of its last token: sentencepiece marks word starts with
"▁", and a bare "▁" token is the word boundary itself, which takes no time of its own.

A word's confidence is the mean of its tokens' (asr.decoding.confidence): of the ways to
combine them measured (min, mean, product, geometric mean; README, "Word timestamps and
confidence"), the mean separated right from wrong words best across CTC, RNN-T and TDT heads.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .search import Hypothesis

WORD_START = "\u2581"  # sentencepiece's word-start mark


@dataclass(frozen=True)
class Word:
    """A word (or token) with its start and end in seconds and a confidence in [0, 1]."""

    word: str
    start: float
    end: float
    confidence: float = 1.0

    def to_dict(self) -> dict:
        return {
            "word": self.word,
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "confidence": round(self.confidence, 4),
        }


def group_words(
    pieces: Sequence[str], spans: Sequence[tuple[float, float]], confidence: Sequence[float] | None = None
) -> list[Word]:
    """Group token pieces with their (start, end) seconds into words by sentencepiece's
    word-start mark; a word's confidence is the mean of its tokens' (1.0 without them)."""
    conf = confidence if confidence is not None else [1.0] * len(pieces)
    groups: list[tuple[str, float, float, list[float]]] = []
    new_word = True
    for piece, (s, e), c in zip(pieces, spans, conf):
        text = piece.replace(WORD_START, "")
        if piece.startswith(WORD_START):
            new_word = True
        if not text:
            continue
        if new_word or not groups:
            groups.append((text, s, e, [c]))
            new_word = False
        else:
            w, start, end, cs = groups[-1]
            groups[-1] = (w + text, start, max(end, e), [*cs, c])
    return [Word(w, s, e, sum(cs) / len(cs)) for w, s, e, cs in groups]


def token_spans(hyp: Hypothesis, shift: float, offset: int = 0) -> list[tuple[float, float]]:
    """(start, end) seconds of each token of a timed hypothesis whose frame 0 is frame `offset`
    of the audio."""
    if hyp.frames is None:
        raise ValueError("this search gives no token times (use greedy, beam or attention_rescoring)")
    durs = hyp.durations if hyp.durations is not None else [1] * len(hyp.frames)
    return [((offset + f) * shift, (offset + f + max(d, 1)) * shift) for f, d in zip(hyp.frames, durs)]


def hypothesis_words(hyp: Hypothesis, piece: Callable[[int], str], shift: float, offset: int = 0) -> list[Word]:
    """The words of a timed hypothesis: `piece(token id)` is the tokenizer's piece, `shift` the
    seconds of one encoder frame, `offset` the audio's frame of the hypothesis's frame 0.
    Raises ValueError when the search gave no token times."""
    return group_words([piece(t) for t in hyp.tokens], token_spans(hyp, shift, offset), hyp.confidence)


@dataclass(frozen=True)
class Transcript:
    """An utterance's text and, from a search that gives token times, its words."""

    text: str
    words: list[Word] | None = None
    hotwords: list[str] | None = None  # with hotword biasing: the phrases that fired, in order

    def to_dict(self, uid: str) -> dict:
        """The JSON-lines record: {"id", "text", "words": [{"word", "start", "end", "confidence"}]}
        (and "hotwords": [phrases that fired] when biased)."""
        out: dict = {"id": uid, "text": self.text}
        if self.words is not None:
            out["words"] = [w.to_dict() for w in self.words]
        if self.hotwords is not None:
            out["hotwords"] = self.hotwords
        return out
