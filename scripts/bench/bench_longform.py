"""Long-form decoding: peak memory and speed for 1 minute vs 1 hour, and WER of the concatenation.

Builds one long file by concatenating a prepared split's test utterances (repeated to the
length asked), then decodes the 1-minute and the 1-hour file long-form, each in a fresh
subprocess (peak RSS is per process: resource.getrusage maxrss), by the streaming path and
the windowed path, and compares the WER of the concatenation with that of the utterances
decoded one by one.

    python scripts/bench/bench_longform.py --ckpt exp/x/best.ckpt --split DIR/test-clean \\
        --refs DIR/manifests/test-clean.ref.txt --minutes 1 60

`--per-utterance` first prints the like-for-like baselines: the utterances decoded one by one
offline (the windowed path's baseline) and streamed with the long-form streaming path's chunk and
left context (its baseline). Every WER line also splits the errors into those on each sentence's
first word and the rest (where long-form decoding of a model trained on sentences that start at
the file start loses words: BENCHMARKS.md, "Long-form decoding"). `--lead-ms` decodes with each
`LongFormOptions.lead_ms` given.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path


def build(split: Path, refs: dict[str, str], seconds: float, out: Path, gap: float) -> list[str]:
    """Concatenate the split's utterances (sorted by id, repeated) into `out` until it lasts
    `seconds`; returns the reference sentences of the whole file, in order."""
    from asr.data.audio import audio_seconds, concatenate_audio

    paths = {p.stem: p for p in split.rglob("*.flac")}
    ids = sorted(i for i in refs if i in paths)
    order, total = [], 0.0
    while total < seconds:
        for i in ids:
            order.append(i)
            total += audio_seconds(paths[i]) + gap
            if total >= seconds:
                break
    if not out.exists():
        concatenate_audio([paths[i] for i in order], out, gap)
    return [refs[i] for i in order]


def child(args: argparse.Namespace) -> None:
    """Decode one file long-form and print a JSON line of figures."""
    import torch

    from asr.longform import LongFormOptions, transcribe_long
    from asr.model import load_model

    torch.set_num_threads(args.threads)
    model = load_model(args.ckpt)
    lf = LongFormOptions(windowed=args.windowed, lead_ms=args.lead)
    tr, st = transcribe_long(model, args.file, long_form=lf, progress=False)
    starts = [w.start for w in tr.words or []]
    print(
        json.dumps(
            {
                "path": st.path,
                "seconds": st.audio_seconds,
                "rtfx": st.rtfx,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "monotonic": all(a <= b for a, b in zip(starts, starts[1:])),
                "word_cuts": st.word_cuts,
                "token_cuts": st.token_cuts,
                "pause_cuts": st.pause_cuts,
                "text": tr.text,
            }
        )
    )


def first_word_errors(sentences: list[str], hyp: str) -> tuple[int, int]:
    """(errors on each sentence's first word, errors elsewhere) of `hyp` against the sentences
    joined; an insertion counts where it lands in the reference."""
    import jiwer

    firsts, words = set(), []
    for s in sentences:
        firsts.add(len(words))
        words += s.split()
    first = other = 0
    for ch in jiwer.process_words(" ".join(words), hyp or "<empty>").alignments[0]:
        if ch.type != "equal":
            n = max(ch.ref_end_idx - ch.ref_start_idx, 1)
            if ch.ref_start_idx in firsts:
                first += n
            else:
                other += n
    return first, other


def per_utterance(args: argparse.Namespace, refs: dict[str, str]) -> None:
    """The utterances decoded one by one as `asr transcribe` and `asr stream` decode a split
    (offline; streamed with the long-form streaming path's chunk and left context): the two
    paths' baselines."""
    import torch

    from asr.longform import LongFormOptions
    from asr.metrics import score
    from asr.model import load_model
    from asr.stream import StreamTiming, stream_items
    from asr.transcribe import split_items, transcribe_items

    torch.set_num_threads(args.threads)
    model = load_model(args.ckpt).eval()
    items, _, _ = split_items(args.split, progress=False)
    items = [(i, path) for i, path in items if i in refs]
    lf = LongFormOptions()
    offline, _ = transcribe_items(model, items, progress=False)
    report, _ = stream_items(model, items, StreamTiming.from_ms(model, lf.chunk_ms, lf.left_context_ms))
    ids = sorted(i for i, _ in items)
    for name, hyps in (("offline", offline), ("streamed", report.hyps)):
        texts = {i: hyps[i].text for i in ids}
        errs = [first_word_errors([refs[i]], texts[i]) for i in ids]
        wer = score({i: refs[i] for i in ids}, texts).error_rate
        print(
            json.dumps(
                {
                    "per_utterance": name,
                    "wer": round(100 * wer, 2),
                    "first_word_errors": sum(e[0] for e in errs),
                    "other_errors": sum(e[1] for e in errs),
                }
            ),
            flush=True,
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True)
    p.add_argument("--split", help="a LibriSpeech-style split folder")
    p.add_argument("--refs", help="its Kaldi-style reference text")
    p.add_argument("--minutes", type=float, nargs="+", default=[1, 60])
    p.add_argument("--paths", nargs="+", default=["streaming", "windowed"], choices=["streaming", "windowed"])
    p.add_argument("--gap", type=float, default=0.0, help="seconds of silence between utterances")
    p.add_argument("--work", default="/tmp/bench_longform", help="folder for the long files")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--lead-ms", type=float, nargs="+", default=[0.0], help="LongFormOptions.lead_ms values")
    p.add_argument("--per-utterance", action="store_true", help="print the per-utterance baselines first")
    p.add_argument("--lead", type=float, default=0.0, help=argparse.SUPPRESS)  # child mode: one lead_ms
    p.add_argument("--file", help=argparse.SUPPRESS)  # child mode: decode this file
    p.add_argument("--windowed", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.file:
        return child(args)
    from asr.metrics import read_kaldi_text, score

    refs = read_kaldi_text(args.refs)
    if args.per_utterance:
        per_utterance(args, refs)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    for minutes in args.minutes:
        f = work / f"concat_{minutes:g}min_gap{args.gap:g}.wav"
        sentences = build(Path(args.split), refs, 60 * minutes, f, args.gap)
        ref = " ".join(sentences)
        for lead, path in ((lead, path) for lead in args.lead_ms for path in args.paths):
            cmd = [sys.executable, __file__, "--ckpt", args.ckpt, "--file", str(f), "--threads", str(args.threads)]
            cmd += ["--lead", str(lead)] + (["--windowed"] if path == "windowed" else [])
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode:
                print(out.stderr, file=sys.stderr)
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            text = r.pop("text")
            wer = score({"x": ref}, {"x": text}).error_rate
            first, other = first_word_errors(sentences, text)
            row = {"minutes": minutes, "lead_ms": lead, **r, "wer": round(100 * wer, 2)}
            print(json.dumps({**row, "first_word_errors": first, "other_errors": other}), flush=True)


if __name__ == "__main__":
    main()
