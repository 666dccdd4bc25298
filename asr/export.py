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
  A TDT joiner returns logits[N, V + D] (metadata durations) and an LSTM predictor's decoder is
  (y[N, 1], h, c) -> (decoder_out, h', c') (metadata pred_rnn_layers, pred_hidden): those two only
  `asr transcribe --onnx` decodes (sherpa-onnx's transducers read neither; README "Export").
- streaming transducer (ExportOptions.streaming, a causal Conformer): encoder.onnx is one chunk
  step in sherpa-onnx's streaming `conformer` layout (x[N, T, 80], attn_cache, cnn_cache,
  processed_lens -> encoder_out[N, chunk, J], attn_cache', cnn_cache'; asr/nn/encoders/export.py)
  with metadata T, decode_chunk_len, left_context, ...; decoder.onnx and joiner.onnx as offline.
  sherpa-onnx's OnlineRecognizer decodes it (`sherpa_online_recognizer` in asr/onnx_model.py).

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
from .nn.heads.export import AttentionGraphs, CTCGraphs, NotExportable, TransducerGraphs

log = logging.getLogger(__name__)

OPSET = 18  # what torch's exporter writes natively (onnxruntime >= 1.14 and sherpa-onnx's 1.2x run it)
MIN_FRAMES = 9  # fbank frames the shortest input needs to give at least one encoder frame


@dataclass(frozen=True)
class ExportOptions:
    head: str | None = None  # which head to export (default: the checkpoint's decode head)
    check: bool = True  # run the graphs with onnxruntime on random features and compare with PyTorch
    streaming: bool = False  # a chunk step with caches (sherpa-onnx's streaming conformer transducer)
    chunk_ms: float = 320.0  # streaming: audio per chunk, a multiple of the encoder frame (as `asr stream`)
    left_context_ms: float = 2560.0  # streaming: attention left context, fixed (as `asr stream`'s default)


@dataclass
class ExportResult:
    out_dir: Path
    format: str  # "ctc" | "transducer" | "attention" | "streaming_transducer"
    head: str  # the exported head's name
    files: list[Path] = field(default_factory=list)
    max_abs_diff: float | None = None  # encoder graph vs PyTorch on random features (options.check)


class EncoderGraph(nn.Module):
    """x[N, T, F] raw fbank, x_lens[N] -> (*outs, out_lens[N]): global CMVN, the encoder (full
    context) and the heads' frame-wise parts, each enc[N, T', D] -> [N, T', *] (CTC log-probs, the
    joint's encoder projection, an attention decoder's memory)."""

    def __init__(self, model: ASRModel, *head_parts: nn.Module):
        super().__init__()
        self.normalizer, self.encoder, self.head_parts = model.normalizer, model.encoder, nn.ModuleList(head_parts)

    def forward(self, x: torch.Tensor, x_lens: torch.Tensor) -> tuple[torch.Tensor, ...]:
        y, lens = self.encoder(self.normalizer(x, x_lens), x_lens)
        return (*(part(y) for part in self.head_parts), lens)


class StreamingEncoderGraph(nn.Module):
    """One chunk in sherpa-onnx's streaming conformer layout: (x[N, T, F] raw fbank, attn_cache,
    cnn_cache, processed_lens[N]) -> (encoder_out[N, chunk, J], attn_cache', cnn_cache'): global
    CMVN, the encoder's chunk step (asr/nn/encoders/export.py) and the joint's encoder projection."""

    def __init__(self, model: ASRModel, step: nn.Module, head_part: nn.Module):
        super().__init__()
        self.normalizer, self.step, self.head_part = model.normalizer, step, head_part

    def forward(
        self, x: torch.Tensor, attn_cache: torch.Tensor, cnn_cache: torch.Tensor, processed_lens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        lens = torch.full((x.shape[0],), x.shape[1], dtype=torch.int64, device=x.device)
        y, attn_cache, cnn_cache = self.step(self.normalizer(x, lens), attn_cache, cnn_cache, processed_lens)
        return self.head_part(y), attn_cache, cnn_cache


class ExportError(ValueError):
    """A model or head that `asr export` cannot write; the message names it and says why."""


Graphs = CTCGraphs | TransducerGraphs | AttentionGraphs


def head_graphs(model: ASRModel, head: str | None) -> tuple[str, Graphs]:
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


def _export_encoder(model: ASRModel, enc: EncoderGraph, path: Path, outputs: list[str], meta: dict) -> Path:
    """An offline EncoderGraph (x[N, T, F], x_lens[N] -> outputs) with N and T dynamic."""
    n, t = torch.export.Dim("N"), torch.export.Dim("T", min=MIN_FRAMES)
    dims = {"x": {0: n, 1: t}, "x_lens": {0: n}}
    return _onnx_export(enc, _example_features(model), path, ["x", "x_lens"], outputs, dims, meta)


def _write_ctc(model: ASRModel, graphs: CTCGraphs, out: Path) -> tuple[list[Path], EncoderGraph]:
    enc = EncoderGraph(model, graphs.log_probs).eval()
    meta = {**_common_metadata(model, "ctc"), "model_type": "zipformer2_ctc", "vocab_size": graphs.vocab_size}
    return [_export_encoder(model, enc, out / "model.onnx", ["log_probs", "log_probs_len"], meta)], enc


def _write_transducer(model: ASRModel, graphs: TransducerGraphs, out: Path) -> tuple[list[Path], EncoderGraph]:
    enc = EncoderGraph(model, graphs.enc_proj).eval()
    common = _common_metadata(model, "transducer")
    # model_type "conformer": sherpa-onnx picks its icefall transducer for it even when the user
    # gives no model_type
    meta = {**common, "model_type": "conformer", "vocab_size": graphs.vocab_size}
    files = [_export_encoder(model, enc, out / "encoder.onnx", ["encoder_out", "encoder_out_lens"], meta)]
    return files + _write_decoder_joiner(graphs, out, common), enc


def _write_decoder_joiner(graphs: TransducerGraphs, out: Path, common: dict[str, str | int]) -> list[Path]:
    """decoder.onnx and joiner.onnx (the same for the offline and the streaming transducer)."""
    n = torch.export.Dim("N")
    ctx = torch.tensor([[-1] * (graphs.context_size - 1) + [0], [3] * graphs.context_size], dtype=torch.int64)
    meta = {**common, "vocab_size": graphs.vocab_size, "context_size": graphs.context_size}
    if graphs.decoder_state is None:
        decoder = _onnx_export(
            graphs.decoder.eval(), (ctx,), out / "decoder.onnx", ["y"], ["decoder_out"], {"y": {0: n}}, meta
        )
    else:
        # an LSTM predictor: its state in and out (the names and metadata keys of sherpa-onnx's NeMo
        # transducer decoder, whose layout this is not otherwise: see README "Export")
        layers, hidden = graphs.decoder_state
        g = torch.Generator().manual_seed(0)
        state = [torch.randn(layers, 2, hidden, generator=g) for _ in range(2)]
        decoder = _onnx_export(
            graphs.decoder.eval(),
            (ctx[:, -1:], *state),
            out / "decoder.onnx",
            ["y", "h", "c"],
            ["decoder_out", "next_h", "next_c"],
            {"y": {0: n}, "h": {1: n}, "c": {1: n}},
            {**meta, "pred_rnn_layers": layers, "pred_hidden": hidden},
        )
    j = graphs.joiner_dim
    # TDT: the joiner's output holds the duration logits after the vocab_size token logits
    durations = {"durations": ",".join(map(str, graphs.durations))} if graphs.durations else {}
    joiner = _onnx_export(
        graphs.joiner.eval(),
        (torch.randn(2, j), torch.randn(2, j)),
        out / "joiner.onnx",
        ["encoder_out", "decoder_out"],
        ["logit"],
        {"encoder_out": {0: n}, "decoder_out": {0: n}},
        {**common, "joiner_dim": j, "vocab_size": graphs.vocab_size, **durations},
    )
    return [decoder, joiner]


def first_pass_ctc(model: ASRModel) -> tuple[str, CTCGraphs]:
    """The CTC head whose prefix beam n-best an exported attention decoder rescores (the first head
    with CTC graphs), or ExportError: `--onnx` has no other first pass."""
    for name, head in model.heads.items():
        try:
            graphs = head.export_graphs()
        except NotExportable:
            continue
        if graphs.format == CTCGraphs.format:
            return name, graphs
    raise ExportError(
        f"the attention head rescores a CTC head's n-best, and this model has none (heads: {list(model.heads)}); "
        "a transducer's n-best needs a beam search that `asr transcribe --onnx` does not have"
    )


def _write_attention(model: ASRModel, graphs: AttentionGraphs, out: Path) -> tuple[list[Path], EncoderGraph]:
    """encoder.onnx (CTC log-probs and the decoder's memory) and attention_decoder.onnx (+ _r2l)."""
    ctc_name, ctc = first_pass_ctc(model)
    enc = EncoderGraph(model, ctc.log_probs, graphs.memory).eval()
    o = model.decode_options
    meta = {
        **_common_metadata(model, "attention"),
        "vocab_size": graphs.vocab_size,
        "first_pass_head": ctc_name,
        # `asr transcribe --method attention_rescoring`'s options saved in the checkpoint
        "beam": o.beam,
        "ctc_weight": o.ctc_weight,
        "reverse_weight": o.reverse_weight,
    }
    files = [_export_encoder(model, enc, out / "encoder.onnx", ["log_probs", "memory", "lens"], meta)]
    with torch.no_grad():
        _, memory, lens = enc(*_example_features(model))
    g = torch.Generator().manual_seed(0)
    ys = torch.randint(0, graphs.vocab_size + 1, (memory.shape[0], 7), generator=g)
    ys[:, 0] = graphs.sos
    n = torch.export.Dim("N")
    dims = {"memory": {0: n, 1: torch.export.Dim("T_enc", min=2)}, "memory_lens": {0: n}}
    dims["ys_in"] = {0: n, 1: torch.export.Dim("L", min=2)}
    decoders = [("attention_decoder.onnx", graphs.decoder), ("attention_decoder_r2l.onnx", graphs.r_decoder)]
    for file, decoder in decoders:
        if decoder is not None:
            files.append(
                _onnx_export(
                    decoder.eval(),
                    (memory, lens, ys),
                    out / file,
                    ["memory", "memory_lens", "ys_in"],
                    ["log_probs"],
                    dims,
                    {**_common_metadata(model, "attention"), "vocab_size": graphs.vocab_size, "sos": graphs.sos},
                )
            )
    return files, enc


def streaming_step(model: ASRModel, options: ExportOptions) -> nn.Module:
    """The encoder's chunk step at options.chunk_ms / left_context_ms (ExportError if it has none)."""
    from .stream import StreamTiming

    try:
        timing = StreamTiming.from_ms(model, options.chunk_ms, options.left_context_ms)
        return model.encoder.export_streaming_step(timing.chunk_frames, timing.left_frames)
    except NotExportable as e:
        raise ExportError(f"--streaming: {e}") from e
    except ValueError as e:
        raise ExportError(f"--streaming: --chunk-ms/--left-context-ms: {e}") from e


def _write_streaming_transducer(
    model: ASRModel, graphs: TransducerGraphs, out: Path, step: nn.Module
) -> tuple[list[Path], StreamingEncoderGraph]:
    enc = StreamingEncoderGraph(model, step, graphs.enc_proj).eval()
    n = torch.export.Dim("N")
    frame_ms = model.fbank.opts.frame_shift_ms * step.subsampling_factor
    meta = {
        **_common_metadata(model, "streaming_transducer"),
        # what sherpa-onnx's OnlineConformerTransducerModel reads
        "model_type": "conformer",
        "num_encoder_layers": step.num_layers,
        "T": step.input_frames,
        "decode_chunk_len": step.decode_chunk_len,
        "left_context": step.left_context,
        "encoder_dim": step.dim,
        "pad_length": step.pad_length,
        "cnn_module_kernel": step.kernel,
        # for people (and icefall's scripts): encoder frames, and the same in ms
        "chunk_size": step.chunk_size,
        "right_context": 0,
        "asr_chunk_ms": step.chunk_size * frame_ms,
        "asr_left_context_ms": step.left_context * frame_ms,
        "vocab_size": graphs.vocab_size,
    }
    files = [
        _onnx_export(
            enc,
            _example_state(step, batch=2),
            out / "encoder.onnx",
            ["x", "attn_cache", "cnn_cache", "processed_lens"],
            ["encoder_out", "new_attn_cache", "new_cnn_cache"],
            {"x": {0: n}, "attn_cache": {2: n}, "cnn_cache": {2: n}, "processed_lens": {0: n}},
            meta,
        )
    ]
    return files + _write_decoder_joiner(graphs, out, _common_metadata(model, "streaming_transducer")), enc


def _example_state(step: nn.Module, batch: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Random inputs of one chunk step (x, attn_cache, cnn_cache, processed_lens), the streams at
    different positions (one at its start, where the cached frames are masked)."""
    g = torch.Generator().manual_seed(seed)
    x = 10.0 + 3.0 * torch.randn(batch, step.input_frames, step.encoder.config.in_features, generator=g)
    attn = torch.randn(step.num_layers, step.left_context, batch, step.dim, generator=g)
    conv = torch.randn(step.num_layers, step.kernel - 1, batch, step.dim, generator=g)
    processed = step.decode_chunk_len * torch.arange(batch, dtype=torch.int64) * 3
    return x, attn, conv, processed


WRITERS = {CTCGraphs.format: _write_ctc, TransducerGraphs.format: _write_transducer, "attention": _write_attention}


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
    """Max |onnxruntime - PyTorch| of the encoder graph's outputs over valid frames, on random
    features of another length and batch than the traced example."""
    import onnxruntime as ort

    x, lens = _example_features(model, batch=3, frames=321)
    with torch.no_grad():
        *refs, ref_lens = enc(x, lens)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    *gots, got_lens = sess.run(None, {"x": x.numpy(), "x_lens": lens.numpy()})
    if not (got_lens == ref_lens.numpy()).all():
        raise ExportError(f"{path}: output lengths {got_lens} differ from PyTorch's {ref_lens.tolist()}")
    valid = torch.arange(refs[0].shape[1])[None, :] < ref_lens[:, None]
    return max(float((torch.from_numpy(got) - ref)[valid].abs().max()) for got, ref in zip(gots, refs))


def run_streaming_graph(sess, x: torch.Tensor, step: nn.Module, chunks: int) -> torch.Tensor:
    """encoder_out[N, chunks * chunk, J] of an encoder.onnx chunk step (onnxruntime session) run
    over the first `chunks` windows of x[N, frames, F] as sherpa-onnx runs it: windows of T frames
    shifted by decode_chunk_len, caches from zeros, processed_lens counting feature frames."""
    n = x.shape[0]
    attn = torch.zeros(step.num_layers, step.left_context, n, step.dim).numpy()
    conv = torch.zeros(step.num_layers, step.kernel - 1, n, step.dim).numpy()
    outs = []
    for k in range(chunks):
        start = k * step.decode_chunk_len
        window = x[:, start : start + step.input_frames].numpy()
        processed = torch.full((n,), start, dtype=torch.int64).numpy()
        feeds = {"x": window, "attn_cache": attn, "cnn_cache": conv, "processed_lens": processed}
        y, attn, conv = sess.run(None, feeds)
        outs.append(torch.from_numpy(y))
    return torch.cat(outs, dim=1)


def check_streaming(enc: StreamingEncoderGraph, path: Path, chunks: int = 5) -> float:
    """Max |onnxruntime - PyTorch| of the chunk step over `chunks` consecutive chunks of random
    features, against the encoder's own forward_chunk (the `asr stream` path) projected by the joint."""
    import onnxruntime as ort

    step, model_enc = enc.step, enc.step.encoder
    g = torch.Generator().manual_seed(1)
    frames = chunks * step.decode_chunk_len + step.pad_length
    x = enc.normalizer.mean + enc.normalizer.std * torch.randn(3, frames, model_enc.config.in_features, generator=g)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = run_streaming_graph(sess, x, step, chunks)
    with torch.no_grad():
        ref = enc.head_part(forward_chunks(model_enc, enc.normalizer(x, torch.full((3,), frames)), step))
    return float((got - ref).abs().max())


def forward_chunks(encoder: nn.Module, x: torch.Tensor, step: nn.Module) -> torch.Tensor:
    """y[N, T', D]: encoder.forward_chunk over x[N, frames, F] (normalized) in whole chunks of the
    step's chunk_size and left_context: the reference the exported step must equal."""
    n = x.shape[0]
    state = encoder.init_state(n, step.chunk_size, step.left_context, x.device)
    outs, pos = [], 0
    while pos + (m := encoder.chunk_input_frames(state)) <= x.shape[1]:
        y, _, state = encoder.forward_chunk(x[:, pos : pos + m], torch.full((n,), m), state)
        outs.append(y)
        pos += m
    return torch.cat(outs, dim=1)


def export_model(model: ASRModel, out_dir: str | Path, options: ExportOptions | None = None) -> ExportResult:
    """Write the ONNX graphs of `options.head`, tokens.txt, tokenizer.model and README.md to out_dir.

    Raises:
        ExportError: no such head, or a head that cannot be exported (named, with the reason);
            with options.streaming, an encoder without a chunk step or a head other than a transducer.
    """
    options = options or ExportOptions()
    name, graphs = head_graphs(model, options.head)
    model = model.eval()
    step = streaming_step(model, options) if options.streaming else None
    if step is not None and graphs.format != TransducerGraphs.format:
        raise ExportError(
            f"--streaming: head {name!r} is {graphs.format}; sherpa-onnx's streaming conformer type is a "
            "transducer (export a transducer head, or this head without --streaming)"
        )
    if step is not None and not graphs.sherpa_onnx:
        raise ExportError(
            f"--streaming: head {name!r} has an LSTM predictor or TDT durations, which sherpa-onnx's streaming "
            "conformer transducer cannot run (export it without --streaming for `asr transcribe --onnx`)"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        if step is None:
            files, enc = WRITERS[graphs.format](model, graphs, out)
        else:
            files, enc = _write_streaming_transducer(model, graphs, out, step)
    fmt = "streaming_transducer" if step is not None else graphs.format
    res = ExportResult(out, fmt, name, files + write_tokens(model, out))
    if options.check:
        res.max_abs_diff = check_encoder(enc, files[0], model) if step is None else check_streaming(enc, files[0])
    readme_path = out / "README.md"
    text = (
        readme(res.format, out, model.fbank.opts, graphs)
        if step is None
        else streaming_readme(out, model.fbank.opts, step)
    )
    readme_path.write_text(text, encoding="utf-8")
    res.files.append(readme_path)
    return res


def _sherpa_feature_config(o: FbankOptions) -> str:
    """sherpa-onnx's FeatureExtractorConfig(...) with our options, as Python source."""
    return (
        f"sherpa_onnx.FeatureExtractorConfig(sampling_rate={o.sample_rate}, feature_dim={o.num_mel_bins}, "
        f"low_freq={o.low_freq}, high_freq={o.high_freq}, dither=0.0, snip_edges=True, "
        f"normalize_samples={not o.int16_scale})"
    )


def streaming_readme(out: Path, o: FbankOptions, step: nn.Module) -> str:
    """README.md of a streaming export: the files, the chunk geometry and sherpa-onnx's online command."""
    out = out.resolve()
    frame_ms = o.frame_shift_ms * step.subsampling_factor
    chunk_ms, left_ms = step.chunk_size * frame_ms, step.left_context * frame_ms
    # the chunk, the 3 frames the subsampling reads beyond it, the window past its last hop, and the
    # one more frame sherpa-onnx waits for (it decodes a window once NumFramesReady > processed + T)
    latency = chunk_ms + (step.pad_length + 1) * o.frame_shift_ms + o.frame_length_ms - o.frame_shift_ms
    attn = f"attn_cache[{step.num_layers}, {step.left_context}, N, {step.dim}]"
    return f"""# Streaming ONNX export (sherpa-onnx's streaming `conformer` transducer), by `asr export --streaming`

- encoder.onnx: one chunk. Inputs x[N, {step.input_frames}, {o.num_mel_bins}] raw fbank (T = decode_chunk_len
  {step.decode_chunk_len} + pad_length {step.pad_length}), {attn}
  (each layer's normalized attention input of the last {step.left_context} frames), cnn_cache[{step.num_layers},
  {step.kernel - 1}, N, {step.dim}] (each causal conv's last inputs), processed_lens[N] (feature frames before x);
  outputs encoder_out[N, {step.chunk_size}, J] (CMVN and the joint's encoder projection inside) and the next caches.
  Metadata model_type=conformer, num_encoder_layers, T, decode_chunk_len, left_context, encoder_dim,
  pad_length, cnn_module_kernel (what sherpa-onnx reads), chunk_size, asr_chunk_ms, asr_left_context_ms.
- decoder.onnx, joiner.onnx: as the offline transducer export (stateless predictor; blank = 0).
- tokens.txt ("piece id"; `<blk>` 0), tokenizer.model (the sentencepiece model).

Chunk {chunk_ms:g} ms ({step.chunk_size} encoder frames of {frame_ms:g} ms), attention left context {left_ms:g} ms
({step.left_context} frames, fixed by the cache's size). The outputs equal `asr stream --chunk-ms {chunk_ms:g}
--left-context-ms {left_ms:g}` on whole chunks. Algorithmic latency under sherpa-onnx: {latency:g} ms (the
chunk, 3 fbank frames the subsampling reads beyond it, the 25 ms window past its hop, and one more frame
that sherpa-onnx waits for). Another chunk or left context needs another export.

The model was trained on Kaldi fbank with these options (asr.data.features.FbankOptions):
{json.dumps(asdict(o))}
sherpa-onnx's defaults differ (samples in [-1, 1], high_freq -400, no snip_edges), so give them in
the recognizer's config:

```python
import numpy as np
import sherpa_onnx
import soundfile as sf
from sherpa_onnx.lib._sherpa_onnx import (
    OnlineModelConfig, OnlineRecognizer, OnlineRecognizerConfig, OnlineTransducerModelConfig)

config = OnlineRecognizerConfig(
    feat_config={_sherpa_feature_config(o)},
    model_config=OnlineModelConfig(
        transducer=OnlineTransducerModelConfig(
            encoder="{out}/encoder.onnx",
            decoder="{out}/decoder.onnx",
            joiner="{out}/joiner.onnx"),
        tokens="{out}/tokens.txt", num_threads=1, model_type="conformer"),
    enable_endpoint=False,
    decoding_method="greedy_search",  # one label a frame: asr stream --max-symbols 1
)
recognizer = OnlineRecognizer(config)
samples, rate = sf.read("a.wav", dtype="float32")
stream = recognizer.create_stream()
for block in np.array_split(samples, max(1, len(samples) // {int(o.sample_rate * chunk_ms / 1000)})):  # live audio
    stream.accept_waveform(rate, block)
    while recognizer.is_ready(stream):
        recognizer.decode_stream(stream)
        print(recognizer.get_result(stream).text)  # partial
# sherpa-onnx decodes whole windows only: pad the end so the last partial chunk is decoded
# (asr.onnx_model.tail_padding_samples gives the fewest zeros that do it; 0.4 s always does)
stream.accept_waveform(rate, np.zeros(int(0.4 * rate), dtype=np.float32))
stream.input_finished()
while recognizer.is_ready(stream):
    recognizer.decode_stream(stream)
print(recognizer.get_result(stream).text.strip())
```

`asr.onnx_model.sherpa_online_recognizer(folder)` builds the same recognizer. sherpa-onnx's
command-line programs cannot set normalize_samples or snip_edges; they need a model trained on its
default front-end (`asr train +model.features.int16_scale=false +model.features.high_freq=-400`,
still snip_edges).
"""


def attention_readme(out: Path, o: FbankOptions, graphs: AttentionGraphs) -> str:
    """README.md of an attention export: the files and how `asr transcribe --onnx` rescores."""
    r2l = (
        "\n- attention_decoder_r2l.onnx: the right-to-left decoder, the same signature, over reversed hypotheses"
        if graphs.r_decoder is not None
        else ""
    )
    v = graphs.vocab_size
    return f"""# ONNX export (attention rescoring), written by `asr export`

- encoder.onnx: x[N, T, {o.num_mel_bins}] fbank, x_lens[N] -> log_probs[N, T', {v}] (the CTC head),
  memory[N, T', d] (the attention decoder's input), lens[N]; CMVN inside. Metadata: first_pass_head,
  and `asr transcribe`'s attention_rescoring options saved in the checkpoint: beam, ctc_weight, reverse_weight.
- attention_decoder.onnx: memory[N, T', d], memory_lens[N], ys_in[N, L] (sos = {graphs.sos}, then the
  hypothesis; any padding after it) -> log_probs[N, L, {v + 1}] of each next token (eos = {graphs.sos}).{r2l}
- tokens.txt ("piece id"; `<blk>` 0), tokenizer.model (the sentencepiece model).

`asr transcribe --onnx {out}` runs WeNet's attention rescoring with onnxruntime: CTC prefix beam search
(asr.decoding.ctc, over the graph's log-probs) keeps `beam` prefixes, the decoder scores each followed by
eos, and the best of (1 - ctc_weight) * attention + ctc_weight * CTC wins (attention: (1 - reverse_weight)
* left-to-right + reverse_weight * right-to-left). `--beam`, `--ctc-weight` and `--reverse-weight`
override the saved options. The hypotheses are those of `asr transcribe --method attention_rescoring`.

No sherpa-onnx recognizer rescores with a decoder graph; export the CTC head on its own (`--head`) for
sherpa-onnx's greedy CTC. The graphs take raw Kaldi fbank with these options (asr.data.features.FbankOptions):
{json.dumps(asdict(o))}
"""


def readme(fmt: str, out: Path, fbank: FbankOptions, graphs: Graphs) -> str:
    """README.md of an export folder: what the files are and the sherpa-onnx command that decodes them
    (for graphs sherpa-onnx cannot run, LSTM predictors, TDT and attention, why not)."""
    out = out.resolve()
    o = fbank
    if fmt == AttentionGraphs.format:
        return attention_readme(out, o, graphs)
    # sherpa-onnx reads the fbank options from its config, never from the model: they are spelled out
    feat = _sherpa_feature_config(o)
    if fmt == "ctc":
        files = "- model.onnx: x[N, T, 80] fbank, x_lens[N] -> log_probs[N, T', V], log_probs_len[N] (CMVN inside)"
        model_cfg = (
            f'zipformer_ctc=sherpa_onnx.OfflineZipformerCtcModelConfig(model="{out}/model.onnx"),\n'
            f'        tokens="{out}/tokens.txt", num_threads=1'
        )
    else:
        if graphs.decoder_state is None:
            dec = (
                "- decoder.onnx: y[N, context_size] (-1 before the start) -> decoder_out[N, J];"
                " metadata vocab_size, context_size"
            )
        else:
            layers, hidden = graphs.decoder_state
            dec = (
                f"- decoder.onnx (LSTM predictor): y[N, 1], h[{layers}, N, {hidden}], c[{layers}, N, {hidden}] ->"
                " decoder_out[N, J], next_h, next_c; start from h = c = 0 and y = 0 (blank);"
                " metadata pred_rnn_layers, pred_hidden"
            )
        if graphs.durations:
            join = (
                f"- joiner.onnx (TDT): encoder_out[N, J], decoder_out[N, J] -> logit[N, V + {len(graphs.durations)}]:"
                f" V token logits (blank = 0), then one logit per duration {list(graphs.durations)}"
                " (metadata durations)"
            )
        else:
            join = "- joiner.onnx: encoder_out[N, J], decoder_out[N, J] -> logit[N, V] (blank = 0)"
        files = (
            "- encoder.onnx: x[N, T, 80] fbank, x_lens[N] -> encoder_out[N, T', J], encoder_out_lens[N]"
            f" (CMVN and the joint's encoder projection inside)\n{dec}\n{join}"
        )
        model_cfg = (
            "transducer=sherpa_onnx.OfflineTransducerModelConfig(\n"
            f'            encoder_filename="{out}/encoder.onnx",\n'
            f'            decoder_filename="{out}/decoder.onnx",\n'
            f'            joiner_filename="{out}/joiner.onnx"),\n'
            f'        tokens="{out}/tokens.txt", num_threads=1, model_type="transducer"'
        )
    if not graphs.sherpa_onnx:
        return f"""# ONNX export ({fmt}), written by `asr export`

{files}
- tokens.txt: "piece id" lines (`<blk>` 0 is blank, `<unk>` 1)
- tokenizer.model: the sentencepiece model (`asr transcribe --onnx` decodes text with it)

The graphs take raw Kaldi fbank with these options (asr.data.features.FbankOptions) and apply
the model's global CMVN themselves:
{json.dumps(asdict(o))}

sherpa-onnx cannot run these graphs: its icefall transducer has neither a decoder state nor
duration outputs, and its NeMo transducer (LSTM state, TDT) wants another layout (blank last,
int32 labels, channel-first encoder output) and a TDT greedy search that takes token and
duration by separate argmaxes, where ours takes the best (token, duration) pair with blank
advancing at least one frame. Decode them with onnxruntime:

```
asr transcribe --onnx {out} --data DIR/test-clean --out hyp.txt
```
"""
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
