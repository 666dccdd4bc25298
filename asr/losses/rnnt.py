"""Full RNN-T loss on the compiled kernel (csrc/transducer/rnnt_cpu.cpp).

The log-softmax is fused: when a gradient is needed, the forward pass writes the
softmax straight into the buffer that becomes the gradient and reads the row
normalizers off it (one pass); the backward pass scales it by node occupancy and
subtracts the arc posteriors. No B*T*(U+1)*V tensor exists besides that gradient (and
without a gradient, none at all). The per-element work runs as vectorized tensor ops
over chunks of rows (asr.losses.lattice); the compiled kernel does the (t, u) lattice:
alpha, beta, occupancies, arc posteriors.
"""

from __future__ import annotations

import torch

from .._ext import ops
from .lattice import (
    check_inputs,
    finish_loss,
    row_chunks,
    row_layout,
    row_logsumexp,
    row_softmax_and_logsumexp,
    row_values,
)


class _RNNTLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, targets, logit_lengths, target_lengths, blank, fused, clamp):
        max_u = int(target_lengths.max()) if target_lengths.numel() else 0
        rows, offsets, strides, max_t = row_layout(logits, logit_lengths, target_lengths, max_u)
        rows = rows.contiguous()
        ctx.softmax = None
        if fused and ctx.needs_input_grad[0]:
            # The softmax goes straight into what becomes the gradient (no extra N*V memory:
            # the gradient must exist at backward anyway); backward only scales it.
            ctx.softmax = torch.empty_like(rows)
            denom = row_softmax_and_logsumexp(rows, ctx.softmax)
        elif fused:
            denom = row_logsumexp(rows)
        else:
            denom = torch.zeros(rows.shape[0], dtype=rows.dtype, device=rows.device)
        loss, alpha, beta = ops().rnnt_forward(
            rows, denom, targets, logit_lengths, target_lengths, offsets, strides, max_t=max_t, max_u=max_u, blank=blank
        )
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
                for i, j in row_chunks(rows.shape[0], rows.shape[1]):
                    torch.ops.aten._softmax.out(rows[i:j], -1, False, out=grad[i:j])
            log_occ = ops().rnnt_log_occupancy(
                alpha, beta, loss, scale, logit_lengths, target_lengths, offsets, strides, num_rows=rows.shape[0]
            )
            occ = log_occ.exp_()  # 0 on padding rows and impossible utterances
            for i, j in row_chunks(rows.shape[0], rows.shape[1]):
                grad[i:j].mul_(occ[i:j, None])
        else:
            grad = torch.zeros_like(rows)
        # infinite losses get zero gradient whether or not zero_infinity
        ops().rnnt_subtract_arc_posteriors(
            grad,
            rows,
            denom,
            targets,
            logit_lengths,
            target_lengths,
            offsets,
            strides,
            alpha,
            beta,
            loss,
            scale,
            blank=blank,
        )
        if not fold:
            if clamp > 0:
                grad.clamp_(-clamp, clamp)
            grad.mul_(row_values(grad_loss, logit_lengths, target_lengths, shape)[:, None])
        return grad.reshape(shape), None, None, None, None, None, None


def rnnt_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    logit_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    blank: int = 0,
    reduction: str = "mean",
    fused_log_softmax: bool = True,
    clamp: float = -1.0,
    zero_infinity: bool = False,
) -> torch.Tensor:
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
    check_inputs(logits, targets, logit_lengths, target_lengths, blank, logits.shape[-1])
    loss = _RNNTLoss.apply(logits, targets, logit_lengths, target_lengths, blank, fused_log_softmax, float(clamp))
    return finish_loss(loss, reduction, zero_infinity, "rnnt_loss")
