"""Bad input, end to end: each case gets a message naming its file (and transcript line), a
count in the report, and never stops the job (issue 16).

One split holds one of each bad case; `asr prepare` runs on it once (module fixture), and the
tests check every message and count of prepare_report.txt, then the decoding commands
(transcribe, stream), checkpoints and scoring through asr.cli.main. No training: checkpoints
are tiny untrained models saved in the format load_model reads.
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from lhotse import CutSet

from asr.cli import main
from asr.data.audio import AudioError, audio_blocks, load_audio, resample
from asr.data.audio_check import check_audio, check_audio_files
from asr.data.datamodule import ctc_min_frames, filter_cuts
from asr.data.features import FbankOptions
from asr.data.librispeech import CheckOptions, read_split
from asr.data.tokenizer import Tokenizer, train_tokenizer
from asr.model import ASRModel, CheckpointError, load_model
from asr.problems import Problems

SPK, CH = "900", "9000"  # the chapter that holds the bad cases
PREFIX = f"{SPK}-{CH}"


def _samples_for_frames(frames: int) -> int:
    """Samples whose fbank (25 ms window, 10 ms shift) gives 4 * frames frames, plus half a hop
    (clear of the boundary, where float rounding of a duration could move a frame)."""
    return 400 + (4 * frames - 1) * 160 + 80


def _write_bad_split(split: Path, wave: np.ndarray, tok: Tokenizer, train_text: str) -> dict[str, object]:
    """A chapter with one of each bad case, and a second chapter with a non-UTF-8 line.

    Returns what the checks need: paths, the trans.txt, line numbers per id, and the sizes
    of the T<U pair.
    """
    chapter = split / SPK / CH
    chapter.mkdir(parents=True)
    trans = chapter / f"{PREFIX}.trans.txt"
    a = {k: chapter / f"{PREFIX}-{n}" for k, n in [
        ("good", "0000"), ("truncated_flac", "0001"), ("empty", "0002"), ("rate8k", "0003"), ("stereo", "0004"),
        ("u8", "0005"), ("float_loud", "0006"), ("nan", "0007"), ("garbage", "0008"), ("no_line", "0009"),
        ("empty_text", "0010"), ("too_long", "0011"), ("fits", "0012"), ("oov", "0013"), ("truncated_wav", "0014"),
    ]}  # fmt: skip
    wavs = ("empty", "stereo", "u8", "float_loud", "nan", "truncated_wav")
    paths = {k: p.with_suffix(".wav" if k in wavs else ".flac") for k, p in a.items()}
    sf.write(str(paths["good"]), wave, 16000)
    for k in ("no_line", "empty_text", "oov"):
        shutil.copy(paths["good"], paths[k])
    blob = paths["good"].read_bytes()
    paths["truncated_flac"].write_bytes(blob[: len(blob) // 2])
    paths["empty"].write_bytes(b"")
    sf.write(str(paths["rate8k"]), resample(torch.from_numpy(wave), 16000, 8000).numpy(), 8000)
    sf.write(str(paths["stereo"]), np.stack([wave, 0.5 * wave], axis=1), 16000)
    sf.write(str(paths["u8"]), wave, 16000, subtype="PCM_U8")
    sf.write(str(paths["float_loud"]), 2.5 * wave / np.abs(wave).max(), 16000, subtype="FLOAT")
    nan = wave.copy()
    nan[8000] = np.nan
    nan[8001] = np.inf
    sf.write(str(paths["nan"]), nan, 16000, subtype="FLOAT")
    paths["garbage"].write_bytes(b"this is not audio" * 10)
    sf.write(str(paths["truncated_wav"]), wave, 16000)
    paths["truncated_wav"].write_bytes(paths["truncated_wav"].read_bytes()[:-5000])
    # T<U: a transcript of known CTC length, with audio one encoder frame short of it, and one that fits
    need = ctc_min_frames(tok.encode(train_text))
    sf.write(str(paths["too_long"]), np.resize(wave, _samples_for_frames(need - 1)), 16000)
    sf.write(str(paths["fits"]), np.resize(wave, _samples_for_frames(need)), 16000)
    lines = [
        f"{PREFIX}-0000 {train_text}",  # 1
        f"{PREFIX}-0001 {train_text}",  # 2
        f"{PREFIX}-0002 {train_text}",  # 3
        f"{PREFIX}-0003 {train_text}",  # 4
        f"{PREFIX}-0004 {train_text}",  # 5
        f"{PREFIX}-0005 {train_text}",  # 6
        f"{PREFIX}-0006 {train_text}",  # 7
        f"{PREFIX}-0007 {train_text}",  # 8
        f"{PREFIX}-0008 {train_text}",  # 9
        f"{PREFIX}-0010",  # 10: empty transcript
        f"{PREFIX}-0011 {train_text}",  # 11: too long for its audio
        f"{PREFIX}-0012 {train_text}",  # 12: just fits
        f"{PREFIX}-0013 ZÜRICH 100% {train_text}",  # 13: outside the training text's characters
        f"{PREFIX}-0014 {train_text}",  # 14
        f"{PREFIX}-0003 A SECOND LINE FOR AN ID",  # 15: duplicate of line 4
        "HELLO WORLD WITHOUT AN ID",  # 16: malformed
        f"900-1234-0001 {train_text}",  # 17: malformed (another chapter's id)
        f"{PREFIX}-0999 {train_text}",  # 18: no audio
    ]
    trans.write_text("\n".join(lines) + "\n", encoding="utf-8")
    # a second chapter: line 2 is Latin-1, not UTF-8; line 1 still decodes
    other = split / "901" / "9010"
    other.mkdir(parents=True)
    shutil.copy(paths["good"], other / "901-9010-0000.flac")
    shutil.copy(paths["good"], other / "901-9010-0001.flac")
    latin = other / "901-9010.trans.txt"
    latin.write_bytes(f"901-9010-0000 {train_text}\n".encode() + "901-9010-0001 CAF\xc9 ZURICH\n".encode("latin-1"))
    oov = "".join(sorted(tok.unknown_chars(f"ZÜRICH 100% {train_text}")))
    return {"paths": paths, "trans": trans, "latin": latin, "need": need, "oov": oov}


@pytest.fixture(scope="module")
def bad_corpus(tiny_corpus, speech_wave, tmp_path_factory) -> dict[str, object]:
    """train-clean (good, trains the char tokenizer) and test-clean (bad), prepared once by the CLI."""
    root = tmp_path_factory.mktemp("bad") / "LibriSpeech"
    shutil.copytree(tiny_corpus / "train-clean", root / "train-clean")
    transcripts = sorted((root / "train-clean").rglob("*.trans.txt"))
    train_lines = [line.split(maxsplit=1)[1] for t in transcripts for line in t.read_text().splitlines()]
    # the tokenizer prepare will train: char over the training text (same input, same model)
    tok = train_tokenizer(train_lines, root.parent / "probe.model", "char")
    info = _write_bad_split(root / "test-clean", speech_wave.numpy(), tok, train_lines[0])
    out = root.parent / "manifests"
    assert main(["prepare", "librispeech", "--root", str(root), "--out", str(out), "--tokenizer", "char"]) == 0
    info.update(root=root, out=out, report=(out / "prepare_report.txt").read_text(encoding="utf-8"))
    return info


def _section(report: str, title: str) -> str:
    """The indented lines under one title of prepare_report.txt."""
    lines = report.split(f"\n{title}:\n", 1)[1].splitlines()
    return "\n".join(line for line in lines[: next((i for i, x in enumerate(lines) if x[:2] != "  "), None)])


def _counts(block: str) -> dict[str, int]:
    return {m[1].strip(): int(m[2]) for m in re.finditer(r"^  (.+?)\s+(\d+)$", block, re.MULTILINE)}


def test_prepare_counts_every_bad_case(bad_corpus):
    report = bad_corpus["report"]
    assert _counts(_section(report, "test-clean problems (skipped, or kept and counted)")) == {
        "truncated audio": 2,  # a FLAC cut in half (decoding fails), a WAV shorter than its header
        "empty audio": 1,
        "unreadable audio": 1,
        "non-finite samples": 1,
        "resampled audio": 1,
        "multi-channel audio": 1,
        "8-bit audio": 1,
        "float audio": 1,
        "samples beyond [-1, 1]": 1,
        "non-UTF-8 transcript": 1,
        "malformed transcript line": 2,
        "empty transcript": 1,
        "duplicate utterance id": 1,
        "transcript without audio": 1,
        # no line at all, the empty transcript's audio, the non-UTF-8 line's audio
        "audio without transcript": 3,
    }
    tok_check = "test-clean tokenizer check (kept in the manifests; training drops them)"
    assert _counts(_section(report, tok_check)) == {"characters outside the vocabulary": 1, "T shorter than U": 1}
    assert "train-clean problems (skipped, or kept and counted): no problems found" in report
    # kept: the good one, 8 kHz, stereo, 8-bit, loud float, too long, fits, OOV (+ the other chapter's first line)
    cuts = CutSet.from_file(bad_corpus["out"] / "test-clean.cuts.jsonl.gz")
    assert sorted(c.recording_id for c in cuts) == sorted(
        [f"{PREFIX}-{n}" for n in ("0000", "0003", "0004", "0005", "0006", "0011", "0012", "0013")] + ["901-9010-0000"]
    )


def test_prepare_messages_name_the_file_and_line(bad_corpus):
    report, p, trans, latin = bad_corpus["report"], bad_corpus["paths"], bad_corpus["trans"], bad_corpus["latin"]
    messages = _section(report, "test-clean messages")
    expected = [
        f"truncated audio: {p['truncated_flac']}: truncated or corrupt audio, decoding failed after 0.00 s",
        f"truncated audio: {p['truncated_wav']}: truncated audio (the WAV header promises 5000 bytes more)",
        f"empty audio: {p['empty']}: empty file (0 bytes)",
        f"unreadable audio: {p['garbage']}: unreadable audio (",
        f"non-finite samples: {p['nan']}: 2 non-finite samples (NaN or Inf), the first at 0.50 s",
        f"resampled audio: {p['rate8k']}: 8000 Hz, resampled to 16000 Hz when loaded",
        f"multi-channel audio: {p['stereo']}: 2 channels, mixed down to their mean when loaded",
        f"8-bit audio: {p['u8']}: PCM_U8 samples",
        f"float audio: {p['float_loud']}: FLOAT samples",
        f"samples beyond [-1, 1]: {p['float_loud']}: peak 2.5, used as it is (not clipped)",
        f"non-UTF-8 transcript: {latin}:2: bytes b'\\xc9' at column 18 are not UTF-8; line skipped",
        f"malformed transcript line: {trans}:16: 'HELLO' is not an utterance id {PREFIX}-<utt>",
        f"malformed transcript line: {trans}:17: '900-1234-0001' is not an utterance id {PREFIX}-<utt>",
        f"empty transcript: {trans}:10: no text for {PREFIX}-0010",
        f"duplicate utterance id: {trans}:15: {PREFIX}-0003 again (first at {trans}:4); the first is kept",
        f"transcript without audio: {trans}:18: {PREFIX}-0999 has no audio file",
        f"audio without transcript: {p['no_line']}: no usable line for {PREFIX}-0009",
        f"audio without transcript: {p['empty_text']}: no usable line for {PREFIX}-0010",
        f"audio without transcript: {latin.parent / '901-9010-0001.flac'}: no usable line for 901-9010-0001",
        f"characters outside the vocabulary: {trans}:13: {PREFIX}-0013: {bad_corpus['oov']!r} not in the tokenizer",
        f"T shorter than U: {trans}:11: {PREFIX}-0011: ",
    ]
    for e in expected:
        assert f"  {e}" in messages, e
    assert len(messages.splitlines()) == len(expected)  # and nothing else


def test_prepare_and_training_agree_on_t_shorter_than_u(bad_corpus):
    """The frame count prepare reports with equals the training filter's: on the same manifest,
    filter_cuts drops exactly what prepare's tokenizer check named (OOV, and T<U by one frame)."""
    out = bad_corpus["out"]
    tok = Tokenizer.load(out / "tokenizer_char.model")
    cuts = CutSet.from_file(out / "test-clean.cuts.jsonl.gz")
    kept = filter_cuts(cuts, tok, 4, FbankOptions(), 0.0, 1e9, "test-clean")
    assert {c.recording_id for c in cuts} - {c.recording_id for c in kept} == {f"{PREFIX}-0011", f"{PREFIX}-0013"}
    need = bad_corpus["need"]
    line = next(x for x in bad_corpus["report"].splitlines() if x.startswith("  T shorter than U: "))
    assert f"{PREFIX}-0011: " in line and f" tokens need {need} encoder frames; " in line
    assert f" of audio has {need - 1} frames of 40 ms" in line


def test_a_test_split_prepared_with_the_training_tokenizer_names_oov_lines(bad_corpus, tmp_path):
    out = bad_corpus["out"]
    args = ["prepare", "librispeech", "--root", str(bad_corpus["root"]), "--out", str(tmp_path), "--splits"]
    assert main([*args, "test-clean", "--tokenizer-model", str(out / "tokenizer_char.model")]) == 0
    report = (tmp_path / "prepare_report.txt").read_text(encoding="utf-8")
    trans = bad_corpus["trans"]
    oov = bad_corpus["oov"]
    assert f"characters outside the vocabulary: {trans}:13: {PREFIX}-0013: {oov!r} not in the tokenizer" in report


def test_header_check_is_cheaper_and_finds_less(bad_corpus):
    """--check-audio header opens files only: a FLAC cut in half and NaN samples pass it
    (loading skips them later); a WAV shorter than its header is still found."""
    problems = Problems()
    utts = read_split(bad_corpus["root"] / "test-clean", problems, progress=False, check=CheckOptions(audio="header"))
    assert problems.counts["truncated audio"] == 1 and "non-finite samples" not in problems.counts
    assert {f"{PREFIX}-0001", f"{PREFIX}-0007"} <= {u.id for u in utts}
    assert "samples beyond [-1, 1]" not in problems.counts  # the level needs the samples


def test_audio_check_in_worker_processes_equals_inline(bad_corpus):
    paths = sorted(bad_corpus["paths"].values())
    inline = check_audio_files(paths, jobs=1, progress=False)
    assert check_audio_files(paths, jobs=2, progress=False, min_files_per_job=1) == inline
    assert inline == [check_audio(p) for p in paths]


def test_prepare_rejects_an_encoder_frame_that_is_not_a_multiple_of_the_shift(tmp_path):
    with pytest.raises(SystemExit, match="asr prepare: encoder frame must be a multiple of the 10 ms fbank shift"):
        main(["prepare", "librispeech", "--root", str(tmp_path), "--out", str(tmp_path), "--encoder-frame-ms", "35"])


def test_load_audio_and_blocks_name_missing_and_non_finite(bad_corpus, tmp_path):
    p = bad_corpus["paths"]
    with pytest.raises(AudioError, match=r"missing\.wav: file not found") as e:
        load_audio(tmp_path / "missing.wav")
    assert e.value.category == "file not found"
    with pytest.raises(AudioError, match="2 non-finite samples .NaN or Inf., the first at 0.50 s") as e:
        load_audio(p["nan"])
    assert e.value.category == "non-finite samples"
    blocks = audio_blocks(p["nan"], 4000)  # the stream fails at the block holding the NaN, not before
    assert len(next(blocks)) == 4000 and len(next(blocks)) == 4000
    with pytest.raises(AudioError, match="non-finite samples"):
        next(blocks)
    with pytest.raises(AudioError, match="truncated or corrupt audio"):
        load_audio(p["truncated_flac"])


# ---- decoding commands, checkpoints, scoring ---------------------------------------------------


def _tiny_checkpoint(path: Path, tok: Tokenizer, **encoder) -> Path:
    """An untrained model saved with the parts of a Lightning checkpoint that load_model reads."""
    torch.manual_seed(0)
    enc = {"name": "conformer", "d_model": 32, "num_layers": 1, "num_heads": 4, "subsampling_channels": 8, **encoder}
    model = ASRModel(len(tok), encoder=enc, heads={"ctc": {"kind": "ctc"}})
    hp = {"hyper_parameters": dict(model.hparams), "state_dict": model.state_dict(), "tokenizer": tok.model_proto}
    torch.save(hp, path)
    return path


@pytest.fixture(scope="module")
def tok(tmp_path_factory) -> Tokenizer:
    d = tmp_path_factory.mktemp("tok")
    return train_tokenizer(["THE QUICK BROWN FOX", "JUMPS OVER SEVEN LAZY DOGS"] * 5, d / "t.model", "char")


def test_transcribe_skips_nan_missing_and_truncated_files(bad_corpus, tok, tmp_path, capsys, caplog):
    ckpt = _tiny_checkpoint(tmp_path / "m.ckpt", tok)
    p = bad_corpus["paths"]
    missing = tmp_path / "missing.wav"
    files = [p["good"], p["nan"], missing, p["truncated_flac"]]
    with caplog.at_level(logging.WARNING):
        assert main(["transcribe", "--ckpt", str(ckpt), *map(str, files), "--quiet", "--device", "cpu"]) == 0
    out = capsys.readouterr()
    assert [line.split()[0] for line in out.out.splitlines()] == [p["good"].stem]  # the NaN file prints nothing
    assert f"{p['nan']}: 2 non-finite samples" in caplog.text and f"{missing}: file not found" in caplog.text
    assert f"{p['truncated_flac']}: truncated or corrupt audio" in caplog.text
    for category in ("non-finite samples", "file not found", "truncated audio"):
        assert re.search(rf"^  {re.escape(category)} +1$", out.err, re.MULTILINE), category
    assert "decoded 1 of 4 utterances" in out.err


def test_stream_that_fails_midway_is_reported_and_the_others_finish(bad_corpus, tok, tmp_path, capsys, caplog):
    ckpt = _tiny_checkpoint(tmp_path / "s.ckpt", tok, causal=True)
    p = bad_corpus["paths"]
    args = ["stream", "--ckpt", str(ckpt), str(p["good"]), str(p["nan"]), str(tmp_path / "gone.flac")]
    with caplog.at_level(logging.WARNING):
        assert main([*args, "--chunk-ms", "160", "--left-context-ms", "640", "--quiet", "--device", "cpu"]) == 0
    out = capsys.readouterr()
    assert [line.split()[0] for line in out.out.splitlines()] == [p["good"].stem]
    assert f"{p['nan']}: 2 non-finite samples (NaN or Inf), the first at 0.50 s; stream {p['nan'].stem} stopped" in (
        caplog.text
    )
    assert re.search(r"^  non-finite samples +1$", out.err, re.MULTILINE)
    assert re.search(r"^  file not found +1$", out.err, re.MULTILINE)


def test_bad_checkpoints_are_clear_errors(bad_corpus, tok, tmp_path):
    good = _tiny_checkpoint(tmp_path / "good.ckpt", tok)
    blob = good.read_bytes()
    (tmp_path / "truncated.ckpt").write_bytes(blob[: len(blob) // 2])
    (tmp_path / "text.ckpt").write_text("this is not a checkpoint\n")
    torch.save({"state_dict": {}}, tmp_path / "other_format.ckpt")
    other = torch.load(_tiny_checkpoint(tmp_path / "wide.ckpt", tok, d_model=48), weights_only=False)
    other["hyper_parameters"] = torch.load(good, weights_only=False)["hyper_parameters"]  # another model's weights
    torch.save(other, tmp_path / "other_model.ckpt")
    cases = {
        "missing.ckpt": "checkpoint not found",
        "truncated.ckpt": "not a readable PyTorch checkpoint (truncated or corrupt?)",
        "text.ckpt": "not a readable PyTorch checkpoint (truncated or corrupt?)",
        "other_format.ckpt": "not an asr checkpoint (no hyper_parameters/tokenizer)",
        "other_model.ckpt": "weights do not fit the model its hyper-parameters build: ",
    }
    for name, what in cases.items():
        path = tmp_path / name
        with pytest.raises(SystemExit) as e:
            main(["transcribe", "--ckpt", str(path), str(bad_corpus["paths"]["good"]), "--quiet"])
        assert str(e.value.code).startswith(f"asr transcribe: {path}: {what}"), (name, e.value.code)
    with pytest.raises(CheckpointError, match=r"\d+ shape mismatches \(e\.g\. "):
        load_model(tmp_path / "other_model.ckpt")


def test_score_refuses_duplicate_ids_and_missing_files(tmp_path, capsys):
    ref, hyp = tmp_path / "ref.txt", tmp_path / "hyp.txt"
    ref.write_text("a THE CAT\nb THE DOG\nc A FOX\n")
    hyp.write_text("a THE CAT\nb THE DOG\na THE HAT\nc A FOX\nb THE FOG\n")
    with pytest.raises(SystemExit) as e:
        main(["score", str(ref), str(hyp)])
    assert e.value.code == (
        f"asr score: {hyp}:3: duplicate utterance id a (first at {hyp}:1); 2 duplicate lines for 2 ids in this "
        "file: scoring them would be ambiguous, remove the extra lines"
    )
    with pytest.raises(SystemExit, match=r"asr score: .*nope\.txt: file not found"):
        main(["score", str(ref), str(tmp_path / "nope.txt")])
    hyp.write_bytes(b"a THE CAT\nb THE D\xf6G\n")
    with pytest.raises(SystemExit, match=r"hyp\.txt:2: bytes b'\\xf6' at column 8 are not UTF-8"):
        main(["score", str(ref), str(hyp)])
