"""Batch transcription of audio files or a whole LibriSpeech-style split."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import torch
from tqdm import tqdm

from .data.audio import SAMPLE_RATE, AudioError, audio_seconds, load_audio, pad_waves
from .data.audio_check import check_audio
from .data.librispeech import CheckOptions, Utterance, read_split
from .decoding import DecodeOptions
from .decoding.timestamps import Transcript
from .longform import LongFormOptions, transcribe_long
from .model import ASRModel
from .problems import Problems

log = logging.getLogger(__name__)
R = TypeVar("R")


def audio_batches(
    items: list[tuple[str, str]], max_seconds: float, problems: Problems
) -> Iterator[tuple[list[str], list[torch.Tensor]]]:
    """Load (utt_id, path) items and group them into batches of at most max_seconds of audio.

    Files that fail to load are counted in `problems` by AudioError.category and skipped.
    """
    ids: list[str] = []
    waves: list[torch.Tensor] = []
    total = 0.0
    for uid, path in items:
        try:
            wave, _ = load_audio(path)
        except AudioError as e:  # missing, unreadable, truncated, NaN/Inf: named, counted, skipped
            problems.add(e.category, str(e))
            continue
        dur = len(wave) / SAMPLE_RATE
        if waves and total + dur > max_seconds:
            yield ids, waves
            ids, waves, total = [], [], 0.0
        ids.append(uid)
        waves.append(wave)
        total += dur
    if waves:
        yield ids, waves


@torch.no_grad()
def transcribe_items(
    model: ASRModel,
    items: list[tuple[str, str]],
    options: DecodeOptions | None = None,
    max_seconds: float = 120.0,
    device: str | torch.device = "cpu",
    progress: bool = True,
    long_form: LongFormOptions | None = None,
) -> tuple[dict[str, Transcript], Problems]:
    """Decode (utt_id, path) items. Returns ({utt_id: transcript}, problems): each transcript's
    text and, where the search gives token times, its words with times and confidences. Bad
    files are skipped and counted.

    options: decoding options (default: the checkpoint's, conf/decode/ at training time).
    long_form: files longer than its min_seconds (default 60 s) are decoded one at a time with
    bounded memory (asr.longform.transcribe_long, a progress bar over each file's seconds); the
    others in batches of at most max_seconds of audio, loaded whole.
    """
    opts = model.decode_options_with(options)
    lf = long_form or LongFormOptions()
    model = model.to(device).eval()
    short, long = [], []
    for uid, path in items:
        try:
            (long if audio_seconds(path) > lf.min_seconds else short).append((uid, path))
        except AudioError:  # loading it in a batch names and counts the problem
            short.append((uid, path))
    hyps, problems = decode_batches(
        lambda audio, lens: model.transcribe_words(audio.to(device), lens.to(device), opts),
        short,
        max_seconds,
        f"decode ({opts.method})",
        progress and bool(short),
    )
    for uid, path in long:
        try:
            hyps[uid], _ = transcribe_long(model, path, opts, lf, device, progress)
        except AudioError as e:  # fails midway (truncated, NaN/Inf): named, counted, the rest go on
            problems.add(e.category, str(e))
    return hyps, problems


def decode_batches(
    transcribe: Callable[[torch.Tensor, torch.Tensor], list[R]],
    items: list[tuple[str, str]],
    max_seconds: float,
    desc: str = "decode",
    progress: bool = True,
) -> tuple[dict[str, R], Problems]:
    """({utt_id: result}, problems) of `transcribe(audio[B, S], lens[B]) -> results` (texts or
    transcripts) over the (utt_id, path) items in batches of at most max_seconds of audio;
    files that fail to load are counted."""
    problems = Problems()
    hyps: dict[str, R] = {}
    bar = tqdm(total=len(items), desc=desc, unit="utt", disable=not progress)
    for ids, waves in audio_batches(items, max_seconds, problems):
        audio, lens = pad_waves(waves)
        for uid, text in zip(ids, transcribe(audio, lens)):
            hyps[uid] = text
        bar.update(len(ids))
    bar.close()
    return hyps, problems


def file_items(files: list[str], problems: Problems) -> list[tuple[str, str]]:
    """(utt_id, path) of audio files named on the command line (the id is the file name without
    its suffix). Header-checked like a split (loading finds what only decoding shows): files
    that are missing, unreadable, empty or truncated, and a second file with the same id, are
    named, counted and left out; other rates, channels and sample formats are counted."""
    items: dict[str, str] = {}
    for f in files:
        uid = Path(f).name.rsplit(".", 1)[0]
        if uid in items:
            problems.add("duplicate utterance id", f"{f}: the id {uid} again (first {items[uid]}); the first is kept")
            continue
        if check_audio(f, full=False).report(problems):
            items[uid] = f
    return list(items.items())


def split_utterances(split_dir: str | Path, progress: bool = True) -> tuple[list[Utterance], Problems]:
    """Validated utterances of a LibriSpeech-style split, longest first, and what was wrong.

    The audio is checked by its header only: decoding it for the job finds the rest."""
    problems = Problems()
    utts = read_split(split_dir, problems, progress, CheckOptions(audio="header"))
    utts.sort(key=lambda u: -u.duration)  # similar lengths share a batch: less padding
    return utts, problems


def split_items(split_dir: str | Path, progress: bool = True) -> tuple[list[tuple[str, str]], dict[str, str], Problems]:
    """Validated (utt_id, path) items of a split, longest first, plus references (split_utterances)."""
    utts, problems = split_utterances(split_dir, progress)
    return [(u.id, str(u.path)) for u in utts], {u.id: u.text for u in utts}, problems
