"""Kaldi-compatible log-mel filterbank computed in torch, on the batch (CPU or GPU).

Conventions follow Kaldi's `compute-fbank-feats` (and kaldi-native-fbank): 25 ms
Povey window, 10 ms shift, snip_edges, DC removal, pre-emphasis 0.97, FFT size
rounded to a power of two, power spectrum, triangular mel bins on the
1127*ln(1 + f/700) scale, log with a FLT_EPSILON floor. Input waveforms are floats
in [-1, 1]; they are scaled to the int16 range as Kaldi expects, so the features
have Kaldi's absolute level. tests/test_features.py checks the match.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

FLT_EPSILON = 1.1920928955078125e-07


@dataclass(frozen=True)
class FbankOptions:
    sample_rate: int = 16000  # Hz of the input waveform
    num_mel_bins: int = 80  # output feature dimension
    frame_length_ms: float = 25.0  # analysis window
    frame_shift_ms: float = 10.0  # hop
    dither: float = 0.0  # Gaussian dither in int16 units (training only)
    preemph_coeff: float = 0.97  # Kaldi pre-emphasis
    remove_dc_offset: bool = True  # subtract each frame's mean
    low_freq: float = 20.0  # lowest mel edge, Hz
    high_freq: float = 0.0  # highest mel edge; <= 0 means Nyquist + high_freq
    int16_scale: bool = True  # multiply [-1, 1] input by 32768 like Kaldi

    @property
    def win_length(self) -> int:
        return int(self.sample_rate * self.frame_length_ms / 1000)

    @property
    def hop_length(self) -> int:
        return int(self.sample_rate * self.frame_shift_ms / 1000)

    @property
    def n_fft(self) -> int:
        return 1 << (self.win_length - 1).bit_length()


def _mel(f: torch.Tensor) -> torch.Tensor:
    return 1127.0 * torch.log1p(f / 700.0)


def mel_filterbank(opts: FbankOptions) -> torch.Tensor:
    """Kaldi's triangular mel filters as a matrix [num_mel_bins, n_fft//2 + 1]."""
    nyquist = 0.5 * opts.sample_rate
    high = opts.high_freq if opts.high_freq > 0 else nyquist + opts.high_freq
    n_bins = opts.n_fft // 2
    fft_freqs = torch.arange(n_bins, dtype=torch.float64) * opts.sample_rate / opts.n_fft
    mel_f = _mel(fft_freqs)  # [n_bins]
    mel_low, mel_high = (
        _mel(torch.tensor(opts.low_freq, dtype=torch.float64)),
        _mel(torch.tensor(high, dtype=torch.float64)),
    )
    delta = (mel_high - mel_low) / (opts.num_mel_bins + 1)
    left = mel_low + delta * torch.arange(opts.num_mel_bins, dtype=torch.float64)[:, None]
    center, right = left + delta, left + 2 * delta
    up = (mel_f - left) / (center - left)
    down = (right - mel_f) / (right - center)
    w = torch.clamp(torch.minimum(up, down), min=0.0)
    w = torch.where((mel_f > left) & (mel_f < right), w, torch.zeros_like(w))
    # Kaldi leaves the Nyquist bin out of every filter.
    return torch.cat([w, torch.zeros(opts.num_mel_bins, 1, dtype=torch.float64)], dim=1).float()


def num_frames(num_samples: torch.Tensor, opts: FbankOptions) -> torch.Tensor:
    """Frames produced for each length (snip_edges=True); 0 when shorter than a window."""
    n = (num_samples - opts.win_length) // opts.hop_length + 1
    return torch.clamp(n, min=0)


def encoder_frames(num_samples: int, subsampling: int, opts: FbankOptions) -> int:
    """Encoder frames of an utterance of num_samples, conservatively (fbank frames // subsampling,
    at most what any subsampling front-end yields). The one count that the training filter,
    speed perturbation and `asr prepare`'s T-shorter-than-U check share."""
    return int(num_frames(torch.tensor(num_samples), opts)) // subsampling


class Fbank(nn.Module):
    """Batched log-mel fbank.

    forward(wave[B, S] float, wave_lens[B] int64) -> (feats[B, T, F] float32, feat_lens[B] int64).
    Frames beyond each utterance's length are set to zero (and must be masked by callers).
    Always computed in float32, also under autocast (mixed-precision training).
    """

    def __init__(self, opts: FbankOptions | None = None, **kwargs):
        super().__init__()
        self.opts = opts or FbankOptions(**kwargs)
        o = self.opts
        self.register_buffer("mel_fb", mel_filterbank(o), persistent=False)
        n = torch.arange(o.win_length, dtype=torch.float64)
        povey = (0.5 - 0.5 * torch.cos(2 * math.pi * n / (o.win_length - 1))) ** 0.85
        self.register_buffer("window", povey.float(), persistent=False)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in asdict(self.opts).items())

    @torch.no_grad()
    def forward(self, wave: torch.Tensor, wave_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Autocast would run the mel matmul in bfloat16/float16: the power spectrum in int16 units
        # reaches ~1e11, past float16's 65504 (inf features, nan losses), and bfloat16 keeps 8 bits
        # of it (log-mel off by up to 0.07, measured on speech). Float32 whatever the precision.
        with torch.autocast(wave.device.type, enabled=False):
            return self._compute(wave, wave_lens)

    def _compute(self, wave: torch.Tensor, wave_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        o = self.opts
        wave = wave.float()
        if o.int16_scale:
            wave = wave * 32768.0
        lens = num_frames(wave_lens, o)
        if wave.shape[1] < o.win_length:  # keep unfold valid; such rows get length 0
            wave = torch.nn.functional.pad(wave, (0, o.win_length - wave.shape[1]))
        frames = wave.unfold(1, o.win_length, o.hop_length)  # [B, T, W]
        if o.dither > 0:
            frames = frames + o.dither * torch.randn_like(frames)
        if o.remove_dc_offset:
            frames = frames - frames.mean(dim=-1, keepdim=True)
        if o.preemph_coeff != 0:
            # x[i] -= c * x[i-1] for i > 0, and x[0] -= c * x[0] (Kaldi's convention)
            prev = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)
            frames = frames - o.preemph_coeff * prev
        frames = frames * self.window
        spec = torch.fft.rfft(frames, n=o.n_fft, dim=-1)  # [B, T, n_fft/2+1]
        power = spec.real.square() + spec.imag.square()
        mel = torch.matmul(power, self.mel_fb.t())
        feats = torch.log(torch.clamp(mel, min=FLT_EPSILON))
        t = feats.shape[1]
        valid = torch.arange(t, device=feats.device)[None, :] < lens[:, None].to(feats.device)
        feats = feats.masked_fill(~valid[..., None], 0.0)
        return feats, lens.to(torch.int64)


class GlobalCMVN(nn.Module):
    """Global mean/variance normalization with statistics stored as buffers.

    The buffers travel in the checkpoint, so inference normalizes exactly as training
    did. `fit_` accumulates statistics over valid (unpadded) frames.
    forward(feats[B, T, F], lens[B]) -> feats[B, T, F] (padding stays zero).
    """

    def __init__(self, num_features: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(num_features))
        self.register_buffer("std", torch.ones(num_features))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))

    @torch.no_grad()
    def fit_(self, batches) -> None:
        """Set mean/std from an iterable of (feats[B, T, F], lens[B])."""
        s = s2 = None
        n = 0.0
        for feats, lens in batches:
            valid = torch.arange(feats.shape[1])[None, :] < lens[:, None]
            x = feats[valid].double()  # [N, F]
            s = x.sum(0) if s is None else s + x.sum(0)
            s2 = (x * x).sum(0) if s2 is None else s2 + (x * x).sum(0)
            n += x.shape[0]
        if not n:
            raise ValueError("GlobalCMVN.fit_: no frames to estimate statistics from")
        mean = s / n
        var = (s2 / n - mean * mean).clamp(min=1e-8)
        self.mean.copy_(mean.float())
        self.std.copy_(var.sqrt().float())
        self.count.fill_(n)

    def forward(self, feats: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        valid = torch.arange(feats.shape[1], device=feats.device)[None, :] < lens[:, None]
        out = (feats - self.mean) / self.std
        return out.masked_fill(~valid[..., None], 0.0)
