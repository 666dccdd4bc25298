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
from .precision import float32_loss
from .topology import check_topology, finish_px, min_prune_range, one_output_per_frame, topology_of

log = logging.getLogger(__name__)


def _boundary(boundary: torch.Tensor | None, b: int, s: int, t: int, device) -> torch.Tensor:
    if boundary is None:
        bd = torch.zeros(b, 4, dtype=torch.int64, device=device)
        bd[:, 2], bd[:, 3] = s, t
        return bd
    return boundary.to(torch.int64).contiguous()


def _delay(px: torch.Tensor, boundary: torch.Tensor, delay_penalty: float) -> torch.Tensor:
    """Add delay_penalty * ((T_b - 1)/2 - t) to symbol arcs: rewards early emission, zero-mean over frames."""
    if delay_penalty == 0.0:
        return px
    t = torch.arange(px.shape[2], device=px.device, dtype=px.dtype)[None, None, :]
    t_len = boundary[:, 3].to(px.dtype)[:, None, None]
    return px + delay_penalty * ((t_len - 1) / 2 - t)


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


def _simple_logprobs(
    lm: torch.Tensor, am: torch.Tensor, sym: torch.Tensor, termination_symbol: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Symbol and blank log-probs of the joiner lm + am: (px_body [B, S, T], py [B, S+1, T])."""
    lm_max = lm.max(dim=2, keepdim=True).values  # [B, S+1, 1]
    am_max = am.max(dim=2, keepdim=True).values  # [B, T, 1]
    # log sum_c exp(lm + am) = maxes + log(exp(lm - lm_max) @ exp(am - am_max)^T), never forming B*S*T*C
    norm = torch.log(torch.matmul((lm - lm_max).exp(), (am - am_max).exp().transpose(1, 2)))
    norm = norm + lm_max + am_max.transpose(1, 2)  # [B, S+1, T]
    lm_sym = torch.gather(lm[:, :-1], 2, sym[:, :, None])  # [B, S, 1]
    px = lm_sym + _gather_symbols(am, sym) - norm[:, :-1]
    py = lm[:, :, termination_symbol][:, :, None] + am[:, :, termination_symbol][:, None, :] - norm
    return px, py


def _recursion_inputs(
    px_body: torch.Tensor, py: torch.Tensor, bd: torch.Tensor, rnnt_type: str, delay_penalty: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Symbol log-probs [B, S, T] -> the recursion's (px, py): padding masked, delay added, topology applied."""
    return finish_px(_delay(_mask_symbols(px_body, bd), bd, delay_penalty), py, rnnt_type), py


@float32_loss
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
        rnnt_type: regular | modified | constrained | rna (asr.losses.topology).
    Returns:
        px [B, S, T+1] (regular) or [B, S, T] (the others), py [B, S+1, T].
    """
    check_topology(rnnt_type)
    bd = _boundary(boundary, lm.shape[0], lm.shape[1] - 1, am.shape[1], lm.device)
    px, py = _simple_logprobs(lm, am, symbols.to(torch.int64), termination_symbol)
    return _recursion_inputs(px, py, bd, rnnt_type, delay_penalty)


@float32_loss
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
        rnnt_type: regular | modified | constrained | rna (asr.losses.topology).
        return_grad: also return (px_grad, py_grad) for get_rnnt_prune_ranges.
    """
    px, py = get_rnnt_logprobs(lm, am, symbols, termination_symbol, boundary, rnnt_type, delay_penalty)
    bd = _boundary(boundary, lm.shape[0], lm.shape[1] - 1, am.shape[1], lm.device)
    out = mutual_information_recursion(px, py, bd, return_grad=return_grad)
    if return_grad:
        ans, grads = out
        return finish_loss(-ans, reduction, zero_infinity, "rnnt_loss_simple"), grads
    return finish_loss(-out, reduction, zero_infinity, "rnnt_loss_simple")


def smoothed_simple_logprobs(
    lm: torch.Tensor,
    am: torch.Tensor,
    symbols: torch.Tensor,
    termination_symbol: int,
    lm_only_scale: float = 0.0,
    am_only_scale: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Symbol and blank log-probs of the joiner lm + am mixed with the lm-only and am-only
    distributions (rnnt_loss_smoothed): (px_body [B, S, T], py [B, S+1, T]), padding not masked."""
    sym = symbols.to(torch.int64)
    px, py = _simple_logprobs(lm, am, sym, termination_symbol)
    if lm_only_scale == 0.0 and am_only_scale == 0.0:
        return px, py
    b, s1, _ = lm.shape
    t = am.shape[1]
    lm_lp = lm.log_softmax(-1)
    am_lp = am.log_softmax(-1)
    px_lm = torch.gather(lm_lp[:, :-1], 2, sym[:, :, None]).expand(b, sym.shape[1], t)
    px_am = _gather_symbols(am_lp, sym)
    py_lm = lm_lp[:, :, termination_symbol][:, :, None].expand(b, s1, t)
    py_am = am_lp[:, :, termination_symbol][:, None, :].expand(b, s1, t)
    joint_scale = 1.0 - lm_only_scale - am_only_scale
    px = joint_scale * px + lm_only_scale * px_lm + am_only_scale * px_am
    py = joint_scale * py + lm_only_scale * py_lm + am_only_scale * py_am
    return px, py


@float32_loss
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
    The delay penalty and the topology (constrained's forced blank) apply to the mixture, unscaled.
    """
    check_topology(rnnt_type)
    bd = _boundary(boundary, lm.shape[0], lm.shape[1] - 1, am.shape[1], lm.device)
    px, py = smoothed_simple_logprobs(lm, am, symbols, termination_symbol, lm_only_scale, am_only_scale)
    px, py = _recursion_inputs(px, py, bd, rnnt_type, delay_penalty)
    out = mutual_information_recursion(px, py, bd, return_grad=return_grad)
    if return_grad:
        ans, grads = out
        return finish_loss(-ans, reduction, zero_infinity, "rnnt_loss_smoothed"), grads
    return finish_loss(-out, reduction, zero_infinity, "rnnt_loss_smoothed")


_widen_logged = False


WINDOW_SCORES = ("occupancy", "paper")


def window_sums(occ: torch.Tensor, s_range: int) -> torch.Tensor:
    """occ [B, S+1, T] summed over every window [s, s + s_range) of positions: [B, S+2-s_range, T]."""
    csum = torch.cat([torch.zeros_like(occ[:, :1]), occ.cumsum(1)], dim=1)  # [B, S+2, T]
    return csum[:, s_range:] - csum[:, :-s_range]


def _window_scores(px_grad: torch.Tensor, py_grad: torch.Tensor, s_range: int, score: str) -> torch.Tensor:
    """Score of every window [s, s + s_range) at every frame: [B, S+2-s_range, T].

    occupancy: the mass of the nodes in the window, each node's occupancy being the posterior
        of the arcs leaving it (blank + symbol).
    paper: the Pruned RNN-T paper's (Kuang et al. 2022, section 3.2): the blank arcs' posterior
        in the window minus that of the symbol arc entering its first position from below.
    """
    t = py_grad.shape[2]
    if score == "occupancy":
        occ = py_grad.clone()
        occ[:, :-1] += px_grad[:, :, :t]  # node occupancy ~ mass leaving (s, t)
    elif score == "paper":
        occ = py_grad
    else:
        raise ValueError(f"score must be one of {WINDOW_SCORES}, not {score!r}")
    window = window_sums(occ, s_range)
    if score == "paper":
        entering = torch.cat([torch.zeros_like(px_grad[:, :1, :t]), px_grad[:, :, :t]], dim=1)  # arc s-1 -> s
        window = window - entering[:, : window.shape[1]]
    return window


def get_rnnt_prune_ranges(
    px_grad: torch.Tensor,
    py_grad: torch.Tensor,
    boundary: torch.Tensor,
    s_range: int,
    rnnt_type: str | None = None,
    score: str = "occupancy",
) -> torch.Tensor:
    """Per frame, the `s_range` consecutive symbol positions holding the most probability mass.

    The windows start at 0, never move backwards, overlap from one frame to the next (so
    the pruned lattice stays connected; one-output-per-frame topologies move them at most one
    position per frame, as a path does) and cover S_b at the last frame.
    s_range is adjusted for the batch, so the result may have another width than asked:
    - capped at S+1 (S = py_grad.shape[1] - 1): a wider window would repeat positions,
      and rnnt_loss_pruned would count their gradient once per copy;
    - widened to min_prune_range(boundary, rnnt_type) when no window of s_range can hold a
      path of some utterance (regular: more symbols than (s_range - 1) * T_b; modified / rna:
      1 becomes 2 when some S_b = T_b; constrained: at least 2): the pruned loss would be +inf.
      Logged (INFO the first time, then DEBUG).
    Args:
        px_grad, py_grad: arc occupancies from rnnt_loss_simple(..., return_grad=True).
        boundary: [B, 4]; s_range: window size (>= 1).
        rnnt_type: the topology of the loss that produced the occupancies (None: regular or
            modified, read from px_grad's shape; constrained must be named).
        score: how a window is scored (`_window_scores`): occupancy (default; BENCHMARKS.md has
            the measurement that chose it) or paper.
    Returns:
        ranges [B, T, s_range'] int64: the symbol positions s kept at each frame.
    """
    b, s1, t = py_grad.shape
    shape_type = topology_of(px_grad, py_grad)
    rnnt_type = shape_type if rnnt_type is None else check_topology(rnnt_type)
    if one_output_per_frame(rnnt_type) != (shape_type != "regular"):
        raise ValueError(f"px_grad {tuple(px_grad.shape)} has the {shape_type} shape, not {rnnt_type}'s")
    s_range = widen_prune_range(s_range, min_prune_range(boundary, rnnt_type), "get_rnnt_prune_ranges")
    if s_range >= s1:  # the whole lattice: every position once
        return torch.arange(s1, device=py_grad.device).expand(b, t, s1).clone()
    # consecutive windows share at least one position; a path of a one-output-per-frame
    # topology advances at most one position per frame, so its windows may not move faster
    step = 1 if one_output_per_frame(rnnt_type) else max(1, s_range - 1)
    return windows_from_scores(_window_scores(px_grad, py_grad, s_range, score), boundary, s_range, step)


def widen_prune_range(s_range: int, need: int, caller: str) -> int:
    """max(s_range, need), logging a widening (INFO the first time in a process, then DEBUG)."""
    global _widen_logged
    s_range = int(s_range)
    if s_range < 1:
        raise ValueError("s_range must be >= 1")
    if need <= s_range:
        return s_range
    log.log(
        logging.DEBUG if _widen_logged else logging.INFO,
        "%s: s_range %d widened to %d for this batch: an utterance has more symbols "
        "than narrower windows can connect (min_prune_range), which would leave no path",
        caller,
        s_range,
        need,
    )
    _widen_logged = True
    return need


def windows_from_scores(scores: torch.Tensor, boundary: torch.Tensor, s_range: int, step: int) -> torch.Tensor:
    """The best-scoring window per frame, made connected: ranges [B, T, s_range] int64.

    The windows start at 0, never move backwards, move at most `step` positions from one frame
    to the next and cover S_b at the last frame T_b - 1 (step <= s_range - 1: consecutive windows
    share a position).
    Args:
        scores: [B, S+2-s_range, T], the score of window [s, s + s_range) at frame t (s_range <= S).
        boundary: [B, 4] of (0, 0, S_b, T_b); s_range, step: >= 1.
    """
    t = scores.shape[2]
    begin = scores.argmax(dim=1)  # [B, T]
    s_len = boundary[:, 2].to(torch.int64)
    t_len = boundary[:, 3].to(torch.int64)
    max_begin = (s_len + 1 - s_range).clamp(min=0)[:, None]
    begin = torch.minimum(begin, max_begin)
    begin[:, 0] = 0
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


def check_ranges(ranges: torch.Tensor, b: int, t: int, r: int, s: int) -> None:
    """ValueError unless ranges is [B, T, s_range] of positions in [0, S], strictly increasing per window.

    A position kept twice would get its gradient once per copy (the scatters into the full lattice).
    """
    if ranges.shape != (b, t, r):
        raise ValueError(f"ranges {tuple(ranges.shape)} must be [B, T, s_range] = {(b, t, r)} like the logits")
    if ranges.numel() and (int(ranges.min()) < 0 or int(ranges.max()) > s):
        raise ValueError(f"ranges must hold symbol positions in [0, S={s}]")
    if r > 1 and bool((ranges[..., 1:] <= ranges[..., :-1]).any()):
        raise ValueError("ranges must be strictly increasing along s_range: each symbol position kept once")


def symbols_at(symbols: torch.Tensor, ranges: torch.Tensor, s_len: torch.Tensor, filler: int) -> torch.Tensor:
    """The next symbol y_{s+1} at each kept position s: [B, S], [B, T, r] -> [B, T, r].

    Positions s >= S_b (no next symbol; their symbol arcs are masked by the callers) get `filler`,
    so padding values in `symbols` are never used as indices.
    """
    b, t, r = ranges.shape
    sym = symbols.to(torch.int64)
    pad = torch.arange(sym.shape[1], device=sym.device)[None, :] >= s_len[:, None].to(sym.device)
    sym_ext = torch.cat([sym.masked_fill(pad, filler), sym.new_full((b, 1), filler)], dim=1)  # [B, S+1]
    return torch.gather(sym_ext, 1, ranges.reshape(b, t * r)).reshape(b, t, r)


def pruned_rnnt_log_likelihood(
    px_k: torch.Tensor,
    py_k: torch.Tensor,
    ranges: torch.Tensor,
    s: int,
    boundary: torch.Tensor,
    rnnt_type: str = "regular",
    delay_penalty: float = 0.0,
) -> torch.Tensor:
    """log P of the RNN-T lattice whose only arcs are the kept ones.

    Args:
        px_k, py_k: [B, T, r] log-probs of the next symbol and of blank at (t, ranges[b, t, k]).
        ranges: [B, T, r]; s: S, the symbols' padded length; boundary: [B, 4].
    Returns:
        [B], -inf where the windows hold no path.
    """
    b, t, _ = ranges.shape
    neg = torch.tensor(float("-inf"), dtype=px_k.dtype, device=px_k.device)
    # Scatter into the full lattice: -inf wherever the window does not reach.
    idx = ranges.transpose(1, 2)  # [B, r, T]
    px_full = neg.expand(b, s + 1, t).clone().scatter(1, idx, px_k.transpose(1, 2))
    py_full = neg.expand(b, s + 1, t).clone().scatter(1, idx, py_k.transpose(1, 2))
    px, py = _recursion_inputs(px_full[:, :s], py_full, boundary, rnnt_type, delay_penalty)
    return mutual_information_recursion(px, py, boundary)


@float32_loss
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
    check_topology(rnnt_type)
    b, t, r, _ = logits.shape
    s = symbols.shape[1]
    check_ranges(ranges, b, t, r, s)
    bd = _boundary(boundary, b, s, t, logits.device)
    lp = logits.log_softmax(-1)
    pos_sym = symbols_at(symbols, ranges, bd[:, 2], termination_symbol)
    px_k = torch.gather(lp, 3, pos_sym[..., None]).squeeze(3)  # [B, T, r]
    py_k = lp[..., termination_symbol]  # [B, T, r]
    ans = pruned_rnnt_log_likelihood(px_k, py_k, ranges, s, bd, rnnt_type, delay_penalty)
    return finish_loss(-ans, reduction, zero_infinity, "rnnt_loss_pruned")
