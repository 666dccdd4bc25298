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


def _bands(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Contiguous runs of True along the last dim of m[B, N]: (runs[B], masked count[B], first index[B])."""
    runs = m[:, 0].long() + (m[:, 1:] & ~m[:, :-1]).sum(dim=1)
    return runs, m.sum(dim=1), m.long().argmax(dim=1)


def _augment(aug: SpecAugment, x: torch.Tensor, lens: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(output, changed entries) of one seeded training-mode call; x holds no zeros, so every
    masked entry changes and the mask can be read back exactly."""
    aug.train()
    torch.manual_seed(seed)
    y = aug(x, lens)
    return y, y != x


def _features(b: int, t: int, f: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, t, f, generator=torch.Generator().manual_seed(seed)) + 10.0  # never 0


@pytest.mark.parametrize("n", [1, 3])
def test_specaugment_frequency_masks(n):
    """freq_masks bands of 0..freq_width bins anywhere in [0, F), the same on every real frame of
    an utterance, drawn per utterance; masked values are 0 and the rest is untouched. Whether the
    padding is masked too is left open: nothing reads it."""
    b, t, f, width = 512, 12, 40, 7
    x = _features(b, t, f)
    lens = torch.randint(1, t + 1, (b,), generator=torch.Generator().manual_seed(1))
    y, changed = _augment(SpecAugment(freq_masks=n, freq_width=width, time_masks=0), x, lens, seed=0)
    assert (y[changed] == 0).all() and torch.equal(y[~changed], x[~changed])
    bins = changed[:, 0, :]  # [B, F]; frame 0 is real in every utterance
    real = torch.arange(t)[None, :] < lens[:, None]  # [B, T]
    assert ((changed == bins[:, None, :]) | ~real[:, :, None]).all()  # a frequency band covers every real frame
    runs, masked, first = _bands(bins)
    assert runs.max() == n and (masked <= n * width).all()  # n masks, no more, each at most `width` wide
    assert len({tuple(r) for r in bins.tolist()}) > 100  # each utterance draws its own masks
    if n == 1:  # one band: its width is uniform over 0..width and it can touch either edge
        assert sorted(set(masked.tolist())) == list(range(width + 1))
        hit = masked > 0
        assert first[hit].min() == 0 and (first + masked)[hit].max() == f


@pytest.mark.parametrize("n", [1, 3])
def test_specaugment_time_masks_stay_inside_each_utterance(n):
    """Up to time_masks bands over all bins, each 0..max(1, floor(len * time_width)) frames of the
    utterance's own length, inside [0, len): frames in the padding are never masked."""
    b, t, f, frac = 512, 64, 8, 0.1
    x = _features(b, t, f)
    lens = torch.randint(5, t + 1, (b,), generator=torch.Generator().manual_seed(1))
    lens[:3] = torch.tensor([t, 5, 9])  # no padding; and lengths under 10, where floor(len * 0.1) = 0
    y, changed = _augment(SpecAugment(freq_masks=0, time_masks=n, time_width=frac), x, lens, seed=0)
    assert (y[changed] == 0).all() and torch.equal(y[~changed], x[~changed])
    frames = changed[:, :, 0]  # [B, T]
    assert (changed == frames[:, :, None]).all()  # a time band covers every bin
    assert not (frames & (torch.arange(t)[None, :] >= lens[:, None])).any()  # never in the padding
    max_w = (lens * frac).long().clamp(min=1)
    runs, masked, first = _bands(frames)
    assert runs.max() == n and (masked <= n * max_w).all()
    if n == 1:  # one band: at most max_w wide, reaching max_w, from the first to the last frame
        assert (masked <= max_w).all() and (masked == max_w).sum() > 20 and (masked == 0).sum() > 20
        assert masked[lens < 10].max() == 1  # the bound is at least 1 frame
        hit = masked > 0
        assert first[hit].min() == 0 and ((first + masked) == lens)[hit].sum() > 0


def test_specaugment_masks_are_bands_in_time_and_frequency():
    """With both kinds, the masked part of the real frames is exactly (frequency bands x every frame)
    | (time bands x every bin), with masked values 0 and all else untouched."""
    b, t, f = 64, 50, 30
    x = _features(b, t, f)
    lens = torch.randint(20, t + 1, (b,), generator=torch.Generator().manual_seed(1))
    y, changed = _augment(SpecAugment(freq_masks=2, freq_width=5, time_masks=4, time_width=0.1), x, lens, seed=3)
    assert (y[changed] == 0).all() and torch.equal(y[~changed], x[~changed])
    real = torch.arange(t)[None, :] < lens[:, None]  # [B, T]
    # no time band covers a whole utterance and no frequency band all bins, so a bin masked on
    # every real frame is a frequency band, and a frame masked on every bin a time band
    bins = (changed | ~real[:, :, None]).all(dim=1)  # [B, F]
    frames = changed.all(dim=2) & real  # [B, T]
    assert torch.equal(changed & real[:, :, None], (bins[:, None, :] | frames[:, :, None]) & real[:, :, None])
    assert bins.any() and frames.any()
    assert (_bands(bins)[0] <= 2).all() and (_bands(frames)[0] <= 4).all()
    assert not (changed.all(dim=2) & ~real).any()  # no time band in the padding


def test_specaugment_padding_does_not_change_the_real_frames():
    """The same utterances padded to another length, with garbage in the padding, get the same
    masks on their real frames (time masks scale with each utterance's own length)."""
    b, t, f = 16, 40, 20
    lens = torch.randint(10, t + 1, (b,), generator=torch.Generator().manual_seed(1))
    x = _features(b, t, f)
    long = torch.full((b, 2 * t, f), 1e4)
    long[:, :t] = x
    aug = SpecAugment(freq_masks=2, freq_width=6, time_masks=3, time_width=0.2)
    y, _ = _augment(aug, x, lens, seed=5)
    y_long, _ = _augment(aug, long, lens, seed=5)
    for i, n in enumerate(lens.tolist()):
        assert torch.equal(y[i, :n], y_long[i, :n])


def test_specaugment_identity_in_eval_or_without_masks_and_reproducible_when_seeded():
    """Only training mode masks; the masks come from torch's global RNG, so a seed fixes them."""
    x = _features(4, 30, 20)
    lens = torch.tensor([30, 25, 12, 3])
    aug = SpecAugment(freq_masks=2, freq_width=10, time_masks=3, time_width=0.2)
    aug.eval()
    assert torch.equal(aug(x, lens), x)
    y0, _ = _augment(SpecAugment(freq_masks=0, time_masks=0), x, lens, seed=0)
    assert torch.equal(y0, x)
    y1, changed = _augment(aug, x, lens, seed=7)
    y2, _ = _augment(aug, x, lens, seed=7)
    y3, _ = _augment(aug, x, lens, seed=8)
    assert changed.any() and torch.equal(y1, y2) and not torch.equal(y1, y3)
