#!/usr/bin/env python
"""Train every model config on the synthetic corpus and tabulate test WER and training time.

    python scripts/bench/bench_configs.py [--epochs 10] [--models conformer_tdt ...] [--out exp/bench_configs]

Needs the demo corpus (`make demo`, or `asr prepare synthetic --size demo`). Each model
is trained with `asr train model=NAME trainer.max_epochs=EPOCHS` (same data, seed and
batches), then the test split is decoded greedily and with beam 4. Results are appended
to OUT/results.jsonl as they finish, so an interrupted run keeps what it measured, and
the table is printed (Markdown) at the end.

Extra `asr train` overrides go first (after the options, --models would take them), e.g.
the same corpus with a 256-piece BPE tokenizer (`asr prepare librispeech --root
data/synthetic/LibriSpeech --out data/synthetic_bpe/manifests --tokenizer bpe --vocab-size 256`
and a link data/synthetic_bpe/LibriSpeech -> ../synthetic/LibriSpeech):

    python scripts/bench/bench_configs.py 'data.tokenizer=${data.manifest_dir}/tokenizer_bpe.model' \\
        --epochs 6 --data data/synthetic_bpe --out exp/bench_bpe --models conformer_tdt conformer_pruned_transducer
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from asr.metrics import read_kaldi_text, score

MODELS = [
    "conformer_ctc",
    "conformer_transducer",
    "conformer_pruned_transducer",
    "conformer_tdt",
    "conformer_pruned_tdt",
    "conformer_hybrid_tdt_ctc",
    "lstm_transducer",
    "mingru_ctc",
]


def run(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--models", nargs="*", default=MODELS)
    p.add_argument("--data", default="data/synthetic")
    p.add_argument("--out", default="exp/bench_configs")
    p.add_argument("overrides", nargs="*", help="extra `asr train` overrides for every model (put them first)")
    a = p.parse_args()
    asr = str(Path(sys.executable).parent / "asr")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    refs = read_kaldi_text(f"{a.data}/manifests/test-clean.ref.txt")
    test_dir = f"{a.data}/LibriSpeech/test-clean"
    for name in a.models:
        exp = out / name
        if (exp / "best.ckpt").exists():
            print(f"{name}: {exp}/best.ckpt exists, skipping training (delete it to retrain)")
            train_s = None
        else:
            train_s = run(
                [
                    asr,
                    "train",
                    f"model={name}",
                    f"exp_dir={exp}",
                    f"trainer.max_epochs={a.epochs}",
                    "trainer.enable_progress_bar=false",
                    f"data.manifest_dir={a.data}/manifests",
                    *a.overrides,
                ]
            )
        row = {"model": name, "epochs": a.epochs, "train_s": train_s}
        heads = ["default"] + (["ctc"] if "hybrid" in name else [])
        for head in heads:
            for method in ("greedy", "beam"):
                hyp = exp / f"hyp_{head}_{method}.txt"
                cmd = [
                    asr,
                    "transcribe",
                    "--ckpt",
                    str(exp / "best.ckpt"),
                    "--data",
                    test_dir,
                    "--out",
                    str(hyp),
                    "--method",
                    method,
                    "--beam",
                    "4",
                    "--quiet",
                    "--threads",
                    "2",
                ]
                if head != "default":
                    cmd += ["--head", head]
                dec_s = run(cmd)
                rep = score(refs, read_kaldi_text(hyp))
                row[f"{head}_{method}_wer"] = round(100 * rep.error_rate, 2)
                row[f"{head}_{method}_decode_s"] = round(dec_s, 1)
        with open(out / "results.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    print("| model | epochs | train time | test WER greedy | test WER beam 4 |")
    print("|---|---|---|---|---|")
    for r in rows:
        t = f"{r['train_s'] / 60:.1f} min" if r.get("train_s") else "-"
        print(f"| {r['model']} | {r['epochs']} | {t} | {r['default_greedy_wer']:.2f}% | {r['default_beam_wer']:.2f}% |")
        if "ctc_greedy_wer" in r:
            print(f"| {r['model']} (CTC head) | | | {r['ctc_greedy_wer']:.2f}% | {r['ctc_beam_wer']:.2f}% |")


if __name__ == "__main__":
    main()
