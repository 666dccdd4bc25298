#!/usr/bin/env python
"""Decoding speed (RTFx = seconds of audio per second of compute) and WER of trained checkpoints.

    python scripts/bench/bench_decode.py --data data/synthetic/LibriSpeech/test-clean \\
        --ckpt exp/bench_configs/conformer_ctc/best.ckpt exp/bench_configs/conformer_tdt/best.ckpt

For each checkpoint and each of its heads, the split is decoded greedily and with beam 4
in batches of --batch-seconds of audio; a model with an attention decoder (an attention or
TAED head) is also decoded with the methods that use it: `attention` (the decoder's beam
search), `attention_rescoring` (the first head's beam n-best rescored, weight 0.5) and, when
the first head is CTC, `joint` CTC/attention beam search (weight 0.5). WER is against the
split's transcripts. Features + encoder run once per batch and are
timed apart from the searches, so the table gives the end-to-end RTFx and the search
alone. Every timing is the fastest of --repeats runs (noise on a shared machine only
ever adds time). "steps" counts the search's loop iterations (joint calls; for CTC, one
per batch), a machine-independent measure of how much sequential work a search does.

Frame skipping (issue 19): `--skip-blank 0.9 0.95` also decodes every transducer head greedily
behind the model's CTC head at each threshold (DecodeOptions.skip_blank; "kept" is the share of
encoder frames the search read); `--greedy-only` leaves out beam search.

    python scripts/bench/bench_decode.py --data /tmp/bpe/LibriSpeech/test-clean --greedy-only \
        --skip-blank 0.9 0.95 0.99 --ckpt exp/bpe4/best.ckpt exp/bpe8/best.ckpt
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from asr.data.audio import pad_waves
from asr.decoding import DecodeOptions, build_model_search, build_search, run_search
from asr.decoding.frame_skip import SkipCounts
from asr.metrics import score
from asr.model import load_model
from asr.transcribe import audio_batches, split_items


def best_time(fn: Callable[[], object], repeats: int) -> float:
    return timed(fn, repeats)[0]


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    """The fastest of `repeats` runs of fn() and the last run's result."""
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def count_calls(obj: object, name: str, fn: Callable[[], object]) -> int:
    """Run fn() once and return how many times obj.name was called meanwhile."""
    orig, n = getattr(obj, name), [0]

    def counted(*args, **kwargs):
        n[0] += 1
        return orig(*args, **kwargs)

    setattr(obj, name, counted)  # an instance attribute shadows the method until deleted
    try:
        fn()
    finally:
        delattr(obj, name)
    return n[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="LibriSpeech-style split folder")
    p.add_argument("--ckpt", nargs="+", required=True)
    p.add_argument("--batch-seconds", type=float, default=120.0)
    p.add_argument("--beam", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--greedy-only", action="store_true", help="leave out beam search")
    p.add_argument(
        "--skip-blank", type=float, nargs="*", default=[], help="frame-skipping thresholds (transducer + CTC heads)"
    )
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    items, refs, problems = split_items(a.data)
    # the same loading and batching as `asr transcribe --data` (longest first, <= batch_seconds)
    grouped = list(audio_batches(items, a.batch_seconds, problems))
    groups = [waves for _, waves in grouped]
    ids = [i for batch_ids, _ in grouped for i in batch_ids]
    waves = [w for g in groups for w in g]
    audio_s = sum(len(w) for w in waves) / 16000
    batches = [pad_waves(g) for g in groups]
    print(f"{len(waves)} utterances, {audio_s:.0f} s of audio, {len(batches)} batches, {a.threads} threads")
    print("| checkpoint | head | search | steps | frames kept | WER | search RTFx | end-to-end RTFx |")
    print("|---|---|---|---|---|---|---|---|")
    for ckpt in a.ckpt:
        model = load_model(ckpt).eval()
        first = next(iter(model.heads))
        has_decoder = any(h.attention_decoder() is not None for h in model.heads.values())
        with torch.inference_mode():
            encs = [model(audio, lens) for audio, lens in batches]
            enc_t = best_time(lambda m=model: [m(audio, lens) for audio, lens in batches], a.repeats)
            # (head label, method label, search, joint whose calls count the steps, frame counts or None)
            runs = []
            has_ctc = any(h.kind == "ctc" for h in model.heads.values())
            methods = [("greedy", DecodeOptions())] + (
                [] if a.greedy_only else [(f"beam {a.beam}", DecodeOptions("beam", a.beam))]
            )
            for name, head in model.heads.items():
                transducer = head.kind in ("transducer", "taed")
                kind = ("tdt" if head.durations else "rnnt") if transducer else head.kind
                joint = head.joint if transducer else None
                for label, opts in methods:
                    runs.append((f"{name} ({kind})", label, build_search(head, opts), joint, None))
                for p in a.skip_blank if transducer and has_ctc else []:
                    counts, opts = SkipCounts(), DecodeOptions(skip_blank=p)
                    search = build_model_search(model.heads, name, opts, None, counts)
                    runs.append((f"{name} ({kind})", f"greedy, skip blank >= {p:g}", search, joint, counts))
            if has_decoder:
                # `attention` is the decoder's beam search: already in the table when an attention head has it
                own = any(h.kind == "attention" for h in model.heads.values())
                methods = ([] if own else ["attention"]) + ["attention_rescoring"]
                methods += ["joint"] if model.heads[first].kind == "ctc" else []
                for method in methods:
                    opts = DecodeOptions(method, a.beam)
                    runs.append((first, f"{method} {a.beam}", build_model_search(model.heads, first, opts), None, None))
            for head_label, method, search, joint, counts in runs:
                fn = lambda s=search, encs=encs: [h for e, n in encs for h in run_search(s, e, n)]  # noqa: E731
                s_t, found = timed(fn, a.repeats)
                if counts is not None:
                    counts.seen = counts.kept = 0  # the counting run below is the one reported
                steps = count_calls(joint, "combine", fn) if joint is not None else len(encs)
                kept = f"{100 * counts.kept / counts.seen:.1f}%" if counts is not None else "100%"
                hyps = {i: model.tokenizer.decode(h.tokens) for i, h in zip(ids, found)}
                wer = score({i: refs[i] for i in ids}, hyps).error_rate
                print(
                    f"| {ckpt} | {head_label} | {method} | {steps} | {kept} | {100 * wer:.2f}% | {audio_s / s_t:.0f} "
                    f"| {audio_s / (enc_t + s_t):.0f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
