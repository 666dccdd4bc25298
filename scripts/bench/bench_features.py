#!/usr/bin/env python
"""Fbank throughput: seconds of audio featurized per second of compute.

python scripts/bench/bench_features.py [--batch 16] [--seconds 15] [--threads N] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import time

import torch

from asr.data.features import Fbank


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seconds", type=float, default=15.0, help="audio length per utterance")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=10)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    fb = Fbank().to(a.device)
    n = int(a.seconds * 16000)
    wave = (0.1 * torch.randn(a.batch, n)).to(a.device)
    lens = torch.full((a.batch,), n, device=a.device)
    fb(wave, lens)  # warm-up
    times = []
    for _ in range(a.repeats):
        if a.device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        fb(wave, lens)
        if a.device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    best = sorted(times)[len(times) // 2]
    audio = a.batch * a.seconds
    print(
        f"fbank 80-dim, batch {a.batch} x {a.seconds:.0f} s, {a.device}, {torch.get_num_threads()} threads: "
        f"median {best * 1000:.1f} ms -> {audio / best:.0f} s of audio per second"
    )


if __name__ == "__main__":
    main()
