"""`asr export` to ONNX, decoded by onnxruntime (`asr transcribe --onnx`) and by sherpa-onnx.

Fast tests build small untrained models in Python: the graphs equal PyTorch, `asr transcribe
--onnx` equals `model.transcribe` greedy, the streaming chunk step (run by onnxruntime as
sherpa-onnx runs it) equals the encoder's forward_chunk, and what cannot be exported is an error
naming it. The slow tests decode one model: test_train's streaming Conformer pruned RNN-T with
an auxiliary CTC head (conftest.transducer_exp, 600 utterances, 14 epochs), exported three ways
(CTC head and transducer offline, transducer streaming at 320 ms); sherpa-onnx's offline
recognizer decodes the offline exports and its online recognizer the streaming one. Measured
2026-11-24 on the 60 held-out test utterances: CTC head 42.56% WER, transducer 10.93% offline
(greedy, one label a frame), 12.09% streamed at 320 ms; `asr transcribe` / `asr stream`, `--onnx`
and sherpa-onnx give the same WER, with 60 of 60 hypotheses identical offline (both heads) and
59 of 60 streamed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from asr.cli import main
from asr.data.audio import load_audio, pad_waves
from asr.data.tokenizer import Tokenizer
from asr.export import ExportError, ExportOptions, export_model, forward_chunks, run_streaming_graph, streaming_step
from asr.metrics import read_kaldi_text, score
from asr.model import ASRModel, load_model
from asr.onnx_model import (
    OnnxDecodeOptions,
    OnnxExportError,
    OnnxModel,
    export_metadata,
    sherpa_offline_recognizer,
    sherpa_online_recognizer,
    tail_padding_samples,
)

ENCODER = {"name": "conformer", "d_model": 64, "num_layers": 2, "num_heads": 4, "conv_kernel": 7}
PARITY = 1e-4  # max |ONNX - PyTorch| of the encoder graph's output (measured ~1e-6)
# sherpa-onnx against `asr transcribe` (greedy): the bounds
WER_MARGIN = 0.003
IDENTICAL = 0.97


def _model(tokenizer: Tokenizer, heads: dict, seed: int = 0, **encoder) -> ASRModel:
    """A small untrained Conformer with `heads` and CMVN statistics of speech-like level."""
    torch.manual_seed(seed)
    m = ASRModel(vocab_size=len(tokenizer), encoder={**ENCODER, **encoder}, heads=heads)
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
LSTM = {"kind": "lstm", "hidden": 24, "num_layers": 2}
TDT = {"kind": "tdt", "durations": [0, 1, 2, 3]}


CTC = {"ctc": {"kind": "ctc"}}


def _transducer(loss, predictor: dict, dim: int = 32, joint_dim: int | None = None) -> dict:
    spec = {"kind": "transducer", "loss": loss, "predictor": predictor, "pred_dim": dim}
    return {"transducer": {**spec, "joint_dim": joint_dim or dim}}


# the Efficient Conformer: 8x frames from block 1 on, grouped attention in the 4x stage
EFFICIENT = {"downsample_at": [1], "attention_groups": [2, 1]}
EXPORTED = {
    "ctc": (CTC, {}),
    "rnnt": (_transducer("rnnt", STATELESS, 48, 40), {}),
    "pruned_rnnt_context1": (
        _transducer({"kind": "pruned_rnnt", "prune_range": 4}, {"kind": "stateless", "context_size": 1}),
        {},
    ),
    "tdt": (_transducer(TDT, STATELESS), {}),
    "rnnt_lstm": (_transducer("rnnt", LSTM), {}),
    "tdt_lstm": (_transducer(TDT, LSTM), {}),
    "ctc_efficient": (CTC, EFFICIENT),
    "tdt_efficient": (_transducer(TDT, STATELESS), EFFICIENT),
}


@pytest.mark.parametrize("heads,encoder", list(EXPORTED.values()), ids=list(EXPORTED))
def test_export_equals_pytorch_and_transcribe_onnx_decodes_the_same(
    heads, encoder, char_tokenizer, tiny_corpus, tmp_path, one_thread
):
    """Graph output within PARITY of PyTorch on real fbank of another batch than the traced one,
    and onnxruntime greedy decoding gives model.transcribe's texts (transducers: 1 and 3 labels a
    frame; TDT with its (token, duration) decision, LSTM predictors carrying their state). TDT and
    LSTM exports are for `--onnx` only: their README says so and sherpa-onnx's recognizer refuses them."""
    model = _model(char_tokenizer, heads, **encoder)
    res = export_model(model, tmp_path / "onnx")
    assert res.max_abs_diff is not None and res.max_abs_diff < PARITY
    assert (tmp_path / "onnx" / "tokens.txt").read_text().splitlines()[:2] == ["<blk> 0", "<unk> 1"]
    head, spec = model.heads[res.head], heads[res.head]
    for_sherpa = spec.get("loss") is not TDT and spec.get("predictor") is not LSTM
    text = (tmp_path / "onnx" / "README.md").read_text()
    assert ("sherpa_onnx.OfflineRecognizerConfig" in text) == for_sherpa
    if not for_sherpa:
        assert "sherpa-onnx cannot run these graphs" in text
        with pytest.raises(OnnxExportError, match="LSTM predictor, TDT or attention"):
            sherpa_offline_recognizer(tmp_path / "onnx")
    if spec.get("loss") is TDT:
        assert export_metadata(tmp_path / "onnx" / "joiner.onnx")["durations"] == "0,1,2,3"

    _, audio, lens = _audio(tiny_corpus)
    onnx = OnnxModel(tmp_path / "onnx")
    feats, flens = onnx.fbank(audio, lens)
    graph = onnx.graph.sess if res.format == "ctc" else onnx.graph.encoder
    got, got_lens = graph.run(None, {"x": feats.numpy(), "x_lens": flens.numpy()})
    with torch.no_grad():
        enc, enc_lens = model.encoder(model.normalizer(feats, flens), flens)
        ref = head(enc) if res.format == "ctc" else head.joint.project_enc(enc)
    assert (got_lens == enc_lens.numpy()).all()
    valid = (torch.arange(ref.shape[1])[None] < enc_lens[:, None]).numpy()
    assert np.abs(got - ref.numpy())[valid].max() < PARITY

    for max_symbols in (1, 3) if res.format == "transducer" else (1,):
        onnx = OnnxModel(tmp_path / "onnx", options=OnnxDecodeOptions(max_symbols=max_symbols))
        expected = model.transcribe(audio, lens, method="greedy", max_symbols=max_symbols)
        assert onnx.transcribe(audio, lens) == expected
        assert any(expected), "an untrained model that emits nothing tests nothing"


ATTENTION = {"kind": "attention", "d_model": 32, "num_layers": 1, "num_heads": 4, "reverse_weight": 0.3}


@pytest.mark.parametrize("reverse", [0.0, 0.3])
def test_attention_export_rescores_as_attention_rescoring_does(
    reverse, char_tokenizer, tiny_corpus, tmp_path, one_thread
):
    """A CTC + attention model exported with --head attention: the encoder graph's CTC log-probs and
    memory, and both decoder graphs, equal PyTorch within PARITY; `--onnx` (CTC prefix beam n-best
    rescored by the decoder graphs) gives `--method attention_rescoring`'s texts, with the weights
    saved in the export and with others given to OnnxDecodeOptions. sherpa-onnx refuses it."""
    model = _model(char_tokenizer, {"ctc": {"kind": "ctc"}, "attention": ATTENTION})
    model.decode_options = model.decode_options.replace(beam=6, ctc_weight=0.4, reverse_weight=reverse)
    res = export_model(model, tmp_path / "onnx", ExportOptions(head="attention"))
    assert res.format == "attention" and res.max_abs_diff is not None and res.max_abs_diff < PARITY
    meta = export_metadata(tmp_path / "onnx" / "encoder.onnx")
    assert {k: meta[k] for k in ("first_pass_head", "beam", "ctc_weight")} == {
        "first_pass_head": "ctc", "beam": "6", "ctc_weight": "0.4",
    }  # fmt: skip
    assert (tmp_path / "onnx" / "attention_decoder_r2l.onnx").exists()
    assert "attention_rescoring" in (tmp_path / "onnx" / "README.md").read_text()
    with pytest.raises(OnnxExportError, match="LSTM predictor, TDT or attention"):
        sherpa_offline_recognizer(tmp_path / "onnx")

    # the decoder graph on hypotheses of several lengths (padding after the shorter ones)
    import onnxruntime as ort

    head = model.heads["attention"]
    g = torch.Generator().manual_seed(5)
    enc, enc_lens = torch.randn(3, 40, ENCODER["d_model"], generator=g), torch.tensor([40, 31, 12])
    memory, _ = head.memory(enc, enc_lens)
    ys = torch.randint(0, len(char_tokenizer), (3, 9), generator=g)
    ys[:, 0] = head.sos
    for file, decoder in (("attention_decoder.onnx", head.decoder), ("attention_decoder_r2l.onnx", head.r_decoder)):
        sess = ort.InferenceSession(str(tmp_path / "onnx" / file), providers=["CPUExecutionProvider"])
        got = sess.run(None, {"memory": memory.detach().numpy(), "memory_lens": enc_lens.numpy(), "ys_in": ys.numpy()})
        valid = torch.arange(40)[None] < enc_lens[:, None]
        with torch.no_grad():
            ref = decoder(ys, None, memory, valid).log_softmax(-1)
        assert np.abs(got[0] - ref.numpy()).max() < PARITY

    _, audio, lens = _audio(tiny_corpus)
    for options in (OnnxDecodeOptions(), OnnxDecodeOptions(beam=3, ctc_weight=0.8, reverse_weight=0.5)):
        onnx = OnnxModel(tmp_path / "onnx", options=options)
        beam, ctc_w = options.beam or 6, 0.4 if options.ctc_weight is None else options.ctc_weight
        rev = reverse if options.reverse_weight is None else options.reverse_weight
        expected = model.transcribe(
            audio, lens, method="attention_rescoring", beam=beam, ctc_weight=ctc_w, reverse_weight=rev
        )
        assert onnx.transcribe(audio, lens) == expected
        assert len(set(expected)) > 1, "an untrained model that emits one text for all tests nothing"


def test_head_without_export_is_an_error_naming_it(char_tokenizer, tmp_path):
    """TAED (its predictor is the attention decoder: no decoder graph) and an attention head with no
    CTC head to rescore: errors naming the head and why, nothing written."""
    taed = {"kind": "taed", "decoder": {"d_model": 32, "num_layers": 1}, "joint_dim": 32}
    model = _model(char_tokenizer, {"ctc": {"kind": "ctc"}, "taed": taed})
    with pytest.raises(ExportError, match=r"head 'taed' \(taed\) .*no ONNX decoder graph.*--head \(ctc\)"):
        export_model(model, tmp_path / "onnx", ExportOptions(head="taed"))
    assert not (tmp_path / "onnx").exists() or not any((tmp_path / "onnx").iterdir())
    assert export_model(model, tmp_path / "ctc", ExportOptions(head="ctc", check=False)).format == "ctc"
    tr = {"kind": "transducer", "loss": "rnnt", "predictor": STATELESS, "pred_dim": 32, "joint_dim": 32}
    model = _model(char_tokenizer, {"transducer": tr, "attention": ATTENTION})
    with pytest.raises(ExportError, match=r"rescores a CTC head's n-best, and this model has none"):
        export_model(model, tmp_path / "att", ExportOptions(head="attention"))


PRUNED = {
    "transducer": {
        "kind": "transducer",
        "loss": {"kind": "pruned_rnnt", "prune_range": 4},
        "predictor": STATELESS,
        "pred_dim": 32,
        "joint_dim": 32,
    }
}


@pytest.mark.parametrize("chunk_ms,left_ms", [(320, 2560), (160, 200)])
def test_streaming_step_equals_forward_chunk(chunk_ms, left_ms, char_tokenizer, tiny_corpus, tmp_path, one_thread):
    """The exported chunk step, run by onnxruntime as sherpa-onnx runs it (overlapping windows,
    caches from zeros, processed_lens), equals `asr stream`'s encoder.forward_chunk (projected by the
    joint) over every whole chunk of real speech, within PARITY; it also did so on random features
    (export's own check). The metadata is what sherpa-onnx's streaming conformer reads."""
    import onnxruntime as ort

    model = _model(char_tokenizer, PRUNED, causal=True)
    opts = ExportOptions(streaming=True, chunk_ms=chunk_ms, left_context_ms=left_ms)
    res = export_model(model, tmp_path / "onnx", opts)
    assert res.format == "streaming_transducer"
    assert res.max_abs_diff is not None and res.max_abs_diff < PARITY

    step = streaming_step(model, opts)
    meta = export_metadata(tmp_path / "onnx" / "encoder.onnx")
    frames = chunk_ms // 40
    expected = {
        "model_type": "conformer",
        "num_encoder_layers": ENCODER["num_layers"],
        "T": 4 * frames + 3,
        "decode_chunk_len": 4 * frames,
        "pad_length": 3,
        "left_context": left_ms // 40,
        "encoder_dim": ENCODER["d_model"],
        "cnn_module_kernel": ENCODER["conv_kernel"],
    }
    assert {k: meta[k] for k in expected} == {k: str(v) for k, v in expected.items()}
    assert "OnlineRecognizerConfig" in (tmp_path / "onnx" / "README.md").read_text()

    _, audio, lens = _audio(tiny_corpus)
    feats, _ = model.fbank(audio[:3], lens[:3])  # the longest utterance sets the chunks: all rows run
    chunks = (feats.shape[1] - step.pad_length) // step.decode_chunk_len
    sess = ort.InferenceSession(str(tmp_path / "onnx" / "encoder.onnx"), providers=["CPUExecutionProvider"])
    got = run_streaming_graph(sess, feats, step, chunks)
    with torch.no_grad():
        norm = model.normalizer(feats, torch.full((3,), feats.shape[1]))
        ref = model.heads["transducer"].joint.project_enc(forward_chunks(model.encoder, norm, step))
    assert got.shape == ref.shape and chunks > left_ms // chunk_ms  # past the first chunks' masked cache
    assert (got - ref).abs().max() < PARITY

    with pytest.raises(OnnxExportError, match="streaming export"):
        OnnxModel(tmp_path / "onnx")


def test_streaming_export_errors_name_the_reason(char_tokenizer, tmp_path):
    """A CTC head, a non-causal Conformer, an unlimited or misaligned left context: errors that say so."""
    on = ExportOptions(streaming=True)
    with pytest.raises(ExportError, match=r"--streaming: head 'ctc' is ctc.*transducer"):
        export_model(_model(char_tokenizer, {"ctc": {"kind": "ctc"}}, causal=True), tmp_path / "a", on)
    with pytest.raises(ExportError, match=r"--streaming: .*not causal"):
        export_model(_model(char_tokenizer, PRUNED), tmp_path / "b", on)
    causal = _model(char_tokenizer, PRUNED, causal=True)
    with pytest.raises(ExportError, match=r"fixed left context"):
        export_model(causal, tmp_path / "c", ExportOptions(streaming=True, left_context_ms=-1))
    with pytest.raises(ExportError, match=r"multiples of the 40 ms encoder frame"):
        export_model(causal, tmp_path / "d", ExportOptions(streaming=True, chunk_ms=300))
    tdt = {"transducer": {"kind": "transducer", "loss": TDT, "predictor": STATELESS}}
    with pytest.raises(ExportError, match=r"--streaming: head 'transducer' has an LSTM predictor or TDT"):
        export_model(_model(char_tokenizer, tdt, causal=True), tmp_path / "e", on)
    with pytest.raises(ExportError, match=r"one frame rate and ungrouped attention.*export it offline"):
        export_model(_model(char_tokenizer, PRUNED, causal=True, **EFFICIENT), tmp_path / "f", on)


# ---- trained models, decoded by sherpa-onnx ---------------------------------------------------

# One trained model serves every slow test: the shared streaming pruned RNN-T with an auxiliary
# CTC head (conftest.transducer_exp, whose accuracy test_train checks), exported three ways: its
# CTC head and its transducer offline, its transducer streaming.
HEADS = ["ctc", "transducer"]  # exported offline, each on its own
STREAM_CHUNK_MS, STREAM_LEFT_MS = "320", "2560"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, prepared, transducer_exp):
    """(folder, corpus, manifests): the folder holds the shared transducer's best.ckpt and its exports
    offline per head (onnx_ctc, onnx_transducer) and streaming (onnx_stream)."""
    import shutil

    _, corpus, man = prepared
    exp = tmp_path_factory.mktemp("export")
    shutil.copy(transducer_exp / "best.ckpt", exp / "best.ckpt")
    ckpt = ["export", "--ckpt", str(exp / "best.ckpt")]
    for head in HEADS:
        assert main([*ckpt, "--out", str(exp / f"onnx_{head}"), "--head", head]) == 0
    stream = ["--streaming", "--chunk-ms", STREAM_CHUNK_MS, "--left-context-ms", STREAM_LEFT_MS]
    assert main([*ckpt, "--out", str(exp / "onnx_stream"), *stream]) == 0
    return exp, corpus, man


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
@pytest.mark.parametrize("head", HEADS)
def test_sherpa_onnx_decodes_the_export_as_asr_transcribe_does(trained, head):
    """sherpa-onnx's WER within WER_MARGIN of `asr transcribe` greedy (--max-symbols 1 for the
    transducer: sherpa-onnx's offline greedy search emits one label a frame), at least IDENTICAL
    of the hypotheses the same; `asr transcribe --onnx` gives exactly the same hypotheses."""
    exp, corpus, man = trained
    onnx_dir, fmt = exp / f"onnx_{head}", head
    args = ["transcribe", "--data", str(corpus / "test-clean"), "--quiet"]
    limit = ["--max-symbols", "1"] if fmt == "transducer" else []
    ref_hyp, onnx_hyp = exp / f"hyp_torch_{head}.txt", exp / f"hyp_onnx_{head}.txt"
    ckpt = ["--ckpt", str(exp / "best.ckpt"), "--head", head]
    assert main([*args, *ckpt, "--out", str(ref_hyp), "--method", "greedy", *limit]) == 0
    assert main([*args, "--onnx", str(onnx_dir), "--out", str(onnx_hyp)]) == 0
    torch_hyps, refs = read_kaldi_text(ref_hyp), read_kaldi_text(man / "test-clean.ref.txt")
    assert read_kaldi_text(onnx_hyp) == torch_hyps

    sherpa = sherpa_decode(onnx_dir, corpus)
    same = sum(sherpa[u] == " ".join(torch_hyps[u].split()) for u in torch_hyps) / len(torch_hyps)
    wer_torch, wer_sherpa = score(refs, torch_hyps).error_rate, score(refs, sherpa).error_rate
    print(f"{head}: asr transcribe WER {wer_torch:.2%}, sherpa-onnx {wer_sherpa:.2%}, identical {same:.1%}")
    assert 0.0 < wer_torch < 1.0, "a model at 0% or 100% WER tests little"
    assert len(set(torch_hyps.values())) >= 0.9 * len(torch_hyps), "hypotheses all alike agree trivially"
    assert abs(wer_sherpa - wer_torch) <= WER_MARGIN
    assert same >= IDENTICAL

    # the graph on the test split's real fbank, against PyTorch
    m = load_model(exp / "best.ckpt")
    onnx = OnnxModel(onnx_dir)
    _, audio, lens = _audio(corpus)
    feats, flens = onnx.fbank(audio, lens)
    graph = onnx.graph.sess if fmt == "ctc" else onnx.graph.encoder
    got, _ = graph.run(None, {"x": feats.numpy(), "x_lens": flens.numpy()})
    with torch.no_grad():
        enc, enc_lens = m.encoder(m.normalizer(feats, flens), flens)
        h = m.heads[head]
        ref = h(enc) if fmt == "ctc" else h.joint.project_enc(enc)
    valid = (torch.arange(ref.shape[1])[None] < enc_lens[:, None]).numpy()
    assert np.abs(got - ref.numpy())[valid].max() < PARITY


def sherpa_stream_decode(folder: Path, corpus: Path, chunk_ms: float) -> tuple[dict[str, str], float, float]:
    """Texts of the test split streamed through sherpa-onnx's online recognizer (greedy, 1 thread)
    in blocks of chunk_ms, as a live source delivers them, then the fewest zeros that make it decode
    the last partial chunk (tail_padding_samples). Returns (texts, compute seconds, audio seconds)."""
    import time

    import soundfile as sf

    rec = sherpa_online_recognizer(folder)
    hyps, compute, audio = {}, 0.0, 0.0
    for f in sorted((corpus / "test-clean").rglob("*.flac")):
        samples, rate = sf.read(f, dtype="float32")
        tail = np.zeros(tail_padding_samples(folder, len(samples)), dtype=np.float32)
        block = int(rate * chunk_ms / 1000)
        t0 = time.perf_counter()
        stream = rec.create_stream()
        for piece in [*(samples[i : i + block] for i in range(0, len(samples), block)), tail]:
            stream.accept_waveform(rate, piece)
            while rec.is_ready(stream):
                rec.decode_stream(stream)
        stream.input_finished()
        while rec.is_ready(stream):
            rec.decode_stream(stream)
        hyps[f.stem] = rec.get_result(stream).text.strip()
        compute += time.perf_counter() - t0
        audio += len(samples) / rate
    return hyps, compute, audio


@pytest.mark.slow
def test_sherpa_onnx_online_decodes_the_streaming_export_as_asr_stream_does(trained):
    """sherpa-onnx's online recognizer (greedy: one label a frame) on `asr export --streaming`
    gives `asr stream --max-symbols 1`'s final hypotheses (same chunk and left context) for at
    least IDENTICAL of the test split. Its only input that differs: the last chunk, which
    `asr stream` decodes as it is and sherpa-onnx with the zeros that fill it."""
    exp, corpus, man = trained
    ref_hyp = exp / "hyp_stream.txt"
    stream = ["stream", "--ckpt", str(exp / "best.ckpt"), "--data", str(corpus / "test-clean"), "--out", str(ref_hyp)]
    opts = ["--chunk-ms", STREAM_CHUNK_MS, "--left-context-ms", STREAM_LEFT_MS, "--head", "transducer"]
    assert main([*stream, *opts, "--method", "greedy", "--max-symbols", "1", "--quiet", "--threads", "1"]) == 0
    torch_hyps, refs = read_kaldi_text(ref_hyp), read_kaldi_text(man / "test-clean.ref.txt")

    sherpa, compute, audio = sherpa_stream_decode(exp / "onnx_stream", corpus, float(STREAM_CHUNK_MS))
    same = sum(sherpa[u] == " ".join(torch_hyps[u].split()) for u in torch_hyps) / len(torch_hyps)
    wer_torch, wer_sherpa = score(refs, torch_hyps).error_rate, score(refs, sherpa).error_rate
    print(
        f"streaming: asr stream WER {wer_torch:.2%}, sherpa-onnx online {wer_sherpa:.2%}, identical {same:.1%}; "
        f"sherpa-onnx RTFx {audio / compute:.1f} (1 thread)"
    )
    assert 0.0 < wer_torch < 1.0, "a model at 0% or 100% WER tests little"
    assert len(set(torch_hyps.values())) >= 0.9 * len(torch_hyps), "hypotheses all alike agree trivially"
    assert same >= IDENTICAL
