"""Generalization on the open-vocabulary corpus: a model trained for a few CPU minutes on the
`tiny` open corpus (2000 sentences of fortunes and WordNet examples, 1.8 h) transcribes sentences
it never heard, in voices it never heard (held-out espeak-ng variants and flite's slt, through
their own noisy and reverberant channels), with most characters right.

Measured 2026-11-24 on dev-cpu at exactly these settings (char tokenizer, a 1.7M-parameter
Conformer-CTC, 14 epochs of 114 steps, 36 s an epoch, 9 min 8 s for the whole test): test CER
39.67%, WER 86.12%; 18.2% of the test words never occur in the training text. After 8 epochs
the same run was at 58.69% CER. CER_THRESHOLD 50% sits 10 points above the measurement and under
both an 8-epoch model and the grammar-trained demo model (about 75% CER on plain English); an
untrained model scores ~100%. WER stays high at this budget: most words have a character wrong
(the model spells by sound: THE SILVER LINING -> THE SO THE LIIN after 8 epochs).
"""

from __future__ import annotations

import pytest

from asr.cli import main
from asr.data.open_text import oov_rate
from asr.data.sizes import SIZES
from asr.data.synthetic import synthesize_corpus
from asr.metrics import read_kaldi_text, score

EPOCHS = 14
CER_THRESHOLD = 0.50
SETTINGS = [
    "model=conformer_ctc",
    "data=open",
    "data.max_duration=60",
    "model.encoder.d_model=128",
    "model.encoder.num_layers=4",
    "optim.warmup_steps=200",
    "trainer.enable_progress_bar=false",
    "cmvn_utterances=200",
    "num_threads=2",
]


@pytest.mark.slow
def test_ctc_generalizes_to_unseen_sentences_and_voices(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("open_train")
    corpus = synthesize_corpus(tmp / "LibriSpeech", SIZES["open"]["tiny"], seed=0, jobs=2, text="open")
    man = tmp / "manifests"
    assert main(["prepare", "librispeech", "--root", str(corpus), "--out", str(man), "--tokenizer", "char"]) == 0
    exp = tmp / "exp"
    overrides = [f"exp_dir={exp}", f"data.manifest_dir={man}", f"data.tokenizer={man / 'tokenizer_char.model'}"]
    overrides.append(f"trainer.max_epochs={EPOCHS}")
    assert main(["train", *SETTINGS, *overrides]) == 0
    hyp = exp / "hyp.txt"
    assert main(["transcribe", "--ckpt", str(exp / "best.ckpt"), "--data", str(corpus / "test-clean"),
                 "--out", str(hyp), "--quiet"]) == 0  # fmt: skip
    refs, hyps = read_kaldi_text(man / "test-clean.ref.txt"), read_kaldi_text(hyp)
    train_text = list(read_kaldi_text(man / "train-clean.ref.txt").values())
    assert not set(refs.values()) & set(train_text)  # every test sentence is unseen
    tok_oov, _ = oov_rate(list(refs.values()), train_text)
    cer, wer = score(refs, hyps, cer=True), score(refs, hyps)
    print(f"open tiny: test CER {100 * cer.error_rate:.2f}%, WER {100 * wer.error_rate:.2f}%, OOV {100 * tok_oov:.1f}%")
    assert len(cer.utts) == SIZES["open"]["tiny"]["test-clean"] and not cer.missing
    assert cer.error_rate < CER_THRESHOLD
