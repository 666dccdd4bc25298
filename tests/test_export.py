"""`asr export` to ONNX, decoded by onnxruntime (`asr transcribe --onnx`) and by sherpa-onnx.

Fast tests build small untrained models in Python: the graphs equal PyTorch, `asr transcribe
--onnx` equals `model.transcribe` greedy, and heads without an export are errors naming them.
The slow test trains a Conformer-CTC and a Conformer RNN-T (10 epochs each, one thread) on a synthesized
corpus (module fixture) and decodes its test split with sherpa-onnx's offline recognizer.
Measured 2026-11-24 (2 cores, beside a `make demo`): fast tests 32 s; slow tests 2 min 23 s in all,
CTC 83.86% WER and RNN-T 90.18% (greedy, one label a frame) from `asr transcribe`, `--onnx` and
sherpa-onnx alike, 40 of 40 hypotheses identical. The models are weak at this budget; what is
tested is that three runtimes agree on them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_train import COMMON

from asr.cli import main
from asr.data.audio import load_audio, pad_waves
from asr.data.synthetic import synthesize_corpus
from asr.data.tokenizer import Tokenizer
from asr.export import ExportError, ExportOptions, export_model
from asr.metrics import read_kaldi_text, score
from asr.model import ASRModel, load_model
from asr.onnx_model import OnnxModel, sherpa_offline_recognizer

ENCODER = {"name": "conformer", "d_model": 64, "num_layers": 2, "num_heads": 4, "conv_kernel": 7}
PARITY = 1e-4  # max |ONNX - PyTorch| of the encoder graph's output (measured ~1e-6)
# sherpa-onnx against `asr transcribe` (greedy): the bounds
WER_MARGIN = 0.003
IDENTICAL = 0.97


def _model(tokenizer: Tokenizer, heads: dict, seed: int = 0) -> ASRModel:
    """A small untrained Conformer with `heads` and CMVN statistics of speech-like level."""
    torch.manual_seed(seed)
    m = ASRModel(vocab_size=len(tokenizer), encoder=ENCODER, heads=heads)
    m.normalizer.mean.fill_(10.0)
    m.normalizer.std.fill_(3.0)
    m.tokenizer = tokenizer
    return m.eval()


def _audio(corpus: Path, split: str = "test-clean") -> tuple[list[str], torch.Tensor, torch.Tensor]:
    files = sorted((corpus / split).rglob("*.flac"))
    audio, lens = pad_waves([load_audio(f)[0] for f in files])
    return [f.stem for f in files], audio, lens


@pytest.fixture(scope="module")
def char_tokenizer(tiny_manifests) -> Tokenizer:
    return Tokenizer.load(tiny_manifests / "tokenizer_char.model")


STATELESS = {"kind": "stateless", "context_size": 2}


@pytest.mark.parametrize(
    "heads",
    [
        {"ctc": {"kind": "ctc"}},
        {"transducer": {"kind": "transducer", "loss": "rnnt", "predictor": STATELESS, "pred_dim": 48, "joint_dim": 40}},
        {
            "transducer": {
                "kind": "transducer",
                "loss": {"kind": "pruned_rnnt", "prune_range": 4},
                "predictor": {"kind": "stateless", "context_size": 1},
                "pred_dim": 32,
                "joint_dim": 32,
            }
        },
    ],
    ids=["ctc", "rnnt", "pruned_rnnt_context1"],
)
def test_export_equals_pytorch_and_transcribe_onnx_decodes_the_same(
    heads, char_tokenizer, tiny_corpus, tmp_path, one_thread
):
    """Graph output within PARITY of PyTorch on real fbank of another batch than the traced one,
    and onnxruntime greedy decoding gives model.transcribe's texts (transducers: 1 and 3 labels a frame)."""
    model = _model(char_tokenizer, heads)
    res = export_model(model, tmp_path / "onnx")
    assert res.max_abs_diff is not None and res.max_abs_diff < PARITY
    assert (tmp_path / "onnx" / "tokens.txt").read_text().splitlines()[:2] == ["<blk> 0", "<unk> 1"]
    assert "sherpa_onnx.OfflineRecognizerConfig" in (tmp_path / "onnx" / "README.md").read_text()

    _, audio, lens = _audio(tiny_corpus)
    onnx = OnnxModel(tmp_path / "onnx")
    feats, flens = onnx.fbank(audio, lens)
    graph = onnx.graph.sess if res.format == "ctc" else onnx.graph.encoder
    got, got_lens = graph.run(None, {"x": feats.numpy(), "x_lens": flens.numpy()})
    with torch.no_grad():
        enc, enc_lens = model.encoder(model.normalizer(feats, flens), flens)
        head = model.heads[res.head]
        ref = head(enc) if res.format == "ctc" else head.joint.project_enc(enc)
    assert (got_lens == enc_lens.numpy()).all()
    valid = (torch.arange(ref.shape[1])[None] < enc_lens[:, None]).numpy()
    assert np.abs(got - ref.numpy())[valid].max() < PARITY

    for max_symbols in (1, 3) if res.format == "transducer" else (1,):
        onnx = OnnxModel(tmp_path / "onnx", max_symbols=max_symbols)
        expected = model.transcribe(audio, lens, method="greedy", max_symbols=max_symbols)
        assert onnx.transcribe(audio, lens) == expected
        assert any(expected), "an untrained model that emits nothing tests nothing"


@pytest.mark.parametrize(
    "heads,name,reason",
    [
        ({"tdt": {"kind": "transducer", "loss": {"kind": "tdt", "durations": [0, 1, 2]}}}, "tdt", "TDT"),
        (
            {"rnnt": {"kind": "transducer", "predictor": {"kind": "lstm", "hidden": 32}, "pred_dim": 32}},
            "rnnt",
            "LSTMPredictor",
        ),
        ({"attention": {"kind": "attention", "d_model": 32, "num_layers": 1}}, "attention", "attention head"),
    ],
)
def test_head_without_export_is_an_error_naming_it(heads, name, reason, char_tokenizer, tmp_path):
    model = _model(char_tokenizer, {"ctc": {"kind": "ctc"}, **heads})
    with pytest.raises(ExportError, match=rf"head '{name}' .*{reason}.*--head \(ctc\)"):
        export_model(model, tmp_path / "onnx", ExportOptions(head=name))
    assert not (tmp_path / "onnx").exists() or not any((tmp_path / "onnx").iterdir())
    assert export_model(model, tmp_path / "ctc", ExportOptions(head="ctc", check=False)).format == "ctc"


# ---- trained models, decoded by sherpa-onnx ---------------------------------------------------

# test_train's small Conformer (d_model 96, 4 layers) on one thread: beside another job on two
# cores, two threads each made an epoch 10x slower (measured)
TRAIN = [o for o in COMMON if not o.startswith("num_threads=")] + ["num_threads=1"]
EPOCHS = {"conformer_ctc": 10, "conformer_transducer": 10}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A Conformer-CTC and a Conformer RNN-T trained on 240 synthesized utterances, exported."""
    tmp = tmp_path_factory.mktemp("export")
    corpus = synthesize_corpus(tmp / "LibriSpeech", {"train-clean": 240, "dev-clean": 20, "test-clean": 40}, seed=3)
    man = tmp / "manifests"
    assert main(["prepare", "librispeech", "--root", str(corpus), "--out", str(man), "--tokenizer", "char"]) == 0
    for model, epochs in EPOCHS.items():
        exp = tmp / model
        args = [f"model={model}", f"exp_dir={exp}", f"data.manifest_dir={man}", f"trainer.max_epochs={epochs}"]
        assert main(["train", *args, *TRAIN]) == 0
        assert main(["export", "--ckpt", str(exp / "best.ckpt"), "--out", str(exp / "onnx")]) == 0
    return tmp, corpus, man


def sherpa_decode(folder: Path, corpus: Path) -> dict[str, str]:
    """Texts of the test split decoded by sherpa-onnx's offline recognizer (greedy, 1 thread) with
    the config the export's README gives (our fbank options)."""
    import soundfile as sf

    rec = sherpa_offline_recognizer(folder)
    hyps = {}
    for f in sorted((corpus / "test-clean").rglob("*.flac")):
        samples, rate = sf.read(f, dtype="float32")
        stream = rec.create_stream()
        stream.accept_waveform(rate, samples)
        rec.decode_stream(stream)
        hyps[f.stem] = stream.result.text.strip()
    return hyps


@pytest.mark.slow
@pytest.mark.parametrize("model", list(EPOCHS))
def test_sherpa_onnx_decodes_the_export_as_asr_transcribe_does(trained, model):
    """sherpa-onnx's WER within WER_MARGIN of `asr transcribe` greedy (--max-symbols 1 for the
    transducer: sherpa-onnx's offline greedy search emits one label a frame), at least IDENTICAL
    of the hypotheses the same; `asr transcribe --onnx` gives exactly the same hypotheses."""
    tmp, corpus, man = trained
    exp = tmp / model
    fmt = "ctc" if (exp / "onnx" / "model.onnx").exists() else "transducer"
    args = ["transcribe", "--data", str(corpus / "test-clean"), "--quiet"]
    limit = ["--max-symbols", "1"] if fmt == "transducer" else []
    ref_hyp, onnx_hyp = exp / "hyp_torch.txt", exp / "hyp_onnx.txt"
    assert main([*args, "--ckpt", str(exp / "best.ckpt"), "--out", str(ref_hyp), "--method", "greedy", *limit]) == 0
    assert main([*args, "--onnx", str(exp / "onnx"), "--out", str(onnx_hyp)]) == 0
    torch_hyps, refs = read_kaldi_text(ref_hyp), read_kaldi_text(man / "test-clean.ref.txt")
    assert read_kaldi_text(onnx_hyp) == torch_hyps

    sherpa = sherpa_decode(exp / "onnx", corpus)
    same = sum(sherpa[u] == " ".join(torch_hyps[u].split()) for u in torch_hyps) / len(torch_hyps)
    wer_torch, wer_sherpa = score(refs, torch_hyps).error_rate, score(refs, sherpa).error_rate
    print(f"{model}: asr transcribe WER {wer_torch:.2%}, sherpa-onnx {wer_sherpa:.2%}, identical {same:.1%}")
    assert 0.0 < wer_torch < 1.0, "a model at 0% or 100% WER tests little"
    assert abs(wer_sherpa - wer_torch) <= WER_MARGIN
    assert same >= IDENTICAL

    # the graph on the test split's real fbank, against PyTorch
    m = load_model(exp / "best.ckpt")
    onnx = OnnxModel(exp / "onnx")
    _, audio, lens = _audio(corpus)
    feats, flens = onnx.fbank(audio, lens)
    graph = onnx.graph.sess if fmt == "ctc" else onnx.graph.encoder
    got, _ = graph.run(None, {"x": feats.numpy(), "x_lens": flens.numpy()})
    with torch.no_grad():
        enc, enc_lens = m.encoder(m.normalizer(feats, flens), flens)
        head = m.heads[m.decode_head()]
        ref = head(enc) if fmt == "ctc" else head.joint.project_enc(enc)
    valid = (torch.arange(ref.shape[1])[None] < enc_lens[:, None]).numpy()
    assert np.abs(got - ref.numpy())[valid].max() < PARITY
