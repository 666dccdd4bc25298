"""Synthetic LibriSpeech-layout corpus from espeak-ng speech.

Speakers are espeak-ng accent x voice variant x (speed, pitch). Train, dev and test
use disjoint voice variants (so disjoint speakers) and disjoint sentences. Sentences
come from a small grammar with a ~150-word vocabulary: real speech that a small model
can learn on a CPU in minutes, with word-level WER that means something.

Layout written (exactly LibriSpeech's):
    <root>/<split>/<spk>/<chapter>/<spk>-<chapter>-<utt:04d>.flac   16 kHz, 16-bit
    <root>/<split>/<spk>/<chapter>/<spk>-<chapter>.trans.txt       "<utt-id> TEXT"
plus <root>/SPEAKERS.txt, which lists each speaker's voice, speed and pitch.
"""
from __future__ import annotations

import multiprocessing
import os
import random
import shutil
import subprocess
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from .audio import SAMPLE_RATE, load_audio, save_audio

# espeak-ng English accents present in Debian's espeak-ng-data.
ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-us-nyc")
# Voice variants per split: disjoint, so no speaker is shared between splits.
SPLIT_VARIANTS = {
    "train-clean": ("m1", "m2", "m3", "m4", "m5", "f1", "f2", "f3"),
    "dev-clean": ("m6", "f4"),
    "test-clean": ("m7", "f5"),
}
SPEEDS = (145, 160, 175, 190)  # words per minute
PITCHES = (35, 45, 55, 65)  # espeak-ng pitch 0-99

_W = dict(
    adj="RED GREEN BLUE BIG SMALL OLD YOUNG HAPPY QUIET BRIGHT DARK COLD WARM HEAVY LIGHT SLOW QUICK TALL SHORT CLEVER",
    noun="CAT DOG BIRD HORSE TEACHER DOCTOR FARMER SAILOR CHILD DRIVER KING QUEEN BAKER PAINTER SINGER RIVER",
    obj="APPLES BOOKS LETTERS STONES FLOWERS BOXES CHAIRS COATS BOATS CANDLES WINDOWS PICTURES SHOES RINGS",
    verb="SEES FINDS LIKES WANTS BRINGS PAINTS HOLDS CARRIES FOLLOWS WATCHES SELLS COUNTS MOVES BUYS",
    place="GARDEN KITCHEN MARKET STATION HOUSE FOREST VILLAGE HARBOUR LIBRARY SCHOOL",
    name="ANNA DAVID MARY PETER LUCY JOHN SARAH THOMAS",
    num="TWO THREE FOUR FIVE SIX SEVEN EIGHT NINE TEN ELEVEN TWELVE TWENTY",
    day="MONDAY TUESDAY WEDNESDAY THURSDAY FRIDAY SATURDAY SUNDAY",
    prep="IN NEAR BEHIND INSIDE",
    adv="SLOWLY QUICKLY OFTEN NEVER ALWAYS TODAY",
)
WORDS = {k: v.split() for k, v in _W.items()}


def _sentence(rng: random.Random) -> str:
    w = lambda k: rng.choice(WORDS[k])  # noqa: E731
    subj = rng.choice([f"THE {w('adj')} {w('noun')}", f"THE {w('noun')}", w("name"), f"A {w('noun')}"])
    obj = rng.choice([f"{w('num')} {w('adj')} {w('obj')}", f"{w('num')} {w('obj')}", f"THE {w('obj')}"])
    tail = rng.choice(["", f" {w('prep')} THE {w('place')}", f" ON {w('day')}", f" {w('adv')}",
                       f" {w('prep')} THE {w('adj')} {w('place')}"])
    return f"{subj} {w('verb')} {obj}{tail}"


def generate_sentences(n: int, rng: random.Random, exclude: set[str]) -> list[str]:
    """n distinct sentences not in `exclude` (which is updated)."""
    out: list[str] = []
    tries = 0
    while len(out) < n:
        s = _sentence(rng)
        tries += 1
        if s not in exclude:
            exclude.add(s)
            out.append(s)
        if tries > 100 * n + 1000:
            raise RuntimeError("sentence grammar exhausted; ask for fewer utterances")
    return out


@dataclass(frozen=True)
class Speaker:
    spk_id: int  # LibriSpeech-style numeric speaker id
    chapter: int  # one chapter per speaker
    voice: str  # espeak-ng voice, accent+variant
    speed: int  # words per minute
    pitch: int  # 0-99


def _speakers(split: str, first_id: int, rng: random.Random) -> list[Speaker]:
    spks = []
    for a in ACCENTS:
        for v in SPLIT_VARIANTS[split]:
            sid = first_id + len(spks)
            spks.append(Speaker(sid, sid * 10 + 1, f"{a}+{v}", rng.choice(SPEEDS), rng.choice(PITCHES)))
    return spks


def _synth_one(job: tuple[str, Speaker, str]) -> str | None:
    """Synthesize one utterance to flac; returns an error message or None."""
    path, spk, text = job
    with tempfile.NamedTemporaryFile(suffix=".wav") as tmp:
        cmd = ["espeak-ng", "-v", spk.voice, "-s", str(spk.speed), "-p", str(spk.pitch), "-w", tmp.name, text]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            return f"{path}: espeak-ng failed: {r.stderr.strip()}"
        wave, _ = load_audio(tmp.name, SAMPLE_RATE)
    save_audio(path, wave, SAMPLE_RATE)
    return None


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)  # one process per core already


def synthesize_corpus(root: str | Path, sizes: dict[str, int], seed: int = 0, jobs: int | None = None) -> Path:
    """Write a LibriSpeech-layout corpus under `root` with `sizes[split]` utterances each.

    Splits must be keys of SPLIT_VARIANTS. Existing split folders are replaced.
    Returns root.
    """
    if shutil.which("espeak-ng") is None:
        raise RuntimeError("espeak-ng not found: install it (`apt-get install espeak-ng`, or `make setup`)")
    root = Path(root)
    rng = random.Random(seed)
    used: set[str] = set()
    jobs_list: list[tuple[str, Speaker, str]] = []
    speaker_lines = ["; ID | SPLIT | VOICE (espeak-ng accent+variant) | SPEED wpm | PITCH"]
    first_id = 100
    for split, n in sizes.items():
        if split not in SPLIT_VARIANTS:
            raise ValueError(f"unknown split {split!r}; choose from {list(SPLIT_VARIANTS)}")
        spks = _speakers(split, first_id, rng)
        first_id += 100
        sents = generate_sentences(n, rng, used)
        split_dir = root / split
        if split_dir.exists():
            shutil.rmtree(split_dir)
        per_spk: dict[int, list[str]] = {}
        for i, text in enumerate(sents):
            spk = spks[i % len(spks)]
            d = split_dir / str(spk.spk_id) / str(spk.chapter)
            d.mkdir(parents=True, exist_ok=True)
            utt = f"{spk.spk_id}-{spk.chapter}-{i // len(spks):04d}"
            per_spk.setdefault(spk.spk_id, []).append(f"{utt} {text}")
            jobs_list.append((str(d / f"{utt}.flac"), spk, text))
        for spk in spks:
            lines = per_spk.get(spk.spk_id)
            if lines:
                trans = split_dir / str(spk.spk_id) / str(spk.chapter) / f"{spk.spk_id}-{spk.chapter}.trans.txt"
                trans.write_text("\n".join(lines) + "\n")
            speaker_lines.append(f"{spk.spk_id} | {split} | {spk.voice} | {spk.speed} | {spk.pitch}")
    root.mkdir(parents=True, exist_ok=True)
    (root / "SPEAKERS.txt").write_text("\n".join(speaker_lines) + "\n")
    jobs = jobs or os.cpu_count() or 1
    errors = []
    # spawn, not fork: forking after torch has started its OpenMP pool deadlocks the children
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init) as ex:
        for err in tqdm(ex.map(_synth_one, jobs_list, chunksize=16), total=len(jobs_list), desc="synthesize", unit="utt"):
            if err:
                errors.append(err)
    if errors:
        raise RuntimeError(f"{len(errors)} utterances failed to synthesize, e.g. {errors[0]}")
    return root
