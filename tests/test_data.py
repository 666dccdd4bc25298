import logging
import math
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from lhotse import CutSet
from lhotse.dataset import DynamicBucketingSampler

from asr.data.audio import load_audio
from asr.data.datamodule import AudioDataset, BatchRequest, ctc_min_frames, filter_cuts
from asr.data.features import FbankOptions
from asr.data.librispeech import prepare_librispeech, read_split
from asr.data.tokenizer import Tokenizer
from asr.problems import Problems


def make_bad_split(src: Path, dst: Path) -> dict[str, Path]:
    """Copy a good split and break it in every way the reader must report."""
    shutil.copytree(src, dst)
    flacs = sorted(dst.rglob("*.flac"))
    chapter = flacs[0].parent
    spk, ch = chapter.parent.name, chapter.name
    trans = chapter / f"{spk}-{ch}.trans.txt"
    lines = trans.read_text().splitlines()
    bad = {
        "unreadable": chapter / f"{spk}-{ch}-0900.flac",
        "empty": chapter / f"{spk}-{ch}-0901.wav",  # a 0-frame FLAC is not even readable
        "rate8k": chapter / f"{spk}-{ch}-0902.flac",
        "no_transcript": chapter / f"{spk}-{ch}-0903.flac",
        "oov": chapter / f"{spk}-{ch}-0904.flac",
    }
    bad["unreadable"].write_bytes(b"garbage")
    sf.write(str(bad["empty"]), np.zeros(0, dtype=np.float32), 16000)
    wave, _ = load_audio(flacs[0])
    from asr.data.audio import resample

    sf.write(str(bad["rate8k"]), resample(wave, 16000, 8000).numpy(), 8000)
    shutil.copy(flacs[0], bad["no_transcript"])
    shutil.copy(flacs[0], bad["oov"])
    lines += [
        f"{spk}-{ch}-0900 THE CAT",
        f"{spk}-{ch}-0901 THE DOG",
        f"{spk}-{ch}-0902 EIGHT KHZ AUDIO",
        f"{spk}-{ch}-0904 ZÜRICH IS 100% FINE",
        f"{spk}-{ch}-0999 TRANSCRIPT WITHOUT AUDIO",
    ]
    trans.write_text("\n".join(lines) + "\n")
    return bad


def test_read_split_reports_every_problem_naming_the_file(tiny_corpus, tmp_path, caplog):
    bad = make_bad_split(tiny_corpus / "dev-clean", tmp_path / "dev-clean")
    problems = Problems()
    with caplog.at_level(logging.WARNING):
        utts = read_split(tmp_path / "dev-clean", problems)
    assert problems.counts == {
        "unreadable audio": 1,
        "empty audio": 1,
        "resampled audio": 1,
        "audio without transcript": 1,
        "transcript without audio": 1,
    }
    ids = {u.id for u in utts}
    assert bad["rate8k"].stem in ids and bad["oov"].stem in ids  # kept
    assert bad["unreadable"].stem not in ids and bad["empty"].stem not in ids
    log = caplog.text
    for key in ("unreadable", "empty", "rate8k", "no_transcript"):
        assert str(bad[key]) in log, key
    assert "0999 has no audio" in log
    assert len(utts) == 8 + 2


def test_prepare_writes_manifests_and_flags_oov(tiny_corpus, tmp_path, caplog):
    shutil.copytree(tiny_corpus / "train-clean", tmp_path / "c" / "train-clean")
    bad = make_bad_split(tiny_corpus / "dev-clean", tmp_path / "c" / "dev-clean")
    with caplog.at_level(logging.WARNING):
        out = prepare_librispeech(tmp_path / "c", tmp_path / "m", tokenizer="char")
    assert set(out) == {"tokenizer", "train-clean", "dev-clean"}
    cuts = CutSet.from_file(out["dev-clean"])
    assert len(cuts) == 10
    trans = bad["oov"].parent / f"{bad['oov'].stem.rsplit('-', 1)[0]}.trans.txt"
    assert f"{trans}:" in caplog.text and f": {bad['oov'].stem}: " in caplog.text  # named by trans.txt:line
    assert "characters outside the vocabulary" in caplog.text
    report = (tmp_path / "m" / "prepare_report.txt").read_text()
    assert "unreadable audio" in report and "characters outside the vocabulary" in report
    refs = (tmp_path / "m" / "dev-clean.ref.txt").read_text().splitlines()
    assert len(refs) == 10 and all(len(r.split(maxsplit=1)) == 2 for r in refs)


def test_filter_cuts_drops_oov_and_t_shorter_than_u(tiny_corpus, tmp_path, caplog):
    out = prepare_librispeech(tiny_corpus, tmp_path / "m", splits=["train-clean"], tokenizer="char")
    tok = Tokenizer.load(out["tokenizer"])
    cuts = list(CutSet.from_file(out["train-clean"]))
    # a transcript far too long for its audio (T' < U), and one with an unknown character
    long = replace(cuts[0], supervisions=[replace(cuts[0].supervisions[0], text="A B " * 200)])
    oov = replace(cuts[1], supervisions=[replace(cuts[1].supervisions[0], text="HELLO ~~~")])
    with caplog.at_level(logging.WARNING):
        kept = filter_cuts(CutSet.from_cuts([long, oov] + cuts[2:]), tok, 4, FbankOptions(), 0.5, 30.0, "train")
    assert len(kept) == len(cuts) - 2
    assert "T shorter than U: 1" in caplog.text and "characters outside the vocabulary: 1" in caplog.text


def test_ctc_min_frames_counts_repeats():
    assert ctc_min_frames([1, 2, 3]) == 3
    assert ctc_min_frames([1, 1, 2, 2, 2]) == 8


def test_bucketing_sampler_respects_max_duration(tiny_corpus, tmp_path):
    out = prepare_librispeech(tiny_corpus, tmp_path / "m", splits=["train-clean"], tokenizer="char")
    cuts = CutSet.from_file(out["train-clean"])
    sampler = DynamicBucketingSampler(cuts, max_duration=12.0, shuffle=True, num_buckets=2, seed=0)
    seen = []
    for batch in sampler:
        assert sum(c.duration for c in batch) <= 12.0
        seen += [c.id for c in batch]
    assert len(seen) == len(set(seen)) and len(seen) >= len(cuts) - 6  # nearly everything, each once


def test_dataset_skips_unreadable_audio_with_warning(tiny_corpus, tmp_path, caplog):
    out = prepare_librispeech(
        tiny_corpus, tmp_path / "m", splits=["test-clean"], train_splits=["test-clean"], tokenizer="char"
    )
    tok = Tokenizer.load(out["tokenizer"])
    cuts = CutSet.from_file(out["test-clean"]).subset(first=3).to_eager()
    victim = Path(cuts[1].recording.sources[0].source)
    broken = tmp_path / "broken.flac"
    broken.write_bytes(b"xx")
    c1 = cuts[1]
    rec = replace(c1.recording, sources=[replace(c1.recording.sources[0], source=str(broken))])
    cuts = CutSet.from_cuts([cuts[0], replace(c1, recording=rec), cuts[2]])
    ds = AudioDataset(tok, speed_factors=(1.0,))
    with caplog.at_level(logging.WARNING):
        batch = ds[BatchRequest(cuts, 0)]
    assert len(batch) == 2 and victim.stem not in batch.ids
    assert "broken.flac: unreadable audio" in caplog.text
    assert batch.audio.shape[0] == 2 and (batch.audio_lens <= batch.audio.shape[1]).all()
    for i in range(2):
        assert tok.decode(batch.tokens[i, : batch.token_lens[i]].tolist()) == batch.texts[i]
    assert torch.all(batch.tokens[0, batch.token_lens[0] :] == 0)


def test_speed_perturbation_never_makes_a_transcript_too_long_for_ctc(tiny_corpus, tmp_path, caplog):
    """A transcript that fits its audio at speed 1.0 but not at 1.1 is never played at 1.1
    (counted in a warning); other utterances still get every factor."""
    # each utterance's factor is drawn from (seed, epoch, cut id): the 30 epochs below draw the same
    # factors on every run, so whether every allowed factor occurs is fixed
    out = prepare_librispeech(
        tiny_corpus, tmp_path / "m", splits=["test-clean"], train_splits=["test-clean"], tokenizer="char"
    )
    tok = Tokenizer.load(out["tokenizer"])
    cut = next(iter(CutSet.from_file(out["test-clean"])))
    ds = AudioDataset(tok, speed_factors=(0.9, 1.0, 1.1), subsampling=4, fbank=FbankOptions())
    n = load_audio(cut.recording.sources[0].source)[0].shape[0]
    at_10, at_11 = ds.encoder_frames(n, 1.0), ds.encoder_frames(n, 1.1)
    assert at_11 < at_10
    text = ("AB " * at_10).strip()
    while ctc_min_frames(tok.encode(text)) > at_10:  # the densest transcript that still fits at 1.0
        text = text[:-1].strip()
    assert at_11 < ctc_min_frames(tok.encode(text)) <= at_10
    dense = replace(cut, supervisions=[replace(cut.supervisions[0], text=text)])
    lens_dense, lens_plain = set(), set()
    with caplog.at_level(logging.WARNING):
        for epoch in range(30):
            lens_dense.add(int(ds[BatchRequest(CutSet.from_cuts([dense]), epoch)].audio_lens[0]))
            lens_plain.add(int(ds[BatchRequest(CutSet.from_cuts([cut]), epoch)].audio_lens[0]))
    fast = math.ceil(n * 16000 / 17600)
    assert fast not in lens_dense and len(lens_dense) == 2  # 0.9 and 1.0 only
    assert fast in lens_plain and len(lens_plain) == 3
    assert ds.num_slowed == 30 and "speed factors > 1 skipped" in caplog.text


def test_random_leading_silence_shifts_each_utterance_by_its_own_draw(tiny_corpus, tmp_path):
    """shift_ms: each training utterance gets 0..shift_ms ms of zeros before its samples, drawn per
    (seed, epoch, utterance): the audio itself is unchanged behind them, and draws differ across
    epochs (so the model sees its words at every alignment to the encoder frames)."""
    out = prepare_librispeech(
        tiny_corpus, tmp_path / "m", splits=["test-clean"], train_splits=["test-clean"], tokenizer="char"
    )
    tok = Tokenizer.load(out["tokenizer"])
    cut = next(iter(CutSet.from_file(out["test-clean"])))
    wave = load_audio(cut.recording.sources[0].source)[0]
    ds = AudioDataset(tok, shift_ms=40.0)
    shifts = set()
    for epoch in range(12):
        batch = ds[BatchRequest(CutSet.from_cuts([cut]), epoch)]
        shift = int(batch.audio_lens[0]) - len(wave)
        assert 0 <= shift <= 640
        assert not batch.audio[0, :shift].any() and torch.equal(batch.audio[0, shift : shift + len(wave)], wave)
        shifts.add(shift)
    assert len(shifts) >= 10
    again = ds[BatchRequest(CutSet.from_cuts([cut]), 3)]
    assert int(again.audio_lens[0]) - len(wave) in shifts  # the same draw for the same epoch
    assert int(AudioDataset(tok)[BatchRequest(CutSet.from_cuts([cut]), 3)].audio_lens[0]) == len(wave)
