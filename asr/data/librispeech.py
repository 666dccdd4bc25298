"""LibriSpeech-layout reader, validation and manifest preparation.

Reads `<split>/<spk>/<chapter>/<spk>-<chapter>-<utt>.flac` with
`<spk>-<chapter>.trans.txt`, checks every file, and writes a lhotse CutSet per
split plus a Kaldi-style reference text. Nothing is dropped silently: every problem
is logged with the file it concerns and counted in a summary.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf
from lhotse import CutSet, Recording, RecordingSet, SupervisionSegment, SupervisionSet
from lhotse.audio import AudioSource
from tqdm import tqdm

from ..problems import Problems
from .audio import SAMPLE_RATE
from .tokenizer import Tokenizer, train_tokenizer

log = logging.getLogger(__name__)
AUDIO_SUFFIXES = (".flac", ".wav")


@dataclass
class Utterance:
    id: str
    path: Path
    text: str
    speaker: str
    sample_rate: int
    num_samples: int

    @property
    def duration(self) -> float:
        return self.num_samples / self.sample_rate


def read_split(split_dir: str | Path, problems: Problems | None = None, progress: bool = True) -> list[Utterance]:
    """Scan one LibriSpeech-style split; returns the usable utterances sorted by id.
    progress: show a progress bar over the audio files (False under the CLI's --quiet).

    Skipped (and reported): transcript lines without audio, audio without a transcript,
    unreadable audio, empty audio, empty transcripts. Kept with a warning: a sample rate
    other than 16 kHz (resampled when loaded).
    """
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise FileNotFoundError(f"{split_dir}: split directory not found")
    problems = problems if problems is not None else Problems()
    texts: dict[str, tuple[str, Path]] = {}
    for trans in sorted(split_dir.rglob("*.trans.txt")):
        for lineno, line in enumerate(trans.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            parts = line.strip().split(maxsplit=1)
            if len(parts) < 2 or not parts[1].strip():
                problems.add("empty transcript", f"{trans}:{lineno}: no text for {parts[0]}")
                continue
            texts[parts[0]] = (parts[1].strip(), trans)
    audio = {p.name.rsplit(".", 1)[0]: p for p in split_dir.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES}
    for uid in sorted(set(texts) - set(audio)):
        problems.add("transcript without audio", f"{texts[uid][1]}: {uid} has no audio file")
    utts = []
    for uid in tqdm(sorted(audio), desc=f"check {split_dir.name}", unit="file", leave=False, disable=not progress):
        path = audio[uid]
        if uid not in texts:
            problems.add("audio without transcript", f"{path}: no line for {uid} in any .trans.txt")
            continue
        try:
            info = sf.info(str(path))
        except Exception as e:
            problems.add("unreadable audio", f"{path}: {e}")
            continue
        if info.frames <= 0:
            problems.add("empty audio", f"{path}: 0 samples")
            continue
        if info.samplerate != SAMPLE_RATE:
            problems.add("resampled audio", f"{path}: {info.samplerate} Hz, resampled to {SAMPLE_RATE} Hz when loaded")
        speaker = uid.split("-")[0]
        utts.append(Utterance(uid, path, texts[uid][0], speaker, info.samplerate, info.frames))
    return utts


def to_cutset(utts: list[Utterance]) -> CutSet:
    """Lhotse CutSet with one recording and one supervision per utterance."""
    recs = [
        Recording(
            id=u.id,
            sources=[AudioSource(type="file", channels=[0], source=str(u.path.resolve()))],
            sampling_rate=u.sample_rate,
            num_samples=u.num_samples,
            duration=u.duration,
        )
        for u in utts
    ]
    sups = [
        SupervisionSegment(
            id=u.id, recording_id=u.id, start=0.0, duration=u.duration, channel=0, text=u.text, speaker=u.speaker
        )
        for u in utts
    ]
    return CutSet.from_manifests(
        recordings=RecordingSet.from_recordings(recs), supervisions=SupervisionSet.from_segments(sups)
    )


def prepare_librispeech(
    root: str | Path,
    out_dir: str | Path,
    splits: list[str] | None = None,
    train_splits: list[str] | None = None,
    tokenizer: str = "bpe",
    vocab_size: int = 500,
    tokenizer_path: str | Path | None = None,
) -> dict[str, Path]:
    """Write `<out>/<split>.cuts.jsonl.gz`, `<out>/<split>.ref.txt`, the tokenizer and a report.

    Args:
        root: folder holding the split folders (e.g. .../LibriSpeech).
        splits: split names; default every sub-folder of root that contains audio.
        train_splits: splits whose text trains the tokenizer; default those starting with "train".
        tokenizer: bpe | unigram | char. vocab_size is ignored for char.
        tokenizer_path: use this existing sentencepiece model instead of training one.
    Returns:
        {split: cuts path} and "tokenizer": model path.
    """
    root, out_dir = Path(root), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if splits is None:
        splits = sorted(p.name for p in root.iterdir() if p.is_dir() and any(p.rglob("*.trans.txt")))
    if not splits:
        raise FileNotFoundError(f"{root}: no LibriSpeech-style split folders (with *.trans.txt) found")
    train_splits = train_splits or [s for s in splits if s.startswith("train")]
    report, outputs = [], {}
    per_split: dict[str, list[Utterance]] = {}
    for split in splits:
        problems = Problems()
        utts = read_split(root / split, problems)
        per_split[split] = utts
        hours = sum(u.duration for u in utts) / 3600
        report.append(f"{split}: {len(utts)} utterances, {hours:.2f} h")
        report.append(problems.summary(f"{split} problems"))
    if tokenizer_path:
        tok = Tokenizer.load(tokenizer_path)
        tok_out = Path(tokenizer_path)
    else:
        texts = [u.text for s in train_splits for u in per_split.get(s, [])]
        if not texts:
            raise ValueError(f"no training text in splits {train_splits} to train the tokenizer on")
        tok_out = out_dir / f"tokenizer_{tokenizer}.model"
        tok = train_tokenizer(texts, tok_out, tokenizer, vocab_size)
    outputs["tokenizer"] = tok_out
    for split, utts in per_split.items():
        problems = Problems()
        for u in utts:
            bad = tok.unknown_chars(u.text)
            if bad:
                problems.add("characters outside the vocabulary", f"{u.path}: {''.join(sorted(bad))!r} in {u.id}")
        if problems.counts:
            report.append(problems.summary(f"{split} tokenizer check (kept; training drops them)"))
        cuts_path = out_dir / f"{split}.cuts.jsonl.gz"
        to_cutset(utts).to_file(cuts_path)
        (out_dir / f"{split}.ref.txt").write_text("".join(f"{u.id} {u.text}\n" for u in utts))
        outputs[split] = cuts_path
    report.append(f"tokenizer: {tok_out} ({len(tok)} tokens)")
    text = "\n".join(report)
    (out_dir / "prepare_report.txt").write_text(text + "\n")
    log.info("\n%s", text)
    return outputs
