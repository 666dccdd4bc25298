"""Batches of raw audio for training and decoding.

Features are computed on the batch inside the model (asr.model), so they run on the
GPU when there is one; the loader only reads, resamples and speed-perturbs audio.
Batches are duration-bucketed by lhotse's DynamicBucketingSampler (`max_duration`
seconds of audio per batch).
"""

from __future__ import annotations

import logging
import math
import random
import re
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lhotse import CutSet
from lhotse.dataset import DynamicBucketingSampler, SimpleCutSampler
from torch.utils.data import DataLoader, Dataset

from .audio import SAMPLE_RATE, AudioError, load_audio, pad_waves, speed_perturb
from .features import FbankOptions, encoder_frames
from .tokenizer import UNK_ID, Tokenizer

log = logging.getLogger(__name__)
DUPLICATE = re.compile(r"_dup\d+$")  # lhotse's suffix for cuts it repeats to give every DDP rank a batch
# Cuts are filtered in memory (to count what is dropped), so the sampler gets an eager
# CutSet on purpose; even LibriSpeech-960's cuts take only a few hundred MB.
warnings.filterwarnings("ignore", message="You are using DynamicBucketingSampler with an eagerly read CutSet")


@dataclass
class Batch:
    """audio[B, S] float32 (zero padded), audio_lens[B], tokens[B, U] (zero padded),
    token_lens[B], texts, ids."""

    audio: torch.Tensor
    audio_lens: torch.Tensor
    tokens: torch.Tensor
    token_lens: torch.Tensor
    texts: list[str]
    ids: list[str]

    def to(self, device) -> Batch:
        return Batch(
            self.audio.to(device),
            self.audio_lens.to(device),
            self.tokens.to(device),
            self.token_lens.to(device),
            self.texts,
            self.ids,
        )

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class BatchRequest:
    """What the sampler hands a data-loader worker: the cuts of one batch and the epoch they
    belong to. Random draws in the worker (speed perturbation) are a function of (seed, epoch,
    cut id), not of the worker's RNG, whose seed depends on when the iterator was created; so a
    run resumed mid-epoch perturbs every utterance as the uninterrupted run did."""

    cuts: CutSet
    epoch: int


class ResumableSampler:
    """Wraps a lhotse sampler: yields BatchRequests and can resume in the middle of an epoch.

    `resume(epoch, batches_done)` makes the next iteration of that epoch skip its first
    `batches_done` batches (sampling reads only the manifests' metadata, so skipping costs
    milliseconds). Lhotse's own state_dict counts the batches the sampler produced, which runs
    ahead of training by the loader's prefetch; the datamodule instead records the batches the
    trainer finished.
    """

    def __init__(self, sampler: Any):
        self.sampler = sampler
        self.epoch = 0
        self._skip: tuple[int, int] | None = None  # (epoch, batches to skip)

    def set_epoch(self, epoch: int) -> None:  # called by Lightning at every epoch start
        self.epoch = epoch
        self.sampler.set_epoch(epoch)

    def resume(self, epoch: int, batches_done: int) -> None:
        self._skip = (epoch, batches_done)

    def __iter__(self) -> Iterator[BatchRequest]:
        skip = 0
        if self._skip is not None:
            if self._skip[0] == self.epoch:
                skip = self._skip[1]
            self._skip = None  # only the first iteration after a restore resumes
        for i, cuts in enumerate(self.sampler):
            if i >= skip:
                yield BatchRequest(cuts, self.epoch)

    def __len__(self) -> int:
        return len(self.sampler)


def utterance_rng(seed: int, epoch: int, cut_id: str) -> random.Random:
    """A random stream for one utterance in one epoch (crc32, unlike hash(), is stable across runs)."""
    return random.Random(zlib.crc32(f"{seed}/{epoch}/{cut_id}".encode()))


def collate(waves: list[torch.Tensor], token_seqs: list[list[int]], texts: list[str], ids: list[str]) -> Batch:
    audio, audio_lens = pad_waves(waves)
    token_lens = torch.tensor([len(t) for t in token_seqs], dtype=torch.int64)
    tokens = torch.zeros(len(waves), max(1, int(token_lens.max()) if waves else 1), dtype=torch.int64)
    for i, t in enumerate(token_seqs):
        tokens[i, : len(t)] = torch.tensor(t, dtype=torch.int64)
    return Batch(audio, audio_lens, tokens, token_lens, texts, ids)


class AudioDataset(Dataset):
    """Map-style dataset whose "index" is a CutSet (one batch) from a lhotse sampler.

    An utterance whose audio fails to load is skipped with a warning naming the file;
    a batch in which all fail is returned as None (the model skips it).

    Speed perturbation picks a random factor per utterance among those that leave its
    transcript enough encoder frames for CTC (the T >= U check filter_cuts makes at speed
    1.0, with `subsampling` and `fbank`): a fast factor can shorten a dense transcript's
    audio below what CTC needs, and CTC would then drop the utterance silently
    (zero_infinity) or train on +inf. Utterances limited this way are counted in a thinned
    warning.

    shift_ms > 0 puts a random 0..shift_ms ms of silence (zeros) before each utterance. A
    corpus whose files all start the same way (a synthesizer's fixed lead-in) otherwise
    teaches the model one alignment of speech to its 40 ms frames, and audio cut anywhere
    else (long-form segments, streams started mid-silence) decodes worse.
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        speed_factors: tuple[float, ...] = (1.0,),
        subsampling: int = 4,
        fbank: FbankOptions | None = None,
        seed: int = 0,
        shift_ms: float = 0.0,
    ):
        self.tokenizer = tokenizer
        self.seed = seed
        self.shift_samples = round(shift_ms * SAMPLE_RATE / 1000)
        self.speed_factors = tuple(speed_factors)
        self.subsampling = subsampling
        self.fbank = fbank or FbankOptions()
        self.num_failed = 0
        self.num_slowed = 0  # utterances for which a faster factor was ruled out

    def encoder_frames(self, num_samples: int, factor: float) -> int:
        """Encoder frames (conservative, as in filter_cuts) of num_samples played at `factor`x speed."""
        n = math.ceil(num_samples * SAMPLE_RATE / round(SAMPLE_RATE * factor))  # speed_perturb's length
        return encoder_frames(n, self.subsampling, self.fbank)

    def speed_factor(self, num_samples: int, tokens: list[int], name: str, rng: random.Random) -> float:
        """A random factor among those the transcript fits at (the slowest if none does)."""
        if len(self.speed_factors) == 1:
            return self.speed_factors[0]
        need = ctc_min_frames(tokens)
        fits = [f for f in self.speed_factors if self.encoder_frames(num_samples, f) >= need]
        if len(fits) < len(self.speed_factors):
            self.num_slowed += 1
            if self.num_slowed & (self.num_slowed - 1) == 0:  # 1, 2, 4, 8, ...: counts without flooding the log
                log.warning(
                    "%s: speed factors > %g skipped: %d tokens need %d encoder frames (%d utterances "
                    "so far in this worker)",
                    name,
                    max(fits, default=min(self.speed_factors)),
                    len(tokens),
                    need,
                    self.num_slowed,
                )
        return rng.choice(fits or [min(self.speed_factors)])

    def __getitem__(self, request: BatchRequest) -> Batch | None:
        waves, toks, texts, ids = [], [], [], []
        for cut in request.cuts:
            if DUPLICATE.search(cut.id):
                # lhotse pads the last validation round with copies when it has fewer cuts than
                # ranks; scoring a copy would count its words twice in the gathered WER
                continue
            path = cut.recording.sources[0].source
            try:
                wave, _ = load_audio(path, SAMPLE_RATE)
            except AudioError as e:
                self.num_failed += 1
                log.warning(
                    "skipping utterance %s: %s (%d failed so far in this worker)",
                    cut.supervisions[0].id,
                    e,
                    self.num_failed,
                )
                continue
            if cut.start > 0 or cut.duration < cut.recording.duration - 1e-3:
                a = int(round(cut.start * SAMPLE_RATE))
                wave = wave[a : a + int(round(cut.duration * SAMPLE_RATE))]
            text = " ".join(s.text for s in cut.supervisions)
            tokens = self.tokenizer.encode(text)
            rng = utterance_rng(self.seed, request.epoch, cut.id)
            wave = speed_perturb(wave, self.speed_factor(len(wave), tokens, path, rng))
            if self.shift_samples:
                wave = torch.cat([wave.new_zeros(rng.randint(0, self.shift_samples)), wave])
            waves.append(wave)
            toks.append(tokens)
            texts.append(text)
            ids.append(cut.supervisions[0].id)
        if not waves:
            return None
        return collate(waves, toks, texts, ids)


def ctc_min_frames(tokens: list[int]) -> int:
    """Fewest encoder frames a CTC alignment of `tokens` needs (a blank between repeats)."""
    return len(tokens) + sum(1 for a, b in zip(tokens, tokens[1:]) if a == b)


def filter_cuts(
    cuts: CutSet,
    tokenizer: Tokenizer,
    subsampling: int,
    fbank: FbankOptions,
    min_duration: float,
    max_duration: float,
    name: str,
) -> CutSet:
    """Drop training cuts that cannot or should not be trained on, with counted warnings.

    Removed: duration outside [min, max], text with characters outside the vocabulary,
    and T shorter than U (fewer encoder frames than CTC needs for the transcript).
    """
    kept, counts = [], {"too short/long": 0, "characters outside the vocabulary": 0, "T shorter than U": 0}
    for cut in cuts:
        text = " ".join(s.text for s in cut.supervisions)
        src = cut.recording.sources[0].source
        if not (min_duration <= cut.duration <= max_duration):
            counts["too short/long"] += 1
            continue
        toks = tokenizer.encode(text)
        if UNK_ID in toks:
            counts["characters outside the vocabulary"] += 1
            log.warning("%s: dropped from %s, text has characters outside the vocabulary: %r", src, name, text)
            continue
        t_enc = encoder_frames(int(cut.duration * SAMPLE_RATE), subsampling, fbank)
        if t_enc < ctc_min_frames(toks):
            counts["T shorter than U"] += 1
            log.warning(
                "%s: dropped from %s, %d encoder frames < %d needed for %d tokens",
                src,
                name,
                t_enc,
                ctc_min_frames(toks),
                len(toks),
            )
            continue
        kept.append(cut)
    dropped = sum(counts.values())
    if dropped:
        log.warning(
            "%s: kept %d of %d utterances; dropped %s",
            name,
            len(kept),
            len(kept) + dropped,
            ", ".join(f"{k}: {v}" for k, v in counts.items() if v),
        )
    return CutSet.from_cuts(kept)


class ASRDataModule(L.LightningDataModule):
    """Train/valid loaders over prepared lhotse cuts.

    Args:
        manifest_dir: folder written by `asr prepare`.
        train_splits, valid_splits: split names (files `<split>.cuts.jsonl.gz`).
        tokenizer: a Tokenizer.
        max_duration: seconds of audio per batch (before speed perturbation).
        speed_perturb: speed factors sampled per training utterance, e.g. [0.9, 1.0, 1.1].
        shift_ms: random leading silence of up to this many ms per training utterance (AudioDataset).
    """

    def __init__(
        self,
        manifest_dir: str,
        train_splits: list[str],
        valid_splits: list[str],
        tokenizer: Tokenizer,
        max_duration: float = 200.0,
        num_buckets: int = 10,
        speed_perturb: tuple[float, ...] = (1.0,),
        num_workers: int = 2,
        min_utt_duration: float = 0.5,
        max_utt_duration: float = 30.0,
        subsampling: int = 4,
        fbank: FbankOptions | None = None,
        seed: int = 0,
        shift_ms: float = 0.0,
    ):
        super().__init__()
        if shift_ms < 0:
            raise ValueError(f"shift_ms must be >= 0, not {shift_ms:g}")
        self.shift_ms = shift_ms
        self.manifest_dir = Path(manifest_dir)
        self.train_splits, self.valid_splits = list(train_splits), list(valid_splits)
        self.tokenizer = tokenizer
        self.max_duration, self.num_buckets = max_duration, num_buckets
        self.speed = tuple(speed_perturb)
        self.num_workers = num_workers
        self.min_utt, self.max_utt = min_utt_duration, max_utt_duration
        self.subsampling = subsampling
        self.fbank = fbank or FbankOptions()
        self.seed = seed
        self._train: CutSet | None = None
        self._train_sampler: ResumableSampler | None = None
        self._resume: tuple[int, int] | None = None  # (epoch, batches done) from a checkpoint

    def load_cuts(self, splits: list[str]) -> CutSet:
        cuts = []
        for s in splits:
            p = self.manifest_dir / f"{s}.cuts.jsonl.gz"
            if not p.exists():
                raise FileNotFoundError(f"{p}: manifest not found; run `asr prepare` first")
            cuts.extend(CutSet.from_file(p))
        return CutSet.from_cuts(cuts)

    def train_cuts(self) -> CutSet:
        if self._train is None:
            self._train = filter_cuts(
                self.load_cuts(self.train_splits),
                self.tokenizer,
                self.subsampling,
                self.fbank,
                self.min_utt,
                self.max_utt,
                "train",
            )
            if len(self._train) == 0:
                raise ValueError("no training utterances left after filtering")
        return self._train

    def _loader(self, dataset: AudioDataset, sampler: ResumableSampler) -> DataLoader:
        return DataLoader(
            dataset,
            sampler=sampler,
            batch_size=None,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        # In DDP the sampler shards batches across ranks (rank and world size from
        # torch.distributed): every rank gets the same number of batches, the remainder round
        # dropped (drop_last), so no rank waits for a gradient all-reduce that never comes.
        sampler = DynamicBucketingSampler(
            self.train_cuts(),
            max_duration=self.max_duration,
            shuffle=True,
            num_buckets=self.num_buckets,
            seed=self.seed,
            drop_last=True,
        )
        self._train_sampler = ResumableSampler(sampler)
        if self._resume is not None:
            self._train_sampler.resume(*self._resume)
            self._resume = None
        dataset = AudioDataset(
            self.tokenizer, self.speed, self.subsampling, self.fbank, seed=self.seed, shift_ms=self.shift_ms
        )
        return self._loader(dataset, self._train_sampler)

    def val_dataloader(self) -> DataLoader:
        return self.eval_loader(self.load_cuts(self.valid_splits))

    def eval_loader(self, cuts: CutSet, world_size: int | None = None, rank: int | None = None) -> DataLoader:
        """Unshuffled, unperturbed batches of `cuts`, sorted by duration (less padding).

        Under DDP (and world_size/rank not given) each rank gets its share; lhotse splits the
        last round's cuts so that every rank has a batch and no cut is dropped, so a metric
        summed over ranks equals the single-process one.
        """
        sampler = SimpleCutSampler(
            cuts.sort_by_duration(), max_duration=self.max_duration, world_size=world_size, rank=rank
        )
        return self._loader(AudioDataset(self.tokenizer), ResumableSampler(sampler))

    # ---- resuming mid-epoch: Lightning saves this in every checkpoint and restores it
    # before it asks for the train loader -------------------------------------------
    def state_dict(self) -> dict[str, int]:
        """The epoch and how many of its batches this rank has trained on."""
        if self.trainer is None:
            return {}
        loop = self.trainer.fit_loop.epoch_loop
        # checkpoints are written in on_train_batch_end (every N steps) or after the epoch: in
        # both, `processed` counts the batches whose optimizer step is done
        return {"epoch": self.trainer.current_epoch, "batches_done": loop.batch_progress.current.processed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state:
            self._resume = (int(state["epoch"]), int(state["batches_done"]))
