"""Audio I/O (soundfile) and band-limited resampling in torch.

No audio framework is used: torchaudio is not assumed to load. The resampler is a
windowed-sinc polyphase filter; it serves both for wrong-sample-rate input and for
speed perturbation.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F

from .audio_check import SAMPLE_RATE, AudioError, open_sound, read_blocks

__all__ = [  # AudioError and SAMPLE_RATE live in the torch-free audio_check; callers import them from here
    "SAMPLE_RATE",
    "AudioError",
    "audio_blocks",
    "audio_seconds",
    "concatenate_audio",
    "load_audio",
    "pad_waves",
    "resample",
    "save_audio",
    "speed_perturb",
]


def load_audio(path: str | Path, target_sr: int = SAMPLE_RATE) -> tuple[torch.Tensor, int]:
    """Read a file as mono float32 (the mean of its channels), resampled to `target_sr`.

    Returns:
        (wave[S], original_sample_rate)
    Raises:
        AudioError naming the file, with its `category`, when it is missing, unreadable,
        empty, truncated (decoding fails midway) or holds NaN/Inf samples: features of
        such samples would be NaN and poison whatever trains or decodes on them.
    """
    with open_sound(path) as f:
        sr = f.samplerate
        data = np.concatenate(list(read_blocks(f, path, f.frames)))
    wave = torch.from_numpy(np.ascontiguousarray(data.mean(axis=1)))
    if sr != target_sr:
        wave = resample(wave, sr, target_sr)
    return wave, sr


def audio_blocks(path: str | Path, block_samples: int, target_sr: int = SAMPLE_RATE) -> Iterator[torch.Tensor]:
    """Read a file block by block as a live source delivers it: mono float32 blocks of
    `block_samples` at `target_sr` (the last one shorter).

    Files at target_sr are read incrementally; others are read whole and resampled first
    (the resampler is not streaming). Raises AudioError naming the file when it is missing,
    unreadable or empty (on the first block), or, at the block where it happens, when
    decoding fails or a block holds NaN/Inf samples: a stream can fail midway.
    """
    with open_sound(path) as f:
        if f.samplerate != target_sr:
            wave, _ = load_audio(path, target_sr)
            yield from wave.split(block_samples)
            return
        for data in read_blocks(f, path, block_samples):
            yield torch.from_numpy(np.ascontiguousarray(data.mean(axis=1)))


def audio_seconds(path: str | Path) -> float:
    """A file's duration from its header (nothing decoded). Raises AudioError naming the file
    when it is missing, unreadable or empty."""
    with open_sound(path) as f:
        return f.frames / f.samplerate


def pad_waves(waves: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Waveforms [S_i] -> (audio[B, max S_i] right-padded with zeros, lengths[B] int64)."""
    lens = torch.tensor([len(w) for w in waves], dtype=torch.int64)
    audio = torch.zeros(len(waves), int(lens.max()) if waves else 0)
    for i, w in enumerate(waves):
        audio[i, : len(w)] = w
    return audio, lens


def save_audio(path: str | Path, wave: torch.Tensor, sr: int = SAMPLE_RATE) -> None:
    """Write mono audio; format from the suffix (.flac is written as 16-bit PCM)."""
    path = Path(path)
    subtype = "PCM_16" if path.suffix.lower() in (".flac", ".wav") else None
    sf.write(str(path), wave.detach().cpu().clamp(-1, 1).numpy(), sr, subtype=subtype)


def concatenate_audio(
    paths: list[str | Path], out: str | Path, gap_seconds: float = 0.0, sr: int = SAMPLE_RATE
) -> float:
    """Write the files one after another, `gap_seconds` of silence between them, into one mono
    16-bit file at `sr`, a file at a time (long test audio from short utterances). Returns its
    duration in seconds."""
    gap = np.zeros(round(gap_seconds * sr), dtype=np.float32)
    samples = 0
    with sf.SoundFile(str(out), "w", sr, 1, "PCM_16") as f:
        for i, p in enumerate(paths):
            wave, _ = load_audio(p, sr)
            if i and len(gap):
                f.write(gap)
                samples += len(gap)
            f.write(wave.clamp(-1, 1).numpy())
            samples += len(wave)
    return samples / sr


@lru_cache(maxsize=16)
def _sinc_kernel(orig: int, new: int, width: int, rolloff: float) -> tuple[torch.Tensor, int]:
    """Polyphase kernel [new, 1, K] for reduced rates orig -> new, and the half width."""
    cutoff = min(orig, new) * rolloff  # low-pass below the lower Nyquist
    half = int(math.ceil(width * orig / cutoff))
    idx = torch.arange(-half, half + orig, dtype=torch.float64) / orig  # [K]
    phase = -torch.arange(new, dtype=torch.float64)[:, None] / new  # [new, 1]
    t = (phase + idx[None, :]) * cutoff  # time in units of the cutoff period
    t = t.clamp(-width, width)
    window = torch.cos(t * math.pi / width / 2) ** 2  # Hann window over [-width, width]
    t = t * math.pi
    sinc = torch.where(t == 0, torch.ones_like(t), torch.sin(t) / t)
    kernel = sinc * window * (cutoff / orig)
    return kernel[:, None, :].to(torch.float32), half


def resample(wave: torch.Tensor, orig_sr: int, new_sr: int, width: int = 16, rolloff: float = 0.97) -> torch.Tensor:
    """Resample the last dimension of `wave` ([..., S]) from orig_sr to new_sr.

    Output length is ceil(S * new_sr / orig_sr).
    """
    if orig_sr == new_sr:
        return wave
    g = math.gcd(orig_sr, new_sr)
    orig, new = orig_sr // g, new_sr // g
    kernel, half = _sinc_kernel(orig, new, width, rolloff)
    shape = wave.shape
    x = wave.reshape(-1, 1, shape[-1]).to(torch.float32)
    x = F.pad(x, (half, half + orig))
    y = F.conv1d(x, kernel.to(x.device), stride=orig)  # [N, new, L]
    y = y.transpose(1, 2).reshape(x.shape[0], -1)
    out_len = int(math.ceil(new * shape[-1] / orig))
    return y[:, :out_len].reshape(*shape[:-1], out_len).to(wave.dtype)


def speed_perturb(wave: torch.Tensor, factor: float, sr: int = SAMPLE_RATE) -> torch.Tensor:
    """Kaldi/sox-style speed perturbation: play at `factor` times the speed.

    Pitch and tempo both change; the length becomes S / factor. Implemented as a
    resampling from sr*factor to sr (e.g. 0.9 -> 14400->16000 Hz, i.e. 9:10 polyphase).
    """
    if factor == 1.0:
        return wave
    return resample(wave, int(round(sr * factor)), sr)
