#!/usr/bin/env python
"""CTC over FSA graphs (asr.losses.ctc_fst_loss) against torch's CTC, forward + backward.

    python scripts/bench/bench_ctc_fst.py [--B 32 --T 500 --U 100 --V 500] [--threads 2] [--repeats 5]

Log-probs float32 [B, T, V] (log_softmax of random logits), lengths random in 70-100% of
the maxima (seed 0), targets random tokens 1..V-1. Each row is the median of --repeats
runs after one warm-up, in one process:
  torch_ctc        torch.nn.functional.ctc_loss forward + backward (the target: ours within 1.5x)
  graphs           building the training graphs alone (topology o transcripts, in C++)
  ctc_fst          ctc_fst_loss forward + backward, standard topology (graphs included)
  ctc_fst_modified the modified topology
  ctc_fst_delay    standard topology with delay_penalty=0.1
  ctc_fst_viterbi  Viterbi (best path) loss
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from common import add_size_args, random_lengths  # scripts/bench/common.py

from asr.fsa import ctc_graphs, ctc_topo
from asr.losses import ctc_fst_loss


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_size_args(p)
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    g = torch.Generator().manual_seed(0)
    B, T, U, V = a.B, a.T, a.U, a.V
    tl, ul = random_lengths(B, T, U, g)
    targets = torch.randint(1, V, (B, U), generator=g)
    logits = torch.randn(B, T, V, generator=g)
    ctc_topo(V, False), ctc_topo(V, True)  # cached topologies, built once per vocabulary

    def fwd_bwd(fn):
        def run():
            x = logits.clone().requires_grad_()
            fn(x.log_softmax(-1)).backward()

        return run

    variants = {
        "torch_ctc": fwd_bwd(lambda lp: F.ctc_loss(lp.transpose(0, 1), targets, tl, ul, reduction="sum")),
        "graphs": lambda: ctc_graphs(targets, ul, V),
        "ctc_fst": fwd_bwd(lambda lp: ctc_fst_loss(lp, targets, tl, ul, reduction="sum")),
        "ctc_fst_modified": fwd_bwd(lambda lp: ctc_fst_loss(lp, targets, tl, ul, topology="modified", reduction="sum")),
        "ctc_fst_delay": fwd_bwd(lambda lp: ctc_fst_loss(lp, targets, tl, ul, delay_penalty=0.1, reduction="sum")),
        "ctc_fst_viterbi": fwd_bwd(lambda lp: ctc_fst_loss(lp, targets, tl, ul, viterbi=True, reduction="sum")),
    }
    print(f"B={B} T={T} U={U} V={V} float32, {a.threads} threads, median of {a.repeats}")
    print("| variant | median time | x torch_ctc |")
    print("| --- | --- | --- |")
    base = None
    for name, run in variants.items():
        run()  # warm-up
        times = []
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            run()
            times.append(time.perf_counter() - t0)
        med = sorted(times)[len(times) // 2]
        base = base or med
        print(f"| {name} | {med * 1000:.1f} ms | {med / base:.2f} |", flush=True)


if __name__ == "__main__":
    main()
