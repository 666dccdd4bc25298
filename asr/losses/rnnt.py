"""Full RNN-T loss on the compiled kernel (csrc/transducer/rnnt_cpu.cpp).

The log-softmax is fused: when a gradient is needed, the forward pass writes the
softmax straight into the buffer that becomes the gradient and reads the row
normalizers off it (one pass); the backward pass scales it by node occupancy and
subtracts the arc posteriors. No B*T*(U+1)*V tensor exists besides that gradient (and
without a gradient, none at all). The per-element work runs as vectorized tensor ops,
one op over all rows each (asr.losses.lattice); the compiled kernel does the (t, u) lattice:
alpha, beta, occupancies, arc posteriors.

The other topologies (asr.losses.topology: modified, constrained, rna) gather the blank and
next-symbol log-probs of every (t, u) and run the mutual-information recursion on them, as
k2 does; autograd takes the gradient back through the gathers and the normalizers.
"""

from __future__ import annotations

import torch

from .._ext import ops
from .lattice import (
    check_inputs,
    finish_loss,
    row_layout,
    row_logsumexp,
    row_softmax_and_logsumexp,
    row_values,
)
from .mutual_information import lattice_boundary, mutual_information_recursion
from .precision import float32_loss
from .topology import check_topology, finish_px


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
                grad = torch.softmax(rows, -1)
            log_occ = ops().rnnt_log_occupancy(
                alpha, beta, loss, scale, logit_lengths, target_lengths, offsets, strides, num_rows=rows.shape[0]
            )
            occ = log_occ.exp_()  # 0 on padding rows and impossible utterances
            grad.mul_(occ[:, None])  # in place, one op (see asr.losses.lattice.row_softmax_and_logsumexp)
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


def _lattice_logprobs(
    logits: torch.Tensor,
    targets: torch.Tensor,
    logit_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    blank: int,
    fused: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-symbol and blank log-probs of every lattice node, for the recursion.

    Args: padded or packed logits (asr.losses.lattice.row_layout), targets [B, U], lengths [B].
    Returns: (px_body [B, U, T], py [B, U+1, T]), -inf outside each utterance's T_b x (U_b + 1).
    """
    max_u = int(target_lengths.max()) if target_lengths.numel() else 0
    rows, offsets, strides, max_t = row_layout(logits, logit_lengths, target_lengths, max_u)
    dev = rows.device
    t = torch.arange(max_t, device=dev)[None, :, None]
    u = torch.arange(max_u + 1, device=dev)[None, None, :]
    valid = (t < logit_lengths[:, None, None]) & (u <= target_lengths[:, None, None])  # [B, T, U+1]
    idx = torch.where(valid, offsets[:, None, None] + t * strides[:, None, None] + u, 0)
    norm = torch.logsumexp(rows, dim=-1) if fused else None  # [N]
    neg = torch.tensor(float("-inf"), dtype=rows.dtype, device=dev)
    blank_lp = rows[idx, blank] - (norm[idx] if fused else 0)
    py = torch.where(valid, blank_lp, neg)
    sym_idx = idx[:, :, :max_u]
    sym = targets[:, None, :max_u].expand(sym_idx.shape)
    sym_lp = rows[sym_idx, sym] - (norm[sym_idx] if fused else 0)
    px = torch.where(valid[:, :, 1:], sym_lp, neg)  # symbol u+1 from (t, u) needs u < U_b
    return px.transpose(1, 2), py.transpose(1, 2)


@float32_loss
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
    rnnt_type: str = "regular",
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
        rnnt_type: the lattice (asr.losses.topology): regular (the fused compiled kernel), or
            modified | rna | constrained (one output per frame; S_b > T_b has no alignment), through
            the mutual-information recursion (clamp unsupported there).
    """
    targets, logit_lengths, target_lengths = check_inputs(
        logits, targets, logit_lengths, target_lengths, blank, logits.shape[-1]
    )
    if check_topology(rnnt_type) != "regular":
        if clamp > 0:
            raise ValueError(f"clamp is supported with rnnt_type='regular' only, not {rnnt_type!r}")
        px, py = _lattice_logprobs(logits, targets, logit_lengths, target_lengths, blank, fused_log_softmax)
        boundary = lattice_boundary(target_lengths, logit_lengths)
        loss = -mutual_information_recursion(finish_px(px, py, rnnt_type), py, boundary)
        return finish_loss(loss, reduction, zero_infinity, "rnnt_loss")
    loss = _RNNTLoss.apply(logits, targets, logit_lengths, target_lengths, blank, fused_log_softmax, float(clamp))
    return finish_loss(loss, reduction, zero_infinity, "rnnt_loss")
