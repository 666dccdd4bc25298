"""The searches of each head kind, registered by (kind, method): the one place decoding is
dispatched. `model.decode`, transcription, the streaming runner and export call
`build_search(head, options)` and use the Search interface (asr.decoding.search); none of them
asks which class a head is.

A new head kind registers its searches here, e.g.
    SEARCHES[("attention", "beam")] = lambda head, o: AttentionBeamSearch(head, o.beam)
"""

from __future__ import annotations

from collections.abc import Callable

from ..nn.heads import Head
from .ctc import CTCGreedySearch, CTCPrefixBeamSearch
from .options import DecodeOptions
from .search import Search
from .transducer import TransducerBeamSearch, TransducerGreedySearch

SearchFactory = Callable[[Head, DecodeOptions], Search]

SEARCHES: dict[tuple[str, str], SearchFactory] = {
    ("ctc", "greedy"): lambda head, o: CTCGreedySearch(head),
    ("ctc", "beam"): lambda head, o: CTCPrefixBeamSearch(head, o.beam),
    ("transducer", "greedy"): lambda head, o: TransducerGreedySearch(head, o.max_symbols),
    ("transducer", "beam"): lambda head, o: TransducerBeamSearch(head, o.beam, o.max_symbols),
}


def methods(kind: str) -> list[str]:
    """The decoding methods registered for a head kind."""
    return sorted(m for k, m in SEARCHES if k == kind)


def build_search(head: Head, options: DecodeOptions) -> Search:
    """The search `options.method` of the head's kind, configured by the options."""
    factory = SEARCHES.get((head.kind, options.method))
    if factory is None:
        raise ValueError(f"a {head.kind} head has no {options.method!r} search; it has {methods(head.kind)}")
    return factory(head, options)
