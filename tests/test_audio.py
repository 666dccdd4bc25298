import math

import numpy as np
import pytest
import soundfile as sf
import torch

from asr.data.audio import AudioError, audio_blocks, load_audio, resample, speed_perturb


def sine(freq: float, sr: int, seconds: float = 1.0) -> torch.Tensor:
    t = torch.arange(int(sr * seconds), dtype=torch.float64) / sr
    return torch.sin(2 * math.pi * freq * t).float()


@pytest.mark.parametrize("orig,new", [(22050, 16000), (8000, 16000), (48000, 16000), (16000, 14400)])
def test_resample_matches_analytic_sine(orig, new):
    y = resample(sine(440.0, orig), orig, new)
    assert y.shape[-1] == math.ceil(orig * new / orig)
    ref = sine(440.0, new)
    inner = slice(200, -200)  # filter edges
    assert (y[inner] - ref[inner]).abs().max() < 2e-3


def test_resample_removes_content_above_new_nyquist():
    y = resample(sine(7000.0, 22050), 22050, 8000)  # 7 kHz is above 4 kHz Nyquist
    assert y[200:-200].abs().max() < 0.02


def test_resample_batched_and_identity():
    x = torch.randn(3, 1000)
    assert torch.equal(resample(x, 16000, 16000), x)
    y = resample(x, 16000, 8000)
    assert y.shape == (3, 500)
    assert torch.allclose(y[1], resample(x[1], 16000, 8000), atol=1e-6)


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_speed_perturb_changes_length_and_pitch(factor):
    x = sine(1000.0, 16000)
    y = speed_perturb(x, factor)
    assert abs(len(y) - len(x) / factor) <= 1
    spec = torch.fft.rfft(y * torch.hann_window(len(y))).abs()
    peak_hz = spec.argmax().item() * 16000 / len(y)
    assert abs(peak_hz - 1000 * factor) < 5


def test_load_audio_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.flac"
    bad.write_bytes(b"not audio at all")
    with pytest.raises(AudioError, match="bad.flac: unreadable"):
        load_audio(bad)
    empty = tmp_path / "empty.wav"
    sf.write(str(empty), np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(AudioError, match="empty.wav: empty audio"):
        load_audio(empty)


def _distinct_channels(sr: int, n: int) -> np.ndarray:
    """[S, n] float32: a different tone and level on each channel, so a loader that keeps one
    channel, or weights them unequally, gives a different signal from the mean."""
    return torch.stack([(0.6 / (c + 1)) * sine(300.0 * (c + 1), sr) for c in range(n)], dim=1).numpy()


@pytest.mark.parametrize("channels", [2, 3])
def test_load_audio_mixes_down_to_the_channel_mean(tmp_path, channels):
    """load_audio returns mono as the mean of the channels (documented: mono float32)."""
    p = tmp_path / "multi.wav"
    x = _distinct_channels(16000, channels)
    sf.write(str(p), x, 16000, subtype="FLOAT")  # float samples: no 16-bit rounding, so the mean is exact
    wave, sr = load_audio(p)
    assert sr == 16000 and wave.dtype == torch.float32 and wave.shape == (16000,)
    want = torch.from_numpy(x.mean(axis=1))
    assert torch.allclose(wave, want, atol=1e-7, rtol=0)
    for c in range(channels):  # the test can tell the mean from any single channel
        assert (wave - torch.from_numpy(x[:, c])).abs().max() > 0.1


def test_audio_blocks_mix_down_like_load_audio(tmp_path):
    """Streaming reads (incremental at 16 kHz, or resampled whole) give the same mono signal."""
    for sr in (16000, 8000):
        p = tmp_path / f"st{sr}.wav"
        sf.write(str(p), _distinct_channels(sr, 2), sr, subtype="FLOAT")
        blocks = list(audio_blocks(p, 4000))
        assert [len(b) for b in blocks] == [4000] * 4
        assert torch.allclose(torch.cat(blocks), load_audio(p)[0], atol=1e-7, rtol=0)


def test_load_audio_resamples_and_mixes_down(tmp_path):
    """Distinct channels at 8 kHz: the result is the 16 kHz resampling of the channel mean."""
    p = tmp_path / "st.wav"
    sf.write(str(p), _distinct_channels(8000, 2), 8000)
    wave, sr = load_audio(p)
    assert sr == 8000 and wave.shape == (16000,)
    want = (0.6 * sine(300.0, 16000) + 0.3 * sine(600.0, 16000)) / 2  # the two tones' mean, at 16 kHz
    inner = slice(200, -200)  # filter edges
    assert (wave[inner] - want[inner]).abs().max() < 2e-3
