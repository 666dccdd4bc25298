"""Transducer lattice topologies: which arcs leave a node (t, s) of the (frame, symbols-emitted) lattice.

- `regular` (Graves 2012): blank moves to (t+1, s), a symbol to (t, s+1): any number of
  symbols per frame; a path ends with a blank on the last frame.
- `modified` (k2's name) and `rna`: a symbol also consumes its frame, (t, s) -> (t+1, s+1), so
  every path has exactly T outputs, one per frame, each blank or the next symbol, and needs
  S <= T. This is the lattice of the Recurrent Neural Aligner (Sak et al. 2017) and of the
  monotonic RNN-T (Tripathi et al. 2019); both names are accepted for the one lattice. (RNA's
  original model also conditions on the blanks it emitted; with a predictor that sees only
  the symbols, as here, the lattice and its loss are the same.)
- `constrained` (k2's): as modified, but a symbol arc also pays the blank of the *next*
  context on the same frame: its score is px(s, t) + py(s+1, t), as if the model were
  forced to emit blank right after each symbol.

All three reduce to the mutual-information recursion's two shapes (csrc/transducer/
mutual_information.h): px [B, S, T+1] for regular (no symbol after the last frame), px
[B, S, T] for the one-output-per-frame topologies. `finish_px` does that step; everything
else (simple, smoothed, pruned and full losses, prune ranges, decoding) asks this module.
"""

from __future__ import annotations

import torch

TOPOLOGIES = ("regular", "modified", "constrained", "rna")


def check_topology(rnnt_type: str) -> str:
    """`rnnt_type` if it is one of TOPOLOGIES, else ValueError naming them."""
    if rnnt_type not in TOPOLOGIES:
        raise ValueError(f"rnnt_type must be one of {TOPOLOGIES}, not {rnnt_type!r}")
    return rnnt_type


def one_output_per_frame(rnnt_type: str) -> bool:
    """True where a symbol consumes its frame (every topology but `regular`): decoding then
    emits at most one symbol per frame, and the recursion takes px [B, S, T]."""
    return check_topology(rnnt_type) != "regular"


def finish_px(px_body: torch.Tensor, py: torch.Tensor, rnnt_type: str) -> torch.Tensor:
    """Symbol arc scores px_body [B, S, T] (already -inf past each S_b) -> the recursion's px.

    Args:
        px_body: [B, S, T] log-prob of emitting symbol s+1 at (t, s).
        py: [B, S+1, T] log-prob of blank at (t, s).
    Returns:
        regular: [B, S, T+1] with -inf at t = T; modified / rna: px_body; constrained: [B, S, T]
        px_body + py[:, 1:] (the forced blank of the next context on the same frame).
    """
    kind = check_topology(rnnt_type)
    if kind == "regular":
        return torch.cat([px_body, torch.full_like(px_body[:, :, :1], float("-inf"))], dim=2)
    if kind == "constrained":
        return px_body + py[:, 1:]
    return px_body


def topology_of(px: torch.Tensor, py: torch.Tensor) -> str:
    """`regular` or `modified` from the recursion's shapes (constrained has modified's shapes)."""
    return "regular" if px.shape[2] == py.shape[2] + 1 else "modified"


def min_prune_range(boundary: torch.Tensor, rnnt_type: str = "regular") -> int:
    """The smallest s_range whose windows can hold a path of every utterance.

    Regular: from a window of s_range positions a frame's symbols reach at most s_range - 1
    positions further, so T_b frames cover S_b symbols only if (s_range - 1) * T_b >= S_b, i.e.
    s_range >= (S_b - 1) // T_b + 2 (fast_rnnt uses the batch's padded S and T; this takes each
    utterance's own, which is never less). Modified / rna (a symbol consumes a frame; a path
    needs S_b <= T_b): 1, or 2 when some S_b = T_b, whose one path emits on every frame while
    the window of its last frame must hold S_b. Constrained: 2 when some S_b > 0, since a symbol
    arc from s on frame t also needs blank at s+1 on t, in the same window. Utterances with
    T_b = 0 have no path; they count as 1.

    Args:
        boundary: [B, 4] of (0, 0, S_b, T_b).
    """
    kind = check_topology(rnnt_type)
    if boundary.shape[0] == 0:
        return 1
    s_len = boundary[:, 2].to(torch.int64)
    t_len = boundary[:, 3].to(torch.int64)
    if kind == "regular":
        need = torch.div(s_len - 1, t_len.clamp(min=1), rounding_mode="floor") + 2
    elif kind == "constrained":
        need = torch.where(s_len > 0, 2, 1)
    else:
        need = torch.where((s_len >= t_len) & (s_len > 0), 2, 1)
    return int(torch.where(t_len > 0, need, torch.ones_like(need)).max())
