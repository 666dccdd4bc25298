"""Pruned RNN-T (Kuang et al. 2022, "Pruned RNN-T for fast, memory-efficient ASR training").

1. `rnnt_loss_simple` / `rnnt_loss_smoothed`: the RNN-T loss of a trivial joiner
   (lm + am, no non-linearity), cheap in memory: B*(S+1)*T*C is never formed.
2. `get_rnnt_prune_ranges`: from the simple loss's arc occupancies, a window of
   `s_range` symbol positions per frame that holds most of the probability mass.
3. `do_rnnt_pruning` + the real joiner on [B, T, s_range, C] only.
4. `rnnt_loss_pruned`: the RNN-T loss on the pruned lattice.

Symbols are indexed as in the paper: s in [0, S] counts symbols emitted so far.
All use the compiled mutual-information recursion.
"""

from __future__ import annotations

import logging

import torch

from .lattice import finish_loss
from .mutual_information import mutual_information_recursion

log = logging.getLogger(__name__)

TOPOLOGIES = ("regular", "modified")


def _boundary(boundary: torch.Tensor | None, b: int, s: int, t: int, device) -> torch.Tensor:
    if boundary is None:
        bd = torch.zeros(b, 4, dtype=torch.int64, device=device)
        bd[:, 2], bd[:, 3] = s, t
        return bd
    return boundary.to(torch.int64).contiguous()


def _check_topology(rnnt_type: str) -> bool:
    if rnnt_type not in TOPOLOGIES:
        raise ValueError(f"rnnt_type must be one of {TOPOLOGIES}, not {rnnt_type!r}")
    return rnnt_type == "modified"


def _delay(px: torch.Tensor, boundary: torch.Tensor, delay_penalty: float) -> torch.Tensor:
    """Add delay_penalty * ((T_b - 1)/2 - t) to symbol arcs: rewards early emission, zero-mean over frames."""
    if delay_penalty == 0.0:
        return px
    t = torch.arange(px.shape[2], device=px.device, dtype=px.dtype)[None, None, :]
    t_len = boundary[:, 3].to(px.dtype)[:, None, None]
    return px + delay_penalty * ((t_len - 1) / 2 - t)


def _finish_px(px_body: torch.Tensor, modified: bool) -> torch.Tensor:
    """px over frames [B, S, T] -> [B, S, T+1] for regular (no symbol after the last frame)."""
    if modified:
        return px_body
    pad = torch.full_like(px_body[:, :, :1], float("-inf"))
    return torch.cat([px_body, pad], dim=2)


def _mask_symbols(px: torch.Tensor, boundary: torch.Tensor) -> torch.Tensor:
    """-inf for symbol positions past each utterance's S_b (padding)."""
    s = torch.arange(px.shape[1], device=px.device)[None, :, None]
    return px.masked_fill(s >= boundary[:, 2][:, None, None], float("-inf"))


def _gather_symbols(am: torch.Tensor, sym: torch.Tensor) -> torch.Tensor:
    """out[b, s, t] = am[b, t, sym[b, s]]: [B, T, C], [B, S] -> [B, S, T].

    Gathers along C of am itself, so autograd scatters into a [B, T, C] gradient; gathering
    from am expanded to [B, S, T, C] would materialize that whole tensor in backward.
    """
    b, t, _ = am.shape
    return torch.gather(am, 2, sym[:, None, :].expand(b, t, sym.shape[1])).transpose(1, 2)


def get_rnnt_logprobs(
    lm: torch.Tensor,
    am: torch.Tensor,
    symbols: torch.Tensor,
    termination_symbol: int,
    boundary: torch.Tensor | None = None,
    rnnt_type: str = "regular",
    delay_penalty: float = 0.0,
):
    """px, py of the simple joiner logits[b, s, t, c] = lm[b, s, c] + am[b, t, c].

    Args:
        lm: [B, S+1, C] predictor output; am: [B, T, C] encoder output; symbols: [B, S].
    Returns:
        px [B, S, T+1] (regular) or [B, S, T] (modified), py [B, S+1, T].
    """
    modified = _check_topology(rnnt_type)
    b, s1, c = lm.shape
    t = am.shape[1]
    bd = _boundary(boundary, b, s1 - 1, t, lm.device)
    lm_max = lm.max(dim=2, keepdim=True).values  # [B, S+1, 1]
    am_max = am.max(dim=2, keepdim=True).values  # [B, T, 1]
    # log sum_c exp(lm + am) = maxes + log(exp(lm - lm_max) @ exp(am - am_max)^T), never forming B*S*T*C
    norm = torch.log(torch.matmul((lm - lm_max).exp(), (am - am_max).exp().transpose(1, 2)))
    norm = norm + lm_max + am_max.transpose(1, 2)  # [B, S+1, T]
    sym = symbols.to(torch.int64)
    lm_sym = torch.gather(lm[:, :-1], 2, sym[:, :, None])  # [B, S, 1]
    am_sym = _gather_symbols(am, sym)  # [B, S, T]
    px = lm_sym + am_sym - norm[:, :-1]
    py = lm[:, :, termination_symbol][:, :, None] + am[:, :, termination_symbol][:, None, :] - norm
    px = _delay(_mask_symbols(px, bd), bd, delay_penalty)
    return _finish_px(px, modified), py


def rnnt_loss_simple(
    lm: torch.Tensor,
    am: torch.Tensor,
    symbols: torch.Tensor,
    termination_symbol: int,
    boundary: torch.Tensor | None = None,
    rnnt_type: str = "regular",
    delay_penalty: float = 0.0,
    reduction: str = "mean",
    return_grad: bool = False,
    zero_infinity: bool = False,
):
    """RNN-T loss of the joiner lm + am (no non-linearity): the first pass of pruned RNN-T.

    Args:
        lm: [B, S+1, C]; am: [B, T, C]; symbols: [B, S]; termination_symbol: blank id.
        boundary: [B, 4] of (0, 0, S_b, T_b); default the full sizes.
        return_grad: also return (px_grad, py_grad) for get_rnnt_prune_ranges.
    """
    px, py = get_rnnt_logprobs(lm, am, symbols, termination_symbol, boundary, rnnt_type, delay_penalty)
    bd = _boundary(boundary, lm.shape[0], lm.shape[1] - 1, am.shape[1], lm.device)
    out = mutual_information_recursion(px, py, bd, return_grad=return_grad)
    if return_grad:
        ans, grads = out
        return finish_loss(-ans, reduction, zero_infinity, "rnnt_loss_simple"), grads
    return finish_loss(-out, reduction, zero_infinity, "rnnt_loss_simple")


def rnnt_loss_smoothed(
    lm: torch.Tensor,
    am: torch.Tensor,
    symbols: torch.Tensor,
    termination_symbol: int,
    lm_only_scale: float = 0.1,
    am_only_scale: float = 0.0,
    boundary: torch.Tensor | None = None,
    rnnt_type: str = "regular",
    delay_penalty: float = 0.0,
    reduction: str = "mean",
    return_grad: bool = False,
    zero_infinity: bool = False,
):
    """Simple loss whose log-probs interpolate the joint (lm + am) with lm-only and am-only
    distributions: (1 - lm_only_scale - am_only_scale) * joint + lm_only_scale * lm + am_only_scale * am.

    lm-only: lm.log_softmax(-1) at each symbol position; am-only: am.log_softmax(-1) at each
    frame. fast_rnnt's am-only part instead combines am with a unigram LM averaged over the
    batch; ours keeps every utterance's loss independent of the rest of the batch (README).
    """
    px, py = get_rnnt_logprobs(lm, am, symbols, termination_symbol, boundary, rnnt_type, delay_penalty)
    b, s1, c = lm.shape
    t = am.shape[1]
    bd = _boundary(boundary, b, s1 - 1, t, lm.device)
    modified = rnnt_type == "modified"
    sym = symbols.to(torch.int64)
    lm_lp = lm.log_softmax(-1)
    am_lp = am.log_softmax(-1)
    px_lm = torch.gather(lm_lp[:, :-1], 2, sym[:, :, None]).expand(b, sym.shape[1], t)
    px_am = _gather_symbols(am_lp, sym)
    py_lm = lm_lp[:, :, termination_symbol][:, :, None].expand(b, s1, t)
    py_am = am_lp[:, :, termination_symbol][:, None, :].expand(b, s1, t)
    joint_scale = 1.0 - lm_only_scale - am_only_scale
    px_mix = _finish_px(_mask_symbols(lm_only_scale * px_lm + am_only_scale * px_am, bd), modified)
    px = joint_scale * px + px_mix if joint_scale != 0 else px_mix  # -inf pads stay -inf
    py = joint_scale * py + lm_only_scale * py_lm + am_only_scale * py_am
    out = mutual_information_recursion(px, py, bd, return_grad=return_grad)
    if return_grad:
        ans, grads = out
        return finish_loss(-ans, reduction, zero_infinity, "rnnt_loss_smoothed"), grads
    return finish_loss(-out, reduction, zero_infinity, "rnnt_loss_smoothed")


def min_prune_range(boundary: torch.Tensor, regular: bool = True) -> int:
    """The smallest s_range whose windows can hold a path of every utterance.

    Regular topology: from a window of s_range positions a frame's symbols reach at most s_range - 1
    positions further, so T_b frames cover S_b symbols only if (s_range - 1) * T_b >= S_b, i.e.
    s_range >= (S_b - 1) // T_b + 2 (fast_rnnt uses the batch's padded S and T; this takes each
    utterance's own, which is never less). Modified topology (a symbol consumes a frame; a path
    needs S_b <= T_b): 1, or 2 when some S_b = T_b, whose one path emits on every frame while the
    window of its last frame must hold S_b. Utterances with T_b = 0 have no path; they count as 1.
    """
    if boundary.shape[0] == 0:
        return 1
    s_len = boundary[:, 2].to(torch.int64)
    t_len = boundary[:, 3].to(torch.int64)
    if regular:
        need = torch.div(s_len - 1, t_len.clamp(min=1), rounding_mode="floor") + 2
    else:
        need = torch.where((s_len >= t_len) & (s_len > 0), 2, 1)
    return int(torch.where(t_len > 0, need, torch.ones_like(need)).max())


_widen_logged = False


def get_rnnt_prune_ranges(
    px_grad: torch.Tensor, py_grad: torch.Tensor, boundary: torch.Tensor, s_range: int
) -> torch.Tensor:
    """Per frame, the `s_range` consecutive symbol positions holding the most occupancy.

    The windows start at 0, never move backwards, overlap from one frame to the next (so
    the pruned lattice stays connected) and cover S_b at the last frame.
    s_range is adjusted for the batch, so the result may have another width than asked:
    - capped at S+1 (S = py_grad.shape[1] - 1): a wider window would repeat positions,
      and rnnt_loss_pruned would count their gradient once per copy;
    - regular topology (px_grad [B, S, T+1]): widened to min_prune_range(boundary) when an
      utterance has more symbols than (s_range - 1) * T_b, which no window of s_range can
      connect (the pruned loss would be +inf); modified: 1 becomes 2 when some S_b = T_b.
      Logged (INFO the first time, then DEBUG).
    Args:
        px_grad, py_grad: arc occupancies from rnnt_loss_simple(..., return_grad=True).
        boundary: [B, 4]; s_range: window size (>= 1).
    Returns:
        ranges [B, T, s_range'] int64: the symbol positions s kept at each frame.
    """
    global _widen_logged
    b, s1, t = py_grad.shape
    s_range = int(s_range)
    if s_range < 1:
        raise ValueError("s_range must be >= 1")
    regular = px_grad.shape[2] == t + 1
    need = min_prune_range(boundary, regular)
    if need > s_range:
        log.log(
            logging.DEBUG if _widen_logged else logging.INFO,
            "get_rnnt_prune_ranges: s_range %d widened to %d for this batch: an utterance has more symbols "
            "than narrower windows can connect (min_prune_range), which would leave no path",
            s_range,
            need,
        )
        _widen_logged = True
        s_range = need
    if s_range >= s1:  # the whole lattice: every position once
        return torch.arange(s1, device=py_grad.device).expand(b, t, s1).clone()
    occ = py_grad.clone()
    occ[:, :-1] += px_grad[:, :, :t]  # node occupancy ~ mass leaving (s, t)
    csum = torch.cat([torch.zeros_like(occ[:, :1]), occ.cumsum(1)], dim=1)  # [B, S+2, T]
    window = csum[:, s_range:] - csum[:, :-s_range]  # [B, S+2-s_range, T]: mass of [s, s+s_range)
    begin = window.argmax(dim=1)  # [B, T]
    s_len = boundary[:, 2].to(torch.int64)
    t_len = boundary[:, 3].to(torch.int64)
    max_begin = (s_len + 1 - s_range).clamp(min=0)[:, None]
    begin = torch.minimum(begin, max_begin)
    begin[:, 0] = 0
    step = max(1, s_range - 1)  # consecutive windows share at least one position
    for i in range(1, t):  # forward: monotonic and reachable
        begin[:, i] = torch.minimum(torch.maximum(begin[:, i], begin[:, i - 1]), begin[:, i - 1] + step)
    last = torch.arange(t, device=begin.device)[None, :] >= (t_len - 1)[:, None]
    begin = torch.where(last, torch.maximum(begin, max_begin), begin)  # the last frame reaches S_b
    for i in range(t - 2, -1, -1):  # backward: every window can still reach the next one
        begin[:, i] = torch.maximum(begin[:, i], begin[:, i + 1] - step)
    begin = torch.minimum(begin, max_begin)
    begin[:, 0] = 0
    return begin[:, :, None] + torch.arange(s_range, device=begin.device)


def do_rnnt_pruning(am: torch.Tensor, lm: torch.Tensor, ranges: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather joiner inputs on the pruned lattice.

    Args: am [B, T, C], lm [B, S+1, C], ranges [B, T, s_range].
    Returns: (am_pruned [B, T, s_range, C], lm_pruned [B, T, s_range, C]).
    """
    b, t, r = ranges.shape
    c = lm.shape[2]
    lm_pruned = torch.gather(lm, 1, ranges.reshape(b, t * r, 1).expand(b, t * r, c)).reshape(b, t, r, c)
    am_pruned = am[:, :, None, :].expand(b, t, r, am.shape[2])
    return am_pruned, lm_pruned


def rnnt_loss_pruned(
    logits: torch.Tensor,
    symbols: torch.Tensor,
    ranges: torch.Tensor,
    termination_symbol: int,
    boundary: torch.Tensor | None = None,
    rnnt_type: str = "regular",
    delay_penalty: float = 0.0,
    reduction: str = "mean",
    zero_infinity: bool = False,
) -> torch.Tensor:
    """RNN-T loss on the pruned lattice.

    Args:
        logits: [B, T, s_range, V] joiner output at (t, ranges[b, t, k]).
        symbols: [B, S]; ranges: [B, T, s_range] from get_rnnt_prune_ranges.
    Positions outside the windows have probability 0. With every position 0..S in each
    window (ranges = arange(S+1)) this equals the full RNN-T loss. A window must not repeat
    a position (ValueError): its gradient would be counted once per copy.
    """
    modified = _check_topology(rnnt_type)
    b, t, r, v = logits.shape
    s = symbols.shape[1]
    if ranges.shape != (b, t, r):
        raise ValueError(f"ranges {tuple(ranges.shape)} must be [B, T, s_range] = {(b, t, r)} like the logits")
    if r > 1 and bool((ranges[..., 1:] <= ranges[..., :-1]).any()):
        # a position kept twice would get its gradient once per copy (the scatter below)
        raise ValueError("ranges must be strictly increasing along s_range: each symbol position kept once")
    bd = _boundary(boundary, b, s, t, logits.device)
    lp = logits.log_softmax(-1)
    sym = symbols.to(torch.int64)
    # symbol at each kept position: y_{s+1} for s < S (positions at S get a dummy, masked below)
    sym_ext = torch.cat([sym, torch.full_like(sym[:, :1], termination_symbol)], dim=1)  # [B, S+1]
    pos_sym = torch.gather(sym_ext, 1, ranges.reshape(b, t * r)).reshape(b, t, r)
    px_k = torch.gather(lp, 3, pos_sym[..., None]).squeeze(3)  # [B, T, r]
    py_k = lp[..., termination_symbol]  # [B, T, r]
    neg = torch.tensor(float("-inf"), dtype=lp.dtype, device=lp.device)
    # Scatter into the full lattice: -inf wherever the window does not reach.
    px_full = neg.expand(b, s + 1, t).clone()
    py_full = neg.expand(b, s + 1, t).clone()
    idx = ranges.transpose(1, 2)  # [B, r, T]
    px_full = px_full.scatter(1, idx, px_k.transpose(1, 2))
    py_full = py_full.scatter(1, idx, py_k.transpose(1, 2))
    px = _delay(_mask_symbols(px_full[:, :s], bd), bd, delay_penalty)
    ans = mutual_information_recursion(_finish_px(px, modified), py_full, bd)
    return finish_loss(-ans, reduction, zero_infinity, "rnnt_loss_pruned")
