"""Decoding options: one frozen dataclass, validated once, saved in the checkpoint.

The defaults here are the only ones: conf/decode/*.yaml build on this dataclass (registered
as Hydra's `decode/schema`), `asr train` saves the result in the checkpoint, and the CLI
flags of `asr transcribe` / `asr stream` override it with `DecodeOptions.replace`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from .frame_skip import check_blank_threshold
from .fusion import FusionOptions

# greedy | beam: the decoding head's own searches; attention: the attention head's beam search;
# attention_rescoring: the decoding head's beam n-best rescored by the attention head;
# joint: one-pass beam search on CTC prefix and attention scores
METHODS = ("greedy", "beam", "attention", "attention_rescoring", "joint")


@dataclass(frozen=True)
class DecodeOptions:
    method: str = "greedy"  # greedy | beam | attention | attention_rescoring | joint (METHODS above)
    beam: int = 4  # hypotheses kept per utterance by method=beam
    head: str | None = None  # the head that decodes (e.g. transducer | ctc in hybrids); None: the first
    max_symbols: int | None = None  # transducer searches: most labels on one frame; None: the head's
    ctc_weight: float = 0.5  # attention_rescoring after CTC and joint: w in (1 - w) * attention + w * CTC
    transducer_weight: float = 0.5  # attention_rescoring after a transducer: the same w
    reverse_weight: float = 0.0  # attention scores: weight of the right-to-left decoder (if trained)
    # fusion (asr.decoding.fusion.FusionOptions holds their defaults and checks them): greedy
    # becomes a beam of 1 when active
    lm: str | None = FusionOptions.lm  # ARPA n-gram LM over the model's tokens (asr lm train)
    lm_weight: float = FusionOptions.lm_weight  # score += lm_weight * ln p_LM per token (and the end)
    ilm_weight: float = FusionOptions.ilm_weight  # transducers: score -= ilm_weight * ln p_ILM
    hotwords: str | None = FusionOptions.hotwords  # phrase file: one a line, optional ` :BOOST`
    hotword_boost: float = FusionOptions.hotword_boost  # bonus per phrase token where a line gives none
    # frame skipping (asr.decoding.frame_skip): a transducer head's search skips the frames where
    # the model's CTC head gives blank posterior >= skip_blank; None: it reads every frame
    skip_blank: float | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown decoding method {self.method!r}; use one of {', '.join(METHODS)}")
        if not isinstance(self.beam, int) or self.beam < 1:
            raise ValueError(f"beam must be an integer >= 1, not {self.beam!r}")
        if self.max_symbols is not None and (not isinstance(self.max_symbols, int) or self.max_symbols < 1):
            raise ValueError(f"max_symbols must be an integer >= 1 (or unset for the head's), not {self.max_symbols!r}")
        for name in ("ctc_weight", "transducer_weight", "reverse_weight"):
            w = getattr(self, name)
            if not isinstance(w, (int, float)) or not 0.0 <= w <= 1.0:
                raise ValueError(f"{name} must be a number in [0, 1], not {w!r}")
        if self.head is not None and not (isinstance(self.head, str) and self.head):
            raise ValueError(f"head must be a head's name, not {self.head!r}")
        if self.skip_blank is not None:
            check_blank_threshold(self.skip_blank, "skip_blank")
        _ = self.fusion  # building FusionOptions validates the fusion fields

    @property
    def fusion(self) -> FusionOptions:
        """The LM and hotword options (FusionOptions validates them)."""
        return FusionOptions(self.lm, self.lm_weight, self.ilm_weight, self.hotwords, self.hotword_boost)

    @classmethod
    def from_dict(cls, d: dict | None) -> DecodeOptions:
        """From a checkpoint's or config's dict; unknown keys are an error naming the known ones."""
        d = dict(d or {})
        known = {f.name for f in fields(cls)}
        if set(d) - known:
            raise ValueError(f"unknown decoding options {sorted(set(d) - known)}; known: {sorted(known)}")
        return cls(**d)

    def replace(self, **overrides) -> DecodeOptions:
        """A copy with the overrides that are not None (CLI flags left unset keep the saved value)."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def to_dict(self) -> dict:
        return asdict(self)
