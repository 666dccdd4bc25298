"""Hotwords (contextual biasing): an Aho-Corasick automaton over token ids that beam searches
step through, one state per hypothesis, to favour hypotheses that spell listed phrases.

Phrase file: one phrase a line, written as the transcripts are (same case and characters);
an optional boost at the end of the line, after white space and a colon, replaces the
default bonus per token for that phrase. Blank lines and lines starting with `#` are skipped:

    # names the model does not know
    KUBERNETES
    ADA LOVELACE :3.0

Scores. Every phrase of L tokens with boost b is worth b * L, in the natural-log units of the
search's scores, each time it is matched in full (it "fires"). Hypotheses get that credit a
token at a time: a bonus for each token that extends a phrase, taken back (a negative bonus)
when the phrase is abandoned, or by `finalize` when the hypothesis ends inside it. So the
bonuses of a hypothesis always add up to the sum of b * L over the phrases that fired in it,
and to 0 where none did. Formally the bonus of a step s -> s' is R(s') + Phi(s') - Phi(s):
R(s') is the reward of the phrases that end at s' (its own and, through output links, those
that are suffixes of it), and Phi is a potential, the credit paid ahead for a partial match:
b * depth along a phrase, less what was already rewarded on the way there, never below 0;
at the end of a phrase that extends no further it is 0. Phi(root) = 0 and `finalize` returns
-Phi(s), which is what makes the totals exact whatever Phi is.

Matching. States are the nodes of a prefix tree of the phrases' token ids (0 = root, no
partial match). A token that does not extend the current partial match follows fail links
to the longest suffix of the history that is still a phrase prefix, so a match can restart
inside an abandoned one (phrases `A B X` and `B C`: history `A B C` fires `B C`). Phrases
that are suffixes of others fire through output links (`X A B` fires `A B` as well), and a
phrase that is a prefix of another fires on the way (`A B` within `A B C`). `matches(tokens)`
lists what fired in a token sequence; `fired(state)` what fired on arriving at a state.

Like the n-gram LM, the graph reads rows: for a state, the next state and bonus for every
token (blank: 0 and the same state), built from the fail state's row and cached, so batched
searches add a row [V] per hypothesis in one tensor operation (`score_all`).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from ..data.tokenizer import BLANK_ID, Tokenizer

DEFAULT_BOOST = 1.5  # bonus per token of a phrase (sherpa-onnx's default hotwords score)


class HotwordsError(ValueError):
    """A bad hotwords file or phrase; the message names file:line and what is wrong."""


@dataclass(frozen=True)
class Phrase:
    """One biasing phrase."""

    text: str  # as written (white space folded)
    tokens: tuple[int, ...]  # its token ids
    boost: float  # bonus per token
    where: str  # "file:line" (or "phrase N" for phrases given in code)


@dataclass(frozen=True)
class HotwordMatch:
    """A phrase that fired: tokens[start:end] of a hypothesis."""

    phrase: Phrase
    start: int
    end: int


def parse_phrase(line: str, where: str, tokenizer: Tokenizer, boost: float) -> Phrase | None:
    """A phrase from one line of a hotwords file (None for blank and `#` comment lines).

    Raises HotwordsError naming `where`: a boost that is not a positive number, no phrase
    before the boost, or characters the tokenizer cannot encode."""
    fields = line.split()
    if not fields or fields[0].startswith("#"):
        return None
    if fields[-1].startswith(":"):
        text = fields[-1][1:]
        try:
            boost = float(text)
        except ValueError:
            raise HotwordsError(f"{where}: boost {text!r} is not a number (write `PHRASE :2.5`)") from None
        if not math.isfinite(boost) or boost <= 0:
            raise HotwordsError(f"{where}: boost must be a positive number, not {text!r}")
        fields = fields[:-1]
    if not fields:
        raise HotwordsError(f"{where}: a boost but no phrase before it")
    phrase = " ".join(fields)
    bad = tokenizer.unknown_chars(phrase)
    if bad:
        hint = ""
        if phrase.upper() != phrase and not tokenizer.unknown_chars(phrase.upper()):
            hint = f"; the tokenizer knows {phrase.upper()!r} (write phrases cased as the transcripts are)"
        raise HotwordsError(
            f"{where}: {phrase!r} has characters the tokenizer cannot encode: {''.join(sorted(bad))!r}{hint}"
        )
    return Phrase(phrase, tuple(tokenizer.encode(phrase)), float(boost), where)


def read_hotwords(path: str | Path, tokenizer: Tokenizer, boost: float = DEFAULT_BOOST) -> list[Phrase]:
    """The phrases of a hotwords file (see the module doc); `boost` for lines without one.

    Raises FileNotFoundError, or HotwordsError naming file:line (not UTF-8, a bad boost,
    characters outside the tokenizer) or the file (no phrase in it)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: hotwords file not found")
    phrases = []
    with path.open("rb") as f:
        for i, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise HotwordsError(f"{path}:{i}: not UTF-8 text ({e.reason} at byte {e.start})") from None
            p = parse_phrase(line, f"{path}:{i}", tokenizer, boost)
            if p is not None:
                phrases.append(p)
    if not phrases:
        raise HotwordsError(f"{path}: no phrase (one a line; blank and # lines are skipped)")
    return phrases


def phrases_from_lines(lines: Iterable[str], tokenizer: Tokenizer, boost: float = DEFAULT_BOOST) -> list[Phrase]:
    """Phrases given in code, one line each in the file's syntax (`PHRASE` or `PHRASE :2.5`)."""
    out = [parse_phrase(s, f"phrase {i}", tokenizer, boost) for i, s in enumerate(lines, start=1)]
    return [p for p in out if p is not None]


class ContextGraph:
    """Aho-Corasick automaton over the phrases' token ids, with bonuses (see the module doc).

    Args:
        phrases: the phrases; repeated token sequences count once, with the largest boost.
        vocab_size: V, the tokenizer's size (rows are [V]).
        cache_mb: memory for cached rows (V * 12 bytes each).
    """

    def __init__(self, phrases: Sequence[Phrase], vocab_size: int, cache_mb: float = 64.0):
        self.vocab_size = vocab_size
        children: list[dict[int, int]] = [{}]
        parent, depth = [0], [0]
        own: list[Phrase | None] = [None]  # the phrase ending at each node
        ends = []  # each phrase's node
        for p in phrases:
            if not p.tokens or min(p.tokens) <= BLANK_ID or max(p.tokens) >= vocab_size:
                raise HotwordsError(f"{p.where}: {p.text!r} has token ids {p.tokens} outside 1..{vocab_size - 1}")
            node = 0
            for tok in p.tokens:
                nxt = children[node].get(tok)
                if nxt is None:
                    nxt = children[node][tok] = len(children)
                    children.append({})
                    parent.append(node)
                    depth.append(depth[node] + 1)
                    own.append(None)
                node = nxt
            if own[node] is None or p.boost > own[node].boost:
                own[node] = p
            ends.append(node)
        n = len(children)
        # breadth-first: a node's fail state is shallower, so it is done before the node
        order, fail = [], [0] * n
        queue = deque(children[0].values())
        while queue:
            v = queue.popleft()
            order.append(v)
            for tok, c in children[v].items():
                f = fail[v]
                while f and tok not in children[f]:
                    f = fail[f]
                fail[c] = children[f].get(tok, 0)
                queue.append(c)
        output = [-1] * n  # nearest proper suffix (through fail links) where a phrase ends
        reward = np.zeros(n)  # R: what arriving at the node pays, for every phrase ending there
        paid = np.zeros(n)  # what walking from the root to the node pays on the way
        for v in order:
            f = fail[v]
            output[v] = f if own[f] is not None else output[f]
            reward[v] = reward[f] + (own[v].boost * len(own[v].tokens) if own[v] is not None else 0.0)
            paid[v] = paid[parent[v]] + reward[v]
        ahead = np.full(n, -math.inf)  # largest boost of a phrase that goes on beyond the node
        for v in reversed(order):
            for c in children[v].values():
                ahead[v] = max(ahead[v], ahead[c], own[c].boost if own[c] is not None else -math.inf)
        ahead[0] = 0.0
        potential = np.where(np.isfinite(ahead), np.maximum(ahead * np.array(depth) - paid, 0.0), 0.0)
        self.phrases = [p for p, node in zip(phrases, ends) if own[node] is p]  # in the given order
        self._children = [
            (np.array(list(c), dtype=np.int64), np.array(list(c.values()), dtype=np.int64)) for c in children
        ]
        self._fail, self._own, self._output = fail, own, output
        self._gain = reward + potential  # R(s') + Phi(s'): the bonus of arriving at s', before - Phi(s)
        self._potential = potential
        self._row = lru_cache(maxsize=max(64, int(cache_mb * 2**20) // (vocab_size * 12)))(self._compute_row)

    @classmethod
    def from_file(
        cls, path: str | Path, tokenizer: Tokenizer, boost: float = DEFAULT_BOOST, cache_mb: float = 64.0
    ) -> ContextGraph:
        """The graph of a hotwords file (see `read_hotwords`)."""
        return cls(read_hotwords(path, tokenizer, boost), len(tokenizer), cache_mb)

    @property
    def num_states(self) -> int:
        return len(self._fail)

    def _compute_row(self, state: int) -> tuple[np.ndarray, np.ndarray]:
        """(bonus[V], next state[V]) of every token after `state`."""
        if state == 0:
            nxt = np.zeros(self.vocab_size, dtype=np.int64)
        else:
            nxt = self._row(self._fail[state])[1].copy()
        tokens, states = self._children[state]
        nxt[tokens] = states
        bonus = self._gain[nxt] - self._potential[state]
        bonus[BLANK_ID], nxt[BLANK_ID] = 0.0, state
        bonus.flags.writeable = nxt.flags.writeable = False  # shared by every caller of the cache
        return bonus, nxt

    def initial_state(self) -> int:
        """No partial match (the root)."""
        return 0

    def forward(self, state: int, token: int) -> tuple[float, int]:
        """(bonus, next state) for `token` after `state`; blank: (0.0, state)."""
        bonus, nxt = self._row(state)
        return float(bonus[token]), int(nxt[token])

    def finalize(self, state: int) -> float:
        """The bonus that ends a hypothesis at `state`: takes back the unfinished phrase's credit."""
        return -float(self._potential[state])

    # the ScoreProvider names (asr.decoding.fusion) of the two above
    score = forward
    final_score = finalize

    def score_all(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every token's bonus and next state after each of states[N] (int64, any device).

        Returns: (bonus [N, V] float32, next state [N, V] int64) on the states' device; column 0
        (blank) is 0.0 and the state itself."""
        uniq, inverse = torch.unique(states.cpu(), return_inverse=True)
        rows = [self._row(int(s)) for s in uniq.tolist()]
        bonus = torch.from_numpy(np.stack([r[0] for r in rows]).astype(np.float32))[inverse]
        nxt = torch.from_numpy(np.stack([r[1] for r in rows]))[inverse]
        return bonus.to(states.device), nxt.to(states.device)

    def fired(self, state: int) -> list[Phrase]:
        """The phrases that fire on arriving at `state`, longest first."""
        out = []
        v = state if self._own[state] is not None else self._output[state]
        while v > 0:
            out.append(self._own[v])
            v = self._output[v]
        return out

    def matches(self, tokens: Sequence[int]) -> list[HotwordMatch]:
        """Every phrase that fires in a token sequence (blanks are skipped, as searches skip them),
        in order of where it ends."""
        out, state = [], 0
        ids = [int(t) for t in tokens if int(t) != BLANK_ID]
        for i, tok in enumerate(ids):
            state = int(self._row(state)[1][tok])
            out.extend(HotwordMatch(p, i + 1 - len(p.tokens), i + 1) for p in self.fired(state))
        return out
