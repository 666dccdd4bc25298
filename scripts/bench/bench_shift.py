#!/usr/bin/env python
"""How a checkpoint's WER moves when its test audio is shifted by a few ms.

    python scripts/bench/bench_shift.py --ckpt exp/x/best.ckpt --data data/synthetic/LibriSpeech/test-clean \\
        --shifts -20 -10 0 10 20 30 40

Each utterance is decoded (the checkpoint's decoding options, batches of 16) with k ms of zeros
put before it (k > 0) or cut from its start (k < 0). A model trained on files that all start
the same way learns one alignment of speech to its encoder frames, and long-form decoding,
which cuts files at pauses, decodes such shifted segments (BENCHMARKS.md, "Long-form decoding").
"""

from __future__ import annotations

import argparse

import torch

from asr.data.audio import load_audio, pad_waves
from asr.metrics import score
from asr.model import load_model
from asr.transcribe import split_items


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True)
    p.add_argument("--data", required=True, help="LibriSpeech-style split folder")
    p.add_argument("--shifts", type=int, nargs="+", default=[-20, -10, 0, 10, 20, 30, 40], help="ms")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    model = load_model(a.ckpt).eval()
    items, refs, _ = split_items(a.data, progress=False)
    ids = sorted(refs)
    waves = {i: load_audio(path)[0] for i, path in items if i in refs}
    print("| shift | WER |\n|---|---|")
    for k in a.shifts:
        n = 16 * abs(k)  # samples at 16 kHz
        hyps = {}
        for j in range(0, len(ids), 16):
            batch = ids[j : j + 16]
            shifted = [torch.cat([torch.zeros(n), waves[i]]) if k >= 0 else waves[i][n:] for i in batch]
            with torch.inference_mode():
                hyps.update(zip(batch, model.transcribe(*pad_waves(shifted))))
        print(f"| {k:+d} ms | {100 * score({i: refs[i] for i in ids}, hyps).error_rate:.2f}% |", flush=True)


if __name__ == "__main__":
    main()
