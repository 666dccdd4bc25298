"""Decoding: searches per head kind behind one Search interface, registered by (head kind, method).

Beam searches (CTC prefix, transducer) add a `Fusion` of an n-gram LM (asr.lm.NgramLM) and a
hotword `ContextGraph` to their scores: DecodeOptions' lm / hotwords fields, loaded by
`model.fusion(options)`, passed to `build_search(head, options, fusion)`.

Functional forms (token ids per utterance) remain for direct use and tests:
ctc_greedy_search, ctc_prefix_beam_search, transducer_greedy_search, transducer_beam_search.
"""

from .ctc import ctc_greedy_search, ctc_prefix_beam_search
from .fusion import Fusion, FusionOptions, ScoreProvider, build_fusion
from .hotwords import ContextGraph, HotwordMatch, Phrase
from .options import DecodeOptions
from .registry import SEARCHES, build_model_search, build_search
from .search import Hypothesis, Search, run_search
from .transducer import transducer_beam_search, transducer_greedy_search

__all__ = [
    "ContextGraph",
    "DecodeOptions",
    "Fusion",
    "FusionOptions",
    "HotwordMatch",
    "Phrase",
    "ScoreProvider",
    "build_fusion",
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
