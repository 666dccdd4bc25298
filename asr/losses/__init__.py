"""Losses with torch semantics: lengths as int tensors, explicit blank, `reduction=`.

Each compiled loss has a slow pure-torch reference in asr/losses/reference.py, used
only by the tests. Every loss takes float32 or float64 inputs as they are, and computes on
bfloat16/float16 inputs in float32, with autocast off inside (asr/losses/precision.py): the
loss comes back in float32, the gradient in the input's dtype.
"""

from .ctc import ctc_loss
from .ctc_fst import Alignment, ctc_fst_loss, forced_align
from .mutual_information import mutual_information_recursion
from .pruned_rnnt import (
    do_rnnt_pruning,
    get_rnnt_logprobs,
    get_rnnt_prune_ranges,
    rnnt_loss_pruned,
    rnnt_loss_simple,
    rnnt_loss_smoothed,
)
from .pruned_tdt import get_tdt_prune_ranges, tdt_loss_pruned, tdt_loss_simple
from .rnnt import rnnt_loss
from .tdt import tdt_arc_loss, tdt_loss
from .viterbi import (
    TransducerPath,
    alignment_frames,
    path_log_probs,
    rnnt_alignment_path,
    rnnt_best_path,
    rnnt_viterbi_loss,
    tdt_alignment_path,
    tdt_best_path,
    tdt_viterbi_loss,
)

__all__ = [
    "ctc_loss",
    "ctc_fst_loss",
    "forced_align",
    "Alignment",
    "rnnt_loss",
    "mutual_information_recursion",
    "get_rnnt_logprobs",
    "rnnt_loss_simple",
    "rnnt_loss_smoothed",
    "get_rnnt_prune_ranges",
    "do_rnnt_pruning",
    "rnnt_loss_pruned",
    "tdt_loss",
    "tdt_arc_loss",
    "tdt_loss_simple",
    "get_tdt_prune_ranges",
    "tdt_loss_pruned",
    "rnnt_viterbi_loss",
    "tdt_viterbi_loss",
    "rnnt_best_path",
    "tdt_best_path",
    "rnnt_alignment_path",
    "tdt_alignment_path",
    "alignment_frames",
    "path_log_probs",
    "TransducerPath",
]
