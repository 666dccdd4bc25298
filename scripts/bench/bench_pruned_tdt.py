#!/usr/bin/env python
"""Full TDT vs pruned TDT (issue 14): time and peak memory of forward + backward, end to end.

    python scripts/bench/bench_pruned_tdt.py [--B 32 --T 500 --U 100 --V 500] [--threads N] [--s-ranges 5 10]

From encoder/predictor outputs am [B, T, V+D], lm [B, U+1, V+D] (float32, D = 5 durations
0..4, sigma 0.05) with the joiner am + lm, as bench_rnnt.py's *_e2e variants, so the joiner's
output and its gradient count:
  tdt_full      joiner on the whole lattice [B, T, U+1, V+D] + tdt_loss
  tdt_pruned    tdt_loss_simple + get_tdt_prune_ranges + do_rnnt_pruning + joiner on
                [B, T, s_range, V+D] + tdt_loss_pruned (the simple loss's gradient included)
  rnnt_pruned   the same pipeline for pruned RNN-T on the V token outputs (for comparison)
Lengths are random in 70-100% of the maxima (seed 0). Each variant runs in its own process and
reports the median of --repeats timed runs after one warm-up, and its peak RSS (ru_maxrss) above
what the process held once its inputs existed: every tensor the step allocates (the joiner's
output, saved activations, gradients, the kernels' alpha/beta) is in RSS on CPU, where torch's
allocator returns large blocks to the OS, so the peak is the step's high-water mark.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

from common import add_size_args, random_lengths  # scripts/bench/common.py

DURATIONS = (0, 1, 2, 3, 4)
SIGMA = 0.05


def child(args) -> None:
    import torch

    from asr.losses import (
        do_rnnt_pruning,
        get_rnnt_prune_ranges,
        get_tdt_prune_ranges,
        rnnt_loss_pruned,
        rnnt_loss_simple,
        tdt_loss,
        tdt_loss_pruned,
        tdt_loss_simple,
    )

    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    B, T, U, V = args.B, args.T, args.U, args.V
    c = V + (len(DURATIONS) if args.variant.startswith("tdt") else 0)
    tl, ul = random_lengths(B, T, U, g)
    am = torch.randn(B, T, c, generator=g).requires_grad_()
    lm = torch.randn(B, U + 1, c, generator=g).requires_grad_()
    bd = torch.stack([torch.zeros_like(tl), torch.zeros_like(tl), ul, tl], dim=1)
    targets = torch.randint(1, V, (B, U), generator=g)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tdt = {"durations": DURATIONS, "sigma": SIGMA, "reduction": "sum"}

    def run() -> float:
        if args.variant == "tdt_full":
            loss = tdt_loss(am[:, :, None, :] + lm[:, None, :, :], targets, tl, ul, **tdt)
        elif args.variant == "tdt_pruned":
            simple, occ = tdt_loss_simple(lm, am, targets, boundary=bd, return_grad=True, **tdt)
            ranges = get_tdt_prune_ranges(occ, bd, args.s_range, DURATIONS)
            am_p, lm_p = do_rnnt_pruning(am, lm, ranges)
            loss = simple + tdt_loss_pruned(am_p + lm_p, targets, ranges, boundary=bd, **tdt)
        elif args.variant == "rnnt_pruned":
            simple, (gx, gy) = rnnt_loss_simple(lm, am, targets, 0, bd, reduction="sum", return_grad=True)
            ranges = get_rnnt_prune_ranges(gx, gy, bd, args.s_range)
            am_p, lm_p = do_rnnt_pruning(am, lm, ranges)
            loss = simple + rnnt_loss_pruned(am_p + lm_p, targets, ranges, 0, bd, reduction="sum")
        else:
            raise ValueError(args.variant)
        loss.backward()
        am.grad = lm.grad = None
        return float(loss)

    run()  # warm-up
    times, losses = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        losses.append(run())
        times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "variant": args.variant,
                "s_range": args.s_range if "pruned" in args.variant else None,
                "median_s": sorted(times)[len(times) // 2],
                "times": times,
                "peak_extra_gib": (peak - base) / 2**20,
                "loss_per_utt": losses[0] / B,
            }
        )
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_size_args(p)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--s-ranges", dest="s_ranges", type=int, nargs="+", default=[5, 10])
    p.add_argument("--variant", help=argparse.SUPPRESS)
    p.add_argument("--s-range", dest="s_range", type=int, default=5, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.variant:
        return child(a)
    runs = [("tdt_full", 0)] + [(v, s) for s in a.s_ranges for v in ("tdt_pruned", "rnnt_pruned")]
    rows = []
    for variant, s_range in runs:
        cmd = [
            sys.executable,
            __file__,
            "--variant",
            variant,
            f"--s-range={s_range}",
            *[f"--{k}={getattr(a, k)}" for k in ("B", "T", "U", "V", "threads", "repeats")],
        ]
        rows.append(json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    full = rows[0]
    print(f"B={a.B} T={a.T} U={a.U} V={a.V} D={len(DURATIONS)} float32, {a.threads} threads, median of {a.repeats}")
    print("| variant | s_range | median time | peak memory above inputs | time / full | memory / full |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['variant']} | {r['s_range'] or '-'} | {r['median_s']:.3f} s | {r['peak_extra_gib']:.2f} GiB | "
            f"{r['median_s'] / full['median_s']:.2f} | {r['peak_extra_gib'] / full['peak_extra_gib']:.3f} |"
        )


if __name__ == "__main__":
    main()
