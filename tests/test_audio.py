import math

import numpy as np
import pytest
import soundfile as sf
import torch

from asr.data.audio import AudioError, load_audio, resample, speed_perturb


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


def test_load_audio_resamples_and_mixes_down(tmp_path):
    p = tmp_path / "st.wav"
    x = sine(300.0, 8000).numpy()
    sf.write(str(p), np.stack([x, x], axis=1), 8000)
    wave, sr = load_audio(p)
    assert sr == 8000 and wave.shape == (16000,)
    assert (wave[200:-200] - sine(300.0, 16000)[200:-200]).abs().max() < 2e-3
