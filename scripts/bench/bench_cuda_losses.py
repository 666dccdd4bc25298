#!/usr/bin/env python
"""The compiled losses on a GPU: time and peak memory, forward + backward, against the baselines.

    python scripts/bench/bench_cuda_losses.py [--B 32 --T 500 --U 100 --V 500] [--out bench_cuda.md]

The issue's sizes by default; lengths random in 70-100% of the maxima (seed 0, the first utterance
the longest), float32. Each row is the median of --repeat timed runs after --warmup runs (CUDA
events around the call and its backward); peak memory is torch.cuda.max_memory_allocated() during
one run minus what was allocated before it (the inputs), so it counts the loss's own buffers and
the gradient it returns.
  log_softmax     one torch.log_softmax over the logits [B, T, U+1, V], forward only: the floor
  rnnt            asr.losses.rnnt_loss (fused log-softmax)
  torchaudio      torchaudio.functional.rnnt_loss (fused log-softmax; int32 targets and lengths)
  full_e2e        joiner am[:, :, None] + lm[:, None] on the whole lattice + rnnt_loss
  pruned_e2e      rnnt_loss_simple + get_rnnt_prune_ranges(s_range) + the joiner on [B, T, s_range, V] +
                  rnnt_loss_pruned (the joiner's output and gradient counted, as in full_e2e)
  tdt             asr.losses.tdt_loss, durations (0..4): logits [B, T, U+1, V+5]
  ctc_fst         asr.losses.ctc_fst_loss on log-probs [B, T, V] (standard topology)
  torch_ctc       torch.nn.functional.ctc_loss on the same log-probs
Writes a markdown table (with the device, torch version and this command) to --out and stdout.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable

import torch
from common import add_size_args, random_lengths  # scripts/bench/common.py

VARIANTS = ("log_softmax", "rnnt", "torchaudio", "full_e2e", "pruned_e2e", "tdt", "ctc_fst", "torch_ctc")


def measure(step: Callable[[], None], warmup: int, repeat: int) -> tuple[float, float]:
    """(median ms, peak MiB above the memory in use before) of step() on the current GPU."""
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeat):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    return statistics.median(times), peak


def steps(args) -> dict[str, Callable[[], None]]:
    """One forward + backward of each variant, on inputs made once here."""
    from asr.losses import (
        ctc_fst_loss,
        do_rnnt_pruning,
        get_rnnt_prune_ranges,
        rnnt_loss,
        rnnt_loss_pruned,
        rnnt_loss_simple,
        tdt_loss,
    )

    dev = "cuda"
    g = torch.Generator().manual_seed(0)
    B, T, U, V = args.B, args.T, args.U, args.V
    tl, ul = random_lengths(B, T, U, g)
    targets = torch.randint(1, V, (B, U), generator=g)
    tl, ul, targets = tl.to(dev), ul.to(dev), targets.to(dev)
    out: dict[str, Callable[[], None]] = {}

    def lattice_logits(width: int) -> torch.Tensor:
        return torch.randn(B, T, U + 1, width, generator=g).to(dev).requires_grad_()

    logits = lattice_logits(V)

    def log_softmax() -> None:
        with torch.no_grad():
            torch.log_softmax(logits, -1)

    def rnnt() -> None:
        rnnt_loss(logits, targets, tl, ul).backward()
        logits.grad = None

    out["log_softmax"], out["rnnt"] = log_softmax, rnnt
    try:
        import torchaudio.functional as taf

        t32, tl32, ul32 = targets.int(), tl.int(), ul.int()

        def torchaudio_rnnt() -> None:
            taf.rnnt_loss(logits, t32, tl32, ul32, blank=0, reduction="mean").backward()
            logits.grad = None

        out["torchaudio"] = torchaudio_rnnt
    except Exception as e:  # torchaudio missing or without its RNN-T op: the row says so
        print(f"bench_cuda_losses: no torchaudio rnnt_loss ({e})", file=sys.stderr)

    am = torch.randn(B, T, V, generator=g).to(dev).requires_grad_()
    lm = torch.randn(B, U + 1, V, generator=g).to(dev).requires_grad_()
    bd = torch.zeros(B, 4, dtype=torch.int64, device=dev)
    bd[:, 2], bd[:, 3] = ul, tl

    def full_e2e() -> None:
        rnnt_loss(am[:, :, None] + lm[:, None], targets, tl, ul).backward()
        am.grad = lm.grad = None

    def pruned_e2e() -> None:
        simple, (gx, gy) = rnnt_loss_simple(lm, am, targets, 0, bd, return_grad=True)
        ranges = get_rnnt_prune_ranges(gx, gy, bd, args.s_range)
        am_p, lm_p = do_rnnt_pruning(am, lm, ranges)
        (simple + rnnt_loss_pruned(am_p + lm_p, targets, ranges, 0, bd)).backward()
        am.grad = lm.grad = None

    out["full_e2e"], out["pruned_e2e"] = full_e2e, pruned_e2e
    tdt_logits = None

    def tdt() -> None:
        nonlocal tdt_logits
        if tdt_logits is None:
            tdt_logits = lattice_logits(V + 5)
        tdt_loss(tdt_logits, targets, tl, ul, durations=(0, 1, 2, 3, 4)).backward()
        tdt_logits.grad = None

    out["tdt"] = tdt
    lp = torch.randn(B, T, V, generator=g).log_softmax(-1).to(dev).requires_grad_()

    def ctc_fst() -> None:
        ctc_fst_loss(lp, targets, tl, ul).backward()
        lp.grad = None

    def torch_ctc() -> None:
        torch.nn.functional.ctc_loss(lp.transpose(0, 1), targets, tl, ul).backward()
        lp.grad = None

    out["ctc_fst"], out["torch_ctc"] = ctc_fst, torch_ctc
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_size_args(p)
    p.add_argument("--s-range", type=int, default=5, help="pruned RNN-T window")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--out", default=None, help="also write the markdown table here")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("bench_cuda_losses: needs a GPU")
    from asr._ext import ops

    if not ops().with_cuda:
        raise SystemExit("bench_cuda_losses: asr._C was built without CUDA kernels")
    run = steps(args)
    rows = {}
    for name in args.variants.split(","):
        if name not in run:
            rows[name] = None
            continue
        rows[name] = measure(run[name], args.warmup, args.repeat)
        print(f"{name}: {rows[name][0]:.1f} ms, {rows[name][1]:.0f} MiB", file=sys.stderr, flush=True)

    def ratio(a: str, b: str, i: int) -> str:
        return f"{rows[a][i] / rows[b][i]:.2f}x" if rows.get(a) and rows.get(b) else "n/a"

    lines = [
        f"GPU: {torch.cuda.get_device_name()}; torch {torch.__version__}; "
        f"B={args.B} T={args.T} U={args.U} V={args.V}, float32, forward + backward (log_softmax: forward only); "
        f"median of {args.repeat} after {args.warmup} warm-up runs",
        "",
        f"Command: `python scripts/bench/bench_cuda_losses.py {' '.join(argv if argv is not None else sys.argv[1:])}`",
        "",
        "| variant | time (ms) | peak memory (MiB) |",
        "| --- | ---: | ---: |",
    ]
    for name, r in rows.items():
        lines.append(f"| {name} | {r[0]:.1f} | {r[1]:.0f} |" if r else f"| {name} | n/a | n/a |")
    lines += [
        "",
        f"- rnnt / torchaudio: time {ratio('rnnt', 'torchaudio', 0)}, memory {ratio('rnnt', 'torchaudio', 1)} "
        "(target: < 1x, <= 1x)",
        f"- rnnt / log_softmax floor: time {ratio('rnnt', 'log_softmax', 0)} (target: within 3x)",
        f"- pruned_e2e / full_e2e (s_range {args.s_range}): time {ratio('pruned_e2e', 'full_e2e', 0)}, memory "
        f"{ratio('pruned_e2e', 'full_e2e', 1)} (target: faster, <= 0.2x memory)",
        f"- ctc_fst / torch_ctc: time {ratio('ctc_fst', 'torch_ctc', 0)} (target: within 1.5x)",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
