"""Pruned TDT: pruned RNN-T's recipe (Kuang et al. 2022) for the Token-and-Duration Transducer
(Xu et al. 2023).

1. `tdt_loss_simple`: the TDT loss of a trivial joiner (lm + am for the V token logits and for
   the D duration logits), cheap in memory: B*T*(S+1)*V is never formed, only B*T*(S+1)*D.
2. `get_tdt_prune_ranges`: from its occupancy (where the paths are during each frame),
   `s_range` symbol positions per frame whose windows are guaranteed to hold a TDT path.
3. `do_rnnt_pruning` + the real joiner on [B, T, s_range, V+D] only.
4. `tdt_loss_pruned`: the TDT loss on the pruned lattice.

Both losses reduce to log-probs of the lattice's arcs, [B, T, S+1, 2+D] (blank, next symbol,
durations; -inf for arcs that do not exist), and run the compiled TDT lattice on them
(asr.losses.tdt.tdt_arc_loss). Symbols are indexed as in asr.losses.pruned_rnnt: s in [0, S]
counts the symbols emitted so far; boundary is [B, 4] of (0, 0, S_b, T_b).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .lattice import check_inputs, finish_loss, row_chunks, row_softmax_and_logsumexp
from .precision import float32_loss
from .pruned_rnnt import (
    _boundary,
    check_ranges,
    pruned_rnnt_log_likelihood,
    smoothed_simple_logprobs,
    symbols_at,
    widen_prune_range,
    window_sums,
    windows_from_scores,
)
from .tdt import check_durations, check_tdt_options, tdt_arc_loss, tdt_num_tokens
from .topology import min_prune_range


def _tdt_boundary(boundary: torch.Tensor | None, b: int, s: int, t: int, device) -> torch.Tensor:
    bd = _boundary(boundary, b, s, t, device)
    if bool((bd[:, :2] != 0).any()):
        raise ValueError("TDT lattices start at (0, 0): boundary[:, :2] must be 0")
    if bd.shape[0] and (int(bd[:, 2].max()) > s or int(bd[:, 3].max()) > t):
        raise ValueError(f"boundary exceeds the padded sizes S={s}, T={t}")
    return bd


def _arc_rows(blank_lp: torch.Tensor, sym_lp: torch.Tensor, dur_lp: torch.Tensor, sigma: float) -> torch.Tensor:
    """[..., 2 + D] rows of tdt_arc_loss: blank and next-symbol log-probs (less sigma), then the durations."""
    return torch.cat([(blank_lp - sigma)[..., None], (sym_lp - sigma)[..., None], dur_lp], dim=-1)


def _split(x: torch.Tensor, d: int, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """x[..., V + d] -> (the V token values, the d duration values)."""
    v = tdt_num_tokens(x.shape[-1], d, what)
    return x[..., :v], x[..., v:]


def check_prune_durations(durations: Sequence[int]) -> tuple[int, ...]:
    """The durations of pruned TDT: as check_durations, and 1 among them (get_tdt_prune_ranges' rule)."""
    durs = check_durations(durations)
    if 1 not in durs:
        raise ValueError(
            f"pruned TDT needs duration 1 among the durations (got {list(durs)}): without it a path skips "
            "frames, and windows chosen frame by frame are not guaranteed to hold one"
        )
    return durs


class _NodeLogProbs(torch.autograd.Function):
    """Rows [N, V+D] of logits -> the log-probs of blank [N], of the next symbol sym[N] [N] and of the
    D durations [N, D], tokens and durations normalized separately.

    As in rnnt_loss, the forward writes both softmaxes into the buffer that becomes the gradient,
    so the backward is one scaling pass and a scatter: autograd through logsumexp and the slices
    took 0.37 s against 0.03 s for this buffer at B=32, T=500, s_range=5, V=500 (1 thread), and
    kept [N, V] temporaries.
    """

    @staticmethod
    def forward(ctx, rows, sym, v, blank):
        softmax = torch.empty_like(rows)
        lse_tok = row_softmax_and_logsumexp(rows[:, :v], softmax[:, :v])
        lse_dur = row_softmax_and_logsumexp(rows[:, v:], softmax[:, v:])
        blank_lp = rows[:, blank] - lse_tok
        sym_lp = rows.gather(1, sym[:, None]).squeeze(1) - lse_tok
        dur_lp = rows[:, v:] - lse_dur[:, None]
        ctx.softmax = softmax
        ctx.v, ctx.blank = v, blank
        ctx.save_for_backward(rows, sym)
        return blank_lp, sym_lp, dur_lp

    @staticmethod
    def backward(ctx, g_blank, g_sym, g_dur):
        rows, sym = ctx.saved_tensors
        v, blank = ctx.v, ctx.blank
        grad, ctx.softmax = ctx.softmax, None  # the forward's softmax, used up here
        if grad is None:  # a second backward through the same graph (retain_graph): recompute
            grad = torch.empty_like(rows)
            for i, j in row_chunks(rows.shape[0], rows.shape[1]):
                grad[i:j, :v] = torch.softmax(rows[i:j, :v], -1)
                grad[i:j, v:] = torch.softmax(rows[i:j, v:], -1)
        g_blank = torch.zeros_like(rows[:, 0]) if g_blank is None else g_blank
        g_sym = torch.zeros_like(rows[:, 0]) if g_sym is None else g_sym
        g_dur = torch.zeros_like(rows[:, v:]) if g_dur is None else g_dur
        # d/dx of (x_k - lse(x)) is onehot(k) - softmax(x): scale each part's softmax by minus
        # the sum of its outputs' gradients, then add the one-hot terms
        g_tok = (g_blank + g_sym).neg_()[:, None]
        for i, j in row_chunks(rows.shape[0], rows.shape[1]):
            grad[i:j, :v].mul_(g_tok[i:j])
        grad[:, v:].mul_(g_dur.sum(1, keepdim=True).neg_()).add_(g_dur)
        grad[:, blank] += g_blank
        grad.scatter_add_(1, sym[:, None], g_sym[:, None])
        return grad, None, None, None


@float32_loss
def tdt_loss_simple(
    lm: torch.Tensor,
    am: torch.Tensor,
    symbols: torch.Tensor,
    durations: Sequence[int] = (0, 1, 2, 3, 4),
    blank: int = 0,
    boundary: torch.Tensor | None = None,
    sigma: float = 0.0,
    lm_only_scale: float = 0.0,
    am_only_scale: float = 0.0,
    reduction: str = "mean",
    return_grad: bool = False,
    zero_infinity: bool = False,
):
    """TDT loss of the joiner logits[b, t, s] = lm[b, s] + am[b, t] (no non-linearity): the first pass
    of pruned TDT, equal to tdt_loss of those logits (the tests materialize them).

    The token normalizer comes from one matmul per utterance (get_rnnt_logprobs), so the token
    part costs B*(S+1)*T, not B*(S+1)*T*V; the duration part is formed: [B, T, S+1, D].
    Args:
        lm: [B, S+1, V+D] predictor side; am: [B, T, V+D] encoder side; symbols: [B, S].
        durations: D frame advances (distinct, >= 0, one > 0), as in tdt_loss.
        boundary: [B, 4] of (0, 0, S_b, T_b); default the full sizes.
        sigma: subtracted from every token log-prob, as in tdt_loss.
        lm_only_scale, am_only_scale: smoothing as rnnt_loss_smoothed, of the token and the duration
            log-probs alike: (1 - lm_only - am_only) * joint + lm_only * lm-only + am_only * am-only.
        return_grad: also return the occupancy [B, S+1, T] (tdt_occupancy) for get_tdt_prune_ranges;
            computed with the loss (the backward then only scales the arc posteriors), not differentiable.
    Returns:
        the loss (reduced), and with return_grad (loss, occupancy).
    """
    durs, sigma, _ = check_tdt_options(durations, sigma)
    d = len(durs)
    lm_tok, lm_dur = _split(lm, d, "lm")
    am_tok, am_dur = _split(am, d, "am")
    b, s1, _ = lm.shape
    t = am.shape[1]
    bd = _tdt_boundary(boundary, b, s1 - 1, t, lm.device)
    check_inputs(lm, symbols.to(torch.int64), bd[:, 3], bd[:, 2], blank, lm_tok.shape[-1])
    # token arcs: px [B, S, T], py [B, S+1, T] -> the [B, T, S+1] lattice (symbol arcs at s >= S_b are
    # never taken: the kernel stops at S_b)
    px, py = smoothed_simple_logprobs(lm_tok, am_tok, symbols, blank, lm_only_scale, am_only_scale)
    sym_lp = torch.cat([px, torch.full_like(py[:, :1], float("-inf"))], dim=1).transpose(1, 2)
    dur_lp = (lm_dur[:, None] + am_dur[:, :, None]).log_softmax(-1)  # [B, T, S+1, D]
    joint_scale = 1.0 - lm_only_scale - am_only_scale
    if joint_scale != 1.0:
        dur_lp = (
            joint_scale * dur_lp
            + lm_only_scale * lm_dur.log_softmax(-1)[:, None]
            + am_only_scale * am_dur.log_softmax(-1)[:, :, None]
        )
    arcs = _arc_rows(py.transpose(1, 2), sym_lp, dur_lp, sigma)
    out = tdt_arc_loss(arcs, bd[:, 3], bd[:, 2], durs, return_posteriors=return_grad)
    if not return_grad:
        return finish_loss(out, reduction, zero_infinity, "tdt_loss_simple")
    loss, post = out
    return finish_loss(loss, reduction, zero_infinity, "tdt_loss_simple"), tdt_occupancy(post, durs)


def tdt_occupancy(posteriors: torch.Tensor, durations: Sequence[int]) -> torch.Tensor:
    """P(the path is at symbol position s during frame t): [B, T, S+1, 2+D] arc posteriors -> [B, S+1, T].

    An arc of duration d > 0 leaving (t, s) holds the path at s during frames t .. t+d-1; one of
    duration 0 (a symbol) at s during t. So every frame a path spans counts, also the frames it
    jumps over: those have no arcs of their own, but their windows constrain their neighbours'
    (get_tdt_prune_ranges), and chosen from the mass of the arcs leaving them alone they would
    follow noise. Per frame t < T_b the occupancy sums to 1 plus the expected number of symbols
    of duration 0 there; with durations {0, 1} it is RNN-T's node occupancy (py_grad + px_grad).
    Args:
        posteriors: from tdt_arc_loss(..., return_posteriors=True); the duration columns 2.. are the
            mass of the arcs leaving each node with each duration.
    """
    dur = posteriors[..., 2:]  # [B, T, S+1, D]
    csum = torch.nn.functional.pad(dur.cumsum(1), (0, 0, 0, 0, 1, 0))  # [B, T+1, S+1, D]: csum[t] = sum_{<t}
    t = dur.shape[1]
    occ = torch.zeros_like(dur[..., 0])
    for i, d in enumerate(durations):
        if d == 0:
            occ += dur[..., i]
        else:  # occ[t'] += sum of arcs leaving at t in (t' - d, t']
            hi = torch.arange(1, t + 1, device=dur.device)
            occ += csum[:, hi, :, i] - csum[:, (hi - d).clamp(min=0), :, i]
    return occ.transpose(1, 2).contiguous()


def get_tdt_prune_ranges(
    occupancy: torch.Tensor,
    boundary: torch.Tensor,
    s_range: int,
    durations: Sequence[int],
) -> torch.Tensor:
    """Per frame, `s_range` consecutive symbol positions holding the most occupancy, such that the
    pruned TDT lattice keeps a path of every utterance that has one.

    Rule (durations must contain 1; ValueError otherwise): the windows start at 0, never move
    backwards, cover S_b at the last frame T_b - 1, and move from one frame to the next by at most
    - s_range - 1 positions when 0 is a duration: consecutive windows share a position, so the path
      "emit symbols with duration 0 up to the next window's first position, then blank with
      duration 1" stays inside (the RNN-T path: with the same occupancy these are
      get_rnnt_prune_ranges' windows);
    - 1 position otherwise (each symbol takes a frame): the path u_t = min(t, last position of
      window t, S_b), symbols and blanks of duration 1, stays inside whenever S_b <= T_b - 1,
      which any TDT path without duration 0 needs.
    Longer durations only add paths. Without 1 a path skips frames, and which frames depends on
    T_b, so windows chosen frame by frame need not connect. s_range is widened as in
    get_rnnt_prune_ranges (min_prune_range, regular topology) and capped at S+1; the windows then
    also hold a regular RNN-T path, so tdt_loss_pruned's omega term is finite as well.
    Args:
        occupancy: [B, S+1, T] from tdt_loss_simple(..., return_grad=True) (tdt_occupancy).
        boundary: [B, 4]; s_range: window size (>= 1); durations: those of the loss.
    Returns:
        ranges [B, T, s_range'] int64.
    """
    durs = check_prune_durations(durations)
    s_range = widen_prune_range(s_range, min_prune_range(boundary, "regular"), "get_tdt_prune_ranges")
    b, s1, t = occupancy.shape
    if s_range >= s1:  # the whole lattice: every position once
        return torch.arange(s1, device=occupancy.device).expand(b, t, s1).clone()
    step = max(1, s_range - 1) if 0 in durs else 1
    return windows_from_scores(window_sums(occupancy, s_range), boundary, s_range, step)


@float32_loss
def tdt_loss_pruned(
    logits: torch.Tensor,
    symbols: torch.Tensor,
    ranges: torch.Tensor,
    durations: Sequence[int] = (0, 1, 2, 3, 4),
    blank: int = 0,
    boundary: torch.Tensor | None = None,
    sigma: float = 0.0,
    omega: float = 0.0,
    reduction: str = "mean",
    zero_infinity: bool = False,
) -> torch.Tensor:
    """TDT loss on the pruned lattice: only nodes (t, s) with s in ranges[b, t] have arcs.

    Per kept node the blank, next-symbol and D duration log-probs are read off the logits (tokens
    and durations normalized separately, sigma subtracted from the tokens, as in tdt_loss) and
    scattered into the [B, T, S+1, 2+D] arc lattice, -inf elsewhere. With every position in each
    window (ranges = arange(S+1)) this equals tdt_loss, gradients included.
    Args:
        logits: [B, T, s_range, V+D] joiner output at (t, ranges[b, t, k]).
        symbols: [B, S]; ranges: [B, T, s_range] (get_tdt_prune_ranges), strictly increasing.
        durations, sigma: as tdt_loss; boundary: [B, 4] of (0, 0, S_b, T_b), default the full sizes.
        omega: weight of the pruned RNN-T loss of the token logits on the same windows:
            (1 - omega) * TDT + omega * RNN-T (rnnt_loss_pruned).
        reduction: none ([B]) | mean | sum; zero_infinity: as tdt_loss.
    """
    durs, sigma, omega = check_tdt_options(durations, sigma, omega)
    b, t, r, _ = logits.shape
    s = symbols.shape[1]
    check_ranges(ranges, b, t, r, s)
    bd = _tdt_boundary(boundary, b, s, t, logits.device)
    v = _split(logits, len(durs), "logits")[0].shape[-1]
    check_inputs(logits, symbols.to(torch.int64), bd[:, 3], bd[:, 2], blank, v)
    sym = symbols_at(symbols, ranges, bd[:, 2], blank).reshape(-1)
    blank_lp, sym_lp, dur_lp = _NodeLogProbs.apply(logits.reshape(-1, logits.shape[-1]), sym, v, blank)
    blank_lp, sym_lp = blank_lp.reshape(b, t, r), sym_lp.reshape(b, t, r)
    rows = _arc_rows(blank_lp, sym_lp, dur_lp.reshape(b, t, r, -1), sigma)  # [B, T, r, 2+D]
    arcs = rows.new_full((b, t, s + 1, rows.shape[-1]), float("-inf"))
    arcs = arcs.scatter(2, ranges[..., None].expand(b, t, r, rows.shape[-1]), rows)
    loss = tdt_arc_loss(arcs, bd[:, 3], bd[:, 2], durs)
    if omega > 0:
        rnnt = -pruned_rnnt_log_likelihood(sym_lp, blank_lp, ranges, s, bd)
        loss = (1 - omega) * loss + omega * rnnt
    return finish_loss(loss, reduction, zero_infinity, "tdt_loss_pruned")
