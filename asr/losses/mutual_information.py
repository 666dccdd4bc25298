"""Mutual-information recursion (csrc/transducer/mutual_information_cpu.cpp) with autograd."""

from __future__ import annotations

import torch

from .._ext import ops
from .precision import float32_loss


class _MutualInformation(torch.autograd.Function):
    """ans = recursion(px, py). With occupancy=True the forward also returns the arc
    occupancies d ans / d (px, py) (the backward at ans_grad = 1, computed once); the
    backward then only scales them instead of running the recursion backward again.
    """

    @staticmethod
    def forward(ctx, px, py, boundary, modified, occupancy):
        px, py = px.contiguous(), py.contiguous()
        ans, p = ops().mutual_information_forward(px, py, boundary, modified=modified)
        ctx.modified = modified
        ctx.occupancy = occupancy
        if occupancy:
            px_occ, py_occ = ops().mutual_information_backward(
                px, py, boundary, p, ans, torch.ones_like(ans), modified=modified
            )
            ctx.save_for_backward(px_occ, py_occ)
            ctx.mark_non_differentiable(px_occ, py_occ)
            return ans, px_occ, py_occ
        ctx.save_for_backward(px, py, boundary, p, ans)
        return ans

    @staticmethod
    def backward(ctx, ans_grad, *_occupancy_grads):
        if ctx.occupancy:
            px_occ, py_occ = ctx.saved_tensors
            g = ans_grad[:, None, None]
            return px_occ * g, py_occ * g, None, None, None
        px, py, boundary, p, ans = ctx.saved_tensors
        px_grad, py_grad = ops().mutual_information_backward(
            px, py, boundary, p, ans, ans_grad.contiguous(), modified=ctx.modified
        )
        return px_grad, py_grad, None, None, None


def default_boundary(px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
    """[B, 4] of (0, 0, S, T): the whole lattice."""
    b, s1, t = py.shape
    bd = torch.zeros(b, 4, dtype=torch.int64, device=px.device)
    bd[:, 2], bd[:, 3] = s1 - 1, t
    return bd


def lattice_boundary(symbol_lengths: torch.Tensor, frame_lengths: torch.Tensor) -> torch.Tensor:
    """[B, 4] int64 of (0, 0, S_b, T_b): each utterance's whole lattice, from [B] lengths."""
    bd = torch.zeros(symbol_lengths.shape[0], 4, dtype=torch.int64, device=symbol_lengths.device)
    bd[:, 2], bd[:, 3] = symbol_lengths, frame_lengths
    return bd


@float32_loss
def mutual_information_recursion(
    px: torch.Tensor, py: torch.Tensor, boundary: torch.Tensor | None = None, return_grad: bool = False
):
    """log-sum over monotonic lattice paths; see csrc/transducer/mutual_information.h.

    Args:
        px: [B, S, T+1] (regular topology) or [B, S, T] (modified: a symbol consumes a frame).
        py: [B, S+1, T].
        boundary: [B, 4] int of (s_begin, t_begin, s_end, t_end); default (0, 0, S, T).
        return_grad: also return (px_grad, py_grad), the arc occupancies d ans / d (px, py);
            they drive get_rnnt_prune_ranges.
    Returns:
        ans [B] (and the gradients), -inf where no path exists.
    """
    modified = px.shape[2] == py.shape[2]
    if not modified and px.shape[2] != py.shape[2] + 1:
        raise ValueError(
            f"px {tuple(px.shape)} must be [B, S, T+1] (regular) or [B, S, T] (modified) for py {tuple(py.shape)}"
        )
    if px.shape[1] + 1 != py.shape[1] or px.shape[0] != py.shape[0]:
        raise ValueError(f"py {tuple(py.shape)} must be [B, S+1, T] for px {tuple(px.shape)}")
    bd = default_boundary(px, py) if boundary is None else boundary.to(torch.int64).contiguous()
    if not return_grad:
        return _MutualInformation.apply(px, py, bd, modified, False)
    ans, px_grad, py_grad = _MutualInformation.apply(px, py, bd, modified, True)
    return ans, (px_grad, py_grad)
