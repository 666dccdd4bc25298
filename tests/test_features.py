import numpy as np
import pytest
import torch

from asr.data.augment import SpecAugment
from asr.data.features import Fbank, FbankOptions, GlobalCMVN, num_frames

knf = pytest.importorskip("kaldi_native_fbank")

# Stated tolerance against kaldi-native-fbank: max |log-mel difference| < 2e-3. Both sides
# compute in float32; the difference measured on speech is ~3e-4 (FFT rounding).
TOL = 2e-3


def knf_fbank(wave: torch.Tensor, high_freq: float = 0.0) -> torch.Tensor:
    o = knf.FbankOptions()
    o.frame_opts.dither = 0.0
    o.mel_opts.num_bins = 80
    o.mel_opts.high_freq = high_freq
    fb = knf.OnlineFbank(o)
    fb.accept_waveform(16000, (wave * 32768).tolist())
    fb.input_finished()
    return torch.from_numpy(np.stack([fb.get_frame(i) for i in range(fb.num_frames_ready)]))


def test_matches_kaldi_native_fbank_on_speech(speech_wave):
    ref = knf_fbank(speech_wave)
    ours, lens = Fbank()(speech_wave[None], torch.tensor([len(speech_wave)]))
    assert lens.item() == ref.shape[0] == ours.shape[1]
    assert (ours[0] - ref).abs().max() < TOL


def test_matches_kaldi_native_fbank_with_high_freq_offset():
    torch.manual_seed(0)
    wave = 0.1 * torch.randn(16000)
    ref = knf_fbank(wave, high_freq=-400.0)
    ours, _ = Fbank(FbankOptions(high_freq=-400.0))(wave[None], torch.tensor([16000]))
    assert (ours[0] - ref).abs().max() < TOL


def test_batched_equals_single_and_padding_is_zero(speech_wave):
    fb = Fbank()
    short = speech_wave[:20000]
    batch = torch.zeros(2, len(speech_wave))
    batch[0] = speech_wave
    batch[1, :20000] = short
    batch[1, 20000:] = 1.0  # garbage in the padding must not matter
    feats, lens = fb(batch, torch.tensor([len(speech_wave), 20000]))
    single, slen = fb(short[None], torch.tensor([20000]))
    assert lens[1] == slen[0] == num_frames(torch.tensor(20000), fb.opts)
    assert torch.allclose(feats[1, : lens[1]], single[0], atol=1e-5)
    assert feats[1, lens[1] :].abs().sum() == 0


def test_num_frames_snip_edges():
    o = FbankOptions()
    assert num_frames(torch.tensor([399, 400, 560, 16000]), o).tolist() == [0, 1, 2, 98]


def test_global_cmvn_normalizes_valid_frames_only():
    torch.manual_seed(0)
    feats = torch.randn(2, 50, 4) * 3 + 7
    lens = torch.tensor([50, 20])
    feats[1, 20:] = 1000.0  # padding must not enter the statistics
    cmvn = GlobalCMVN(4)
    cmvn.fit_([(feats, lens)])
    out = cmvn(feats, lens)
    valid = torch.cat([out[0], out[1, :20]])
    assert valid.mean(0).abs().max() < 1e-4
    assert (valid.std(0, unbiased=False) - 1).abs().max() < 1e-3
    assert out[1, 20:].abs().sum() == 0


def test_specaugment_masks_only_in_training_and_within_bounds():
    torch.manual_seed(0)
    aug = SpecAugment(freq_masks=2, freq_width=10, time_masks=3, time_width=0.1)
    x = torch.ones(4, 100, 80)
    lens = torch.tensor([100, 80, 50, 10])
    aug.train()
    y = aug(x, lens)
    masked = (y == 0)
    assert masked.any()
    # a frequency mask covers at most 2*10 bins; time masks at most 3*10% of the length
    fully_masked_bins = masked.all(dim=1).sum(dim=1)
    assert (fully_masked_bins <= 20).all()
    for b, n in enumerate(lens.tolist()):
        fully_masked_frames = masked[b, :n].all(dim=1).sum().item()
        assert fully_masked_frames <= 3 * max(1, int(0.1 * n))
    aug.eval()
    assert torch.equal(aug(x, lens), x)
