"""Full RNN-T loss on the compiled kernel (csrc/transducer/rnnt_cpu.cpp).

The log-softmax is fused: when a gradient is needed, the forward pass writes the
softmax straight into the buffer that becomes the gradient and reads the row
normalizers off it (one pass); the backward pass scales it by node occupancy and
subtracts the arc posteriors. No B*T*(U+1)*V tensor exists besides that gradient (and
without a gradient, none at all). The per-element work runs as vectorized tensor ops
over chunks of rows; the compiled kernel does the (t, u) lattice: alpha, beta,
occupancies, arc posteriors.
"""
from __future__ import annotations

import logging

import torch

from .._ext import ops

log = logging.getLogger(__name__)


def _layout(logits: torch.Tensor, logit_lengths: torch.Tensor, target_lengths: torch.Tensor, max_u: int):
    """(rows[N, V], row_offsets[B], t_strides[B]) for padded [B,T,U+1,V] or packed [N, V] logits."""
    b = logit_lengths.shape[0]
    dev = logits.device
    if logits.dim() == 4:
        B, T, U1, V = logits.shape
        if B != b:
            raise ValueError(f"logits batch {B} != {b} lengths")
        if int(logit_lengths.max()) > T or max_u + 1 > U1:
            raise ValueError(f"logits [B, T={T}, U+1={U1}, V] too small for max T {int(logit_lengths.max())} "
                             f"and max U {max_u}")
        rows = logits.reshape(B * T * U1, V)
        offsets = torch.arange(B, device=dev, dtype=torch.int64) * (T * U1)
        strides = torch.full((B,), U1, device=dev, dtype=torch.int64)
        return rows, offsets, strides, T
    if logits.dim() == 2:
        sizes = logit_lengths * (target_lengths + 1)
        if int(sizes.sum()) != logits.shape[0]:
            raise ValueError(f"packed logits have {logits.shape[0]} rows; lengths need sum(T_b*(U_b+1)) = "
                             f"{int(sizes.sum())}")
        offsets = torch.cumsum(sizes, 0) - sizes
        return logits, offsets, target_lengths + 1, int(logit_lengths.max())
    raise ValueError("logits must be [B, T, U+1, V] (padded) or [sum_b T_b*(U_b+1), V] (packed)")


_CHUNK_ELEMENTS = 1 << 22  # rows are processed in ~16 MB chunks: bounded temporaries, cache-friendly


def _row_chunks(n_rows: int, v: int):
    step = max(1, _CHUNK_ELEMENTS // max(1, v))
    for i in range(0, n_rows, step):
        yield i, min(n_rows, i + step)


def _row_logsumexp(rows: torch.Tensor) -> torch.Tensor:
    """log-softmax normalizer of each row [N, V] -> [N], chunk by chunk (no N*V temporary).

    One fused log_softmax per chunk into a reused, cache-resident buffer, then
    lse = x[:, 0] - log_softmax(x)[:, 0] (measured 1.4x faster than torch.logsumexp on
    CPU). Rows where that is not finite (a -inf logit in column 0) use logsumexp.
    """
    n, v = rows.shape
    out = torch.empty(n, dtype=rows.dtype, device=rows.device)
    buf = torch.empty(min(n, max(1, _CHUNK_ELEMENTS // max(1, v))), v, dtype=rows.dtype, device=rows.device)
    for i, j in _row_chunks(n, v):
        lsm = buf[: j - i]
        torch.ops.aten._log_softmax.out(rows[i:j], -1, False, out=lsm)
        torch.sub(rows[i:j, 0], lsm[:, 0], out=out[i:j])
    bad = ~torch.isfinite(out)
    if bool(bad.any()):
        out[bad] = torch.logsumexp(rows[bad], dim=-1)
    return out


def _row_softmax_and_logsumexp(rows: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Write softmax(rows) into `out` [N, V] and return the row normalizers [N], in one pass.

    lse = x[:, 0] - log(softmax(x)[:, 0]); rows where that is not finite (column 0 at
    -inf, or a probability that underflows) use logsumexp instead.
    """
    lse = torch.empty(rows.shape[0], dtype=rows.dtype, device=rows.device)
    for i, j in _row_chunks(rows.shape[0], rows.shape[1]):
        torch.ops.aten._softmax.out(rows[i:j], -1, False, out=out[i:j])
        torch.sub(rows[i:j, 0], torch.log(out[i:j, 0]), out=lse[i:j])
    bad = ~torch.isfinite(lse)
    if bool(bad.any()):
        lse[bad] = torch.logsumexp(rows[bad], dim=-1)
    return lse


class _RNNTLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, targets, logit_lengths, target_lengths, blank, fused, clamp):
        max_u = int(target_lengths.max()) if target_lengths.numel() else 0
        rows, offsets, strides, max_t = _layout(logits, logit_lengths, target_lengths, max_u)
        rows = rows.contiguous()
        ctx.softmax = None
        if fused and ctx.needs_input_grad[0]:
            # The softmax goes straight into what becomes the gradient (no extra N*V memory:
            # the gradient must exist at backward anyway); backward only scales it.
            ctx.softmax = torch.empty_like(rows)
            denom = _row_softmax_and_logsumexp(rows, ctx.softmax)
        elif fused:
            denom = _row_logsumexp(rows)
        else:
            denom = torch.zeros(rows.shape[0], dtype=rows.dtype, device=rows.device)
        loss, alpha, beta = ops().rnnt_forward(rows, denom, targets, logit_lengths, target_lengths, offsets, strides,
                                               max_t, max_u, blank)
        ctx.save_for_backward(rows, denom, targets, logit_lengths, target_lengths, offsets, strides, alpha, beta, loss)
        ctx.args = (blank, fused, clamp, logits.shape)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        rows, denom, targets, logit_lengths, target_lengths, offsets, strides, alpha, beta, loss = ctx.saved_tensors
        blank, fused, clamp, shape = ctx.args
        grad_loss = grad_loss.to(rows.dtype).contiguous()
        # The common case (positive per-utterance scales, no clamp) folds the scale into
        # the occupancies, so the dense gradient needs no extra pass; no extra N*V tensor.
        fold = clamp <= 0 and bool((grad_loss > 0).all())
        scale = grad_loss if fold else torch.ones_like(grad_loss)
        if fused:
            # d loss / d logit = occupancy * softmax - arc posteriors
            grad, ctx.softmax = ctx.softmax, None  # softmax from the forward pass, used up here
            if grad is None:  # a second backward through the same graph (retain_graph): recompute
                grad = torch.empty_like(rows)
                for i, j in _row_chunks(rows.shape[0], rows.shape[1]):
                    torch.ops.aten._softmax.out(rows[i:j], -1, False, out=grad[i:j])
            log_occ = ops().rnnt_log_occupancy(alpha, beta, loss, scale, logit_lengths, target_lengths, offsets,
                                               strides, rows.shape[0])
            occ = log_occ.exp_()  # 0 on padding rows and impossible utterances
            for i, j in _row_chunks(rows.shape[0], rows.shape[1]):
                grad[i:j].mul_(occ[i:j, None])
        else:
            grad = torch.zeros_like(rows)
        # infinite losses get zero gradient whether or not zero_infinity
        ops().rnnt_subtract_arc_posteriors(grad, rows, denom, targets, logit_lengths, target_lengths, offsets, strides,
                                           alpha, beta, loss, scale, blank)
        if not fold:
            if clamp > 0:
                grad.clamp_(-clamp, clamp)
            grad.mul_(_row_values(grad_loss, logit_lengths, target_lengths, shape)[:, None])
        return grad.reshape(shape), None, None, None, None, None, None


def _row_values(per_utt: torch.Tensor, logit_lengths: torch.Tensor, target_lengths: torch.Tensor, shape) -> torch.Tensor:
    """Broadcast a per-utterance value [B] to every logits row [N] (padded or packed layout)."""
    if len(shape) == 4:
        return per_utt.repeat_interleave(shape[1] * shape[2])
    return per_utt.repeat_interleave(logit_lengths * (target_lengths + 1))


def _check(logits, targets, logit_lengths, target_lengths, blank, vocab: int):
    if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= vocab):
        raise ValueError(f"targets must be in [0, {vocab})")
    for name, t in (("logit_lengths", logit_lengths), ("target_lengths", target_lengths)):
        if t.dim() != 1 or t.shape[0] != targets.shape[0]:
            raise ValueError(f"{name} must be [B] with B = {targets.shape[0]}")
    if not 0 <= blank < vocab:
        raise ValueError(f"blank {blank} outside the vocabulary of {vocab}")
    if target_lengths.numel() and int(target_lengths.max()) > targets.shape[1]:
        raise ValueError(f"target_lengths up to {int(target_lengths.max())} but targets are only {targets.shape[1]} wide")
    valid = torch.arange(targets.shape[1], device=targets.device)[None, :] < target_lengths[:, None]
    if bool((targets.eq(blank) & valid).any()):
        raise ValueError(f"targets contain the blank id {blank}")


def finish_loss(loss: torch.Tensor, reduction: str, zero_infinity: bool, name: str) -> torch.Tensor:
    """Apply zero_infinity (impossible utterances: loss 0, gradient 0, counted in a warning), then reduce.

    The compiled backward passes already give infinite losses a zero gradient.
    """
    if zero_infinity:
        bad = torch.isinf(loss)
        if bool(bad.any()):
            log.warning("%s: %d utterance(s) have no alignment; their loss and gradient are set to 0", name,
                        int(bad.sum()))
            loss = torch.where(bad, torch.zeros_like(loss), loss)
    return _reduce(loss, reduction)


def _reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.mean()
    raise ValueError(f"reduction must be none|mean|sum, not {reduction!r}")


def rnnt_loss(logits: torch.Tensor, targets: torch.Tensor, logit_lengths: torch.Tensor, target_lengths: torch.Tensor,
              blank: int = 0, reduction: str = "mean", fused_log_softmax: bool = True, clamp: float = -1.0,
              zero_infinity: bool = False) -> torch.Tensor:
    """RNN-T negative log-likelihood.

    Args:
        logits: joint outputs, padded [B, T, U+1, V] or packed [sum_b T_b*(U_b+1), V] (rows of
            utterance b in (t, u) order, utterances one after the other). Raw logits when
            fused_log_softmax, else log-probabilities.
        targets: [B, U] int, padded; values past target_lengths are ignored.
        logit_lengths, target_lengths: [B] int.
        blank: blank id. reduction: none ([B]) | mean (over the batch) | sum.
        clamp: if > 0, clip gradient values to [-clamp, clamp].
        zero_infinity: utterances without any alignment (T_b = 0) give loss and gradient 0
            instead of +inf, with a warning that counts them.
    """
    targets = targets.to(torch.int64).contiguous()
    logit_lengths = logit_lengths.to(torch.int64).contiguous()
    target_lengths = target_lengths.to(torch.int64).contiguous()
    if targets.dim() != 2:
        raise ValueError("targets must be [B, U]")
    _check(logits, targets, logit_lengths, target_lengths, blank, logits.shape[-1])
    loss = _RNNTLoss.apply(logits, targets, logit_lengths, target_lengths, blank, fused_log_softmax, float(clamp))
    return finish_loss(loss, reduction, zero_infinity, "rnnt_loss")
