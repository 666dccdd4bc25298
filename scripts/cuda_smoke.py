#!/usr/bin/env python
"""Run every CUDA op of asr._C once on small inputs: the case compute-sanitizer checks.

    compute-sanitizer --tool memcheck python scripts/cuda_smoke.py
    compute-sanitizer --tool racecheck python scripts/cuda_smoke.py

Each lattice is small but has diagonals longer than a warp and utterances of different lengths
(one without frames), so every kernel walks padded, short and empty lattices. It checks nothing
about values (tests/test_cuda.py does): a clean run means no out-of-bounds access, no
uninitialized read, no shared-memory race. Exits non-zero if an op raises.
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
    torch.cuda.synchronize()
    print("cuda_smoke: every CUDA op ran")


if __name__ == "__main__":
    main()
