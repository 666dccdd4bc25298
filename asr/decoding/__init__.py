"""Decoding: one function per (head, method); each returns token ids per utterance."""
from .ctc import ctc_greedy_search, ctc_prefix_beam_search

__all__ = ["ctc_greedy_search", "ctc_prefix_beam_search"]
