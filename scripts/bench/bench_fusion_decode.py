#!/usr/bin/env python
"""RTFx of beam search with LM fusion and hotword biasing against plain beam search, end to end
(features, encoder, search) on a split, for each head of a model.

    python scripts/bench/bench_fusion_decode.py --ckpt exp/x/best.ckpt --data DIR/test-clean \\
        --lm exp/lm/lm8.arpa --text DIR/manifests/train-clean.ref.txt [--beam 4] [--threads 1]

Hotword lists of 100 and 1000 phrases are word pairs and single words of --text (as many as it
has, up to those counts), so the graph is as large as a real list while few phrases fire.
Each configuration runs --repeats times; the median is reported.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from asr.data.audio import SAMPLE_RATE
from asr.decoding import DecodeOptions
from asr.model import load_model
from asr.transcribe import split_items, transcribe_items


def phrase_lists(text: Path, sizes: list[int], out: Path) -> dict[int, Path]:
    """Files of `size` distinct phrases (word pairs, then single words) from `utt-id TEXT` lines."""
    pairs: dict[str, None] = {}
    words: dict[str, None] = {}
    for line in text.read_text().splitlines():
        w = line.split()[1:]
        words.update(dict.fromkeys(w))
        pairs.update(dict.fromkeys(" ".join(w[i : i + 2]) for i in range(len(w) - 1)))
    pool = list(pairs) + list(words)
    files = {}
    for n in sizes:
        files[n] = out / f"hot{n}.txt"
        files[n].write_text("".join(f"{p}\n" for p in pool[:n]))
        if len(pool) < n:
            print(f"note: only {len(pool)} distinct phrases in {text} for the list of {n}")
    return files


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--lm", required=True)
    p.add_argument("--text", required=True, help="`utt-id TEXT` lines the hotword lists are drawn from")
    p.add_argument("--beam", type=int, default=4)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    model = load_model(a.ckpt)
    items, _, _ = split_items(a.data, progress=False)
    import soundfile as sf

    seconds = sum(sf.info(path).frames for _, path in items) / SAMPLE_RATE
    with tempfile.TemporaryDirectory() as tmp:
        hot = phrase_lists(Path(a.text), [100, 1000], Path(tmp))
        configs = {
            "beam": {},
            "beam + LM": {"lm": a.lm, "lm_weight": 0.6},
            "beam + LM + ILM": {"lm": a.lm, "lm_weight": 0.6, "ilm_weight": 0.3},
            "beam + 100 hotwords": {"hotwords": str(hot[100])},
            "beam + 1000 hotwords": {"hotwords": str(hot[1000])},
        }
        print(f"{len(items)} utterances, {seconds:.1f} s of audio, beam {a.beam}, {a.threads} thread(s)")
        print("| head | search | RTFx (median of runs) | x plain beam time |")
        print("| --- | --- | --- | --- |")
        for head in model.heads:
            if model.heads[head].kind not in ("ctc", "transducer"):
                continue
            base = None
            for name, kw in configs.items():
                if kw.get("ilm_weight") and model.heads[head].kind != "transducer":
                    continue
                opts = DecodeOptions("beam", a.beam, head=head, **kw)
                transcribe_items(model, items[:2], opts, progress=False)  # loads the files, warms caches
                times = []
                for _ in range(a.repeats):
                    t0 = time.perf_counter()
                    transcribe_items(model, items, opts, progress=False)
                    times.append(time.perf_counter() - t0)
                t = statistics.median(times)
                base = base or t
                print(f"| {head} | {name} | {seconds / t:.1f} | {t / base:.2f} |", flush=True)


if __name__ == "__main__":
    main()
