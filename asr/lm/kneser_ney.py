"""Interpolated modified Kneser-Ney estimation (Chen & Goodman 1998), written as a back-off model.

Sentences are sequences of words (here: token pieces) wrapped in `<s>` ... `</s>`. For order N:

- Counts. N-grams of order N keep their raw counts; a lower-order n-gram's count is its
  number of distinct one-word left extensions (its continuation count), which is what makes
  Kneser-Ney's lower orders predict words that follow many different histories. N-grams
  starting with `<s>` have no left extension and keep their raw counts.
- Discounts per order from the counts of counts t1..t4 (Chen & Goodman):
  Y = t1 / (t1 + 2 t2), D(k) = k - (k + 1) Y t(k+1) / t(k) for k = 1, 2, 3+. Tiny corpora can
  make them undefined or out of (0, k); that order then uses one discount D = Y for every
  count (interpolated Kneser-Ney), or 0.5 where even Y is undefined (`Estimate.discounts`
  says which).
- Interpolation: p(w | h) = max(c(h w) - D(c), 0) / c(h .) + gamma(h) p(w | h[1:]), with
  gamma(h) = (D(1) N1(h .) + D(2) N2(h .) + D(3+) N3+(h .)) / c(h .), down to the unigrams,
  which interpolate with the uniform distribution over the vocabulary (every word that can
  follow a history, `</s>` included), so a word never seen in training still gets
  probability and every history's distribution sums to 1.
- As a back-off model, a stored n-gram keeps the interpolated p(w | h) and the history's
  back-off weight is gamma(h): for a word not stored after h the interpolation's first term
  is 0, so p(w | h) = gamma(h) p(w | h[1:]) exactly.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .arpa import BOS, EOS, Arpa

# log10 probability of <s>, which is never predicted (ARPA convention)
BOS_LOG10 = -99.0


@dataclass(frozen=True)
class Estimate:
    """An estimated model and how it was estimated."""

    arpa: Arpa
    discounts: list[tuple[float, float, float]]  # per order 1..N: D(1), D(2), D(3+)
    modified: list[bool]  # per order: modified discounts (False: the one-discount fallback)
    sentences: int
    tokens: int  # words counted, </s> included


def _discounts(adjusted: Iterable[int]) -> tuple[tuple[float, float, float], bool]:
    """Modified Kneser-Ney discounts from one order's counts, or the fallback (see module doc)."""
    t = Counter(min(c, 5) for c in adjusted)
    t1, t2, t3, t4 = t[1], t[2], t[3], t[4]
    y = t1 / (t1 + 2 * t2) if t1 > 0 else None
    if y is not None and t2 > 0 and t3 > 0 and t4 > 0:
        d = (1 - 2 * y * t2 / t1, 2 - 3 * y * t3 / t2, 3 - 4 * y * t4 / t3)
        if all(0 < dk < k for k, dk in enumerate(d, start=1)):
            return d, True
    one = y if y is not None and 0 < y < 1 else 0.5
    return (one, one, one), False


def _count(sentences: Iterable[Sequence[str]], order: int) -> tuple[list[Counter], int, int]:
    """Raw counts of every n-gram (n = 1..order) ending at a predicted word (not at <s>)."""
    raw = [Counter() for _ in range(order)]
    n_sent = n_tok = 0
    for words in sentences:
        s = (BOS, *words, EOS)
        n_sent += 1
        n_tok += len(s) - 1
        for i in range(1, len(s)):
            for n in range(1, min(order, i + 1) + 1):
                raw[n - 1][s[i - n + 1 : i + 1]] += 1
    return raw, n_sent, n_tok


def estimate(sentences: Iterable[Sequence[str]], order: int, vocabulary: Sequence[str]) -> Estimate:
    """Estimate an interpolated modified Kneser-Ney model.

    Args:
        sentences: each a sequence of words, without `<s>`/`</s>`.
        order: N >= 1.
        vocabulary: every word the model predicts (for a token LM: every piece but blank);
            words of the sentences outside it are an error. `</s>` is added; `<s>` is not
            predicted (its unigram is written with log10 p = -99, the ARPA convention).
    Returns:
        The model (every vocabulary word has a unigram) and its discounts.
    """
    if order < 1:
        raise ValueError(f"order must be >= 1, not {order}")
    vocab = list(dict.fromkeys([*vocabulary, EOS]))
    raw, n_sent, n_tok = _count(sentences, order)
    if n_tok == 0:
        raise ValueError("no training sentences")
    unknown = {g[0] for g in raw[0]} - set(vocab)
    if unknown:
        raise ValueError(f"words outside the vocabulary: {sorted(unknown)[:10]}")
    # adjusted counts: continuation counts below the highest order, raw counts above and for <s> n-grams
    adjusted: list[Counter] = [Counter() for _ in range(order)]
    adjusted[order - 1] = raw[order - 1]
    for n in range(order - 1, 0, -1):
        cont = Counter(g[1:] for g in raw[n])  # distinct left extensions: each (n+1)-gram once
        adjusted[n - 1] = Counter({g: (c if g[0] == BOS else cont[g]) for g, c in raw[n - 1].items()})
    discounts, modified = zip(*(_discounts(a.values()) for a in adjusted))

    probs: list[dict[tuple[str, ...], float]] = []
    gammas: list[dict[tuple[str, ...], float]] = []  # per order n: histories of length n - 1
    for n in range(1, order + 1):
        d1, d2, d3 = discounts[n - 1]
        by_hist: dict[tuple[str, ...], list[tuple[str, int]]] = defaultdict(list)
        for g, c in adjusted[n - 1].items():
            by_hist[g[:-1]].append((g[-1], c))
        p_n: dict[tuple[str, ...], float] = {}
        g_n: dict[tuple[str, ...], float] = {}
        for h, followers in by_hist.items():
            total = sum(c for _, c in followers)
            n_k = Counter(min(c, 3) for _, c in followers)
            gamma = (d1 * n_k[1] + d2 * n_k[2] + d3 * n_k[3]) / total
            g_n[h] = gamma
            for w, c in followers:
                lower = probs[n - 2][h[1:] + (w,)] if n > 1 else 1.0 / len(vocab)
                p_n[h + (w,)] = (c - (d1, d2, d3)[min(c, 3) - 1]) / total + gamma * lower
        if n == 1:  # words never seen get the unigram's interpolation mass alone
            gamma = g_n[()]
            for w in vocab:
                p_n.setdefault((w,), gamma / len(vocab))
        probs.append(p_n)
        gammas.append(g_n)

    arpa = Arpa()
    for n in range(1, order + 1):
        hist_of_longer = gammas[n] if n < order else {}
        table: dict[tuple[str, ...], tuple[float, float | None]] = {}
        if n == 1:
            bos = hist_of_longer.get((BOS,))
            table[(BOS,)] = (BOS_LOG10, None if bos is None else math.log10(bos))
        for g in sorted(probs[n - 1]):
            gamma = hist_of_longer.get(g)
            table[g] = (math.log10(probs[n - 1][g]), None if gamma is None else math.log10(gamma))
        arpa.ngrams.append(table)
    return Estimate(arpa, list(discounts), list(modified), n_sent, n_tok)
