"""`asr lm train` and `asr lm perplexity`: a token n-gram LM from a text file, and its fit to text.

The text is read one sentence a line and encoded with the acoustic model's tokenizer, so
the LM is trained on exactly the units the model emits. A line with characters the
tokenizer cannot encode (they would all become `<unk>`: text cased or written unlike the
training transcripts) is skipped and named, never silently learnt as `<unk>`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..data.tokenizer import UNK_ID, Tokenizer
from .arpa import write_arpa
from .kneser_ney import Estimate, estimate
from .ngram import NgramLM, token_pieces

log = logging.getLogger(__name__)

MAX_NAMED = 10  # skipped lines named one by one; the rest are counted


@dataclass
class TextReport:
    """What reading a text file kept and skipped."""

    lines: int = 0  # non-empty lines read
    kept: int = 0
    skipped: list[str] = field(default_factory=list)  # "file:line: why" per skipped line

    def summary(self) -> str:
        return f"{self.kept} of {self.lines} lines kept, {len(self.skipped)} skipped"


def read_sentences(path: str | Path, tokenizer: Tokenizer, skip_ids: bool, report: TextReport) -> Iterator[list[int]]:
    """Token ids of each usable line of `path` (one sentence a line; with skip_ids the first
    field, an utterance id as in `asr prepare`'s *.ref.txt, is dropped). Skipped lines are
    recorded in `report`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: text file not found")
    with path.open("rb") as f:
        for i, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                report.lines += 1
                report.skipped.append(f"{path}:{i}: not UTF-8 text ({e.reason} at byte {e.start})")
                continue
            words = line.split()[1:] if skip_ids else line.split()
            if not words:
                continue
            report.lines += 1
            text = " ".join(words)
            ids = tokenizer.encode(text)
            if UNK_ID in ids:  # only characters outside the tokenizer encode to <unk>
                bad = "".join(sorted(tokenizer.unknown_chars(text)))
                report.skipped.append(
                    f"{path}:{i}: characters outside the tokenizer {bad!r} "
                    "(is the text cased and written like the training transcripts?)"
                )
                continue
            report.kept += 1
            yield ids


def train_lm(
    text: str | Path, tokenizer: Tokenizer, out: str | Path, order: int = 3, skip_ids: bool = False
) -> tuple[Estimate, TextReport]:
    """Estimate an interpolated modified Kneser-Ney LM over `tokenizer`'s tokens from `text` and
    write it to `out` as ARPA (words: the tokenizer's pieces).

    Raises:
        FileNotFoundError: no text file. ValueError: no usable line (each skipped one named).
    """
    pieces = token_pieces(tokenizer)
    report = TextReport()
    sentences = ([pieces[t] for t in ids] for ids in read_sentences(text, tokenizer, skip_ids, report))
    vocabulary = [p for p in pieces if p]  # every token but blank, seen or not
    try:
        est = estimate(sentences, order, vocabulary)
    except ValueError as e:
        if report.kept:
            raise
        why = "\n  ".join(report.skipped[:MAX_NAMED])
        raise ValueError(f"{text}: no usable line ({report.summary()})" + (f":\n  {why}" if why else "")) from e
    for msg in report.skipped[:MAX_NAMED]:
        log.warning("skipped %s", msg)
    if len(report.skipped) > MAX_NAMED:
        log.warning("... and %d more lines skipped", len(report.skipped) - MAX_NAMED)
    write_arpa(est.arpa, out)
    return est, report


def perplexity(lm: NgramLM, text: str | Path, tokenizer: Tokenizer, skip_ids: bool = False) -> tuple[float, int]:
    """(per-token perplexity with </s> counted, tokens counted) of `lm` on the usable lines of `text`."""
    report = TextReport()
    total, n = 0.0, 0
    for ids in read_sentences(text, tokenizer, skip_ids, report):
        total += lm.sentence_score(ids)
        n += len(ids) + 1
    if n == 0:
        raise ValueError(f"{text}: no usable line ({report.summary()})")
    return math.exp(-total / n), n
