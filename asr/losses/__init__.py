"""Losses with torch semantics: lengths as int tensors, explicit blank, `reduction=`."""
from .ctc import ctc_loss

__all__ = ["ctc_loss"]
