"""The open-vocabulary synthetic corpus: text normalization, text sources, speakers, resumable synthesis."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asr.data.librispeech import read_split
from asr.data.open_text import collect_sentences, oov_rate, split_disjoint
from asr.data.synthetic import OPEN_ESPEAK_VARIANTS, OPEN_FLITE_VOICES, synthesize_corpus
from asr.data.text_norm import normalize_sentence, spell_number, spell_ordinal, spell_year, split_sentences
from asr.data.voices import Channel, apply_channel, band_limit, colored_noise, utterance_rng

WORD = r"[A-Z]+(?:'[A-Z]+)*"
TRANSCRIPT = re.compile(rf"{WORD}(?: {WORD})*")
SPLITS = ("train-clean", "dev-clean", "test-clean")


@pytest.mark.parametrize(
    "n, words",
    [
        (0, "ZERO"),
        (13, "THIRTEEN"),
        (40, "FORTY"),
        (99, "NINETY NINE"),
        (101, "ONE HUNDRED ONE"),
        (1000, "ONE THOUSAND"),
        (2021, "TWO THOUSAND TWENTY ONE"),
        (1_250_000, "ONE MILLION TWO HUNDRED FIFTY THOUSAND"),
    ],
)
def test_spell_number(n, words):
    assert spell_number(n) == words


def test_years_and_ordinals_are_read_as_people_say_them():
    assert spell_year(1984) == "NINETEEN EIGHTY FOUR"
    assert spell_year(1905) == "NINETEEN OH FIVE"
    assert spell_year(1900) == "NINETEEN HUNDRED"
    assert spell_year(2005) == "TWO THOUSAND FIVE"
    assert spell_year(2019) == "TWENTY NINETEEN"
    assert [spell_ordinal(n) for n in (1, 2, 3, 12, 21, 40, 100)] == [
        "FIRST", "SECOND", "THIRD", "TWELFTH", "TWENTY FIRST", "FORTIETH", "ONE HUNDREDTH",
    ]  # fmt: skip


@pytest.mark.parametrize(
    "raw, expected",
    [
        (
            "Mr. Smith paid $3.50 for 2 apples in 1984.",
            "MISTER SMITH PAID THREE DOLLARS AND FIFTY CENTS FOR TWO APPLES IN NINETEEN EIGHTY FOUR",
        ),
        (
            "Don\u2019t stop\u2014it\u2019s the well-known 21st century!",
            "DON'T STOP IT'S THE WELL KNOWN TWENTY FIRST CENTURY",
        ),
        ("We gained 15% more users, said the 1,000,000th visitor.", None),  # "1,000,000th": not a plain ordinal
        ("We gained 15% more users this year", "WE GAINED FIFTEEN PERCENT MORE USERS THIS YEAR"),
        ("1,000,000 people can't be wrong", "ONE MILLION PEOPLE CAN'T BE WRONG"),
        ("Pi is roughly 3.14, they say.", "PI IS ROUGHLY THREE POINT ONE FOUR THEY SAY"),
        ("Caf\u00e9 au lait is served here", "CAFE AU LAIT IS SERVED HERE"),
        ("Q: What is the answer to this?", "WHAT IS THE ANSWER TO THIS"),
        ("I ATE THE WHOLE CAKE TODAY", "I ATE THE WHOLE CAKE TODAY"),  # shouting, not acronyms
        ("If *I* had a _hammer_, there'd be no folk singers.", "IF I HAD A HAMMER THERE'D BE NO FOLK SINGERS"),
        ("Salt & pepper go well together", "SALT AND PEPPER GO WELL TOGETHER"),
        ("'Tis the season of the dogs' joy", "TIS THE SEASON OF THE DOGS JOY"),
    ],
)
def test_normalization_follows_librispeech_conventions(raw, expected):
    text, reason = normalize_sentence(raw)
    assert text == expected, reason


@pytest.mark.parametrize(
    "raw, reason",
    [
        ("The NASA launch was delayed again", "acronym"),
        ("Meet me at 3:30 in the lobby", "number format"),
        ("Send mail to root at host/path please", "digits or symbols"),
        ("Use the C++ compiler for this", "digits or symbols"),
        ("See the U.S.S.R. on the map today", "dotted abbreviation"),
        ("Too short.", "length"),
        (" ".join(["word"] * 26), "length"),
        ("\u041f\u0440\u0438\u0432\u0435\u0442 this is Russian text", "non-ASCII character"),
    ],
)
def test_normalization_drops_what_it_cannot_read_with_the_reason(raw, reason):
    assert normalize_sentence(raw) == (None, reason)


def test_sentences_split_at_ends_but_not_at_abbreviations():
    assert split_sentences("Mr. Smith came.  He saw!\nDid he win? Yes, he did.") == [
        "mister Smith came.", "He saw!", "Did he win?", "Yes, he did.",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def open_text():
    return collect_sentences()


def test_open_text_has_a_real_vocabulary_in_librispeech_form(open_text):
    """The issue's floor: 30,000 sentences, 15,000 distinct words, 4-25 words, unique, normalized."""
    sents = open_text.sentences
    assert len(sents) >= 30_000
    assert len(open_text.vocabulary()) >= 15_000
    assert len(set(sents)) == len(sents)
    assert all(TRANSCRIPT.fullmatch(s) and 4 <= len(s.split()) <= 25 for s in sents)
    assert open_text.source_counts["fortunes"] > 10_000 and open_text.source_counts["wordnet"] > 10_000
    assert sum(open_text.dropped.values()) > 0 and "duplicates" in open_text.report()


def test_disjoint_splits_and_oov_rate(open_text):
    parts = split_disjoint(open_text.sentences, {"dev": 300, "test": 500}, seed=3)
    assert len(parts["dev"]) == 300 and len(parts["test"]) == 500
    assert len(parts["train"]) == len(open_text.sentences) - 800
    assert not set(parts["dev"]) & set(parts["test"])
    assert not (set(parts["dev"]) | set(parts["test"])) & set(parts["train"])
    assert split_disjoint(open_text.sentences, {"dev": 300, "test": 500}, seed=3) == parts  # seeded
    tok, typ = oov_rate(["A B C C", "D A"], ["A B", "X"])
    assert (tok, typ) == (pytest.approx(3 / 6), pytest.approx(2 / 4))


def test_channel_effects_hit_their_targets():
    rng = utterance_rng(0, "x")
    t = np.arange(16000 * 2) / 16000
    speech = (np.sin(2 * np.pi * 440 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    import torch

    x = apply_channel(torch.from_numpy(speech), Channel(noise="white", snr_db=20.0, level_db=-25.0), rng).numpy()
    assert 20 * np.log10(np.sqrt(np.mean(x.astype(np.float64) ** 2))) == pytest.approx(-25.0, abs=0.01)
    noise = x / np.sqrt(np.mean(x**2)) - speech / np.sqrt(np.mean(speech**2)) * np.sqrt(1 / (1 + 10 ** (-2.0)))
    snr = 10 * np.log10(1 / np.mean(noise**2))  # unit-power mix = speech share + noise share
    assert 20 - 3.5 < snr < 20 + 3.5  # the speaker's SNR +- the per-utterance jitter
    spec = np.abs(np.fft.rfft(band_limit(colored_noise("white", 32000, rng), 300.0, 3400.0))) ** 2
    f = np.fft.rfftfreq(32000, 1 / 16000)
    assert spec[(f > 500) & (f < 3000)].mean() > 1e4 * spec[(f < 200) | (f > 4000)].mean()
    pink = np.abs(np.fft.rfft(colored_noise("pink", 64000, rng))) ** 2
    f = np.fft.rfftfreq(64000, 1 / 16000)
    ratio = pink[(f > 100) & (f < 200)].mean() / pink[(f > 1600) & (f < 3200)].mean()
    assert 8 < ratio < 32  # 1/f power: 16x over four octaves


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


OPEN_SIZES = {"train-clean": 60, "dev-clean": 10, "test-clean": 10}


@pytest.fixture(scope="module")
def open_corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("open") / "LibriSpeech"
    return synthesize_corpus(root, OPEN_SIZES, seed=5, jobs=2, text="open")


def test_open_corpus_is_disjoint_by_sentence_and_speaker_and_documented(open_corpus):
    utts = {s: read_split(open_corpus / s, progress=False) for s in SPLITS}
    assert {s: len(u) for s, u in utts.items()} == OPEN_SIZES
    for s in SPLITS:
        for u in utts[s][:10]:
            assert TRANSCRIPT.fullmatch(u.text)
            wave, sr = sf.read(str(u.path))
            assert sr == 16000 and np.isfinite(wave).all() and np.abs(wave).max() < 1.0
    for i, a in enumerate(SPLITS):
        for b in SPLITS[i + 1 :]:
            assert not {u.text for u in utts[a]} & {u.text for u in utts[b]}
            assert not {u.speaker for u in utts[a]} & {u.speaker for u in utts[b]}
            assert not set(OPEN_ESPEAK_VARIANTS[a]) & set(OPEN_ESPEAK_VARIANTS[b])
            assert not set(OPEN_FLITE_VOICES[a]) & set(OPEN_FLITE_VOICES[b])
    text = (open_corpus / "SPEAKERS.txt").read_text()
    lines = [ln for ln in text.splitlines() if not ln.startswith(";")]
    for split in SPLITS:  # each split's recipe, then its speakers
        assert re.search(rf"^; {split}: espeak-ng: .* flite: .*Channel per speaker", text, re.M)
    assert len(lines) == sum(120 + 2 * 2 if s == "train-clean" else 16 + 2 for s in SPLITS)
    assert any("flite slt" in ln and "| test-clean |" in ln for ln in lines)
    assert any("noise" in ln and "dB" in ln and "RT60" in ln for ln in lines)
    report = (open_corpus / "TEXT.txt").read_text()
    assert "fortunes" in report and re.search(r"test-clean: 10 utterances.*OOV against the training text", report)


def test_an_interrupted_synthesis_resumes_to_the_same_corpus(open_corpus, tmp_path):
    """kill -9 mid-synthesis, rerun: finished files are kept, the rest is synthesized, and the
    corpus is byte for byte the uninterrupted one (every utterance's draws depend on its id only)."""
    root = tmp_path / "LibriSpeech"
    code = (
        "from asr.data.synthetic import synthesize_corpus\n"
        f"synthesize_corpus({str(root)!r}, {OPEN_SIZES!r}, seed=5, jobs=2, text='open')\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while len(list(root.rglob("[0-9]*.flac"))) < 15 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    workers = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    os.kill(proc.pid, signal.SIGKILL)  # the parent only, as `kill -9 PID` does
    proc.wait()
    assert workers

    def alive(pid: str) -> bool:
        try:
            return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
        except FileNotFoundError:
            return False

    deadline = time.time() + 15
    while any(alive(w) for w in workers) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(alive(w) for w in workers), "synthesis workers outlived their parent"
    # finished files; a kill in the middle of a write leaves a hidden .partial.flac, never a .flac
    done = {p: p.stat().st_mtime_ns for p in root.rglob("*.flac") if not p.name.startswith(".")}
    assert 15 <= len(done) < sum(OPEN_SIZES.values()), "the kill came too late to test a resume"
    stray = root / "train-clean" / "9999" / "99991" / "9999-99991-0000.flac"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"left over")
    synthesize_corpus(root, OPEN_SIZES, seed=5, jobs=2, text="open")
    assert all(p.stat().st_mtime_ns == t for p, t in done.items())  # finished work kept, not redone
    assert _hashes(root) == _hashes(open_corpus)  # strays and partial files gone, the rest identical
    # another plan (here: another seed) replaces the corpus instead of mixing the two
    synthesize_corpus(root, {"train-clean": 4, "dev-clean": 2, "test-clean": 2}, seed=6, jobs=2, text="open")
    assert len(list(root.rglob("*.flac"))) == 8
