"""Decoding an `asr export` folder with onnxruntime: `asr transcribe --onnx DIR`.

No model code runs here: the ONNX graphs hold CMVN, encoder and head. Features are computed by
our fbank (asr.data.features.Fbank, in torch) with the options saved in the graphs' metadata
(`asr_fbank`), which are the features the model was trained on; text comes from the exported
sentencepiece model. The searches are greedy, in numpy, and make the choices sherpa-onnx's do:
CTC takes the best token per frame and collapses repeats and blanks; the transducer emits at
most `max_symbols` labels per frame (1: sherpa-onnx's offline greedy search), feeding the
decoder graph the last `context_size` labels (-1 before the start, as sherpa-onnx does), or,
for an LSTM predictor, its state. TDT and LSTM exports are decoded here only (sherpa-onnx's
icefall transducer reads neither); TDT takes our search's (token, duration) decision.
An attention export is rescored as `--method attention_rescoring` does: our CTC prefix beam
search (search code, not model code) over the encoder graph's log-probs, then the decoder graphs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .data.features import Fbank, FbankOptions
from .data.tokenizer import BLANK_ID, Tokenizer
from .decoding.ctc import ctc_prefix_beam_continue, ctc_prefix_beam_init


class OnnxExportError(ValueError):
    """A folder that is not a usable `asr export` output; the message names the file."""


def _session(path: Path, threads: int):
    import onnxruntime as ort

    if not path.exists():
        raise OnnxExportError(f"{path}: missing (not an `asr export` folder?)")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _metadata(sess) -> dict[str, str]:
    return dict(sess.get_modelmeta().custom_metadata_map)


@dataclass(frozen=True)
class OnnxDecodeOptions:
    """How `asr transcribe --onnx` decodes. max_symbols: a transducer's most labels on one frame
    (1, as sherpa-onnx). beam, ctc_weight, reverse_weight: attention rescoring (None: the options
    saved in the export's metadata)."""

    max_symbols: int = 1
    beam: int | None = None
    ctc_weight: float | None = None
    reverse_weight: float | None = None

    def __post_init__(self) -> None:
        if self.max_symbols < 1 or (self.beam is not None and self.beam < 1):
            raise ValueError(f"max_symbols and beam must be >= 1, not {self.max_symbols}, {self.beam}")
        for w in (self.ctc_weight, self.reverse_weight):
            if w is not None and not 0.0 <= w <= 1.0:
                raise ValueError(f"ctc_weight and reverse_weight must be in [0, 1], not {w}")


class CTCGraph:
    """model.onnx: (x, x_lens) -> (log_probs[N, T, V], lens[N]); greedy CTC."""

    main_file = "model.onnx"
    sherpa_onnx = True  # sherpa-onnx's zipformer2_ctc runs it

    def __init__(self, folder: Path, threads: int, options: OnnxDecodeOptions):
        self.sess = _session(folder / self.main_file, threads)

    def decode(self, x: np.ndarray, x_lens: np.ndarray) -> list[list[int]]:
        """fbank x[N, T, F], x_lens[N] -> token ids per utterance."""
        log_probs, lens = self.sess.run(None, {"x": x, "x_lens": x_lens})
        best = log_probs.argmax(-1)  # [N, T]
        out = []
        for row, n in zip(best, lens):
            row = row[:n]
            keep = (row != BLANK_ID) & np.concatenate([[True], row[1:] != row[:-1]])[: len(row)]
            out.append(row[keep].tolist())
        return out


class TransducerGraph:
    """encoder.onnx, decoder.onnx, joiner.onnx; label-looping greedy search in numpy, making the
    choices of our PyTorch one (asr.decoding.transducer.transducer_greedy_search) at max_symbols.

    The decoder is stateless (y[N, context_size]: the last labels) or, with `pred_rnn_layers` in
    its metadata, an LSTM's step (y[N, 1], h, c -> decoder_out, h', c'). A TDT joiner (`durations`
    in its metadata) returns the token logits, then one logit per duration.
    """

    main_file = "encoder.onnx"

    def __init__(self, folder: Path, threads: int, options: OnnxDecodeOptions):
        self.encoder = _session(folder / "encoder.onnx", threads)
        self.decoder = _session(folder / "decoder.onnx", threads)
        self.joiner = _session(folder / "joiner.onnx", threads)
        dec_meta, join_meta = _metadata(self.decoder), _metadata(self.joiner)
        self.context = int(dec_meta["context_size"])
        self.vocab_size = int(dec_meta["vocab_size"])
        self.state = (
            (int(dec_meta["pred_rnn_layers"]), int(dec_meta["pred_hidden"])) if "pred_rnn_layers" in dec_meta else None
        )
        self.durations = (
            np.array([int(d) for d in join_meta["durations"].split(",")]) if "durations" in join_meta else None
        )
        self.max_symbols = options.max_symbols
        # sherpa-onnx's icefall transducer: a stateless decoder and token logits only
        self.sherpa_onnx = self.state is None and self.durations is None

    def _decoder_out(
        self, hyps: list[list[int]], rows: np.ndarray, h: np.ndarray | None, c: np.ndarray | None
    ) -> np.ndarray:
        """decoder_out[len(rows), J] after the labels of hyps[rows]. Stateless: the last `context`
        labels (padded by -1, blank last). LSTM: one step from h, c [L, N, H] on the last label
        (blank at the start), writing the rows' next state into h and c."""
        if self.state is None:
            ctx = [([-1] * self.context + [BLANK_ID] + hyps[r])[-self.context :] for r in rows]
            return self.decoder.run(None, {"y": np.array(ctx, dtype=np.int64)})[0]
        y = np.array([[hyps[r][-1] if hyps[r] else BLANK_ID] for r in rows], dtype=np.int64)
        out, h[:, rows], c[:, rows] = self.decoder.run(None, {"y": y, "h": h[:, rows], "c": c[:, rows]})
        return out

    def _decide(self, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """logits[N, V(+D)] -> (label [N], frames it advances [N]). RNN-T: the best token; blank
        advances one frame, a label none. TDT: the best (token, duration) pair, blank only with a
        duration > 0, as the loss trains it (token and duration logits are normalized separately,
        so comparing raw sums makes the decision asr.decoding.transducer._split makes)."""
        tok = logits[:, : self.vocab_size]
        if self.durations is None:
            label = tok.argmax(-1)
            return label, (label == BLANK_ID).astype(np.int64)
        dur = logits[:, self.vocab_size :]
        dur_idx = dur.argmax(-1)
        blank_dur = np.where(self.durations == 0, -np.inf, dur)
        blank_idx = blank_dur.argmax(-1)
        labels = np.where(np.arange(self.vocab_size) == BLANK_ID, -np.inf, tok)
        lab = labels.argmax(-1)
        rows = np.arange(len(logits))
        is_blank = tok[:, BLANK_ID] + blank_dur[rows, blank_idx] >= labels[rows, lab] + dur[rows, dur_idx]
        return np.where(is_blank, BLANK_ID, lab), self.durations[np.where(is_blank, blank_idx, dur_idx)]

    def decode(self, x: np.ndarray, x_lens: np.ndarray) -> list[list[int]]:
        """fbank x[N, T, F], x_lens[N] -> token ids per utterance. Every utterance runs at once,
        each on its own frame t: one joiner call a step for the rows still inside their frames.
        A label advances 0 frames (RNN-T, TDT duration 0) up to max_symbols on a frame, then 1;
        blank advances 1 (RNN-T) or its duration (TDT)."""
        enc, lens = self.encoder.run(None, {"x": x, "x_lens": x_lens})
        n = enc.shape[0]
        hyps: list[list[int]] = [[] for _ in range(n)]
        h = c = None
        if self.state is not None:
            h = np.zeros((self.state[0], n, self.state[1]), dtype=np.float32)
            c = np.zeros_like(h)
        dec = self._decoder_out(hyps, np.arange(n), h, c)  # [N, J]
        t = np.zeros(n, dtype=np.int64)
        on_frame = np.zeros(n, dtype=np.int64)  # labels emitted on the current frame
        while len(rows := np.nonzero(t < lens)[0]):
            logits = self.joiner.run(None, {"encoder_out": enc[rows, t[rows]], "decoder_out": dec[rows]})[0]
            label, adv = self._decide(logits)
            emit = label != BLANK_ID
            on_frame[rows] = np.where(emit & (adv == 0), on_frame[rows] + 1, 0)
            force = on_frame[rows] >= self.max_symbols  # cap reached: move to the next frame
            t[rows] += adv + force
            on_frame[rows[force]] = 0
            for r, y in zip(rows[emit], label[emit]):
                hyps[r].append(int(y))
            if emit.any():
                dec[rows[emit]] = self._decoder_out(hyps, rows[emit], h, c)
        return hyps


class AttentionRescoringGraph:
    """encoder.onnx (x, x_lens -> CTC log_probs[N, T, V], memory[N, T, d], lens[N]) and
    attention_decoder.onnx (+ _r2l): CTC prefix beam n-best rescored by the decoders, making the
    choices of asr.decoding.attention.AttentionRescoringSearch after CTCPrefixBeamSearch."""

    main_file = "encoder.onnx"
    sherpa_onnx = False

    def __init__(self, folder: Path, threads: int, options: OnnxDecodeOptions):
        self.encoder = _session(folder / "encoder.onnx", threads)
        self.decoder = _session(folder / "attention_decoder.onnx", threads)
        r2l = folder / "attention_decoder_r2l.onnx"
        self.r_decoder = _session(r2l, threads) if r2l.exists() else None
        meta = _metadata(self.encoder)
        self.sos = int(_metadata(self.decoder)["sos"])
        self.beam = options.beam or int(meta["beam"])
        self.ctc_weight = float(meta["ctc_weight"]) if options.ctc_weight is None else options.ctc_weight
        w = float(meta["reverse_weight"]) if options.reverse_weight is None else options.reverse_weight
        self.reverse_weight = w if self.r_decoder is not None else 0.0

    def _score(self, sess, memory: np.ndarray, lens: np.ndarray, hyps: list[list[int]]) -> np.ndarray:
        """Log-probability of each hyps[i] followed by eos under decoder `sess`, row i reading
        memory[i] (lens[i] frames): [len(hyps)]."""
        width = max(2, 1 + max(len(h) for h in hyps))  # the graph was traced with L >= 2
        ys_in = np.full((len(hyps), width), self.sos, dtype=np.int64)
        target = np.full((len(hyps), width), -1, dtype=np.int64)
        for i, h in enumerate(hyps):
            ys_in[i, 1 : 1 + len(h)] = h
            target[i, : len(h) + 1] = [*h, self.sos]
        lp = sess.run(None, {"memory": memory, "memory_lens": lens, "ys_in": ys_in})[0]
        picked = np.take_along_axis(lp, np.maximum(target, 0)[..., None], axis=2)[..., 0]
        return np.where(target >= 0, picked, 0.0).sum(1)

    def decode(self, x: np.ndarray, x_lens: np.ndarray) -> list[list[int]]:
        """fbank x[N, T, F], x_lens[N] -> token ids per utterance."""
        log_probs, memory, lens = self.encoder.run(None, {"x": x, "x_lens": x_lens})
        state = ctc_prefix_beam_init(len(lens))
        state = ctc_prefix_beam_continue(
            torch.from_numpy(log_probs), torch.from_numpy(lens), state, self.beam, BLANK_ID
        )
        nbests = [h.nbest or [h] for h in state.hypotheses()]
        rows = np.array([b for b, nb in enumerate(nbests) for _ in nb])
        hyps = [h.tokens for nb in nbests for h in nb]
        att = self._score(self.decoder, memory[rows], lens[rows], hyps)
        if self.r_decoder is not None and self.reverse_weight > 0:
            r2l = self._score(self.r_decoder, memory[rows], lens[rows], [h[::-1] for h in hyps])
            att = (1 - self.reverse_weight) * att + self.reverse_weight * r2l
        out, i = [], 0
        for nb in nbests:
            combined = [(1 - self.ctc_weight) * float(a) + self.ctc_weight * h.score for h, a in zip(nb, att[i:])]
            best = max(range(len(nb)), key=lambda j: combined[j])  # the first of equals, as sorted() keeps them
            out.append(nb[best].tokens)
            i += len(nb)
        return out


GRAPHS = {"ctc": CTCGraph, "transducer": TransducerGraph, "attention": AttentionRescoringGraph}


def export_metadata(path: Path) -> dict[str, str]:
    """The metadata of one graph of an export (onnxruntime reads it; the weights are loaded too)."""
    return _metadata(_session(path, threads=1))


def fbank_options(meta: dict[str, str], path: Path) -> FbankOptions:
    """The fbank options the model was trained with (`asr_fbank` metadata of `path`)."""
    if "asr_fbank" not in meta:
        raise OnnxExportError(f"{path}: no asr_fbank metadata (not written by asr export)")
    return FbankOptions(**json.loads(meta["asr_fbank"]))


class OnnxModel:
    """An `asr export` folder ready to decode: transcribe(audio[B, S], lens[B]) -> texts.

    Args:
        folder: the output of `asr export`.
        threads: onnxruntime intra-op threads per graph.
        options: how to decode (transducers: max_symbols; attention rescoring: beam and weights).
    """

    def __init__(self, folder: str | Path, threads: int = 1, options: OnnxDecodeOptions | None = None):
        folder = Path(folder)
        if not folder.is_dir():
            raise OnnxExportError(f"{folder}: not a folder (give the --out of `asr export`)")
        main = next((folder / f for f in ("model.onnx", "encoder.onnx") if (folder / f).exists()), None)
        if main is None:
            raise OnnxExportError(f"{folder}: holds neither model.onnx (CTC) nor encoder.onnx (transducer, attention)")
        meta = export_metadata(main)
        fmt = meta.get("asr_format")
        if fmt == "streaming_transducer":
            raise OnnxExportError(
                f"{folder}: a streaming export (asr export --streaming): decode it with sherpa-onnx's online "
                "recognizer (its README.md; asr.onnx_model.sherpa_online_recognizer)"
            )
        if fmt not in GRAPHS:
            raise OnnxExportError(f"{main}: asr_format {fmt!r} in its metadata is none of {list(GRAPHS)}")
        self.graph = GRAPHS[fmt](folder, threads, options or OnnxDecodeOptions())
        self.format = fmt
        self.fbank = Fbank(fbank_options(meta, main))
        self.tokenizer = Tokenizer.load(folder / "tokenizer.model")

    @torch.no_grad()
    def transcribe(self, audio: torch.Tensor, audio_lens: torch.Tensor) -> list[str]:
        """Texts for audio[B, S] (16 kHz floats in [-1, 1]) with lengths[B]."""
        feats, lens = self.fbank(audio, audio_lens)
        ids = self.graph.decode(feats.numpy(), lens.numpy())
        return [self.tokenizer.decode(t) for t in ids]


def sherpa_feature_config(o: FbankOptions):
    """sherpa-onnx's FeatureExtractorConfig with our fbank options (its defaults differ: samples
    in [-1, 1], high_freq -400, no snip_edges), for its offline and online recognizers alike."""
    import sherpa_onnx

    return sherpa_onnx.FeatureExtractorConfig(
        sampling_rate=o.sample_rate,
        feature_dim=o.num_mel_bins,
        low_freq=o.low_freq,
        high_freq=o.high_freq,
        dither=0.0,
        snip_edges=True,  # ours always
        normalize_samples=not o.int16_scale,  # False: sherpa-onnx scales samples to the int16 range
    )


def sherpa_offline_recognizer(folder: str | Path, num_threads: int = 1, decoding_method: str = "greedy_search"):
    """sherpa-onnx's OfflineRecognizer for an `asr export` folder, with the fbank options the model
    was trained on (the config its README.md spells out; sherpa-onnx's factories fix other ones).
    Needs the sherpa-onnx package (a dev dependency)."""
    import sherpa_onnx
    from sherpa_onnx.lib._sherpa_onnx import OfflineRecognizer

    folder = Path(folder)
    model = OnnxModel(folder)  # checks the folder and reads the fbank options
    if not model.graph.sherpa_onnx:
        raise OnnxExportError(
            f"{folder}: an LSTM predictor, TDT or attention export, which sherpa-onnx's offline recognizers "
            "cannot run (decode it with `asr transcribe --onnx`; README.md there says why)"
        )
    feat = sherpa_feature_config(model.fbank.opts)
    files = {"tokens": str(folder / "tokens.txt"), "num_threads": num_threads}
    if model.format == "ctc":
        mc = sherpa_onnx.OfflineModelConfig(
            zipformer_ctc=sherpa_onnx.OfflineZipformerCtcModelConfig(model=str(folder / "model.onnx")), **files
        )
    else:
        graphs = sherpa_onnx.OfflineTransducerModelConfig(
            encoder_filename=str(folder / "encoder.onnx"),
            decoder_filename=str(folder / "decoder.onnx"),
            joiner_filename=str(folder / "joiner.onnx"),
        )
        mc = sherpa_onnx.OfflineModelConfig(transducer=graphs, model_type="transducer", **files)
    config = sherpa_onnx.OfflineRecognizerConfig(feat_config=feat, model_config=mc, decoding_method=decoding_method)
    return OfflineRecognizer(config)


def sherpa_online_recognizer(folder: str | Path, num_threads: int = 1, decoding_method: str = "greedy_search"):
    """sherpa-onnx's OnlineRecognizer for an `asr export --streaming` folder (its streaming `conformer`
    transducer), with the fbank options the model was trained on and no endpointing (one utterance a
    stream). Its greedy search emits at most one label a frame (`asr stream --max-symbols 1`).
    Needs the sherpa-onnx package (a dev dependency)."""
    from sherpa_onnx.lib._sherpa_onnx import (
        OnlineModelConfig,
        OnlineRecognizer,
        OnlineRecognizerConfig,
        OnlineTransducerModelConfig,
    )

    folder = Path(folder)
    meta = export_metadata(folder / "encoder.onnx")
    if meta.get("asr_format") != "streaming_transducer":
        raise OnnxExportError(f"{folder}: not a streaming export (asr export --streaming)")
    graphs = OnlineTransducerModelConfig(
        encoder=str(folder / "encoder.onnx"), decoder=str(folder / "decoder.onnx"), joiner=str(folder / "joiner.onnx")
    )
    mc = OnlineModelConfig(
        transducer=graphs, tokens=str(folder / "tokens.txt"), num_threads=num_threads, model_type="conformer"
    )
    config = OnlineRecognizerConfig(
        feat_config=sherpa_feature_config(fbank_options(meta, folder / "encoder.onnx")),
        model_config=mc,
        enable_endpoint=False,
        decoding_method=decoding_method,
    )
    return OnlineRecognizer(config)


def tail_padding_samples(folder: str | Path, num_samples: int) -> int:
    """Zeros to feed after an utterance of `num_samples` so that sherpa-onnx's online recognizer
    decodes its last, partial chunk and no chunk after it: the runtime decodes a window of T frames
    only once a frame beyond it exists (and never a partial window), while `asr stream` decodes the
    last chunk's real frames as they are. The padded frames are then the rest of that chunk."""
    meta = export_metadata(Path(folder) / "encoder.onnx")
    o = fbank_options(meta, Path(folder) / "encoder.onnx")
    t, shift, chunk = int(meta["T"]), int(meta["decode_chunk_len"]), int(meta["chunk_size"])
    frames = 1 + (num_samples - o.win_length) // o.hop_length if num_samples >= o.win_length else 0
    enc_frames = max(0, ((frames - 1) // 2 - 1) // 2)
    last = max(0, -(-enc_frames // chunk) - 1)  # index of the chunk holding the last encoder frame
    need = last * shift + t + 1  # frames the runtime wants before it decodes that chunk
    return max(0, need - frames) * o.hop_length
