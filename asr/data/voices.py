"""Synthetic speakers: a TTS voice (espeak-ng or flite) and the channel it is recorded through.

A speaker is what a person in a room with a microphone is to LibriSpeech: one voice with its
own rate and pitch, always heard through the same channel (noise of one colour at about one
SNR, one room's reverberation, one microphone's band and level). Every utterance's random
draws (the noise sample, the SNR's jitter) come from a generator seeded by the corpus seed and
the utterance id, so an utterance renders to the same samples whenever and wherever it is
synthesized: an interrupted synthesis that resumes writes what an uninterrupted one would.
"""

from __future__ import annotations

import subprocess
import tempfile
import zlib
from dataclasses import dataclass

import numpy as np
import torch

from .audio import SAMPLE_RATE, load_audio

ENGINES = ("espeak", "flite")
NOISES = ("white", "pink", "brown", "hum")
SNR_JITTER_DB = 3.0  # each utterance's SNR is the speaker's +- this


@dataclass(frozen=True)
class Channel:
    """How a speaker is recorded. None fields leave that effect out."""

    noise: str | None = None  # one of NOISES
    snr_db: float = 30.0  # speech-to-noise power ratio over the whole utterance
    rt60: float | None = None  # reverberation time of the room, seconds
    band_hz: tuple[float, float] | None = None  # microphone/line pass band
    level_db: float = -20.0  # RMS level of the result, dBFS

    def __post_init__(self) -> None:
        if self.noise is not None and self.noise not in NOISES:
            raise ValueError(f"Channel.noise must be one of {NOISES} or None, got {self.noise!r}")
        if self.rt60 is not None and not 0.05 <= self.rt60 <= 2.0:
            raise ValueError(f"Channel.rt60 must be in [0.05, 2] s, got {self.rt60}")
        if self.band_hz is not None and not 0 <= self.band_hz[0] < self.band_hz[1] <= SAMPLE_RATE / 2:
            raise ValueError(f"Channel.band_hz must be 0 <= low < high <= {SAMPLE_RATE // 2}, got {self.band_hz}")

    def describe(self) -> str:
        parts = [f"{self.noise} noise {self.snr_db:.0f} dB" if self.noise else "no noise"]
        parts.append(f"room RT60 {self.rt60:.2f} s" if self.rt60 else "dry")
        parts.append(f"band {self.band_hz[0]:.0f}-{self.band_hz[1]:.0f} Hz" if self.band_hz else "full band")
        parts.append(f"level {self.level_db:.0f} dBFS")
        return ", ".join(parts)

    @property
    def is_identity(self) -> bool:
        """No effect at all: the engine's speech is stored as it comes (the grammar corpus)."""
        return self.noise is None and self.rt60 is None and self.band_hz is None and self.level_db == Channel.level_db


@dataclass(frozen=True)
class Speaker:
    """One synthetic speaker of a LibriSpeech-layout corpus."""

    spk_id: int  # LibriSpeech-style numeric speaker id
    chapter: int  # one chapter per speaker
    voice: str  # espeak-ng "accent+variant", or a flite voice name
    speed: float  # espeak-ng: words per minute; flite: rate factor (1 = the voice's own)
    pitch: float  # espeak-ng: 0-99; flite: mean F0 target in Hz
    engine: str = "espeak"
    channel: Channel = Channel()

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"Speaker.engine must be one of {ENGINES}, got {self.engine!r}")

    def describe(self) -> str:
        if self.engine == "espeak":
            voice = f"espeak-ng {self.voice}, {self.speed:.0f} wpm, pitch {self.pitch:.0f}"
        else:
            voice = f"flite {self.voice}, rate x{self.speed:.2f}, F0 {self.pitch:.0f} Hz"
        return voice if self.channel.is_identity else f"{voice}; {self.channel.describe()}"

    def tts_command(self, text: str, wav_path: str) -> list[str]:
        if self.engine == "espeak":
            return [
                "espeak-ng",
                "-v",
                self.voice,
                "-s",
                str(int(self.speed)),
                "-p",
                str(int(self.pitch)),
                "-w",
                wav_path,
                text,
            ]
        return [
            "flite", "-voice", self.voice, "--setf", f"duration_stretch={1 / self.speed:.3f}",
            "--setf", f"int_f0_target_mean={self.pitch:.0f}", "-t", text, "-o", wav_path,
        ]  # fmt: skip


def utterance_rng(seed: int, utt_id: str) -> np.random.Generator:
    """The generator of one utterance's random draws: a function of (seed, id) only."""
    return np.random.default_rng([seed, zlib.crc32(utt_id.encode())])


def synthesize_speech(speaker: Speaker, text: str) -> torch.Tensor:
    """The TTS engine's dry speech, float32 [N] at 16 kHz. Raises RuntimeError on engine failure."""
    with tempfile.NamedTemporaryFile(suffix=".wav") as tmp:
        r = subprocess.run(speaker.tts_command(text, tmp.name), capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"{speaker.engine} failed for voice {speaker.voice}: {r.stderr.strip()}")
        wave, _ = load_audio(tmp.name, SAMPLE_RATE)
    return wave


def room_impulse_response(rt60: float, rng: np.random.Generator, sr: int = SAMPLE_RATE) -> np.ndarray:
    """A diffuse-field RIR: the direct sound, then exponentially decaying noise (-60 dB at rt60).

    The decay starts after a 2-8 ms pre-delay (first reflections); the direct-to-reverberant
    ratio falls as rt60 grows, as in a real room at a fixed distance.
    """
    n = int(rt60 * sr)
    t = np.arange(n) / sr
    tail = rng.standard_normal(n) * np.exp(-6.9078 * t / rt60)  # ln(1000) = 60 dB of amplitude
    tail[: int(rng.uniform(0.002, 0.008) * sr)] = 0.0
    h = tail / np.sqrt(np.sum(tail**2)) * np.sqrt(rt60)  # reverberant energy grows with rt60
    h[0] = 1.0
    return h / np.sqrt(np.sum(h**2))


def colored_noise(kind: str, n: int, rng: np.random.Generator, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Unit-power noise [n]: white, pink (1/f power), brown (1/f^2) or mains hum (50/60 Hz + harmonics)."""
    if kind == "hum":
        t = np.arange(n) / sr
        f0 = rng.choice([50.0, 60.0])
        x = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 2 * np.pi)) / k for k in (1, 2, 3, 5))
        x = x + 0.1 * rng.standard_normal(n)
    else:
        spec = np.fft.rfft(rng.standard_normal(n))
        f = np.maximum(np.fft.rfftfreq(n, 1 / sr), 20.0)
        power = {"white": 0.0, "pink": 1.0, "brown": 2.0}[kind]
        x = np.fft.irfft(spec / f ** (power / 2), n)
    return x / np.sqrt(np.mean(x**2) + 1e-20)


def band_limit(x: np.ndarray, low: float, high: float, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Zero-phase band-pass with raised-cosine edges 1/6 octave wide (a microphone or phone line)."""
    spec = np.fft.rfft(x)
    f = np.fft.rfftfreq(len(x), 1 / sr)
    gain = np.ones_like(f)
    if low > 0:
        lo0 = low / 2 ** (1 / 6)
        gain[f < lo0] = 0.0
        edge = (f >= lo0) & (f < low)
        gain[edge] = 0.5 - 0.5 * np.cos(np.pi * (f[edge] - lo0) / (low - lo0))
    hi1 = min(high * 2 ** (1 / 6), sr / 2)
    gain[f > hi1] = 0.0
    edge = (f > high) & (f <= hi1)
    if hi1 > high:
        gain[edge] = 0.5 + 0.5 * np.cos(np.pi * (f[edge] - high) / (hi1 - high))
    return np.fft.irfft(spec * gain, len(x))


def apply_channel(speech: torch.Tensor, channel: Channel, rng: np.random.Generator) -> torch.Tensor:
    """Speech [N] through the channel: the room, noise at the SNR, the microphone's band, the level.

    The noise goes in before the band limit, since it passes the same microphone. The result is
    scaled to channel.level_db RMS and kept below full scale (peaks at most -0.1 dBFS).
    """
    x = speech.double().numpy()
    if channel.rt60 is not None:
        h = room_impulse_response(channel.rt60, rng)
        n = len(x) + len(h) - 1
        x = np.fft.irfft(np.fft.rfft(x, n) * np.fft.rfft(h, n), n)[: len(x) + int(0.3 * channel.rt60 * SAMPLE_RATE)]
    if channel.noise is not None:
        snr = channel.snr_db + rng.uniform(-SNR_JITTER_DB, SNR_JITTER_DB)
        power = np.mean(x**2)
        x = x + colored_noise(channel.noise, len(x), rng) * np.sqrt(power / 10 ** (snr / 10))
    if channel.band_hz is not None:
        x = band_limit(x, *channel.band_hz)
    x = x * 10 ** (channel.level_db / 20) / np.sqrt(np.mean(x**2) + 1e-20)
    peak = np.max(np.abs(x))
    if peak > 0.989:
        x = x * 0.989 / peak
    return torch.from_numpy(x.astype(np.float32))


def render_utterance(speaker: Speaker, text: str, rng: np.random.Generator) -> torch.Tensor:
    """The utterance as the corpus stores it, float32 [N] at 16 kHz.

    A clean channel at the default level returns the engine's speech unchanged (the grammar
    corpus's speakers: its audio stays what it always was).
    """
    speech = synthesize_speech(speaker, text)
    if speaker.channel.is_identity:
        return speech
    return apply_channel(speech, speaker.channel, rng)
