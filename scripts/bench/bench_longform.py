"""Long-form decoding: peak memory and speed for 1 minute vs 1 hour, and WER of the concatenation.

Builds one long file by concatenating a prepared split's test utterances (repeated to the
length asked), then decodes the 1-minute and the 1-hour file long-form, each in a fresh
subprocess (peak RSS is per process: resource.getrusage maxrss), by the streaming path and
the windowed path, and compares the WER of the concatenation with that of the utterances
decoded one by one.

    python scripts/bench/bench_longform.py --ckpt exp/x/best.ckpt --split DIR/test-clean \\
        --refs DIR/manifests/test-clean.ref.txt --minutes 1 60
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path


def build(split: Path, refs: dict[str, str], seconds: float, out: Path, gap: float) -> str:
    """Concatenate the split's utterances (sorted by id, repeated) into `out` until it lasts
    `seconds`; returns the reference text of the whole file."""
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
    return " ".join(refs[i] for i in order)


def child(args: argparse.Namespace) -> None:
    """Decode one file long-form and print a JSON line of figures."""
    import torch

    from asr.longform import LongFormOptions, transcribe_long
    from asr.model import load_model

    torch.set_num_threads(args.threads)
    model = load_model(args.ckpt)
    tr, st = transcribe_long(model, args.file, long_form=LongFormOptions(windowed=args.windowed), progress=False)
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
    p.add_argument("--file", help=argparse.SUPPRESS)  # child mode: decode this file
    p.add_argument("--windowed", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.file:
        return child(args)
    from asr.metrics import read_kaldi_text, score

    refs = read_kaldi_text(args.refs)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    for minutes in args.minutes:
        f = work / f"concat_{minutes:g}min_gap{args.gap:g}.wav"
        ref = build(Path(args.split), refs, 60 * minutes, f, args.gap)
        for path in args.paths:
            cmd = [sys.executable, __file__, "--ckpt", args.ckpt, "--file", str(f), "--threads", str(args.threads)]
            out = subprocess.run(cmd + (["--windowed"] if path == "windowed" else []), capture_output=True, text=True)
            if out.returncode:
                print(out.stderr, file=sys.stderr)
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            wer = score({"x": ref}, {"x": r.pop("text")}).error_rate
            print(json.dumps({"minutes": minutes, **r, "wer": round(100 * wer, 2)}), flush=True)


if __name__ == "__main__":
    main()
