"""ARPA back-off n-gram files: an in-memory form, a writer and a reader.

An ARPA file lists, for each order n = 1..N, n-grams as `log10(p)  w1 .. wn  [log10(bow)]`:
p(wn | w1..wn-1) for the n-grams the model stores, and the back-off weight of w1..wn as a
history. A history h and a word w the model does not store together score
p(w | h) = bow(h) * p(w | h[1:]) (bow = 1 where h stores no back-off). Words here are
tokenizer pieces (`▁THE`, `A`), with `<s>` and `</s>` around each sentence and `<unk>`.

The writer prints every number with Python's shortest exact repr, so `read_arpa(write_arpa(m))`
equals `m` bit for bit (a test checks it); files from KenLM or SRILM read as well.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

BOS, EOS, UNK = "<s>", "</s>", "<unk>"

_COUNT = re.compile(r"^ngram\s+(\d+)\s*=\s*(\d+)$")
_SECTION = re.compile(r"^\\(\d+)-grams:$")


class ArpaError(ValueError):
    """A malformed ARPA file; the message names file:line and what is wrong."""


@dataclass
class Arpa:
    """A back-off n-gram model as the ARPA format holds it.

    ngrams[n - 1] maps each stored n-gram (a tuple of n words) to (log10 p, log10 bow), where
    bow is None for n-grams written without a back-off weight (those of the highest order, and
    any that are no history of a longer n-gram).
    """

    ngrams: list[dict[tuple[str, ...], tuple[float, float | None]]] = field(default_factory=list)

    @property
    def order(self) -> int:
        return len(self.ngrams)

    def vocabulary(self) -> list[str]:
        """The words of the unigram section, in file order."""
        return [g[0] for g in self.ngrams[0]] if self.ngrams else []


def _num(x: float) -> str:
    """Shortest text that reads back as exactly x (ARPA readers accept Python's float syntax,
    and -inf is written as KenLM and SRILM write an impossible event: -99)."""
    return "-99" if x == -math.inf else repr(float(x))


def write_arpa(model: Arpa, path: str | Path) -> None:
    """Write `model` to `path` (n-grams in the dict's order within each section)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        f.write("\n\\data\\\n")
        for n, table in enumerate(model.ngrams, start=1):
            f.write(f"ngram {n}={len(table)}\n")
        for n, table in enumerate(model.ngrams, start=1):
            f.write(f"\n\\{n}-grams:\n")
            for gram, (lp, bow) in table.items():
                words = " ".join(gram)
                f.write(f"{_num(lp)}\t{words}\n" if bow is None else f"{_num(lp)}\t{words}\t{_num(bow)}\n")
        f.write("\n\\end\\\n")


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, stripped text) of the non-blank lines."""
    try:
        with path.open(encoding="utf-8") as f:
            for i, line in enumerate(f, start=1):
                s = line.strip()
                if s:
                    yield i, s
    except UnicodeDecodeError as e:
        raise ArpaError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from e


def _float(text: str, where: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ArpaError(f"{where}: {text!r} is not a number") from None


def read_arpa(path: str | Path) -> Arpa:
    """Read an ARPA file.

    Raises:
        FileNotFoundError: no such file.
        ArpaError naming file:line: no `\\data\\` header, a malformed count or n-gram line, an
            n-gram of the wrong order, sections whose sizes differ from the header's counts,
            or no `\\end\\` (a truncated file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: ARPA language model not found")
    lines = _lines(path)
    for _, s in lines:
        if s == "\\data\\":
            break
    else:
        raise ArpaError(f"{path}: no \\data\\ header; not an ARPA language model")
    counts: list[int] = []
    model = Arpa()
    order = 0  # the section being read (0: still in the header)
    for i, s in lines:
        where = f"{path}:{i}"
        if order == 0 and (m := _COUNT.match(s)):
            if int(m.group(1)) != len(counts) + 1:
                raise ArpaError(f"{where}: expected the count of {len(counts) + 1}-grams, read {s!r}")
            counts.append(int(m.group(2)))
            continue
        if (m := _SECTION.match(s)) or s == "\\end\\":
            if order and len(model.ngrams[order - 1]) != counts[order - 1]:
                raise ArpaError(
                    f"{where}: the {order}-gram section has {len(model.ngrams[order - 1])} entries but the "
                    f"header says {counts[order - 1]}"
                )
            if s == "\\end\\":
                if len(model.ngrams) != len(counts):
                    raise ArpaError(f"{where}: \\end\\ after {len(model.ngrams)} of {len(counts)} sections")
                return model
            order = int(m.group(1))
            if order != len(model.ngrams) + 1 or order > len(counts):
                raise ArpaError(f"{where}: unexpected section {s!r} (header counts {len(counts)} orders)")
            model.ngrams.append({})
            continue
        if order == 0:
            raise ArpaError(f"{where}: expected 'ngram N=COUNT' or '\\1-grams:', read {s[:60]!r}")
        fields = s.split()
        if len(fields) not in (order + 1, order + 2):
            raise ArpaError(f"{where}: a {order}-gram line holds log10(p), {order} words and an optional back-off")
        lp = _float(fields[0], where)
        bow = _float(fields[order + 1], where) if len(fields) == order + 2 else None
        model.ngrams[order - 1][tuple(fields[1 : order + 1])] = (lp, bow)
    raise ArpaError(f"{path}: ends without \\end\\ (truncated?)")
