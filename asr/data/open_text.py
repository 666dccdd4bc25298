"""Open-vocabulary English sentences from text that Debian installs offline.

Two sources, chosen for being real English prose in a broad vocabulary under free licences:
- `fortunes` (the fortune-mod cookie files: quotations, literature, jokes, science, law, ...;
  the offensive set, which Debian ships separately, is not read): long-form sentences with
  literary and conversational words;
- `wordnet-base` (WordNet 3.0's ~48k usage examples, the quoted parts of its glosses): short
  modern sentences that cover WordNet's whole vocabulary, including rare words.
Manual pages and package documentation were considered and left out: most of their sentences
are commands, options and paths, which the normalizer would drop or a reader would not say.

Every sentence goes through `normalize_sentence` (LibriSpeech's transcript conventions) and is
deduplicated; `OpenText.report()` says how many were kept and why the rest were dropped.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .text_norm import normalize_sentence, split_sentences

FORTUNE_DIR = Path("/usr/share/games/fortunes")
WORDNET_DIR = Path("/usr/share/wordnet")
DEBIAN_PACKAGES = ("fortunes", "wordnet-base")
# The cookie files of Debian's `fortunes` and `fortunes-min` (its dependency), named so that other
# fortune packages installed in the same folder (other languages, offensive sets) change nothing.
# Left out: art and ascii-art (pictures), translate-me (other languages).
FORTUNE_FILES = (
    "computers cookie debian definitions disclaimer drugs education ethnic food fortunes goedel humorists kids "
    "knghtbrd law linux linuxcookie literature love magic medicine men-women miscellaneous news paradoxum people "
    "perl pets platitudes politics pratchett riddles science songs-poems sports startrek tao wisdom work zippy"
).split()
_ATTRIBUTION = re.compile(r"^\s*(--|\u2014)|^\s{4,}-")  # "-- Mark Twain", "\t\t-- Author"
_WN_EXAMPLE = re.compile(r'"([^"]+)"')


def fortune_paragraphs(root: Path = FORTUNE_DIR) -> Iterator[str]:
    """Each cookie of the FORTUNE_FILES under root, attributions removed."""
    missing = [name for name in FORTUNE_FILES if not (root / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{root}: fortune files {missing} missing; run `apt-get install fortunes`")
    for path in (root / name for name in FORTUNE_FILES):
        for cookie in path.read_text(encoding="utf-8", errors="replace").split("\n%\n"):
            lines = [ln for ln in cookie.splitlines() if ln.strip() and not _ATTRIBUTION.match(ln)]
            if lines:
                yield " ".join(lines)


def wordnet_examples(root: Path = WORDNET_DIR) -> Iterator[str]:
    """WordNet's usage examples: the double-quoted parts of each synset's gloss."""
    for pos in ("noun", "verb", "adj", "adv"):
        for line in (root / f"data.{pos}").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("  ") or " | " not in line:
                continue  # the licence header
            yield from _WN_EXAMPLE.findall(line.split(" | ", 1)[1])


SOURCES = {"fortunes": (fortune_paragraphs, FORTUNE_DIR), "wordnet": (wordnet_examples, WORDNET_DIR)}


@dataclass
class OpenText:
    """Normalized, deduplicated sentences and the accounting of what was dropped."""

    sentences: list[str]  # sorted, unique
    source_counts: Counter = field(default_factory=Counter)  # kept sentences per source
    dropped: Counter = field(default_factory=Counter)  # reason -> count
    duplicates: int = 0

    def vocabulary(self) -> Counter:
        return Counter(w for s in self.sentences for w in s.split())

    def report(self) -> str:
        voc = self.vocabulary()
        lines = [
            f"{len(self.sentences)} sentences, {sum(voc.values())} words, {len(voc)} distinct words",
            "kept per source: " + ", ".join(f"{k} {v}" for k, v in sorted(self.source_counts.items())),
            f"dropped: {self.duplicates} duplicates; " + ", ".join(f"{k} {v}" for k, v in self.dropped.most_common()),
        ]
        return "\n".join(lines)


def collect_sentences(
    sources: dict[str, Iterator[str]] | None = None, min_words: int = 4, max_words: int = 25
) -> OpenText:
    """Normalize and deduplicate the sentences of every source (default: fortunes and WordNet).

    Raises FileNotFoundError naming the Debian package when a default source is not installed.
    """
    if sources is None:
        missing = [f"{name} ({root})" for name, (_, root) in SOURCES.items() if not root.is_dir()]
        if missing:
            raise FileNotFoundError(
                f"open-vocabulary text sources not installed: {', '.join(missing)}; "
                f"run `apt-get install {' '.join(DEBIAN_PACKAGES)}` (or `make setup`)"
            )
        sources = {name: read() for name, (read, _) in SOURCES.items()}
    seen: set[str] = set()
    out = OpenText([])
    for name, paragraphs in sources.items():
        for paragraph in paragraphs:
            for raw in split_sentences(paragraph):
                text, reason = normalize_sentence(raw, min_words, max_words)
                if text is None:
                    out.dropped[reason] += 1
                elif text in seen:
                    out.duplicates += 1
                else:
                    seen.add(text)
                    out.source_counts[name] += 1
    out.sentences = sorted(seen)
    return out


def split_disjoint(sentences: list[str], held_out: dict[str, int], seed: int) -> dict[str, list[str]]:
    """Shuffle (seeded) and deal `held_out[split]` sentences to each held-out split; the rest is "train".

    Sentences are unique, so the splits are disjoint by sentence.
    """
    order = sorted(sentences)
    random.Random(seed).shuffle(order)
    need = sum(held_out.values())
    if need >= len(order):
        raise ValueError(f"{need} held-out sentences asked for, only {len(order)} exist")
    out, start = {}, 0
    for split, n in held_out.items():
        out[split] = order[start : start + n]
        start += n
    out["train"] = order[start:]
    return out


def oov_rate(test: list[str], train: list[str]) -> tuple[float, float]:
    """(word-token OOV rate, word-type OOV rate) of the test sentences against the training text."""
    known = {w for s in train for w in s.split()}
    tokens = [w for s in test for w in s.split()]
    types = set(tokens)
    return (
        sum(w not in known for w in tokens) / max(len(tokens), 1),
        sum(w not in known for w in types) / max(len(types), 1),
    )
