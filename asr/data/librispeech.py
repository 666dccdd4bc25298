"""LibriSpeech-layout reader, validation and manifest preparation.

Reads `<split>/<spk>/<chapter>/<spk>-<chapter>-<utt>.flac` with
`<spk>-<chapter>.trans.txt`, checks every file, and writes a lhotse CutSet per
split plus a Kaldi-style reference text. Nothing is dropped silently: every problem
is logged with the file it concerns and counted in a summary.
"""

from __future__ import annotations

import codecs
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from lhotse import CutSet, Recording, RecordingSet, SupervisionSegment, SupervisionSet
from lhotse.audio import AudioSource

from ..problems import Problems
from .audio_check import SAMPLE_RATE, check_audio_files
from .datamodule import ctc_min_frames
from .features import FbankOptions, encoder_frames
from .tokenizer import Tokenizer, train_tokenizer

log = logging.getLogger(__name__)
AUDIO_SUFFIXES = (".flac", ".wav")
UTT_SUFFIX = re.compile(r"[0-9A-Za-z_]+")  # the utterance part of spk-chapter-utt (LibriSpeech: 4 digits)


@dataclass(frozen=True)
class CheckOptions:
    """How thoroughly `asr prepare` checks a corpus."""

    audio: str = "full"  # full: decode every file (truncation, NaN/Inf, level); header: open it only
    jobs: int | None = None  # processes for the audio check (default: all cores, when there are many files)
    encoder_frame_ms: float = 40.0  # encoder frame (fbank shift x subsampling) for the T<U check; 0: no check

    def __post_init__(self) -> None:
        if self.audio not in ("full", "header"):
            raise ValueError(f"audio check must be full or header, not {self.audio!r}")
        shift = FbankOptions().frame_shift_ms
        if self.encoder_frame_ms < 0 or self.encoder_frame_ms % shift:
            raise ValueError(
                f"encoder frame must be a multiple of the {shift:g} ms fbank shift (0: no check), "
                f"not {self.encoder_frame_ms:g} ms"
            )

    @property
    def subsampling(self) -> int:
        """Encoder subsampling of the fbank frames (0: no T<U check)."""
        return int(self.encoder_frame_ms // FbankOptions().frame_shift_ms)


@dataclass(frozen=True)
class TranscriptLine:
    text: str
    path: Path  # the .trans.txt
    line: int  # 1-based

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass
class Utterance:
    id: str
    path: Path
    text: str
    speaker: str
    sample_rate: int
    num_samples: int
    trans: Path | None = None  # the .trans.txt holding the text, for messages
    line: int = 0  # its line there (1-based)

    @property
    def duration(self) -> float:
        return self.num_samples / self.sample_rate

    @property
    def where(self) -> str:
        """`trans.txt:LINE` of the transcript (the audio path when it came from elsewhere)."""
        return f"{self.trans}:{self.line}" if self.trans is not None else str(self.path)


def read_transcripts(split_dir: Path, problems: Problems) -> dict[str, TranscriptLine]:
    """Every `<spk>-<chapter>.trans.txt` under split_dir -> {utt_id: TranscriptLine}.

    Lines are decoded as UTF-8 one by one, so a bad byte costs its line only. Skipped and
    counted, with file:line: non-UTF-8 lines, ids not of the form <spk>-<chapter>-<utt> of
    their file, lines without text, and repeated ids (the first occurrence is kept).
    """
    texts: dict[str, TranscriptLine] = {}
    for trans in sorted(split_dir.rglob("*.trans.txt")):
        prefix = trans.name[: -len(".trans.txt")] + "-"
        for lineno, raw in enumerate(trans.read_bytes().splitlines(), 1):
            where = f"{trans}:{lineno}"
            if lineno == 1 and raw.startswith(codecs.BOM_UTF8):  # Windows editors add one
                raw = raw[len(codecs.BOM_UTF8) :]
            try:
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError as e:
                problems.add(
                    "non-UTF-8 transcript",
                    f"{where}: bytes {raw[e.start : e.end]!r} at column {e.start + 1} are not UTF-8; line skipped",
                )
                continue
            if not line:
                continue
            uid, *rest = line.split(maxsplit=1)
            if not (uid.startswith(prefix) and UTT_SUFFIX.fullmatch(uid[len(prefix) :])):
                problems.add(
                    "malformed transcript line",
                    f"{where}: {uid!r} is not an utterance id {prefix}<utt> (the file's speaker-chapter); line skipped",
                )
                continue
            if not rest:
                problems.add("empty transcript", f"{where}: no text for {uid}")
                continue
            if uid in texts:
                problems.add(
                    "duplicate utterance id", f"{where}: {uid} again (first at {texts[uid].where}); the first is kept"
                )
                continue
            texts[uid] = TranscriptLine(rest[0], trans, lineno)
    return texts


def read_split(
    split_dir: str | Path, problems: Problems | None = None, progress: bool = True, check: CheckOptions | None = None
) -> list[Utterance]:
    """Scan one LibriSpeech-style split; returns the usable utterances sorted by id.

    progress: show a progress bar over the audio files (False under the CLI's --quiet).
    check: how to check the audio (default: decode every file, in parallel when there are many).

    Skipped (and reported): transcript problems (see read_transcripts), transcript lines
    without audio, audio without a transcript, a second audio file with the same id, and
    audio that is unreadable, empty, truncated or holds NaN/Inf. Kept with a count: other
    sample rates, several channels, 8-bit or float samples (asr.data.audio_check).
    """
    split_dir = Path(split_dir)
    check = check or CheckOptions()
    if not split_dir.is_dir():
        raise FileNotFoundError(f"{split_dir}: split directory not found")
    problems = problems if problems is not None else Problems()
    texts = read_transcripts(split_dir, problems)
    audio: dict[str, Path] = {}
    for p in sorted(split_dir.rglob("*")):
        if p.suffix.lower() not in AUDIO_SUFFIXES:
            continue
        uid = p.name.rsplit(".", 1)[0]
        if uid in audio:
            problems.add("duplicate audio id", f"{p}: a second file for {uid} (first {audio[uid]}); the first is kept")
            continue
        audio[uid] = p
    for uid in sorted(set(texts) - set(audio)):
        problems.add("transcript without audio", f"{texts[uid].where}: {uid} has no audio file")
    for uid in sorted(set(audio) - set(texts)):
        problems.add("audio without transcript", f"{audio[uid]}: no usable line for {uid} in any .trans.txt")
    todo = sorted(set(audio) & set(texts))
    checks = check_audio_files(
        [audio[uid] for uid in todo], check.audio == "full", check.jobs, progress, f"check {split_dir.name}"
    )
    utts = []
    for uid, c in zip(todo, checks):
        if not c.report(problems):
            continue
        t = texts[uid]
        utts.append(Utterance(uid, audio[uid], t.text, uid.split("-")[0], c.sample_rate, c.num_samples, t.path, t.line))
    return utts


def check_transcripts(utts: list[Utterance], tok: Tokenizer, check: CheckOptions) -> Problems:
    """Transcripts the training filter would drop, named by trans.txt:line: characters outside
    the tokenizer's vocabulary, else more tokens than the audio has encoder frames for CTC
    (a blank between repeats: ctc_min_frames) at check.encoder_frame_ms."""
    problems = Problems()
    for u in utts:
        bad = tok.unknown_chars(u.text)
        if bad:
            problems.add(
                "characters outside the vocabulary", f"{u.where}: {u.id}: {''.join(sorted(bad))!r} not in the tokenizer"
            )
        elif check.subsampling:
            tokens = tok.encode(u.text)
            frames = encoder_frames(int(u.duration * SAMPLE_RATE), check.subsampling, FbankOptions())
            need = ctc_min_frames(tokens)
            if frames < need:
                problems.add(
                    "T shorter than U",
                    f"{u.where}: {u.id}: {len(tokens)} tokens need {need} encoder frames; its {u.duration:.2f} s "
                    f"of audio has {frames} frames of {check.encoder_frame_ms:g} ms ({u.path})",
                )
    return problems


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
    check: CheckOptions | None = None,
    progress: bool = True,
) -> dict[str, Path]:
    """Write `<out>/<split>.cuts.jsonl.gz`, `<out>/<split>.ref.txt`, the tokenizer and a report.

    Args:
        root: folder holding the split folders (e.g. .../LibriSpeech).
        splits: split names; default every sub-folder of root that contains audio.
        train_splits: splits whose text trains the tokenizer; default those starting with "train".
        tokenizer: bpe | unigram | char. vocab_size is ignored for char.
        tokenizer_path: use this existing sentencepiece model instead of training one.
        check: how thoroughly to check audio and transcripts (CheckOptions' defaults).
    Returns:
        {split: cuts path} and "tokenizer": model path.
    prepare_report.txt holds each split's counts per problem, then every message.
    """
    root, out_dir = Path(root), Path(out_dir)
    check = check or CheckOptions()
    out_dir.mkdir(parents=True, exist_ok=True)
    if splits is None:
        splits = sorted(p.name for p in root.iterdir() if p.is_dir() and any(p.rglob("*.trans.txt")))
    if not splits:
        raise FileNotFoundError(f"{root}: no LibriSpeech-style split folders (with *.trans.txt) found")
    train_splits = train_splits or [s for s in splits if s.startswith("train")]
    report, outputs = [], {}
    per_split: dict[str, list[Utterance]] = {}
    all_problems: dict[str, Problems] = {}
    for split in splits:
        problems = all_problems[split] = Problems()
        utts = read_split(root / split, problems, progress, check)
        per_split[split] = utts
        hours = sum(u.duration for u in utts) / 3600
        report.append(f"{split}: {len(utts)} utterances, {hours:.2f} h")
        report.append(problems.summary(f"{split} problems (skipped, or kept and counted)"))
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
        problems = check_transcripts(utts, tok, check)
        if problems.counts:
            report.append(problems.summary(f"{split} tokenizer check (kept in the manifests; training drops them)"))
            all_problems[split].merge(problems)
        cuts_path = out_dir / f"{split}.cuts.jsonl.gz"
        to_cutset(utts).to_file(cuts_path)
        (out_dir / f"{split}.ref.txt").write_text("".join(f"{u.id} {u.text}\n" for u in utts), encoding="utf-8")
        outputs[split] = cuts_path
    report.append(f"tokenizer: {tok_out} ({len(tok)} tokens)")
    text = "\n".join(report)
    messages = [p.details(f"{split} messages") for split, p in all_problems.items() if p.counts]
    (out_dir / "prepare_report.txt").write_text("\n\n".join([text, *messages]) + "\n", encoding="utf-8")
    log.info("\n%s", text)
    return outputs
