"""`asr export`: a checkpoint's encoder and head as ONNX graphs in the formats sherpa-onnx reads.

Every encoder graph takes raw Kaldi fbank (x[N, T, 80] float32, x_lens[N] int64) and holds the
global CMVN, the encoder and the head's frame-wise part, so a runtime that computes fbank and
nothing else (sherpa-onnx) gets the model's exact input. Which files are written depends on the
head's format (`Head.export_graphs`, asr/nn/heads/export.py):

- ctc: model.onnx (x, x_lens -> log_probs[N, T', V], log_probs_len[N]); metadata
  model_type=zipformer2_ctc (sherpa-onnx's generic CTC interface, `from_zipformer_ctc`).
- transducer (stateless predictor, RNN-T loss family): encoder.onnx (x, x_lens -> encoder_out
  [N, T', J] with the joint's encoder projection, encoder_out_lens[N]), decoder.onnx (y[N, C]
  -> decoder_out[N, J]; metadata vocab_size, context_size) and joiner.onnx (encoder_out[N, J],
  decoder_out[N, J] -> logits[N, V]); sherpa-onnx's icefall transducer (`from_transducer`).

Beside them: tokens.txt ("piece id" lines, `<blk>` 0), tokenizer.model (our sentencepiece model,
which `asr transcribe --onnx` decodes text with) and README.md with the sherpa-onnx command.
Every graph's metadata also holds `asr_format` and `asr_fbank` (the FbankOptions as JSON), which
`asr transcribe --onnx` (asr/onnx_model.py) reads.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from .data.features import FbankOptions
from .model import ASRModel
from .nn.heads.export import CTCGraphs, NotExportable, TransducerGraphs

log = logging.getLogger(__name__)

OPSET = 18  # what torch's exporter writes natively (onnxruntime >= 1.14 and sherpa-onnx's 1.2x run it)
MIN_FRAMES = 9  # fbank frames the shortest input needs to give at least one encoder frame


@dataclass(frozen=True)
class ExportOptions:
    head: str | None = None  # which head to export (default: the checkpoint's decode head)
    check: bool = True  # run the graphs with onnxruntime on random features and compare with PyTorch


@dataclass
class ExportResult:
    out_dir: Path
    format: str  # "ctc" | "transducer"
    head: str  # the exported head's name
    files: list[Path] = field(default_factory=list)
    max_abs_diff: float | None = None  # encoder graph vs PyTorch on random features (options.check)


class EncoderGraph(nn.Module):
    """x[N, T, F] raw fbank, x_lens[N] -> (out[N, T', *], out_lens[N]): global CMVN, the encoder
    (full context) and the head's frame-wise part (CTC log-probs, or the joint's encoder projection)."""

    def __init__(self, model: ASRModel, head_part: nn.Module):
        super().__init__()
        self.normalizer, self.encoder, self.head_part = model.normalizer, model.encoder, head_part

    def forward(self, x: torch.Tensor, x_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y, lens = self.encoder(self.normalizer(x, x_lens), x_lens)
        return self.head_part(y), lens


class ExportError(ValueError):
    """A model or head that `asr export` cannot write; the message names it and says why."""


def head_graphs(model: ASRModel, head: str | None) -> tuple[str, CTCGraphs | TransducerGraphs]:
    """(head name, its export graphs), or ExportError naming the head and the reason."""
    name = head or model.decode_head()
    if name not in model.heads:
        raise ExportError(f"the model has no head {name!r}; its heads are {list(model.heads)}")
    try:
        return name, model.heads[name].export_graphs()
    except NotExportable as e:
        others = [h for h in model.heads if h != name]
        hint = f"; export another head with --head ({', '.join(others)})" if others else ""
        raise ExportError(f"head {name!r} ({model.heads[name].kind}) cannot be exported: {e}{hint}") from e


def _onnx_export(
    module: nn.Module,
    args: tuple[torch.Tensor, ...],
    path: Path,
    inputs: list[str],
    outputs: list[str],
    dynamic: dict[str, dict[int, object]],
    metadata: dict[str, str | int],
) -> Path:
    """torch.onnx.export (the torch.export-based exporter) into one self-contained file, then
    the metadata as the model's metadata_props (what sherpa-onnx's SHERPA_ONNX_READ_META_DATA reads)."""
    import onnx

    # the exporter's INFO/WARNING notes (optional torchvision ops it skips, its graph passes)
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "onnx_ir", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation and dynamic-shape notes
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=inputs,
            output_names=outputs,
            dynamic_shapes=tuple(dynamic.get(n, {}) for n in inputs),
            opset_version=OPSET,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    for lg, lv in zip(loggers, levels):
        lg.setLevel(lv)
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    for k, v in metadata.items():
        proto.metadata_props.add(key=k, value=str(v))
    onnx.save(proto, str(path))
    return path


def _common_metadata(model: ASRModel, fmt: str) -> dict[str, str | int]:
    return {
        "asr_format": fmt,
        "asr_fbank": json.dumps(asdict(model.fbank.opts)),
        "subsampling_factor": model.encoder.subsampling_factor,
        "model_author": "asr",
        "version": 1,
    }


def _example_features(model: ASRModel, batch: int = 2, frames: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    """Random fbank-like features x[N, T, F] and lengths (the second row shorter: padding is traced)."""
    g = torch.Generator().manual_seed(0)
    f = model.fbank.opts.num_mel_bins
    x = model.normalizer.mean + model.normalizer.std * torch.randn(batch, frames, f, generator=g)
    lens = torch.tensor([frames] + [frames - 37 * i for i in range(1, batch)], dtype=torch.int64)
    return x, lens


def _write_ctc(model: ASRModel, graphs: CTCGraphs, out: Path) -> tuple[list[Path], EncoderGraph]:
    enc = EncoderGraph(model, graphs.log_probs).eval()
    n, t = torch.export.Dim("N"), torch.export.Dim("T", min=MIN_FRAMES)
    meta = {**_common_metadata(model, "ctc"), "model_type": "zipformer2_ctc", "vocab_size": graphs.vocab_size}
    path = _onnx_export(
        enc,
        _example_features(model),
        out / "model.onnx",
        ["x", "x_lens"],
        ["log_probs", "log_probs_len"],
        {"x": {0: n, 1: t}, "x_lens": {0: n}},
        meta,
    )
    return [path], enc


def _write_transducer(model: ASRModel, graphs: TransducerGraphs, out: Path) -> tuple[list[Path], EncoderGraph]:
    enc = EncoderGraph(model, graphs.enc_proj).eval()
    n, t = torch.export.Dim("N"), torch.export.Dim("T", min=MIN_FRAMES)
    common = _common_metadata(model, "transducer")
    files = [
        _onnx_export(
            enc,
            _example_features(model),
            out / "encoder.onnx",
            ["x", "x_lens"],
            ["encoder_out", "encoder_out_lens"],
            {"x": {0: n, 1: t}, "x_lens": {0: n}},
            # model_type "conformer": sherpa-onnx picks its icefall transducer for it even when
            # the user gives no model_type
            {**common, "model_type": "conformer", "vocab_size": graphs.vocab_size},
        )
    ]
    ctx = torch.tensor([[-1] * (graphs.context_size - 1) + [0], [3] * graphs.context_size], dtype=torch.int64)
    files.append(
        _onnx_export(
            graphs.decoder.eval(),
            (ctx,),
            out / "decoder.onnx",
            ["y"],
            ["decoder_out"],
            {"y": {0: torch.export.Dim("N")}},
            {**common, "vocab_size": graphs.vocab_size, "context_size": graphs.context_size},
        )
    )
    j = graphs.joiner_dim
    files.append(
        _onnx_export(
            graphs.joiner.eval(),
            (torch.randn(2, j), torch.randn(2, j)),
            out / "joiner.onnx",
            ["encoder_out", "decoder_out"],
            ["logit"],
            {"encoder_out": {0: n}, "decoder_out": {0: n}},
            {**common, "joiner_dim": j},
        )
    )
    return files, enc


WRITERS = {CTCGraphs.format: _write_ctc, TransducerGraphs.format: _write_transducer}


def write_tokens(model: ASRModel, out: Path) -> list[Path]:
    """tokens.txt ("piece id", one a line: sherpa-onnx's symbol table; it shows '▁' as a space and
    needs `<blk>` for CTC's blank) and tokenizer.model (the sentencepiece model itself)."""
    assert model.tokenizer is not None, "model has no tokenizer attached"
    sp = model.tokenizer.sp
    tokens = out / "tokens.txt"
    tokens.write_text("".join(f"{sp.id_to_piece(i)} {i}\n" for i in range(len(sp))), encoding="utf-8")
    spm = out / "tokenizer.model"
    spm.write_bytes(model.tokenizer.model_proto)
    return [tokens, spm]


def check_encoder(enc: EncoderGraph, path: Path, model: ASRModel) -> float:
    """Max |onnxruntime - PyTorch| of the encoder graph's output over valid frames, on random
    features of another length and batch than the traced example."""
    import onnxruntime as ort

    x, lens = _example_features(model, batch=3, frames=321)
    with torch.no_grad():
        ref, ref_lens = enc(x, lens)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got, got_lens = sess.run(None, {"x": x.numpy(), "x_lens": lens.numpy()})
    if not (got_lens == ref_lens.numpy()).all():
        raise ExportError(f"{path}: output lengths {got_lens} differ from PyTorch's {ref_lens.tolist()}")
    valid = torch.arange(ref.shape[1])[None, :] < ref_lens[:, None]
    return float((torch.from_numpy(got) - ref)[valid].abs().max())


def export_model(model: ASRModel, out_dir: str | Path, options: ExportOptions | None = None) -> ExportResult:
    """Write the ONNX graphs of `options.head`, tokens.txt, tokenizer.model and README.md to out_dir.

    Raises:
        ExportError: no such head, or a head that cannot be exported (named, with the reason).
    """
    options = options or ExportOptions()
    name, graphs = head_graphs(model, options.head)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    with torch.no_grad():
        files, enc = WRITERS[graphs.format](model, graphs, out)
    res = ExportResult(out, graphs.format, name, files + write_tokens(model, out))
    if options.check:
        res.max_abs_diff = check_encoder(enc, files[0], model)
    readme_path = out / "README.md"
    readme_path.write_text(readme(graphs.format, out, model.fbank.opts), encoding="utf-8")
    res.files.append(readme_path)
    return res


def readme(fmt: str, out: Path, fbank: FbankOptions) -> str:
    """README.md of an export folder: what the files are and the sherpa-onnx command that decodes them."""
    out = out.resolve()
    o = fbank
    # sherpa-onnx reads the fbank options from its config, never from the model: they are spelled out
    feat = (
        f"sherpa_onnx.FeatureExtractorConfig(sampling_rate={o.sample_rate}, feature_dim={o.num_mel_bins}, "
        f"low_freq={o.low_freq}, high_freq={o.high_freq}, dither=0.0, snip_edges=True, "
        f"normalize_samples={not o.int16_scale})"
    )
    if fmt == "ctc":
        files = "- model.onnx: x[N, T, 80] fbank, x_lens[N] -> log_probs[N, T', V], log_probs_len[N] (CMVN inside)"
        model_cfg = (
            f'zipformer_ctc=sherpa_onnx.OfflineZipformerCtcModelConfig(model="{out}/model.onnx"),\n'
            f'        tokens="{out}/tokens.txt", num_threads=1'
        )
    else:
        files = (
            "- encoder.onnx: x[N, T, 80] fbank, x_lens[N] -> encoder_out[N, T', J], encoder_out_lens[N]"
            " (CMVN and the joint's encoder projection inside)\n"
            "- decoder.onnx: y[N, context_size] (-1 before the start) -> decoder_out[N, J];"
            " metadata vocab_size, context_size\n"
            "- joiner.onnx: encoder_out[N, J], decoder_out[N, J] -> logit[N, V] (blank = 0)"
        )
        model_cfg = (
            "transducer=sherpa_onnx.OfflineTransducerModelConfig(\n"
            f'            encoder_filename="{out}/encoder.onnx",\n'
            f'            decoder_filename="{out}/decoder.onnx",\n'
            f'            joiner_filename="{out}/joiner.onnx"),\n'
            f'        tokens="{out}/tokens.txt", num_threads=1, model_type="transducer"'
        )
    return f"""# ONNX export ({fmt}), written by `asr export`

{files}
- tokens.txt: "piece id" lines (sherpa-onnx's symbol table; `<blk>` 0 is blank, `<unk>` 1)
- tokenizer.model: the sentencepiece model (`asr transcribe --onnx` decodes text with it)

The graphs take raw Kaldi fbank and apply the model's global CMVN themselves. The model was
trained on fbank with these options (asr.data.features.FbankOptions):
{json.dumps(asdict(o))}
that is Kaldi's: 25 ms Povey window, 10 ms shift, pre-emphasis 0.97, DC removal, snip_edges,
{"samples scaled to the int16 range" if o.int16_scale else "samples in [-1, 1]"}.

## sherpa-onnx (Python)

sherpa-onnx computes fbank with kaldi-native-fbank from the options of its config, which the
`from_transducer` / `from_zipformer_ctc` factories fix to other values than ours (normalize_samples
True: samples in [-1, 1], log-mel 20.8 lower than at int16 scale; high_freq -400; snip_edges False).
So build the recognizer from a full config with the options above:

```python
import sherpa_onnx
import soundfile as sf
from sherpa_onnx.lib._sherpa_onnx import OfflineRecognizer

config = sherpa_onnx.OfflineRecognizerConfig(
    feat_config={feat},
    model_config=sherpa_onnx.OfflineModelConfig(
        {model_cfg}),
    decoding_method="greedy_search",
)
recognizer = OfflineRecognizer(config)
samples, rate = sf.read("a.wav", dtype="float32")
stream = recognizer.create_stream()
stream.accept_waveform(rate, samples)
recognizer.decode_stream(stream)
print(stream.result.text.strip())
```

sherpa-onnx's command-line programs cannot set normalize_samples or snip_edges; they need a model
trained on its default front-end (`asr train +model.features.int16_scale=false
+model.features.high_freq=-400`,
still snip_edges).

## asr (onnxruntime only)

```
asr transcribe --onnx {out} --data DIR/test-clean --out hyp.txt
```
"""
