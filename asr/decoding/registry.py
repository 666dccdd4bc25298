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
from .frame_skip import FrameSkipSearch, SkipCounts, skipping_ctc_head
from .fusion import Fusion
from .joint import JointSearch
from .options import DecodeOptions
from .search import Search
from .transducer import TransducerBeamSearch, TransducerGreedySearch

# (head, options, fusion: the loaded LM / hotwords or None) -> search
SearchFactory = Callable[[Head, DecodeOptions, Fusion | None], Search]


def _transducer_beam(head: Head, o: DecodeOptions, fusion: Fusion | None) -> Search:
    return TransducerBeamSearch(head, o.beam, o.max_symbols, fusion, o.ilm_weight if fusion else 0.0)


SEARCHES: dict[tuple[str, str], SearchFactory] = {
    ("ctc", "greedy"): lambda head, o, f: CTCGreedySearch(head),
    ("ctc", "beam"): lambda head, o, f: CTCPrefixBeamSearch(head, o.beam, f),
    ("transducer", "greedy"): lambda head, o, f: TransducerGreedySearch(head, o.max_symbols),
    ("transducer", "beam"): _transducer_beam,
    # TAED is a transducer whose predictor attends to the encoder: the same searches
    ("taed", "greedy"): lambda head, o, f: TransducerGreedySearch(head, o.max_symbols),
    ("taed", "beam"): _transducer_beam,
    ("attention", "greedy"): lambda head, o, f: AttentionSearch(head),
    ("attention", "beam"): lambda head, o, f: AttentionSearch(head, o.beam),
}
# searches that fuse an LM and hotwords; with fusion, greedy search runs as the beam of 1
FUSES = {"ctc", "transducer", "taed"}
# head kinds whose searches can skip the frames a CTC head calls blank (DecodeOptions.skip_blank)
SKIPS = {"transducer", "taed"}
# the weight of the first pass in attention rescoring, by the first pass head's kind
FIRST_PASS_WEIGHT = {"ctc": "ctc_weight", "transducer": "transducer_weight", "taed": "transducer_weight"}


def methods(kind: str) -> list[str]:
    """The decoding methods registered for a head kind."""
    return sorted(m for k, m in SEARCHES if k == kind)


def build_search(head: Head, options: DecodeOptions, fusion: Fusion | None = None) -> Search:
    """The search `options.method` of the head's kind, configured by the options; `fusion` (an LM
    and/or hotwords, asr.decoding.fusion.build_fusion) is added to beam searches' scores, and
    greedy search with fusion is a beam search of 1 (a greedy choice cannot be biased)."""
    if fusion is not None:
        if head.kind not in FUSES:
            raise ValueError(f"a {head.kind} head's searches fuse no LM or hotwords; CTC and transducer heads do")
        if options.method == "greedy":
            options = replace(options, method="beam", beam=1)
    factory = SEARCHES.get((head.kind, options.method))
    if factory is None:
        raise ValueError(f"a {head.kind} head has no {options.method!r} search; it has {methods(head.kind)}")
    return factory(head, options, fusion)


def _with_frame_skipping(
    heads: Mapping[str, Head], head: str, options: DecodeOptions, search: Search, counts: SkipCounts | None
) -> Search:
    """`search` (of head `head`) behind FrameSkipSearch when options.skip_blank is set: the frames
    the model's first CTC head calls blank are skipped."""
    if options.skip_blank is None:
        return search
    ctc = skipping_ctc_head(heads)
    if ctc is None or heads[head].kind not in SKIPS:
        kinds = [f"{name} ({h.kind})" for name, h in heads.items()]
        raise ValueError(
            f"frame skipping needs a CTC head beside a transducer head; the heads are {kinds} and {head!r} decodes"
        )
    return FrameSkipSearch(search, heads[ctc], options.skip_blank, counts)


def build_model_search(
    heads: Mapping[str, Head],
    head: str,
    options: DecodeOptions,
    fusion: Fusion | None = None,
    skip_counts: SkipCounts | None = None,
) -> Search:
    """The search for a model's heads: `options.method` of head `head`, or a method that combines
    heads: `attention` (the attention decoder's beam search), `attention_rescoring` (head's beam
    n-best rescored by the attention decoder) and `joint` (CTC head `head` and the attention
    decoder in one beam search). The attention decoder is the first head's that has one
    (`Head.attention_decoder`: an attention head, or TAED's).

    With options.skip_blank, a transducer head's search (greedy, beam, or the first pass of
    attention_rescoring) reads only the frames the model's CTC head does not call blank
    (asr.decoding.frame_skip), and adds the frames it sees and keeps to `skip_counts` if given."""
    if options.method not in ("attention", "attention_rescoring", "joint"):
        return _with_frame_skipping(heads, head, options, build_search(heads[head], options, fusion), skip_counts)
    if options.skip_blank is not None and options.method != "attention_rescoring":
        raise ValueError(
            f"frame skipping (skip_blank) applies to a transducer head's greedy, beam and attention_rescoring "
            f"searches, not method {options.method!r}"
        )
    if fusion is not None and options.method != "attention_rescoring":
        raise ValueError(f"method {options.method!r} fuses no LM or hotwords; greedy, beam and attention_rescoring do")
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
    first_pass = build_search(first, replace(options, method="beam"), fusion)
    first_pass = _with_frame_skipping(heads, head, options, first_pass, skip_counts)
    return AttentionRescoringSearch(first_pass, decoder, weight, options.reverse_weight)
