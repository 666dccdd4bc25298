#!/usr/bin/env python
"""RNN-T loss speed and peak memory against the memory-bandwidth floor.

    python scripts/bench/bench_rnnt.py [--B 32 --T 500 --U 100 --V 500] [--threads N] [--variants a,b,...]
    python scripts/bench/bench_rnnt.py --same-process [--variants log_softmax,full] [--threads N] [--repeats 5]

Lengths are random in 70-100% of the maxima (seed 0), logits float32 [B, T, U+1, V].
Each variant runs in its own process, so its peak RSS above the inputs is its own. With
--same-process the variants run in this process instead, round by round in turn, so that
load from other jobs on a shared machine hits them alike: the ratios are comparable across
runs, the peak memory is not measured. Variants:
  log_softmax   one torch.log_softmax pass over the logits (forward only): the floor
  full          asr.losses.rnnt_loss forward + backward (fused log-softmax)
  tdt           asr.losses.tdt_loss forward + backward, durations (0..4): logits [B, T, U+1, V+5]
  viterbi       asr.losses.rnnt_viterbi_loss forward + backward (best path only)
  tdt_viterbi   asr.losses.tdt_viterbi_loss forward + backward, durations (0..4)
End to end from encoder/predictor outputs am [B, T, V], lm [B, U+1, V] (joiner = am + lm),
counting the joiner output and its gradient:
  full_e2e      joiner on the whole lattice [B, T, U+1, V] + rnnt_loss, backward
  pruned_e2e    rnnt_loss_simple + prune ranges + joiner on [B, T, s_range, V] + rnnt_loss_pruned, backward
  viterbi_e2e   joiner on the whole lattice without grad + rnnt_best_path, then the joiner with grad
                on the path's nodes only + path_log_probs, backward (what the head's viterbi option does)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

from common import add_size_args, random_lengths  # scripts/bench/common.py

DEFAULT_VARIANTS = "log_softmax,full,tdt,full_e2e,pruned_e2e"
VARIANTS = ("log_softmax", "full", "tdt", "viterbi", "tdt_viterbi", "full_e2e", "pruned_e2e", "viterbi_e2e")


def setup(args, variant: str):
    """Make the inputs of `variant` (seed 0); return a function that runs it once and returns its result."""
    import torch

    from asr.losses import (
        do_rnnt_pruning,
        get_rnnt_prune_ranges,
        path_log_probs,
        rnnt_best_path,
        rnnt_loss,
        rnnt_loss_pruned,
        rnnt_loss_simple,
        rnnt_viterbi_loss,
        tdt_loss,
        tdt_viterbi_loss,
    )

    g = torch.Generator().manual_seed(0)
    B, T, U, V = args.B, args.T, args.U, args.V
    tl, ul = random_lengths(B, T, U, g)
    e2e = variant.endswith("_e2e")
    if e2e:
        am = torch.randn(B, T, V, generator=g).requires_grad_()
        lm = torch.randn(B, U + 1, V, generator=g).requires_grad_()
        bd = torch.stack([torch.zeros_like(tl), torch.zeros_like(tl), ul, tl], dim=1)
    else:
        logits = torch.randn(B, T, U + 1, V + (5 if variant.startswith("tdt") else 0), generator=g)
    targets = torch.randint(1, V, (B, U), generator=g)

    def run():
        if variant == "log_softmax":
            return torch.log_softmax(logits, dim=-1)
        if variant == "full_e2e":
            loss = rnnt_loss(am[:, :, None, :] + lm[:, None, :, :], targets, tl, ul, reduction="sum")
            loss.backward()
            am.grad = lm.grad = None
            return loss
        if variant == "pruned_e2e":
            simple, (gx, gy) = rnnt_loss_simple(lm, am, targets, 0, bd, reduction="sum", return_grad=True)
            ranges = get_rnnt_prune_ranges(gx, gy, bd, args.s_range)
            am_p, lm_p = do_rnnt_pruning(am, lm, ranges)
            loss = simple + rnnt_loss_pruned(am_p + lm_p, targets, ranges, 0, bd, reduction="sum")
            loss.backward()
            am.grad = lm.grad = None
            return loss
        if variant == "viterbi_e2e":
            with torch.no_grad():
                path = rnnt_best_path(am[:, :, None, :] + lm[:, None, :, :], targets, tl, ul)
            loss = -path_log_probs(am[path.utt, path.t] + lm[path.utt, path.u], path).sum()
            loss.backward()
            am.grad = lm.grad = None
            return loss
        x = logits.requires_grad_()
        durations = (0, 1, 2, 3, 4)
        if variant == "tdt":
            loss = tdt_loss(x, targets, tl, ul, durations=durations, reduction="sum")
        elif variant == "tdt_viterbi":
            loss = tdt_viterbi_loss(x, targets, tl, ul, durations=durations, reduction="sum")
        elif variant == "viterbi":
            loss = rnnt_viterbi_loss(x, targets, tl, ul, reduction="sum")
        else:
            loss = rnnt_loss(x, targets, tl, ul, reduction="sum")
        loss.backward()
        x.grad = None
        return loss

    return run


def timed(run) -> float:
    """Seconds of one call of `run` and the release of what it made: the loss variants free their
    gradient inside the call, so log_softmax's output is freed on the clock too (unmapping 3 GiB
    takes ~0.2 s here; before 2026-11-24 it was left out, which favoured the log_softmax floor)."""
    t0 = time.perf_counter()
    out = run()
    del out
    return time.perf_counter() - t0


def median(xs: list[float]) -> float:
    return sorted(xs)[len(xs) // 2]


def logits_gib(args) -> float:
    return args.B * args.T * (args.U + 1) * args.V * 4 / 2**30


def child(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    run = setup(args, args.variant)
    run()  # warm-up
    times = [timed(run) for _ in range(args.repeats)]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "variant": args.variant,
                "median_s": median(times),
                "peak_extra_gib": (peak - base) / 2**20,
                "logits_gib": logits_gib(args),
            }
        )
    )


def same_process(args, variants: list[str]) -> None:
    """All variants in this process, one call of each in turn per round (after one warm-up
    round); prints each one's median and its ratio to the first's median."""
    import torch

    torch.set_num_threads(args.threads)
    runs = {v: setup(args, v) for v in variants}
    times: dict[str, list[float]] = {v: [] for v in variants}
    for r in range(args.repeats + 1):
        for v in variants:
            t = timed(runs[v])
            if r:  # round 0 warms up
                times[v].append(t)
    floor = times[variants[0]]
    print(
        f"B={args.B} T={args.T} U={args.U} V={args.V} float32, logits {logits_gib(args):.2f} GiB, "
        f"{args.threads} threads, same process, {args.repeats} rounds, load average {os.getloadavg()[0]:.2f}"
    )
    # a round's ratio compares two calls made seconds apart: steadier than the ratio of medians when
    # the load changes during the run
    print(f"| variant | median time | x {variants[0]} (of medians) | median of rounds' ratios | all times |")
    print("| --- | --- | --- | --- | --- |")
    for v in variants:
        m = median(times[v])
        ratio = median([t / f for t, f in zip(times[v], floor)])
        print(f"| {v} | {m:.3f} s | {m / median(floor):.2f} | {ratio:.2f} | {' '.join(f'{t:.3f}' for t in times[v])} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_size_args(p)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--s-range", dest="s_range", type=int, default=5)
    p.add_argument(
        "--variants",
        default=None,
        help=f"comma-separated, the first is the floor the others are divided by (of: {', '.join(VARIANTS)}; "
        f"default {DEFAULT_VARIANTS})",
    )
    p.add_argument(
        "--same-process",
        dest="same_process",
        action="store_true",
        help="alternate the variants in this process (default variants then: log_softmax,full)",
    )
    p.add_argument("--variant", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.variant:
        return child(a)
    variants = (a.variants or ("log_softmax,full" if a.same_process else DEFAULT_VARIANTS)).split(",")
    if set(variants) - set(VARIANTS):
        p.error(f"unknown variants {sorted(set(variants) - set(VARIANTS))}; choose from {', '.join(VARIANTS)}")
    if a.same_process:
        return same_process(a, variants)
    rows = []
    for variant in variants:
        cmd = [
            sys.executable,
            __file__,
            "--variant",
            variant,
            f"--s-range={a.s_range}",
            *[f"--{k}={getattr(a, k)}" for k in ("B", "T", "U", "V", "threads", "repeats")],
        ]
        rows.append(json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()))
    floor = rows[0]["median_s"]  # the first variant (log_softmax by default)
    print(
        f"B={a.B} T={a.T} U={a.U} V={a.V} s_range={a.s_range} float32, logits {logits_gib(a):.2f} GiB, "
        f"{a.threads} threads"
    )
    print(f"| variant | median time | x {variants[0]} | peak memory above inputs |")
    print("| --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['variant']} | {r['median_s']:.3f} s | {r['median_s'] / floor:.2f} | {r['peak_extra_gib']:.2f} GiB |"
        )


if __name__ == "__main__":
    main()
