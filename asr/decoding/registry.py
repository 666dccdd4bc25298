"""The searches of each head kind, registered by (kind, method): the one place decoding is
dispatched. `model.decode`, transcription, the streaming runner and export call
`build_search(head, options)` and use the Search interface (asr.decoding.search); none of them
asks which class a head is.

A new head kind registers its searches here, e.g.
    SEARCHES[("attention", "beam")] = lambda head, o: AttentionBeamSearch(head, o.beam)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace

from ..nn.heads import Head
from .attention import AttentionRescoringSearch, AttentionSearch
from .ctc import CTCGreedySearch, CTCPrefixBeamSearch
from .joint import JointSearch
from .options import DecodeOptions
from .search import Search
from .transducer import TransducerBeamSearch, TransducerGreedySearch

SearchFactory = Callable[[Head, DecodeOptions], Search]

SEARCHES: dict[tuple[str, str], SearchFactory] = {
    ("ctc", "greedy"): lambda head, o: CTCGreedySearch(head),
    ("ctc", "beam"): lambda head, o: CTCPrefixBeamSearch(head, o.beam),
    ("transducer", "greedy"): lambda head, o: TransducerGreedySearch(head, o.max_symbols),
    ("transducer", "beam"): lambda head, o: TransducerBeamSearch(head, o.beam, o.max_symbols),
    # TAED is a transducer whose predictor attends to the encoder: the same searches
    ("taed", "greedy"): lambda head, o: TransducerGreedySearch(head, o.max_symbols),
    ("taed", "beam"): lambda head, o: TransducerBeamSearch(head, o.beam, o.max_symbols),
    ("attention", "greedy"): lambda head, o: AttentionSearch(head),
    ("attention", "beam"): lambda head, o: AttentionSearch(head, o.beam),
}
# the weight of the first pass in attention rescoring, by the first pass head's kind
FIRST_PASS_WEIGHT = {"ctc": "ctc_weight", "transducer": "transducer_weight", "taed": "transducer_weight"}


def methods(kind: str) -> list[str]:
    """The decoding methods registered for a head kind."""
    return sorted(m for k, m in SEARCHES if k == kind)


def build_search(head: Head, options: DecodeOptions) -> Search:
    """The search `options.method` of the head's kind, configured by the options."""
    factory = SEARCHES.get((head.kind, options.method))
    if factory is None:
        raise ValueError(f"a {head.kind} head has no {options.method!r} search; it has {methods(head.kind)}")
    return factory(head, options)


def build_model_search(heads: Mapping[str, Head], head: str, options: DecodeOptions) -> Search:
    """The search for a model's heads: `options.method` of head `head`, or a method that combines
    heads: `attention` (the attention decoder's beam search), `attention_rescoring` (head's beam
    n-best rescored by the attention decoder) and `joint` (CTC head `head` and the attention
    decoder in one beam search). The attention decoder is the first head's that has one
    (`Head.attention_decoder`: an attention head, or TAED's)."""
    if options.method not in ("attention", "attention_rescoring", "joint"):
        return build_search(heads[head], options)
    decoders = [d for d in (h.attention_decoder() for h in heads.values()) if d is not None]
    if not decoders:
        raise ValueError(f"method {options.method!r} needs an attention decoder; the heads are {list(heads)}")
    decoder = decoders[0]
    if options.method == "attention":
        return build_search(decoder, replace(options, method="beam"))
    first = heads[head]
    if options.method == "joint":
        if first.kind != "ctc":
            raise ValueError(
                f"joint decoding combines a CTC head's prefix scores with attention; {head!r} is {first.kind}"
            )
        return JointSearch(first, decoder, options.beam, options.ctc_weight)
    if first.kind not in FIRST_PASS_WEIGHT:
        raise ValueError(f"attention_rescoring rescores a CTC or transducer head's n-best; {head!r} is {first.kind}")
    weight = getattr(options, FIRST_PASS_WEIGHT[first.kind])
    first_pass = build_search(first, replace(options, method="beam"))
    return AttentionRescoringSearch(first_pass, decoder, weight, options.reverse_weight)
