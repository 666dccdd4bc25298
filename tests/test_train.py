"""End-to-end: synthesize speech, prepare, train Conformer-CTC for ~3 CPU minutes,
decode held-out speakers through the CLI, score, and resume.

Threshold: an untrained model scores ~100% WER (empty or garbage output). This
configuration reaches ~17-25% WER on the held-out test speakers after 18 epochs
(~3 minutes on 2 cores; half the budget still leaves it at 45-60%). WER < 40% leaves
a 2x margin for run-to-run variance, and any break in features, masking, targets or
the loss keeps it far above that.
"""
from __future__ import annotations

import pytest
import torch

from asr.cli import main
from asr.data.synthetic import synthesize_corpus
from asr.metrics import read_kaldi_text, score

EPOCHS = 18
WER_THRESHOLD = 0.40
COMMON = [
    "data.max_duration=30", "model.encoder.d_model=96", "model.encoder.num_layers=4",
    "model.optim.warmup_steps=100", "trainer.enable_progress_bar=false", "cmvn_utterances=200",
]


@pytest.mark.slow
def test_conformer_ctc_learns_on_held_out_speakers(tmp_path_factory, capsys):
    tmp = tmp_path_factory.mktemp("train")
    corpus = synthesize_corpus(tmp / "LibriSpeech", {"train-clean": 600, "dev-clean": 40, "test-clean": 60}, seed=7, jobs=2)
    man, exp = tmp / "manifests", tmp / "exp"
    assert main(["prepare", "librispeech", "--root", str(corpus), "--out", str(man), "--tokenizer", "char"]) == 0
    overrides = [f"exp_dir={exp}", f"data.manifest_dir={man}", f"trainer.max_epochs={EPOCHS}", *COMMON]
    assert main(["train", *overrides]) == 0
    assert (exp / "best.ckpt").exists() and (exp / "checkpoints" / "last.ckpt").exists()
    assert (exp / "csv" / "version_0" / "metrics.csv").read_text().count("\n") > EPOCHS
    assert list((exp / "tb" / "version_0").glob("events.out.tfevents.*"))

    hyp = tmp / "hyp.txt"
    assert main(["transcribe", "--ckpt", str(exp / "best.ckpt"), "--data", str(corpus / "test-clean"),
                 "--out", str(hyp), "--quiet"]) == 0
    rep = score(read_kaldi_text(man / "test-clean.ref.txt"), read_kaldi_text(hyp))
    print(rep.summary())
    assert len(rep.utts) == 60 and not rep.missing
    assert rep.error_rate < WER_THRESHOLD, rep.summary()

    # Beam search is at least as good as greedy here, give or take an utterance.
    hyp_beam = tmp / "hyp_beam.txt"
    main(["transcribe", "--ckpt", str(exp / "best.ckpt"), "--data", str(corpus / "test-clean"),
          "--out", str(hyp_beam), "--method", "beam", "--beam", "4", "--quiet"])
    rep_beam = score(read_kaldi_text(man / "test-clean.ref.txt"), read_kaldi_text(hyp_beam))
    assert rep_beam.error_rate <= rep.error_rate + 0.03

    # File mode prints "utt-id TEXT" lines.
    files = sorted((corpus / "test-clean").rglob("*.flac"))[:2]
    capsys.readouterr()
    main(["transcribe", "--ckpt", str(exp / "best.ckpt"), *map(str, files), "--quiet"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert [l.split()[0] for l in lines] == [f.stem for f in files]

    # Resume continues from last.ckpt rather than starting again.
    step_before = torch.load(exp / "checkpoints" / "last.ckpt", weights_only=False)["global_step"]
    with pytest.raises(FileExistsError, match="resume=true"):
        main(["train", *overrides])
    assert main(["train", *overrides[:2], f"trainer.max_epochs={EPOCHS + 1}", *COMMON, "resume=true"]) == 0
    last = torch.load(exp / "checkpoints" / "last.ckpt", weights_only=False)
    assert last["epoch"] == EPOCHS and last["global_step"] > step_before
    # the first run's logs are kept; the resumed run logs beside them
    assert (exp / "csv" / "version_0" / "metrics.csv").read_text().count("\n") > EPOCHS
    assert (exp / "csv" / "version_1" / "metrics.csv").exists()
