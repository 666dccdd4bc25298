"""The one LightningModule: features -> encoder -> a dict of weighted heads.

CTC, transducer, TDT and hybrids are configurations of this class, never subclasses.
The checkpoint carries the hyper-parameters, the CMVN statistics and the serialized
tokenizer, so `load_model(path)` is all inference needs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn
from torchmetrics.text import WordErrorRate

from .data.augment import SpecAugment
from .data.datamodule import Batch
from .data.features import Fbank, FbankOptions, GlobalCMVN
from .data.tokenizer import Tokenizer
from .decoding import DecodeOptions, Hypothesis, Search, build_model_search, run_search
from .decoding.frame_skip import FrameSkipTraining, SkipCounts, keep_mask, pack_frames, skipping_ctc_head
from .decoding.fusion import Fusion, build_fusion
from .decoding.timestamps import Transcript, hypothesis_words
from .nn.encoders import build_encoder
from .nn.encoders.chunking import FULL
from .nn.heads import build_head


class ASRModel(L.LightningModule):
    """Args (all plain dicts/values, as saved in the checkpoint):
    vocab_size: tokenizer size (blank = 0).
    encoder: {"name": registry name, **encoder kwargs}.
    heads: {head_name: {"kind": ctc|transducer, "weight": float, **head kwargs}}. The first
        head decodes unless another is named (hybrids: e.g. decode.head=ctc).
    features: FbankOptions fields.
    specaug: SpecAugmentOptions fields, or None for no SpecAugment.
    optim: {"lr", "weight_decay", "warmup_steps", "betas"}: AdamW with a Noam schedule.
    decode: default decoding options, DecodeOptions fields (conf/decode/), used by `decode` and
        `transcribe` unless overridden; validation WER uses its head, greedy.
    frame_skip: FrameSkipTraining fields, or None: the transducer heads' losses read only the
        frames the first CTC head does not call blank (asr.decoding.frame_skip).
    """

    def __init__(
        self,
        vocab_size: int,
        encoder: dict,
        heads: dict,
        features: dict | None = None,
        specaug: dict | None = None,
        optim: dict | None = None,
        decode: dict | None = None,
        frame_skip: dict | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.fbank = Fbank(FbankOptions(**(features or {})))
        n_mels = self.fbank.opts.num_mel_bins
        self.normalizer = GlobalCMVN(n_mels)
        self.specaug = SpecAugment(**specaug) if specaug else None
        enc_kwargs = dict(encoder)
        enc_name = enc_kwargs.pop("name")
        enc_kwargs.setdefault("in_features", n_mels)
        self.encoder = build_encoder(enc_name, **enc_kwargs)
        self.heads = nn.ModuleDict()
        self.head_weights: dict[str, float] = {}
        for name, spec in heads.items():
            spec = dict(spec)
            weight = float(spec.pop("weight", 1.0))
            kind = spec.pop("kind", name)
            self.heads[name] = build_head(kind, self.encoder.output_dim, vocab_size, **spec)
            self.head_weights[name] = weight
        # a model built in Python without optim (tests, notebooks); `asr train` passes conf/optim/
        self.optim = {"lr": 1e-3, "weight_decay": 1e-3, "warmup_steps": 1000, "betas": (0.9, 0.98), **(optim or {})}
        self.decode_options = DecodeOptions.from_dict(decode)
        if self.decode_options.head is not None and self.decode_options.head not in self.heads:
            raise ValueError(
                f"decode.head={self.decode_options.head!r} is not a head of this model: {list(self.heads)}"
            )
        self.frame_skip = FrameSkipTraining(**frame_skip) if frame_skip is not None else None
        self._skip_ctc = skipping_ctc_head(self.heads)  # the head whose blanks are skipped, as in decoding
        if self.frame_skip is not None and not (
            self._skip_ctc and any(h.kind == "transducer" for h in self.heads.values())
        ):
            raise ValueError(f"frame_skip needs a CTC head beside a transducer head; the heads are {list(self.heads)}")
        self.tokenizer: Tokenizer | None = None
        self._fusions: dict = {}  # FusionOptions -> loaded Fusion (model.fusion)
        self._searches: dict = {}  # DecodeOptions -> (built Search, its SkipCounts) (model.search)
        self.val_wer = WordErrorRate()

    # ---- forward -------------------------------------------------------------------
    def features(self, audio: torch.Tensor, audio_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """audio[B, S] -> normalized (and, in training, augmented) fbank [B, T, F], lens[B].

        float32 also under mixed precision: Fbank turns autocast off, and CMVN and SpecAugment are
        element-wise ops, which autocast leaves in their inputs' dtype; the encoder may then run in
        bfloat16/float16."""
        feats, lens = self.fbank(audio, audio_lens)
        feats = self.normalizer(feats, lens)
        if self.specaug is not None and self.training:
            feats = self.specaug(feats, lens)
        return feats, lens

    def forward(self, audio: torch.Tensor, audio_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """audio[B, S] -> encoder output enc[B, T', D], enc_lens[B]."""
        return self.encoder(*self.features(audio, audio_lens))

    def losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        """{"loss": weighted sum, head name: its loss, "head/part": parts some heads report}."""
        # one chunking for the encoder and the heads: TAED's decoder attends chunk by chunk as the
        # encoder's mask does (full context outside training)
        chunk, left = self.encoder.training_chunking() if self.training else (FULL, FULL)
        enc, enc_lens = self.encoder(*self.features(batch.audio, batch.audio_lens), chunk, left)
        reduced = self.reduced_frames(enc, enc_lens)
        out: dict[str, torch.Tensor] = {}
        total = 0.0
        for name, head in self.heads.items():
            e, n = reduced if reduced is not None and head.kind == "transducer" else (enc, enc_lens)
            res = head.loss(e, n, batch.tokens, batch.token_lens, step=self.global_step, chunk_size=chunk)
            out.update({f"{name}/{k}": v for k, v in res.items() if k != "loss"})
            out[name] = res["loss"]
            total = total + self.head_weights[name] * res["loss"]
        out["loss"] = total
        return out

    def reduced_frames(self, enc: torch.Tensor, enc_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """With `frame_skip` (after its first after_steps steps): the frames of enc[B, T, D] that the
        CTC head does not call blank, packed ([B, T', D], lengths[B]; gradients reach the kept
        frames), which the transducer heads' losses read. A row with no frame kept keeps all of
        them: a transducer loss needs at least one. None without frame_skip."""
        fs = self.frame_skip
        if fs is None or self.global_step < fs.after_steps:
            return None
        keep = keep_mask(self.heads[self._skip_ctc], enc, enc_lens, fs.threshold)
        valid = torch.arange(enc.shape[1], device=enc.device)[None, :] < enc_lens.to(enc.device)[:, None]
        keep = torch.where(keep.any(1, keepdim=True), keep, valid)
        packed, lens, _ = pack_frames(enc, keep)
        return packed, lens

    # ---- decoding ------------------------------------------------------------------
    def check_decode_options(self, options: DecodeOptions) -> None:
        """A clear error when the options name a head this model does not have."""
        if options.head is not None and options.head not in self.heads:
            raise ValueError(f"no head {options.head!r} in this model; it has {list(self.heads)}")

    def decode_head(self, options: DecodeOptions | None = None) -> str:
        """Name of the head that decodes: options.head, else decode.head, else the first head."""
        return (options.head if options else None) or self.decode_options.head or next(iter(self.heads))

    def decode_options_with(self, options: DecodeOptions | None = None, **overrides) -> DecodeOptions:
        """The options a decoding call runs with: `options` (default: the checkpoint's) with the
        overrides that are not None, checked against this model's heads."""
        opts = (options or self.decode_options).replace(**overrides)
        self.check_decode_options(opts)
        return opts

    @torch.no_grad()
    def decode(
        self, audio: torch.Tensor, audio_lens: torch.Tensor, options: DecodeOptions | None = None, **overrides
    ) -> list[Hypothesis]:
        """Hypotheses (tokens, score, n-best) per utterance for a batch of audio[B, S] with lengths[B].

        options: DecodeOptions (default: the model's decode options); overrides: fields to change,
        e.g. method="beam", beam=8, head="ctc" (None values keep the option).
        """
        opts = self.decode_options_with(options, **overrides)
        return run_search(self.search(opts), *self(audio, audio_lens))

    def search(self, options: DecodeOptions) -> Search:
        """The search `options` describe over this model's heads (asr.decoding.registry), built once
        per set of options: searches keep their per-utterance state outside themselves, so one
        serves every call, and a frame-skipping search adds up the whole run's frames
        (frame_skip_counts)."""
        if options not in self._searches:
            counts = SkipCounts()
            search = build_model_search(self.heads, self.decode_head(options), options, self.fusion(options), counts)
            self._searches[options] = (search, counts)
        return self._searches[options][0]

    def frame_skip_counts(self, options: DecodeOptions) -> SkipCounts:
        """Frames seen and kept by the frame-skipping search of `options` (options.skip_blank) over
        every utterance decoded with it so far (decode, transcribe, streaming); zeros before any."""
        self.search(options)
        return self._searches[options][1]

    def fusion(self, options: DecodeOptions) -> Fusion | None:
        """The LM and hotwords `options` name, loaded for this model's tokenizer once per set of
        fusion options (None when they name none, or only an LM with weight 0)."""
        key = options.fusion
        if not key.active:
            return None
        if key not in self._fusions:
            if self.tokenizer is None:
                raise ValueError("fusing an LM or hotwords needs the model's tokenizer (load it with load_model)")
            self._fusions[key] = build_fusion(key, self.tokenizer)
        return self._fusions[key]

    def transcribe(
        self, audio: torch.Tensor, audio_lens: torch.Tensor, options: DecodeOptions | None = None, **overrides
    ) -> list[str]:
        """Texts for a batch (options and overrides as in `decode`)."""
        assert self.tokenizer is not None, "model has no tokenizer attached"
        return [self.tokenizer.decode(h.tokens) for h in self.decode(audio, audio_lens, options, **overrides)]

    @property
    def frame_seconds(self) -> float:
        """Seconds of one encoder frame (feature hop x subsampling): token frame f starts at f * this."""
        return self.fbank.opts.frame_shift_ms / 1000 * self.encoder.subsampling_factor

    def transcript(self, hyp: Hypothesis, offset_frames: int = 0, fusion: Fusion | None = None) -> Transcript:
        """A hypothesis as text plus, when its search gave token times, words with start and end
        seconds (counted from `offset_frames` frames before the hypothesis's first) and confidences;
        with a fusion that has hotwords, the phrases that fired in it."""
        assert self.tokenizer is not None, "model has no tokenizer attached"
        words = None
        if hyp.timed:
            words = hypothesis_words(hyp, self.tokenizer.sp.id_to_piece, self.frame_seconds, offset_frames)
        graph = fusion.get("hotwords") if fusion is not None else None
        fired = None if graph is None else [m.phrase.text for m in graph.matches(hyp.tokens)]
        return Transcript(self.tokenizer.decode(hyp.tokens), words, fired)

    def transcribe_words(
        self, audio: torch.Tensor, audio_lens: torch.Tensor, options: DecodeOptions | None = None, **overrides
    ) -> list[Transcript]:
        """Texts with word times and confidences for a batch (options and overrides as in `decode`;
        the words are None for searches without token times: attention and joint)."""
        opts = self.decode_options_with(options, **overrides)
        fusion = self.fusion(opts)
        return [self.transcript(h, fusion=fusion) for h in self.decode(audio, audio_lens, opts)]

    # ---- Lightning hooks -----------------------------------------------------------
    def training_step(self, batch: Batch | None, batch_idx: int):
        if batch is None:  # every utterance of the batch failed to load (already logged)
            # a zero loss that reaches every parameter keeps DDP's gradient all-reduce in step
            # with the other ranks; NonFiniteGuard skips the step when every rank's batch is empty
            return sum(p.sum() for p in self.parameters() if p.requires_grad) * 0.0
        out = self.losses(batch)
        bs = len(batch)
        for k, v in out.items():
            self.log(f"train/{k}", v, prog_bar=k == "loss", batch_size=bs)
        return out["loss"]

    def validation_step(self, batch: Batch | None, batch_idx: int) -> None:
        if batch is None:
            return
        out = self.losses(batch)
        self.log("val_loss", out["loss"], prog_bar=True, batch_size=len(batch), sync_dist=True)
        hyps = self.transcribe(batch.audio, batch.audio_lens, method="greedy")
        self.val_wer.update(hyps, batch.texts)

    def on_validation_epoch_end(self) -> None:
        # compute() sums the error and word counts over DDP ranks (torchmetrics syncs on compute),
        # so every rank holds the gathered WER; sync_dist averages those equal values (and stops
        # Lightning's warning about epoch-level metrics without it)
        self.log("val_wer", self.val_wer.compute(), prog_bar=True, sync_dist=True)
        self.val_wer.reset()

    def configure_optimizers(self):
        o = self.optim
        opt = torch.optim.AdamW(self.parameters(), lr=o["lr"], weight_decay=o["weight_decay"], betas=tuple(o["betas"]))
        warm = max(1, int(o["warmup_steps"]))
        # Noam: linear warm-up to lr, then decay as 1/sqrt(step).
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / warm, (warm / (s + 1)) ** 0.5))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.tokenizer is not None:
            checkpoint["tokenizer"] = self.tokenizer.model_proto

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "tokenizer" in checkpoint:
            self.tokenizer = Tokenizer(checkpoint["tokenizer"])


class CheckpointError(ValueError):
    """A checkpoint that load_model cannot use; the message names the file and what is wrong."""


def _state_dict_mismatch(model: nn.Module, state: dict[str, Any], show: int = 3) -> str:
    """What differs between a checkpoint's state_dict and the model's, summarized ("" if nothing)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {list(state[k].shape)} vs {list(own[k].shape)}"
        for k in own
        if k in state and isinstance(state[k], torch.Tensor) and state[k].shape != own[k].shape
    ]
    parts = [
        f"{len(keys)} {what} (e.g. {', '.join(keys[:show])})"
        for what, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes))
        if keys
    ]
    return "; ".join(parts)


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> ASRModel:
    """Rebuild a model (with its tokenizer and CMVN) from a checkpoint, in eval mode.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError (a ValueError) naming the file: not a readable PyTorch file (truncated,
            or not a checkpoint at all), not an asr checkpoint, or one whose weights or
            tokenizer do not fit the model its hyper-parameters build (another model's).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # zip, pickle and EOF errors: their text is all the reason there is
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (truncated or corrupt?): {reason}") from e
    if not isinstance(ckpt, dict) or "hyper_parameters" not in ckpt or "tokenizer" not in ckpt:
        raise CheckpointError(f"{path}: not an asr checkpoint (no hyper_parameters/tokenizer)")
    try:
        model = ASRModel(**ckpt["hyper_parameters"])
    except (TypeError, ValueError, KeyError) as e:
        raise CheckpointError(f"{path}: its hyper-parameters do not build an asr model: {e}") from e
    mismatch = _state_dict_mismatch(model, ckpt.get("state_dict", {}))
    if mismatch:
        raise CheckpointError(f"{path}: weights do not fit the model its hyper-parameters build: {mismatch}")
    model.load_state_dict(ckpt["state_dict"])
    try:
        model.tokenizer = Tokenizer(ckpt["tokenizer"])
    except (RuntimeError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: unusable tokenizer: {e}") from e
    if len(model.tokenizer) != model.hparams.vocab_size:
        raise CheckpointError(
            f"{path}: its tokenizer has {len(model.tokenizer)} tokens but the model outputs "
            f"{model.hparams.vocab_size}: tokenizer and weights come from different models"
        )
    return model.eval()
