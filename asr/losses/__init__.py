"""Losses with torch semantics: lengths as int tensors, explicit blank, `reduction=`.

Each compiled loss has a slow pure-torch reference in asr/losses/reference.py, used
only by the tests.
"""
from .ctc import ctc_loss
from .rnnt import rnnt_loss

__all__ = ["ctc_loss", "rnnt_loss"]
