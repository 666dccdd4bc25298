"""Checking audio files before anything trains on them: what is wrong, and whether to keep them.

`check_audio` opens (header mode) or also decodes (full mode) one file and says whether it
is usable, with a category and a message naming the file for each problem; a process pool
runs it over a whole corpus. This module imports no torch, so the pool's spawned workers
start in a fraction of a second.

Policy (README "Bad input" has the same table):
- skipped: file not found, unreadable (no known format), empty (0 samples), truncated or
  corrupt (decoding fails midway, or a WAV's data chunk is shorter than its header says),
  samples that are NaN or Inf;
- kept and counted: another sample rate (resampled when loaded), several channels (mixed
  down to their mean when loaded), 8-bit samples (kept: a 48 dB range is poor but usable),
  float samples, and float samples beyond [-1, 1] (used as they are, not clipped: a level
  problem for the user to judge, not a decoding one).
"""

from __future__ import annotations

import multiprocessing
import os
import re
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from itertools import repeat
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from ..problems import Problems

SAMPLE_RATE = 16000
READ_BLOCK = 1 << 20  # samples decoded at a time by the full check: memory stays flat for hour-long files
EIGHT_BIT = ("PCM_S8", "PCM_U8")
FLOAT = ("FLOAT", "DOUBLE")
# libsndfile's log line for a WAV whose data chunk promises more bytes than the file holds
_WAV_SHORT = re.compile(r"^data : (\d+) \(should be (\d+)\)", re.MULTILINE)
# streaming writers (pipes) cannot seek back to fill in the size and leave a placeholder
_PLACEHOLDER_SIZES = (0, 0x7FFFF000, 0xFFFFFFFF)


class AudioError(RuntimeError):
    """Raised for audio that cannot be used; the message always names the file.

    category: the problem's name in reports ("unreadable audio", "non-finite samples", ...).
    """

    def __init__(self, message: str, category: str = "unreadable audio"):
        super().__init__(message)
        self.category = category


def open_sound(path: str | Path) -> sf.SoundFile:
    """Open an audio file, or an AudioError naming it (not libsndfile's "System error.")."""
    if not os.path.exists(path):
        raise AudioError(f"{path}: file not found", "file not found")
    if os.path.isdir(path):
        raise AudioError(f"{path}: is a directory, not an audio file", "unreadable audio")
    if os.path.getsize(path) == 0:
        raise AudioError(f"{path}: empty file (0 bytes)", "empty audio")
    try:
        f = sf.SoundFile(str(path))
    except Exception as e:  # soundfile raises several types for broken files
        raise AudioError(f"{path}: unreadable audio ({e})", "unreadable audio") from e
    if f.frames <= 0:
        f.close()
        raise AudioError(f"{path}: empty audio (0 samples)", "empty audio")
    short = wav_shortfall(f)
    if short:
        f.close()
        raise AudioError(f"{path}: truncated audio (the WAV header promises {short} bytes more)", "truncated audio")
    return f


def wav_shortfall(f: sf.SoundFile) -> int:
    """Bytes a WAV's data chunk declares beyond the end of the file (0 when complete)."""
    m = _WAV_SHORT.search(f.extra_info) if f.format in ("WAV", "WAVEX", "RF64") else None
    if m is None or int(m.group(1)) in _PLACEHOLDER_SIZES:
        return 0
    return max(0, int(m.group(1)) - int(m.group(2)))


def read_blocks(f: sf.SoundFile, path: str | Path, block: int) -> Iterator[np.ndarray]:
    """Decode an open file as float32 [n, channels] blocks; AudioError naming the file and the
    position when decoding fails midway (a truncated FLAC) or a block holds NaN/Inf."""
    done = 0
    while True:
        try:
            data = f.read(block, dtype="float32", always_2d=True)
        except Exception as e:
            raise AudioError(
                f"{path}: truncated or corrupt audio, decoding failed after {done / f.samplerate:.2f} s ({e})",
                "truncated audio",
            ) from e
        if data.shape[0] == 0:
            return
        finite = np.isfinite(data)
        if not finite.all():  # counted in this block: reading stops at the first bad one
            first = done + int(np.flatnonzero(~finite.all(axis=1))[0])
            raise AudioError(
                f"{path}: {finite.size - np.count_nonzero(finite)} non-finite samples (NaN or Inf), "
                f"the first at {first / f.samplerate:.2f} s",
                "non-finite samples",
            )
        done += data.shape[0]
        yield data


@dataclass(frozen=True)
class AudioCheck:
    """What checking one file found. `error` set: skip the file; `notes`: kept, but counted."""

    path: str
    sample_rate: int = 0
    num_samples: int = 0  # per channel, as decoded (full check) or as the header says
    error: tuple[str, str] | None = None  # (category, message)
    notes: tuple[tuple[str, str], ...] = ()  # (category, message) each

    def report(self, problems: Problems) -> bool:
        """Count the error or the notes in `problems`; True when the file is usable."""
        for category, message in (self.error,) if self.error is not None else self.notes:
            problems.add(category, message)
        return self.error is None


def check_audio(path: str | Path, full: bool = True) -> AudioCheck:
    """Check one file: the header, and with `full` every sample (truncation, NaN/Inf, range).

    Never raises for a bad file: the problem comes back in the result.
    """
    try:
        f = open_sound(path)
    except AudioError as e:
        return AudioCheck(str(path), error=(e.category, str(e)))
    with f:
        sr, frames, channels, subtype = f.samplerate, f.frames, f.channels, f.subtype
        peak = 0.0
        if full:
            try:
                decoded = 0
                for data in read_blocks(f, path, READ_BLOCK):
                    decoded += data.shape[0]
                    peak = max(peak, float(np.abs(data).max()))
            except AudioError as e:
                return AudioCheck(str(path), error=(e.category, str(e)))
            if decoded < frames:
                msg = f"{path}: truncated audio, {decoded} of the {frames} samples its header promises"
                return AudioCheck(str(path), error=("truncated audio", msg))
    notes = []
    if sr != SAMPLE_RATE:
        notes.append(("resampled audio", f"{path}: {sr} Hz, resampled to {SAMPLE_RATE} Hz when loaded"))
    if channels > 1:
        notes.append(("multi-channel audio", f"{path}: {channels} channels, mixed down to their mean when loaded"))
    if subtype in EIGHT_BIT:
        notes.append(("8-bit audio", f"{path}: {subtype} samples (8 bits: about 48 dB of dynamic range)"))
    if subtype in FLOAT:
        notes.append(("float audio", f"{path}: {subtype} samples"))
    if peak > 1.0:
        notes.append(
            ("samples beyond [-1, 1]", f"{path}: peak {peak:.3g}, used as it is (not clipped): check the level")
        )
    return AudioCheck(str(path), sr, frames, notes=tuple(notes))


def check_audio_files(
    paths: list[Path],
    full: bool = True,
    jobs: int | None = None,
    progress: bool = True,
    desc: str = "check",
    min_files_per_job: int = 64,
) -> list[AudioCheck]:
    """check_audio over many files; results in the order of `paths`.

    jobs: processes (default: all cores), used when there are at least `min_files_per_job`
    files per process: a spawned worker costs about as much as decoding that many files.
    """
    jobs = jobs or os.cpu_count() or 1
    pool = jobs > 1 and len(paths) >= min_files_per_job * jobs
    bar = tqdm(total=len(paths), desc=desc, unit="file", leave=False, disable=not progress)
    # spawn, not fork: forking after torch has started its OpenMP pool deadlocks the children
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) if pool else nullcontext() as ex:
        mapper = partial(ex.map, chunksize=16) if ex is not None else map
        out = []
        for res in mapper(check_audio, paths, repeat(full)):
            out.append(res)
            bar.update()
    bar.close()
    return out
