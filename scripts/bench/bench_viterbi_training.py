#!/usr/bin/env python
"""Full-sum against Viterbi transducer training on the synthetic corpus: step time and WER.

    python scripts/bench/bench_viterbi_training.py [--work /tmp/viterbi_training] [--epochs 14]
        [--warm-epochs 4] [--runs full,viterbi,warm] [--model conformer_transducer] [overrides...]

The corpus and model are tests/test_train.py's transducer setting: 600 synthesized training
utterances from 8 voices, dev (40) and test (60) from held-out voices, char tokenizer, a
4-layer d_model 96 Conformer, 30 s batches, 2 threads. Runs, each `--epochs` epochs from the
same seed:
  full     the full-sum loss (the model config's loss)
  viterbi  Viterbi training from scratch: {kind: <its kind>, viterbi: true}
  warm     full-sum for the first --warm-epochs epochs, then Viterbi ({full_sum_steps: N},
           N = the training steps of those epochs, read off the full run's log)
With --corpus/--manifests an existing prepared corpus replaces the synthesized one (e.g. the
demo corpus of `make demo`: data/synthetic/LibriSpeech and data/synthetic/manifests); the
model overrides stay. For each: training wall time (validation included), steps, and greedy and beam-4 WER on the
test split with best.ckpt (by dev WER). Each run starts afresh in --work/<model>_<run>
(warm: <model>_warm<warm epochs>; an earlier run's folder there is removed); the corpus there
is reused. The step time alone (features + forward + backward + optimizer on one demo-like
batch) is scripts/bench/bench_train_step.py's, with the same model overrides.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import time
from pathlib import Path

from asr.cli import main as asr
from asr.data.synthetic import synthesize_corpus
from asr.metrics import read_kaldi_text, score

# tests/test_train.py's COMMON: the transducer test's figures (14.19% greedy at 14 epochs) anchor the full run
COMMON = [
    "data.max_duration=30",
    "model.encoder.d_model=96",
    "model.encoder.num_layers=4",
    "optim.warmup_steps=100",
    "trainer.enable_progress_bar=false",
    "cmvn_utterances=200",
    "num_threads=2",
]


def prepare(work: Path) -> tuple[Path, Path]:
    corpus, man = work / "LibriSpeech", work / "manifests"
    if not (man / "test-clean.ref.txt").exists():
        synthesize_corpus(corpus, {"train-clean": 600, "dev-clean": 40, "test-clean": 60}, seed=7, jobs=2)
        assert asr(["prepare", "librispeech", "--root", str(corpus), "--out", str(man), "--tokenizer", "char"]) == 0
    return corpus, man


def steps_after(exp: Path, epochs: int) -> int:
    """The global step at which epoch `epochs` starts, from a finished run's CSV log."""
    with open(exp / "csv" / "version_0" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("epoch") not in (None, "") and r.get("step")]
    last = [int(r["step"]) for r in rows if int(float(r["epoch"])) == epochs - 1]
    if not last:
        raise SystemExit(f"{exp} logged no step of epoch {epochs - 1}")
    return max(last) + 1


def wer(exp: Path, corpus: Path, man: Path, name: str, *args: str) -> str:
    out = exp / f"hyp_{name}.txt"
    cmd = ["transcribe", "--ckpt", str(exp / "best.ckpt"), "--data", str(corpus / "test-clean"), "--out", str(out)]
    assert asr([*cmd, "--quiet", *args]) == 0
    rep = score(read_kaldi_text(man / "test-clean.ref.txt"), read_kaldi_text(out))
    return f"{100 * rep.error_rate:.2f}%"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=Path("/tmp/viterbi_training"))
    p.add_argument("--model", default="conformer_transducer")
    p.add_argument("--kind", default="rnnt", help="the loss kind of the Viterbi runs (rnnt | tdt)")
    p.add_argument("--loss-options", default="", help="options of that loss besides viterbi, e.g. durations:[0,1,2]")
    p.add_argument("--epochs", type=int, default=14)
    p.add_argument("--warm-epochs", type=int, default=4)
    p.add_argument("--runs", default="full,viterbi,warm")
    p.add_argument("--corpus", type=Path, help="a prepared LibriSpeech-style root to use instead (with --manifests)")
    p.add_argument("--manifests", type=Path, help="its manifests folder (asr prepare's --out)")
    p.add_argument("overrides", nargs="*", help="more Hydra overrides for every run")
    a = p.parse_args()
    if (a.corpus is None) != (a.manifests is None):
        raise SystemExit("--corpus and --manifests go together")
    corpus, man = (a.corpus, a.manifests) if a.corpus else prepare(a.work)
    extra = f",{a.loss_options}" if a.loss_options else ""
    results = []
    for run in a.runs.split(","):
        exp = a.work / f"{a.model}_{run}" if run != "warm" else a.work / f"{a.model}_warm{a.warm_epochs}"
        loss: list[str] = []
        if run == "viterbi":
            loss = [f"model.heads.transducer.loss={{kind:{a.kind},viterbi:true{extra}}}"]
        elif run == "warm":
            n = steps_after(a.work / f"{a.model}_full", a.warm_epochs)
            loss = [f"model.heads.transducer.loss={{kind:{a.kind},viterbi:{{full_sum_steps:{n}}}{extra}}}"]
        elif run != "full":
            raise SystemExit(f"unknown run {run!r}: full, viterbi or warm")
        shutil.rmtree(exp, ignore_errors=True)
        args = [f"model={a.model}", f"exp_dir={exp}", f"data.manifest_dir={man}", f"trainer.max_epochs={a.epochs}"]
        t0 = time.perf_counter()
        assert asr(["train", *args, *COMMON, *loss, *a.overrides]) == 0
        seconds = time.perf_counter() - t0
        steps = steps_after(exp, a.epochs)
        greedy = wer(exp, corpus, man, "greedy")
        beam = wer(exp, corpus, man, "beam4", "--method", "beam", "--beam", "4")
        results.append((run, " ".join(loss) or "(config's loss)", seconds, steps, greedy, beam))
    overrides = " ".join([*COMMON, *a.overrides])
    print(f"{a.model} on {corpus}, {a.epochs} epochs, warm start {a.warm_epochs} epochs; overrides: {overrides}")
    print("| run | loss override | train wall time | steps | s / step (with validation) | test WER greedy | beam 4 |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for run, loss, seconds, steps, greedy, beam in results:
        print(f"| {run} | `{loss}` | {seconds:.0f} s | {steps} | {seconds / steps:.3f} | {greedy} | {beam} |")


if __name__ == "__main__":
    main()
