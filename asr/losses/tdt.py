"""Token-and-Duration Transducer loss (Xu et al. 2023) on the compiled lattice kernels.

Logits are [B, T, U+1, V+D] (or packed [sum_b T_b*(U_b+1), V+D]): V token logits then D
duration logits, normalized separately. Token log-probs are under-normalized by `sigma`;
`omega` mixes in the standard RNN-T loss of the token logits. Blank never takes
duration 0. The dense work (normalizers, softmax terms) runs as chunked tensor ops as in
asr.losses.rnnt; csrc/transducer/tdt_cpu.cpp does the lattice.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .._ext import ops
from .lattice import check_inputs, finish_loss, row_chunks, row_layout, row_logsumexp, row_values
from .precision import float32_loss
from .rnnt import rnnt_loss


class _TDTLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, targets, logit_lengths, target_lengths, durations, num_tokens, blank, sigma):
        max_u = int(target_lengths.max()) if target_lengths.numel() else 0
        rows, offsets, strides, max_t = row_layout(logits, logit_lengths, target_lengths, max_u)
        rows = rows.contiguous()
        v = num_tokens
        den_tok = row_logsumexp(rows[:, :v])
        den_dur = row_logsumexp(rows[:, v:])
        loss, alpha, beta = ops().tdt_forward(
            rows,
            den_tok,
            den_dur,
            targets,
            logit_lengths,
            target_lengths,
            offsets,
            strides,
            durations,
            num_tokens=v,
            max_t=max_t,
            max_u=max_u,
            blank=blank,
            sigma=sigma,
        )
        ctx.save_for_backward(
            rows,
            den_tok,
            den_dur,
            targets,
            logit_lengths,
            target_lengths,
            offsets,
            strides,
            durations,
            alpha,
            beta,
            loss,
        )
        ctx.args = (v, blank, sigma, logits.shape)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        (
            rows,
            den_tok,
            den_dur,
            targets,
            logit_lengths,
            target_lengths,
            offsets,
            strides,
            durations,
            alpha,
            beta,
            loss,
        ) = ctx.saved_tensors
        v, blank, sigma, shape = ctx.args
        grad_loss = grad_loss.to(rows.dtype).contiguous()
        fold = bool((grad_loss > 0).all())
        scale = grad_loss if fold else torch.ones_like(grad_loss)
        # every arc leaving a node uses one token and one duration log-prob: both parts get
        # occupancy * softmax, minus the posteriors of the arcs that use each entry
        occ = (
            ops()
            .rnnt_log_occupancy(
                alpha, beta, loss, scale, logit_lengths, target_lengths, offsets, strides, num_rows=rows.shape[0]
            )
            .exp_()
        )
        grad = torch.empty_like(rows)
        for i, j in row_chunks(rows.shape[0], rows.shape[1]):
            o = occ[i:j, None]
            grad[i:j, :v] = torch.softmax(rows[i:j, :v], dim=-1).mul_(o)
            grad[i:j, v:] = torch.softmax(rows[i:j, v:], dim=-1).mul_(o)
        ops().tdt_subtract_arc_posteriors(
            grad,
            rows,
            den_tok,
            den_dur,
            targets,
            logit_lengths,
            target_lengths,
            offsets,
            strides,
            durations,
            alpha,
            beta,
            loss,
            scale,
            num_tokens=v,
            blank=blank,
            sigma=sigma,
        )
        if not fold:
            grad.mul_(row_values(grad_loss, logit_lengths, target_lengths, shape)[:, None])
        return grad.reshape(shape), None, None, None, None, None, None, None


def _arc_mass(
    rows: torch.Tensor,
    lattice: tuple[torch.Tensor, ...],
    alpha: torch.Tensor,
    beta: torch.Tensor,
    loss: torch.Tensor,
    scale: torch.Tensor,
    shape: torch.Size,
) -> torch.Tensor:
    """scale[b] * the posterior mass of the arcs using each entry of the arc rows, as [B, T, U+1, 2+D].

    Args:
        rows: [N, 2 + D] arc rows of _TDTArcLoss; lattice: the kernel arguments between the rows
            and alpha (normalizers, targets, lengths, row layout, durations).
        alpha, beta: the forward's [N] node scores; loss: its [B] losses; scale: [B].
        shape: the arcs' [B, T, U+1, 2 + D].
    """
    grad = torch.zeros_like(rows)
    ops().tdt_subtract_arc_posteriors(
        grad, rows, *lattice, alpha, beta, loss, scale.contiguous(), num_tokens=2, blank=0, sigma=0.0
    )
    return grad.neg_().reshape(shape)


class _TDTArcLoss(torch.autograd.Function):
    """-log P of the TDT lattice whose arc weights are given as log-probs, not logits.

    Rows [blank, next symbol, D durations] go to the compiled lattice with 2 token columns,
    targets all 1 (the next-symbol column), normalizers 0 and sigma 0, so every arc weighs
    exactly row[0 or 1] + row[2 + i]. d loss / d row is then minus the posterior mass of the
    arcs using each entry: no softmax term, the rows are already log-probs.
    With posteriors=True the forward also returns those masses (the backward at grad 1,
    computed once); the backward then only scales them.
    """

    @staticmethod
    def forward(ctx, arcs, logit_lengths, target_lengths, durations, posteriors):
        max_u = arcs.shape[2] - 1
        rows, offsets, strides, max_t = row_layout(arcs, logit_lengths, target_lengths, max_u)
        rows = rows.contiguous()
        zero = torch.zeros(rows.shape[0], dtype=rows.dtype, device=rows.device)
        ones = torch.ones(arcs.shape[0], max_u, dtype=torch.int64, device=rows.device)
        lattice = (zero, zero, ones, logit_lengths, target_lengths, offsets, strides, durations)
        loss, alpha, beta = ops().tdt_forward(
            rows, *lattice, num_tokens=2, max_t=max_t, max_u=max_u, blank=0, sigma=0.0
        )
        ctx.shape = arcs.shape
        ctx.posteriors = posteriors
        if posteriors:
            post = _arc_mass(rows, lattice, alpha, beta, loss, torch.ones_like(loss), arcs.shape)
            ctx.save_for_backward(post)
            ctx.mark_non_differentiable(post)
            return loss, post
        ctx.save_for_backward(rows, *lattice, alpha, beta, loss)
        return loss

    @staticmethod
    def backward(ctx, grad_loss, *_posterior_grads):
        if ctx.posteriors:
            (post,) = ctx.saved_tensors
            grad = post * -grad_loss.to(post.dtype)[:, None, None, None]
        else:
            rows, *lattice, alpha, beta, loss = ctx.saved_tensors
            # the kernel scales each utterance's posteriors by grad_loss[b], whatever its sign
            grad = _arc_mass(rows, lattice, alpha, beta, loss, grad_loss.to(rows.dtype), ctx.shape).neg_()
        return grad, None, None, None, None


@float32_loss
def tdt_arc_loss(
    arcs: torch.Tensor,
    logit_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    durations: Sequence[int],
    return_posteriors: bool = False,
):
    """Per-utterance TDT loss [B] of a lattice given by its arc log-probs (no normalization here).

    From node (t, u) (see csrc/transducer/tdt.h): blank with duration d > 0 weighs
    arcs[b, t, u, 0] + arcs[b, t, u, 2 + i]; the next symbol y_{u+1} with duration d (any)
    weighs arcs[b, t, u, 1] + arcs[b, t, u, 2 + i]. -inf entries remove arcs, so this runs TDT on
    pruned lattices (asr.losses.pruned_tdt) and on the simple joiner's.
    Args:
        arcs: [B, T, U+1, 2 + D] log-probs: blank, next symbol, then the D durations (sigma included).
        logit_lengths, target_lengths: [B] int64; durations: D distinct ints >= 0, one > 0.
        return_posteriors: also return the posterior mass of the arcs using each entry,
            [B, T, U+1, 2+D] (d log P / d arcs; not differentiable).
    Returns:
        loss [B] (+inf where no path), and with return_posteriors (loss, posteriors).
    """
    durs = check_durations(durations)
    if arcs.dim() != 4 or arcs.shape[3] != 2 + len(durs):
        raise ValueError(f"arcs {tuple(arcs.shape)} must be [B, T, U+1, 2 + D] with D = {len(durs)}")
    dur_t = torch.tensor(durs, dtype=torch.int64, device=arcs.device)
    lengths = (logit_lengths.to(torch.int64).contiguous(), target_lengths.to(torch.int64).contiguous())
    return _TDTArcLoss.apply(arcs, *lengths, dur_t, return_posteriors)


def check_durations(durations: Sequence[int]) -> tuple[int, ...]:
    """The durations as ints; ValueError unless distinct, >= 0 and one > 0 (blank may not take 0).

    The one check of TDT durations: the losses here, in asr.losses.pruned_tdt and
    asr.losses.viterbi, and the transducer head's TDT strategies (at construction) call it.
    """
    durs = tuple(int(d) for d in durations)
    if not durs or min(durs) < 0 or len(set(durs)) != len(durs):
        raise ValueError(f"durations must be distinct non-negative ints, got {list(durations)}")
    if max(durs) == 0:
        raise ValueError("durations need a value > 0: blank may not take duration 0")
    return durs


def check_tdt_options(
    durations: Sequence[int], sigma: float = 0.0, omega: float = 0.0
) -> tuple[tuple[int, ...], float, float]:
    """(durations, sigma, omega) of a TDT loss, validated: durations as `check_durations`,
    sigma >= 0 (an under-normalization) and 0 <= omega <= 1 (a mixing weight)."""
    durs = check_durations(durations)
    if not sigma >= 0 or not 0 <= omega <= 1:
        raise ValueError(f"TDT needs sigma >= 0 and 0 <= omega <= 1 (got sigma={sigma}, omega={omega})")
    return durs, float(sigma), float(omega)


def tdt_num_tokens(width: int, num_durations: int, what: str = "logits") -> int:
    """V, the token outputs of TDT rows of `width` = V + D values; ValueError unless V >= 2."""
    v = width - num_durations
    if v < 2:
        raise ValueError(f"{what}: last dim {width} must hold V >= 2 tokens + {num_durations} durations")
    return v


@float32_loss
def tdt_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    logit_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    durations: Sequence[int] = (0, 1, 2, 3, 4),
    blank: int = 0,
    sigma: float = 0.0,
    omega: float = 0.0,
    reduction: str = "mean",
    zero_infinity: bool = False,
) -> torch.Tensor:
    """TDT negative log-likelihood.

    Args:
        logits: [B, T, U+1, V+D] or packed [sum_b T_b*(U_b+1), V+D]; the last D = len(durations)
            entries of each row are the duration logits.
        targets: [B, U]; logit_lengths, target_lengths: [B].
        durations: the frame advances the duration head predicts (non-negative, distinct);
            blank uses only those > 0, so at least one must be > 0.
        sigma: logit under-normalization (>= 0) subtracted from every token log-prob.
        omega: weight of the standard RNN-T loss of the token logits: (1 - omega) * TDT + omega * RNN-T.
        reduction: none ([B]) | mean (over the batch) | sum.
        zero_infinity: utterances with no alignment (too few frames) give loss and gradient 0
            instead of +inf, with a warning that counts them.
    """
    durs, sigma, omega = check_tdt_options(durations, sigma, omega)
    v = tdt_num_tokens(logits.shape[-1], len(durs))
    targets, logit_lengths, target_lengths = check_inputs(logits, targets, logit_lengths, target_lengths, blank, v)
    dur_t = torch.tensor(durs, dtype=torch.int64, device=logits.device)
    loss = _TDTLoss.apply(logits, targets, logit_lengths, target_lengths, dur_t, v, blank, sigma)
    if omega > 0:
        loss = (1 - omega) * loss + omega * rnnt_loss(
            logits[..., :v], targets, logit_lengths, target_lengths, blank=blank, reduction="none"
        )
    return finish_loss(loss, reduction, zero_infinity, "tdt_loss")
