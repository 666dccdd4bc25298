#!/usr/bin/env python
"""RTFx (seconds of audio per second of compute) of an exported model: sherpa-onnx against
`asr transcribe` (PyTorch) and `asr transcribe --onnx` (onnxruntime), one thread each, greedy.

    python scripts/bench/bench_onnx.py --ckpt exp/x/best.ckpt --onnx exp/x/onnx \\
        --data data/synthetic/LibriSpeech/test-clean

Each way decodes the whole split end to end (reading audio, fbank, encoder, search), the fastest
of --repeats runs. PyTorch and onnxruntime decode in batches of --batch-seconds of audio (what
`asr transcribe` does); sherpa-onnx one stream at a time (`decode_stream`) and, as a batch, all
streams of a batch at once (`decode_streams`). Transducers search with one label a frame
(sherpa-onnx's offline greedy search). WER of each against the split's transcripts.
"""

from __future__ import annotations

import argparse
import time

import soundfile as sf
import torch

from asr.data.audio import SAMPLE_RATE, load_audio
from asr.metrics import score
from asr.model import load_model
from asr.onnx_model import OnnxModel, sherpa_offline_recognizer
from asr.transcribe import decode_batches, split_items


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True)
    p.add_argument("--onnx", required=True, help="the `asr export` folder of --ckpt")
    p.add_argument("--data", required=True, help="LibriSpeech-style split")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--batch-seconds", type=float, default=120.0)
    args = p.parse_args()
    torch.set_num_threads(1)
    items, refs, _ = split_items(args.data, progress=False)
    audio_s = sum(len(load_audio(path)[0]) for _, path in items) / SAMPLE_RATE

    model = load_model(args.ckpt)
    onnx = OnnxModel(args.onnx, threads=1)
    rec = sherpa_offline_recognizer(args.onnx, num_threads=1)

    def torch_run():
        opts = model.decode_options_with(method="greedy", max_symbols=1)
        return decode_batches(lambda a, n: model.transcribe(a, n, opts), items, args.batch_seconds, progress=False)[0]

    def onnx_run():
        return decode_batches(onnx.transcribe, items, args.batch_seconds, progress=False)[0]

    def sherpa_streams(one_by_one: bool):
        def run():
            streams = []
            for _, path in items:
                samples, rate = sf.read(path, dtype="float32")
                s = rec.create_stream()
                s.accept_waveform(rate, samples)
                if one_by_one:
                    rec.decode_stream(s)
                streams.append(s)
            if not one_by_one:
                rec.decode_streams(streams)
            return {uid: s.result.text.strip() for (uid, _), s in zip(items, streams)}

        return run

    ways = {
        "asr transcribe (PyTorch)": torch_run,
        "asr transcribe --onnx (onnxruntime)": onnx_run,
        "sherpa-onnx, decode_stream": sherpa_streams(True),
        "sherpa-onnx, decode_streams (one batch)": sherpa_streams(False),
    }
    print(f"{args.data}: {len(items)} utterances, {audio_s:.0f} s of audio, 1 thread")
    print("| way | RTFx | WER |\n| --- | --- | --- |")
    for name, fn in ways.items():
        best, hyps = float("inf"), {}
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            hyps = fn()
            best = min(best, time.perf_counter() - t0)
        print(f"| {name} | {audio_s / best:.0f} | {score(refs, hyps).error_rate:.2%} |")


if __name__ == "__main__":
    main()
