"""Decoding: one function per (head, method); each returns token ids per utterance."""
from .ctc import ctc_greedy_search, ctc_prefix_beam_search
from .transducer import transducer_beam_search, transducer_greedy_search

__all__ = ["ctc_greedy_search", "ctc_prefix_beam_search", "transducer_greedy_search", "transducer_beam_search"]
