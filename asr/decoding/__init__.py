"""Decoding: searches per head kind behind one Search interface, registered by (head kind, method).

Functional forms (token ids per utterance) remain for direct use and tests:
ctc_greedy_search, ctc_prefix_beam_search, transducer_greedy_search, transducer_beam_search.
"""

from .ctc import ctc_greedy_search, ctc_prefix_beam_search
from .options import DecodeOptions
from .registry import SEARCHES, build_model_search, build_search
from .search import Hypothesis, Search, run_search
from .transducer import transducer_beam_search, transducer_greedy_search

__all__ = [
    "DecodeOptions",
    "Hypothesis",
    "SEARCHES",
    "Search",
    "build_model_search",
    "build_search",
    "run_search",
    "ctc_greedy_search",
    "ctc_prefix_beam_search",
    "transducer_greedy_search",
    "transducer_beam_search",
]
