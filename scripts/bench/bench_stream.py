#!/usr/bin/env python
"""Streaming speed and accuracy per chunk size: RTF, compute ms per chunk, WER.

    python scripts/bench/bench_stream.py --ckpt exp/stream_ctc/best.ckpt \\
        --data data/synthetic/LibriSpeech/test-clean [--chunks-ms 160 320 640] [--threads 1] [--limit 60] \\
        [--beam 4]
    python scripts/bench/bench_stream.py --ckpt exp/stream_ctc/best.ckpt --data ... --size 256 12

One stream at a time (batch 1, as a live recognizer), audio read block by block, on
--threads CPU threads. For each chunk size the split (first --limit utterances, longest
first) is streamed; the table gives RTF (compute / audio), compute per chunk (mean and
p95, features + encoder + search), algorithmic latency, and WER against the references.
The last row decodes offline with full context (asr transcribe's greedy path) for
comparison. --beam K adds the same rows for beam search of size K, streamed (CTC prefix
beam search or transducer beam search continued across chunks) and offline. --size D L
replaces the model by an untrained one with d_model D and L layers (same front-end,
tokenizer and head kind) to time a bigger model; its WER is meaningless and not shown.
"""

from __future__ import annotations

import argparse

import torch

from asr.data.audio import SAMPLE_RATE, audio_blocks
from asr.decoding import DecodeOptions
from asr.decoding.streaming import StreamingRecognizer, stream_decode
from asr.metrics import score
from asr.model import ASRModel, load_model
from asr.transcribe import split_items, transcribe_items


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--chunks-ms", type=float, nargs="+", default=[160, 320, 640])
    p.add_argument("--left-context-ms", type=float, default=2560)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--limit", type=int, default=60)
    p.add_argument("--size", type=int, nargs=2, metavar=("D_MODEL", "LAYERS"))
    p.add_argument("--beam", type=int, default=0, help="also stream with beam search of this size (0: greedy only)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    model = load_model(a.ckpt)
    if a.size:
        hp = dict(model.hparams)
        hp["encoder"] = {**hp["encoder"], "d_model": a.size[0], "num_layers": a.size[1]}
        tok, model = model.tokenizer, ASRModel(**hp).eval()
        model.tokenizer = tok
    n_params = sum(p.numel() for p in model.parameters())
    items, refs, _ = split_items(a.data)
    items = items[: a.limit]
    refs = {uid: refs[uid] for uid, _ in items}
    frame_ms = model.fbank.opts.frame_shift_ms * model.encoder.subsampling_factor
    print(f"{n_params / 1e6:.1f}M parameters, {len(items)} utterances, {a.threads} thread(s), one stream at a time")
    print("| search | chunk | algorithmic latency | RTF | compute per chunk (mean / p95) | WER |")
    print("| --- | --- | --- | --- | --- | --- |")
    searches = [("greedy", 1)] + ([("beam", a.beam)] if a.beam else [])
    for (method, beam), chunk_ms in [(s, c) for s in searches for c in a.chunks_ms]:
        name = "greedy" if method == "greedy" else f"beam {beam}"
        rec = StreamingRecognizer(
            model, int(chunk_ms // frame_ms), int(a.left_context_ms // frame_ms), method=method, beam=beam
        )
        block = int(SAMPLE_RATE * chunk_ms / 1000)
        hyps, times, audio_s, compute_s = {}, [], 0.0, 0.0
        for uid, path in items:
            toks = stream_decode(rec, [audio_blocks(path, block)])[0]
            hyps[uid] = model.tokenizer.decode(toks)
            times += rec.stats.chunk_times
            audio_s += rec.stats.audio_seconds
            compute_s += rec.stats.compute_seconds
        ms = sorted(1000 * t for t in times)
        wer = "" if a.size else f"{100 * score(refs, hyps).error_rate:.2f}%"
        print(
            f"| {name} | {chunk_ms:g} ms | {1000 * rec.algorithmic_latency:.0f} ms | {compute_s / audio_s:.4f} | "
            f"{sum(ms) / len(ms):.1f} / {ms[int(0.95 * (len(ms) - 1))]:.1f} ms | {wer} |",
            flush=True,
        )
    for method, beam in searches if not a.size else []:
        hyps, _ = transcribe_items(model, items, DecodeOptions(method, beam), progress=False)
        hyps = {uid: t.text for uid, t in hyps.items()}
        name = "greedy" if method == "greedy" else f"beam {beam}"
        print(f"| {name} | offline, full context | - | - | - | {100 * score(refs, hyps).error_rate:.2f}% |")


if __name__ == "__main__":
    main()
