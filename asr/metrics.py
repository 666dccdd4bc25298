"""WER/CER scoring of Kaldi-style `utt-id TEXT` files with per-utterance alignments (jiwer)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import jiwer

log = logging.getLogger(__name__)


def normalize(text: str) -> str:
    """Upper-case and collapse whitespace (the only normalization scoring applies)."""
    return " ".join(text.upper().split())


class TextFileError(ValueError):
    """A Kaldi text file that cannot be scored as it is; the message names file and line."""


def read_kaldi_text(path: str | Path) -> dict[str, str]:
    """`utt-id TEXT` lines -> {utt_id: text}; a line with only an id has empty text.

    Raises FileNotFoundError for a missing file, and TextFileError for a line that is not
    UTF-8 or an id given twice: which text to score would be a guess, so the error names the
    first duplicate's file:line, the first occurrence's line and how many ids are repeated.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    out: dict[str, str] = {}
    first: dict[str, int] = {}  # utt id -> line of its first occurrence
    repeats: list[tuple[int, str]] = []  # (line, utt id) of each later occurrence
    for lineno, raw in enumerate(path.read_bytes().splitlines(), 1):
        try:
            line = raw.decode("utf-8").strip()
        except UnicodeDecodeError as e:
            raise TextFileError(
                f"{path}:{lineno}: bytes {raw[e.start : e.end]!r} at column {e.start + 1} are not UTF-8"
            ) from e
        if not line:
            continue
        parts = line.split(maxsplit=1)
        if parts[0] in first:
            repeats.append((lineno, parts[0]))
            continue
        first[parts[0]] = lineno
        out[parts[0]] = parts[1] if len(parts) > 1 else ""
    if repeats:
        lineno, uid = repeats[0]
        n_ids = len({u for _, u in repeats})
        raise TextFileError(
            f"{path}:{lineno}: duplicate utterance id {uid} (first at {path}:{first[uid]}); {len(repeats)} "
            f"duplicate lines for {n_ids} ids in this file: scoring them would be ambiguous, remove the extra lines"
        )
    return out


@dataclass
class UttScore:
    id: str
    ref: str
    hyp: str
    ref_len: int  # words, or with cer characters including the single spaces between words (jiwer.cer's count)
    sub: int
    dele: int
    ins: int
    alignment: str  # jiwer's visual alignment (REF/HYP lines)

    @property
    def errors(self) -> int:
        return self.sub + self.dele + self.ins


@dataclass
class ScoreReport:
    unit: str  # "word" or "char"
    utts: list[UttScore] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # refs without a hypothesis
    extra: list[str] = field(default_factory=list)  # hyps without a reference

    @property
    def ref_len(self) -> int:
        return sum(u.ref_len for u in self.utts)

    def total(self, attr: str) -> int:
        return sum(getattr(u, attr) for u in self.utts)

    @property
    def error_rate(self) -> float:
        return sum(u.errors for u in self.utts) / max(1, self.ref_len)

    def summary(self) -> str:
        name = "WER" if self.unit == "word" else "CER"
        s = (
            f"%{name} {100 * self.error_rate:.2f} [ {sum(u.errors for u in self.utts)} / {self.ref_len}, "
            f"{self.total('ins')} ins, {self.total('dele')} del, {self.total('sub')} sub ] "
            f"over {len(self.utts)} utterances"
        )
        if self.missing:
            s += f"\n{len(self.missing)} utterances had no hypothesis (scored as all deletions)"
        if self.extra:
            s += f"\n{len(self.extra)} hypotheses had no reference (ignored): {' '.join(self.extra[:10])}"
        return s

    def details(self) -> str:
        """Per-utterance report, worst first."""
        lines = [self.summary(), ""]
        for u in sorted(self.utts, key=lambda u: (-u.errors / max(1, u.ref_len), u.id)):
            rate = 100 * u.errors / max(1, u.ref_len)
            lines.append(f"{u.id}  errors {u.errors}/{u.ref_len} ({rate:.1f}%)  sub {u.sub} del {u.dele} ins {u.ins}")
            lines.append(u.alignment.rstrip())
            lines.append("")
        return "\n".join(lines)


def _score_pair(uid: str, ref: str, hyp: str, cer: bool) -> UttScore:
    # CER follows jiwer (jiwer.cer): the space between two words is a character, in the
    # alignment and in the reference length alike, so the counts and the rate agree with it.
    ref_units = list(ref) if cer else ref.split()
    hyp_units = list(hyp) if cer else hyp.split()
    if not ref_units or not hyp_units:  # jiwer refuses empty strings; the counts are trivial
        return UttScore(uid, ref, hyp, len(ref_units), 0, len(ref_units), len(hyp_units), f"REF: {ref}\nHYP: {hyp}\n")
    out = jiwer.process_characters(ref, hyp) if cer else jiwer.process_words(ref, hyp)
    vis = jiwer.visualize_alignment(out, show_measures=False, skip_correct=False)
    vis = "\n".join(line for line in vis.splitlines() if not line.startswith("=== SENTENCE"))
    return UttScore(uid, ref, hyp, len(ref_units), out.substitutions, out.deletions, out.insertions, vis)


def score(refs: dict[str, str], hyps: dict[str, str], cer: bool = False) -> ScoreReport:
    """Score hypotheses against references (both {utt_id: text}), after normalize()."""
    rep = ScoreReport("char" if cer else "word")
    for uid in sorted(refs):
        if uid not in hyps:
            log.warning("no hypothesis for utterance %s: counted as all deletions", uid)
            rep.missing.append(uid)
        rep.utts.append(_score_pair(uid, normalize(refs[uid]), normalize(hyps.get(uid, "")), cer))
    rep.extra = sorted(set(hyps) - set(refs))
    if rep.extra:
        log.warning("%d hypotheses have no reference, e.g. %s", len(rep.extra), rep.extra[0])
    return rep


def matched_words(ref: str, hyp: str) -> list[int | None]:
    """Per hypothesis word, the index of the reference word it equals in the word alignment that
    `score` counts errors on (jiwer's), or None where it is substituted or inserted. Both texts
    are normalized first."""
    ref, hyp = normalize(ref), normalize(hyp)
    out: list[int | None] = [None] * len(hyp.split())
    if not ref or not hyp:
        return out
    for chunk in jiwer.process_words(ref, hyp).alignments[0]:
        if chunk.type == "equal":
            for k in range(chunk.hyp_end_idx - chunk.hyp_start_idx):
                out[chunk.hyp_start_idx + k] = chunk.ref_start_idx + k
    return out


def auroc(scores: list[float], positive: list[bool]) -> float:
    """Area under the ROC curve of `scores` separating positive from negative items: the
    probability that a random positive scores above a random negative (ties count half).
    Raises ValueError when either class is empty."""
    pos = [s for s, p in zip(scores, positive) if p]
    neg = [s for s, p in zip(scores, positive) if not p]
    if not pos or not neg:
        raise ValueError(f"AUROC needs both classes; got {len(pos)} positive and {len(neg)} negative items")
    # rank statistic (Mann-Whitney U) with average ranks for ties: O(n log n)
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    ranks = [0.0] * len(scores)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    rank_sum = sum(r for r, p in zip(ranks, positive) if p)
    return (rank_sum - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg))


def plot_error_by_length(rep: ScoreReport, path: str | Path, bins: int = 6) -> None:
    """Bar chart of the error rate by reference length (equal-count bins)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    utts = sorted(rep.utts, key=lambda u: u.ref_len)
    bins = max(1, min(bins, len(utts)))
    labels, rates = [], []
    for i in range(bins):
        chunk = utts[i * len(utts) // bins : (i + 1) * len(utts) // bins]
        if not chunk:
            continue
        labels.append(f"{chunk[0].ref_len}-{chunk[-1].ref_len}")
        rates.append(100 * sum(u.errors for u in chunk) / max(1, sum(u.ref_len for u in chunk)))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(labels, rates)
    name = "WER" if rep.unit == "word" else "CER"
    ax.set_xlabel(f"reference length ({rep.unit}s)")
    ax.set_ylabel(f"{name} (%)")
    ax.set_title(f"{name} by utterance length (overall {100 * rep.error_rate:.2f}%)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
