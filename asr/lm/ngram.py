"""An ARPA n-gram model over the tokenizer's ids, scoring one token at a time for beam search.

The LM's units are the tokens the acoustic model emits (sentencepiece pieces or characters),
not words: CTC prefix beam search and transducer beam search extend a hypothesis one token
at a time, and a token LM scores every extension at once, with a state that is just the
token history, no word-boundary look-ahead and no out-of-vocabulary words (any token
sequence has a probability). Its rows of V log-probabilities line up with the heads' output
logits [..., V], so a batched search adds them in one tensor operation.

State. A state is an int naming the longest suffix of the history (at most N - 1 tokens) that
is a history of some stored n-gram (a "context"); longer suffixes cannot change any score
(they store no n-gram and no back-off), so equal states score every continuation alike and
the number of states is bounded by the model's size, not by the hypotheses'. State 0 is the
empty history; `initial_state()` is the history `<s>`.

Scores. `score(state, token) -> (ln p(token | history), next state)`, `final_score(state) =
ln p(</s> | history)`, all natural-log. The blank token (id 0) is no LM event: it scores 0 and
keeps the state. Every query reads a row: for a state, ln p of every token (and `</s>`) and
the next state after each, computed from the state's back-off state's row (bow added, stored
n-grams written over it) and kept in an LRU cache sized in bytes, so a search pays O(V) once
per state it visits and O(1) per query after that.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from ..data.tokenizer import BLANK_ID, Tokenizer
from .arpa import BOS, EOS, UNK, Arpa, ArpaError, read_arpa

_LN10 = math.log(10.0)
_FLOOR = -99.0 * _LN10  # ln p of a token an external ARPA neither stores nor maps to <unk>


def token_pieces(tokenizer: Tokenizer) -> list[str]:
    """The tokenizer's pieces by id, as the LM's words; index 0 (blank) is no LM word ("").

    Raises ValueError if a piece is `<s>` or `</s>` (the ARPA sentence marks) or holds white
    space (an ARPA line separates words by it)."""
    pieces = [tokenizer.sp.id_to_piece(i) for i in range(len(tokenizer))]
    bad = [p for p in pieces if p in (BOS, EOS) or any(c.isspace() for c in p)]
    if bad:
        raise ValueError(f"tokenizer pieces {bad[:5]} cannot be LM words (sentence marks or white space)")
    pieces[BLANK_ID] = ""
    return pieces


class NgramLM:
    """Token-level back-off n-gram LM with explicit states (see the module doc).

    Args:
        arpa: the model, its words being `tokenizer`'s pieces.
        tokenizer: the acoustic model's tokenizer; V = len(tokenizer).
        cache_mb: memory for cached rows (each (V + 1) * 12 bytes).
        source: where the model came from, for error messages.
    """

    def __init__(self, arpa: Arpa, tokenizer: Tokenizer, cache_mb: float = 128.0, source: str = "<lm>"):
        pieces = token_pieces(tokenizer)
        self.vocab_size = v = len(pieces)
        self.order = arpa.order
        self.eos = v  # row index of </s>
        if self.order < 1:
            raise ArpaError(f"{source}: no n-grams")
        word_id = {p: i for i, p in enumerate(pieces) if i != BLANK_ID}
        word_id[EOS] = self.eos
        word_id[BOS] = bos = v + 1  # appears in histories only
        unknown = sorted({w for table in arpa.ngrams for g in table for w in g} - set(word_id))
        if unknown:
            raise ArpaError(
                f"{source}: words {unknown[:5]} ({len(unknown)} in all) are not pieces of the tokenizer: the LM "
                "was trained with another tokenizer, or over words (this LM scores the model's tokens; train "
                "it with `asr lm train --tokenizer`)"
            )
        # per context (a history that stores n-grams): its stored words and their ln p
        ext: dict[tuple[int, ...], list[tuple[int, float]]] = defaultdict(list)
        self._bow: dict[tuple[int, ...], float] = {}
        for table in arpa.ngrams:
            for gram, (lp, bow) in table.items():
                ids = tuple(word_id[w] for w in gram)
                if ids[-1] != bos:  # <s> is never predicted
                    ext[ids[:-1]].append((ids[-1], lp * _LN10))
                if bow is not None:
                    self._bow[ids] = bow * _LN10
        # states: the empty history first, then every context (prefixes of stored n-grams)
        contexts = {h[:k] for h in ext for k in range(1, len(h) + 1)}
        self._ctx: list[tuple[int, ...]] = [()] + sorted(contexts, key=lambda h: (len(h), h))
        self._state = {h: i for i, h in enumerate(self._ctx)}
        self._ext = {
            self._state[h]: (np.array([w for w, _ in e], dtype=np.int64), np.array([p for _, p in e]))
            for h, e in ext.items()
        }
        unk = dict(ext.get((), [])).get(word_id.get(UNK, -1))
        self._unigram_fill = _FLOOR if unk is None else unk
        # per state: its back-off state (longest proper suffix that is a context) and the states
        # one token longer (history + token, where that is a context)
        self._backoff = [0] * len(self._ctx)
        children: dict[int, list[tuple[int, int]]] = defaultdict(list)
        for s, h in enumerate(self._ctx[1:], start=1):
            self._backoff[s] = self._longest_context(h[1:])
            if h[-1] != bos:  # <s> starts a history (initial_state), no token leads to it
                children[self._state[h[:-1]]].append((h[-1], s))
        self._children = {
            s: (np.array([w for w, _ in c], dtype=np.int64), np.array([t for _, t in c], dtype=np.int64))
            for s, c in children.items()
        }
        self._start = self._longest_context((bos,))
        row_bytes = (v + 1) * 12
        self._row = lru_cache(maxsize=max(64, int(cache_mb * 2**20) // row_bytes))(self._compute_row)

    @classmethod
    def load(cls, path: str | Path, tokenizer: Tokenizer, cache_mb: float = 128.0) -> NgramLM:
        """Read an ARPA file whose words are `tokenizer`'s pieces (as `asr lm train` writes)."""
        return cls(read_arpa(path), tokenizer, cache_mb, source=str(path))

    @property
    def num_states(self) -> int:
        return len(self._ctx)

    def _longest_context(self, h: tuple[int, ...]) -> int:
        while h not in self._state:
            h = h[1:]
        return self._state[h]

    def history(self, state: int) -> tuple[int, ...]:
        """The token ids a state stands for (V + 1 stands for <s>)."""
        return self._ctx[state]

    def _compute_row(self, state: int) -> tuple[np.ndarray, np.ndarray]:
        """(ln p[V + 1] of every token and </s>, next state[V + 1]) after `state`."""
        if state == 0:
            lp = np.full(self.vocab_size + 1, self._unigram_fill)
            nxt = np.zeros(self.vocab_size + 1, dtype=np.int64)
        else:
            back_lp, back_nxt = self._row(self._backoff[state])
            lp = back_lp + self._bow.get(self._ctx[state], 0.0)
            nxt = back_nxt.copy()
        if state in self._ext:
            words, logp = self._ext[state]
            lp[words] = logp
        if state in self._children:
            words, states = self._children[state]
            nxt[words] = states
        lp.flags.writeable = nxt.flags.writeable = False  # shared by every caller of the cache
        return lp, nxt

    def initial_state(self) -> int:
        """The state after `<s>`."""
        return self._start

    def score(self, state: int, token: int) -> tuple[float, int]:
        """(ln p(token | state), the state after it); blank: (0.0, state)."""
        if token == BLANK_ID:
            return 0.0, state
        lp, nxt = self._row(state)
        return float(lp[token]), int(nxt[token])

    def final_score(self, state: int) -> float:
        """ln p(</s> | state): the end of the sentence."""
        return float(self._row(state)[0][self.eos])

    def score_all(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every token's score after each of states[N] (int64, any device).

        Returns:
            (ln p [N, V] float32, next state [N, V] int64), on the states' device; column 0
            (blank) is 0.0 and the state itself.
        """
        uniq, inverse = torch.unique(states.cpu(), return_inverse=True)
        rows = [self._row(int(s)) for s in uniq.tolist()]
        lp = torch.from_numpy(np.stack([r[0][: self.vocab_size] for r in rows]).astype(np.float32))[inverse]
        nxt = torch.from_numpy(np.stack([r[1][: self.vocab_size] for r in rows]))[inverse]
        lp[:, BLANK_ID] = 0.0
        nxt[:, BLANK_ID] = states.cpu()
        return lp.to(states.device), nxt.to(states.device)

    def sentence_score(self, tokens: Sequence[int], eos: bool = True) -> float:
        """ln p of a token sequence from `<s>` (and to `</s>` if eos)."""
        state, total = self.initial_state(), 0.0
        for t in tokens:
            lp, state = self.score(state, int(t))
            total += lp
        return total + (self.final_score(state) if eos else 0.0)
