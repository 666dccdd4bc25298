"""Score providers that beam searches add to their scores: n-gram LM fusion and hotword biasing.

A provider scores token sequences one token at a time through an explicit state, so a search
keeps one state per hypothesis next to its acoustic score and never rescans a prefix:

    state = provider.initial_state()
    delta, state = provider.score(state, token)   # per token a hypothesis emits
    delta = provider.final_score(state)            # when the hypothesis ends

States are ints, so a batched search stores them in a tensor beside its scores and calls
`score_all(states[N]) -> (delta[N, V], next[N, V])` for every token at once. Blank (id 0)
is no event for any provider: delta 0, state unchanged, so a search may add the rows to
its blank column too. The n-gram LM (`asr.lm.NgramLM`: delta = ln p_LM) and the hotword
graph (`asr.decoding.hotwords.ContextGraph`: delta = bonus) satisfy the protocol.

`Fusion` combines the providers that `FusionOptions` asks for, with their weights:
score += lm_weight * ln p_LM + hotword bonuses (the boosts are their own weights). The
internal-LM subtraction of transducers (ilm_weight) is the search's to compute, from the
model's predictor, and is no provider. CTC prefix beam search keeps one state per prefix-tree
node; transducer beam search keeps states[B, K, P] beside its scores (asr/decoding/ctc.py,
transducer.py; README "Language model fusion and hotwords").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch

from ..data.tokenizer import Tokenizer
from .hotwords import DEFAULT_BOOST, ContextGraph


@runtime_checkable
class ScoreProvider(Protocol):
    """Scores a token sequence token by token through int states (see the module doc)."""

    vocab_size: int  # V: tokens 0..V-1, 0 = blank

    def initial_state(self) -> int:
        """The state before any token."""
        ...

    def score(self, state: int, token: int) -> tuple[float, int]:
        """(score delta, next state) for `token` after `state`; blank: (0.0, state)."""
        ...

    def score_all(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """states[N] int64 -> (delta [N, V] float32, next state [N, V] int64) on states' device."""
        ...

    def final_score(self, state: int) -> float:
        """The delta that ends a hypothesis at `state`."""
        ...


@dataclass(frozen=True)
class FusionOptions:
    """What a beam search fuses (`--lm --lm-weight --ilm-weight --hotwords --hotword-boost`)."""

    lm: str | None = None  # ARPA n-gram LM over the model's tokens (asr lm train); None: no LM
    lm_weight: float = 0.3  # shallow fusion: score += lm_weight * ln p_LM(token | history); 0: as if no LM
    ilm_weight: float = 0.0  # transducers with an LM: score -= ilm_weight * ln p_ILM (the predictor's own LM)
    hotwords: str | None = None  # phrase file, one a line, optional ` :BOOST` (asr.decoding.hotwords)
    hotword_boost: float = DEFAULT_BOOST  # bonus per phrase token (natural-log units) where a line gives none

    def __post_init__(self) -> None:
        for name in ("lm", "hotwords"):
            path = getattr(self, name)
            if isinstance(path, Path):
                object.__setattr__(self, name, str(path))  # saved in checkpoints as plain text
            elif path is not None and not (isinstance(path, str) and path):
                raise ValueError(f"{name} must be a file path or None, not {path!r}")
        for name in ("lm_weight", "ilm_weight"):
            w = getattr(self, name)
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
                raise ValueError(f"{name} must be a number >= 0, not {w!r}")
        b = self.hotword_boost
        if isinstance(b, bool) or not isinstance(b, (int, float)) or not math.isfinite(b) or b <= 0:
            raise ValueError(f"hotword_boost must be a number > 0, not {b!r}")
        if self.ilm_weight > 0 and self.lm is None:
            raise ValueError("ilm_weight subtracts the model's internal LM in favour of an external one: give lm too")

    @property
    def active(self) -> bool:
        """Whether anything is fused (an LM with weight > 0, or hotwords)."""
        return (self.lm is not None and self.lm_weight > 0) or self.hotwords is not None

    def to_dict(self) -> dict:
        return asdict(self)


class Fusion:
    """Providers with weights, stepped together: a state is one int per provider.

    delta(token) = sum_i weight_i * provider_i.score(state_i, token).

    Args:
        providers: (name, provider, weight) triples; names let a search find e.g. the hotword
            graph to report which phrases fired (`Fusion.get("hotwords")`).
    """

    def __init__(self, providers: Sequence[tuple[str, ScoreProvider, float]]):
        if not providers:
            raise ValueError("Fusion needs at least one provider")
        sizes = {p.vocab_size for _, p, _ in providers}
        if len(sizes) != 1:
            raise ValueError(f"providers disagree on the vocabulary size: {sorted(sizes)}")
        self.vocab_size = sizes.pop()
        self.names = [n for n, _, _ in providers]
        self.providers = [p for _, p, _ in providers]
        self.weights = [float(w) for _, _, w in providers]

    def get(self, name: str) -> ScoreProvider | None:
        """The provider called `name`, or None."""
        return self.providers[self.names.index(name)] if name in self.names else None

    def initial_state(self) -> tuple[int, ...]:
        return tuple(p.initial_state() for p in self.providers)

    def score(self, state: tuple[int, ...], token: int) -> tuple[float, tuple[int, ...]]:
        """(weighted delta, next state) for `token` after `state`."""
        total, nxt = 0.0, []
        for p, w, s in zip(self.providers, self.weights, state):
            d, s2 = p.score(s, token)
            total += w * d
            nxt.append(s2)
        return total, tuple(nxt)

    def final_score(self, state: tuple[int, ...]) -> float:
        return sum(w * p.final_score(s) for p, w, s in zip(self.providers, self.weights, state))

    def initial_states(self, n: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """[n, P] int64: n hypotheses before any token."""
        return torch.tensor([self.initial_state()] * n, dtype=torch.long, device=device).reshape(n, -1)

    def score_all(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """states [N, P] -> (weighted delta [N, V] float32, next states [N, V, P] int64)."""
        delta, nxt = None, []
        for i, (p, w) in enumerate(zip(self.providers, self.weights)):
            d, s = p.score_all(states[:, i])
            delta = w * d if delta is None else delta + w * d
            nxt.append(s)
        return delta, torch.stack(nxt, dim=-1)


def build_fusion(options: FusionOptions, tokenizer: Tokenizer) -> Fusion | None:
    """The LM and hotword graph `options` name, loaded for `tokenizer`'s ids; None if none is
    (an LM with weight 0 is not even loaded: decoding then equals decoding without one)."""
    from ..lm import NgramLM

    providers: list[tuple[str, ScoreProvider, float]] = []
    if options.lm is not None and options.lm_weight > 0:
        providers.append(("lm", NgramLM.load(options.lm, tokenizer), options.lm_weight))
    if options.hotwords is not None:
        providers.append(("hotwords", ContextGraph.from_file(options.hotwords, tokenizer, options.hotword_boost), 1.0))
    return Fusion(providers) if providers else None
