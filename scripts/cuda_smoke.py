#!/usr/bin/env python
"""Run every CUDA op of asr._C once on small inputs: the case compute-sanitizer checks.

    compute-sanitizer --tool memcheck python scripts/cuda_smoke.py
    compute-sanitizer --tool synccheck python scripts/cuda_smoke.py

The small lattices have utterances of different lengths (one without frames), so every kernel
walks padded, short and empty lattices; then one lattice of each kind (and one FSA graph) whose
anti-diagonals (states) outnumber a block's 1024 threads, so that the kernels' loops over a
diagonal's nodes take a second pass. It checks nothing about values (tests/test_cuda.py does): a
clean memcheck run means no out-of-bounds or misaligned access, a clean synccheck run no
__syncthreads() reached by only part of a block. Exits non-zero if an op raises.
"""

from __future__ import annotations

import torch

from asr._ext import ops
from asr.fsa import ctc_graphs, intersect_dense, viterbi
from asr.losses import ctc_fst_loss, rnnt_best_path, rnnt_loss, tdt_best_path, tdt_loss
from asr.losses.mutual_information import mutual_information_recursion


def main() -> None:
    if not (torch.cuda.is_available() and ops().with_cuda):
        raise SystemExit("cuda_smoke: needs a GPU and asr._C built with CUDA kernels")
    dev = "cuda"
    g = torch.Generator().manual_seed(0)
    tl, ul = torch.tensor([9, 4, 0, 1], device=dev), torch.tensor([5, 0, 2, 3], device=dev)
    targets = torch.randint(1, 7, (4, 5), generator=g).to(dev)
    for dtype in (torch.float32, torch.float64):
        logits = torch.randn(4, 9, 6, 7, generator=g, dtype=dtype).to(dev).requires_grad_()
        rnnt_loss(logits, targets, tl, ul, reduction="sum", zero_infinity=True).backward()
        packed = torch.cat([logits[b, : tl[b], : ul[b] + 1].reshape(-1, 7) for b in range(4)]).detach().requires_grad_()
        rnnt_loss(packed, targets, tl, ul, reduction="sum", zero_infinity=True).backward()
        rnnt_best_path(logits.detach(), targets, tl, ul)
        tdt_logits = torch.randn(4, 9, 6, 7 + 3, generator=g, dtype=dtype).to(dev).requires_grad_()
        tdt_loss(tdt_logits, targets, tl, ul, durations=(0, 1, 2), reduction="sum", zero_infinity=True).backward()
        tdt_best_path(tdt_logits.detach(), targets, tl, ul, durations=(0, 1, 2))
        for modified in (False, True):
            px = torch.randn(3, 40, 50 if modified else 51, generator=g, dtype=dtype).to(dev).requires_grad_()
            py = torch.randn(3, 41, 50, generator=g, dtype=dtype).to(dev).requires_grad_()
            bd = torch.tensor([[0, 0, 40, 50], [2, 3, 30, 44], [0, 0, 0, 0]], device=dev)
            ans = mutual_information_recursion(px, py, bd)
            ans[torch.isfinite(ans)].sum().backward()
        lp = torch.randn(4, 30, 8, generator=g, dtype=dtype).log_softmax(-1).to(dev).requires_grad_()
        ctc_targets, ctc_tl, ctc_ul = (
            torch.randint(1, 8, (4, 6), generator=g),
            torch.tensor([30, 12, 3, 0]),
            torch.tensor([6, 4, 2, 0]),
        )
        ctc_fst_loss(lp, ctc_targets, ctc_tl, ctc_ul, delay_penalty=0.1, zero_infinity=True).backward()
        graphs = ctc_graphs(ctc_targets, ctc_ul, 8, "modified")
        intersect_dense(graphs, lp.detach(), ctc_tl)
        viterbi(graphs, lp.detach(), ctc_tl)
    large(dev, g)
    torch.cuda.synchronize()
    print("cuda_smoke: every CUDA op ran")


def large(dev: str, g: torch.Generator) -> None:
    """One lattice of each kind whose diagonals (graph whose states) outnumber 1024 threads: an
    RNN-T/TDT diagonal has min(T, U+1) nodes, a mutual-information one min(S+1, T+1)."""
    t, u = 1100, 1030
    tl, ul = torch.tensor([t, 7], device=dev), torch.tensor([u, 3], device=dev)
    targets = torch.randint(1, 3, (2, u), generator=g).to(dev)
    logits = torch.randn(2, t, u + 1, 3, generator=g).to(dev).requires_grad_()
    rnnt_loss(logits, targets, tl, ul, reduction="sum").backward()
    rnnt_best_path(logits.detach(), targets, tl, ul)
    tdt_logits = torch.randn(2, t, u + 1, 3 + 3, generator=g).to(dev).requires_grad_()
    tdt_loss(tdt_logits, targets, tl, ul, durations=(0, 1, 2), reduction="sum").backward()
    tdt_best_path(tdt_logits.detach(), targets, tl, ul, durations=(0, 1, 2))
    for modified in (False, True):
        px = torch.randn(1, u, t if modified else t + 1, generator=g).to(dev).requires_grad_()
        py = torch.randn(1, u + 1, t, generator=g).to(dev).requires_grad_()
        mutual_information_recursion(px, py).sum().backward()
    # 600 tokens: a CTC graph of 1202 states
    lp = torch.randn(1, 1300, 8, generator=g).log_softmax(-1).to(dev).requires_grad_()
    ctc_targets = torch.randint(1, 8, (1, 600), generator=g)
    ctc_fst_loss(lp, ctc_targets, torch.tensor([1300]), torch.tensor([600]), delay_penalty=0.1).backward()
    viterbi(ctc_graphs(ctc_targets, torch.tensor([600]), 8), lp.detach(), torch.tensor([1300]))


if __name__ == "__main__":
    main()
