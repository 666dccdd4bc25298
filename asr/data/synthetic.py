"""Synthetic LibriSpeech-layout corpora from TTS speech.

Two kinds of text (`text=`):
- "grammar": sentences of a small grammar with a ~150-word vocabulary, spoken by espeak-ng
  voices (accent x variant x speed x pitch) through a clean channel: real speech that a small
  model learns on a CPU in minutes, with word-level WER that means something.
- "open": open-vocabulary English sentences (`open_text`: fortunes and WordNet's examples,
  normalized as LibriSpeech is), spoken by espeak-ng and flite voices through noisy, reverberant,
  band-limited channels (`voices`): the closest stand-in for LibriSpeech this machine allows.
Train, dev and test are disjoint by sentence and by speaker (voice variants are dealt to one
split each).

Layout written (exactly LibriSpeech's):
    <root>/<split>/<spk>/<chapter>/<spk>-<chapter>-<utt:04d>.flac   16 kHz, 16-bit
    <root>/<split>/<spk>/<chapter>/<spk>-<chapter>.trans.txt       "<utt-id> TEXT"
plus <root>/SPEAKERS.txt (each speaker's voice and channel) and, for open text,
<root>/TEXT.txt (sources, counts, out-of-vocabulary rates).

Synthesis is resumable: the plan (text kind, sizes, seed) is saved in <root>/.synthesis.json, and
a rerun of the same plan keeps every finished file and synthesizes the rest (each utterance
renders to the same samples whenever it is synthesized, see `voices.utterance_rng`); a different
plan replaces the split folders.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import random
import shutil
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from .audio import SAMPLE_RATE, save_audio
from .sizes import SIZES
from .voices import NOISES, SNR_JITTER_DB, Channel, Speaker, render_utterance, utterance_rng

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
    tail = rng.choice(
        [
            "",
            f" {w('prep')} THE {w('place')}",
            f" ON {w('day')}",
            f" {w('adv')}",
            f" {w('prep')} THE {w('adj')} {w('place')}",
        ]
    )
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


def grammar_speakers(split: str, first_id: int, rng: random.Random) -> list[Speaker]:
    """The grammar corpus's speakers: every accent x the split's variants, clean channel."""
    spks = []
    for a in ACCENTS:
        for v in SPLIT_VARIANTS[split]:
            sid = first_id + len(spks)
            spks.append(Speaker(sid, sid * 10 + 1, f"{a}+{v}", rng.choice(SPEEDS), rng.choice(PITCHES)))
    return spks


# ---- open-vocabulary speakers: more voices, two engines, and a channel per speaker ----
# espeak-ng's voice variants that sound like people (the robotic, demonic and whispering ones are
# left out of the held-out splits), dealt to one split each so that no voice crosses splits.
OPEN_ESPEAK_VARIANTS = {
    "train-clean": (
        "m1 m2 m3 m4 m5 m8 f1 f2 f3 klatt klatt2 Andy Annie adam aunty belinda benjamin caleb david ed "
        "edward iven john max michel norbert quincy rob robert shelby travis victor zac croak whisper grandma"
    ).split(),
    "dev-clean": "m6 f4 klatt3 linda paul".split(),
    "test-clean": "m7 f5 klatt4 steph grandpa".split(),
}
OPEN_FLITE_VOICES = {"train-clean": ("kal16", "awb"), "dev-clean": ("rms",), "test-clean": ("slt",)}
FLITE_F0_HZ = {"kal16": (90, 130), "awb": (90, 130), "rms": (85, 125), "slt": (150, 210)}
OPEN_ESPEAK_SPEAKERS = {"train-clean": 120, "dev-clean": 16, "test-clean": 16}
FLITE_SPEAKERS_PER_VOICE = 2
OPEN_FIRST_ID = {"train-clean": 1000, "dev-clean": 2000, "test-clean": 3000}

# How open-text speakers are drawn (each speaker once; its utterances share its voice and channel).
ESPEAK_WPM = range(130, 205, 5)
ESPEAK_PITCH = range(20, 81, 5)
FLITE_RATE = (0.85, 1.2)
NOISE_FREE_SHARE = 0.25
NOISE_WEIGHTS = (3, 4, 2, 1)  # NOISES: white, pink, brown, hum
SNR_RANGE_DB = (8.0, 30.0)
DRY_SHARE = 0.5
RT60_RANGE_S = (0.15, 0.8)
BANDS_HZ = (None, None, None, None, (300.0, 3400.0), (200.0, 4000.0), (100.0, 6000.0))
LEVEL_RANGE_DB = (-32.0, -12.0)


def random_channel(rng: random.Random) -> Channel:
    """One speaker's recording channel: a quarter are noise-free, half are dry, most full band."""
    noise = None if rng.random() < NOISE_FREE_SHARE else rng.choices(NOISES, weights=NOISE_WEIGHTS)[0]
    rt60 = None if rng.random() < DRY_SHARE else round(rng.uniform(*RT60_RANGE_S), 2)
    band = rng.choice(BANDS_HZ)
    return Channel(noise, round(rng.uniform(*SNR_RANGE_DB), 1), rt60, band, round(rng.uniform(*LEVEL_RANGE_DB), 1))


def open_speakers(split: str, rng: random.Random) -> list[Speaker]:
    """The open corpus's speakers of one split: espeak-ng accent x variant draws, then flite voices."""
    combos = [(a, v) for a in ACCENTS for v in OPEN_ESPEAK_VARIANTS[split]]
    rng.shuffle(combos)
    spks: list[Speaker] = []
    first_id = OPEN_FIRST_ID[split]
    for accent, variant in combos[: OPEN_ESPEAK_SPEAKERS[split]]:
        sid = first_id + len(spks)
        speed = rng.randrange(ESPEAK_WPM.start, ESPEAK_WPM.stop, ESPEAK_WPM.step)
        pitch = rng.randrange(ESPEAK_PITCH.start, ESPEAK_PITCH.stop, ESPEAK_PITCH.step)
        spks.append(Speaker(sid, sid * 10 + 1, f"{accent}+{variant}", speed, pitch, "espeak", random_channel(rng)))
    for voice in OPEN_FLITE_VOICES[split]:
        for _ in range(FLITE_SPEAKERS_PER_VOICE):
            sid = first_id + len(spks)
            rate, f0 = round(rng.uniform(*FLITE_RATE), 2), round(rng.uniform(*FLITE_F0_HZ[voice]))
            spks.append(Speaker(sid, sid * 10 + 1, voice, rate, f0, "flite", random_channel(rng)))
    return spks


def describe_grammar_split(split: str) -> str:
    return (
        f"espeak-ng accents {' '.join(ACCENTS)} x variants {' '.join(SPLIT_VARIANTS[split])}; "
        f"speed from {SPEEDS} wpm, pitch from {PITCHES}; clean channel"
    )


def describe_open_split(split: str) -> str:
    bands = ", ".join(f"{lo:.0f}-{hi:.0f} Hz" for lo, hi in (b for b in BANDS_HZ if b))
    n_band = sum(b is not None for b in BANDS_HZ)
    return (
        f"espeak-ng: {OPEN_ESPEAK_SPEAKERS[split]} draws of accent x variant over accents {' '.join(ACCENTS)} and "
        f"variants {' '.join(OPEN_ESPEAK_VARIANTS[split])}, {ESPEAK_WPM.start}-{ESPEAK_WPM[-1]} wpm, pitch "
        f"{ESPEAK_PITCH.start}-{ESPEAK_PITCH[-1]}; flite: "
        + ", ".join(
            f"{v} x{FLITE_SPEAKERS_PER_VOICE} (F0 {FLITE_F0_HZ[v][0]}-{FLITE_F0_HZ[v][1]} Hz)"
            for v in OPEN_FLITE_VOICES[split]
        )
        + f", rate x{FLITE_RATE[0]}-{FLITE_RATE[1]}. Channel per speaker: no noise for {NOISE_FREE_SHARE:.0%}, "
        f"else {'/'.join(NOISES)} noise (weights {'/'.join(map(str, NOISE_WEIGHTS))}) at {SNR_RANGE_DB[0]:.0f}-"
        f"{SNR_RANGE_DB[1]:.0f} dB SNR (+-{SNR_JITTER_DB:.0f} dB per utterance); "
        f"a room (RT60 {RT60_RANGE_S[0]}-{RT60_RANGE_S[1]} s) "
        f"for {1 - DRY_SHARE:.0%}; band {bands} for {n_band}/{len(BANDS_HZ)}; level {LEVEL_RANGE_DB[0]:.0f} to "
        f"{LEVEL_RANGE_DB[1]:.0f} dBFS"
    )


@dataclass(frozen=True)
class SplitPlan:
    """What one split holds: its speakers and, per utterance, the transcript and the text spoken."""

    speakers: list[Speaker]
    transcripts: list[str]
    spoken: list[str]  # what the TTS engine reads (open text: lower case, see _plan_open)


def _plan_grammar(sizes: dict[str, int], seed: int) -> tuple[dict[str, SplitPlan], str]:
    rng = random.Random(seed)
    used: set[str] = set()
    plans, first_id = {}, 100
    for split, n in sizes.items():
        spks = grammar_speakers(split, first_id, rng)
        first_id += 100
        sents = generate_sentences(n, rng, used)
        plans[split] = SplitPlan(spks, sents, sents)
    return plans, ""


def _plan_open(sizes: dict[str, int], seed: int) -> tuple[dict[str, SplitPlan], str]:
    from .open_text import DEBIAN_PACKAGES, collect_sentences, oov_rate, split_disjoint

    text = collect_sentences()
    held_out = {s: n for s, n in sizes.items() if s != "train-clean"}
    parts = split_disjoint(text.sentences, held_out, seed)
    rng = random.Random(seed)
    plans = {}
    for split, n in sizes.items():
        pool = parts["train"] if split == "train-clean" else parts[split]
        # training sentences repeat (by other speakers) only when more utterances than sentences are asked for
        sents = [pool[i % len(pool)] for i in range(n)]
        # lower case: espeak-ng spells out some all-capital words (US, IT) letter by letter
        plans[split] = SplitPlan(open_speakers(split, rng), sents, [s.lower() for s in sents])
    train = plans["train-clean"].transcripts if "train-clean" in plans else []
    lines = [
        "# Open-vocabulary text (asr.data.open_text): Debian packages " + " and ".join(DEBIAN_PACKAGES),
        text.report(),
    ]
    for split, plan in plans.items():
        voc = {w for s in plan.transcripts for w in s.split()}
        n_sent = len(set(plan.transcripts))
        line = f"{split}: {len(plan.transcripts)} utterances, {n_sent} sentences, {len(voc)} distinct words"
        if split != "train-clean" and train:
            tok, typ = oov_rate(plan.transcripts, train)
            line += f"; OOV against the training text: {100 * tok:.2f}% of words, {100 * typ:.2f}% of distinct words"
        lines.append(line)
    return plans, "\n".join(lines) + "\n"


@dataclass(frozen=True)
class TextKind:
    """What a `text=` kind needs: its planner (splits + TEXT.txt report), SPEAKERS.txt's split
    recipe, and the TTS programs it calls."""

    plan: Callable[[dict[str, int], int], tuple[dict[str, SplitPlan], str]]
    describe_split: Callable[[str], str]
    programs: tuple[str, ...]


TEXT_KINDS = {
    "grammar": TextKind(_plan_grammar, describe_grammar_split, ("espeak-ng",)),
    "open": TextKind(_plan_open, describe_open_split, ("espeak-ng", "flite")),
}
assert set(TEXT_KINDS) == set(SIZES), "every text kind has its sizes (asr/data/sizes.py)"


def _synth_one(job: tuple[str, Speaker, str, int, str]) -> str | None:
    """Render one utterance and write it atomically; returns an error message or None."""
    path, spk, spoken, seed, utt_id = job
    try:
        wave = render_utterance(spk, spoken, utterance_rng(seed, utt_id))
    except RuntimeError as e:
        return f"{path}: {e}"
    partial = Path(path).with_name(f".{Path(path).name}.partial.flac")
    save_audio(partial, wave, SAMPLE_RATE)
    os.replace(partial, path)  # a killed synthesis leaves no truncated .flac behind
    return None


def _worker_init() -> None:
    import threading
    import time

    import torch

    torch.set_num_threads(1)  # one process per core already
    # A parent killed by a signal of its own (kill PID, not Ctrl-C on the process group) would
    # leave the pool's workers waiting forever: each exits once its parent is gone.
    parent = os.getppid()

    def exit_when_orphaned() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=exit_when_orphaned, daemon=True).start()


def synthesize_corpus(
    root: str | Path, sizes: dict[str, int], seed: int = 0, jobs: int | None = None, text: str = "grammar"
) -> Path:
    """Write a LibriSpeech-layout corpus under `root` with `sizes[split]` utterances each.

    Splits must be keys of SPLIT_VARIANTS; text is "grammar" or "open" (module docstring). A rerun
    with the same (text, sizes, seed) and the same planned utterances resumes; anything else
    replaces the split folders. Files in the split folders that the plan does not name are
    removed. Returns root.
    """
    if text not in TEXT_KINDS:
        raise ValueError(f"unknown text kind {text!r}; choose from {list(TEXT_KINDS)}")
    kind = TEXT_KINDS[text]
    for split in sizes:
        if split not in SPLIT_VARIANTS:
            raise ValueError(f"unknown split {split!r}; choose from {list(SPLIT_VARIANTS)}")
    for exe in kind.programs:
        if shutil.which(exe) is None:
            raise RuntimeError(f"{exe} not found: install it (`apt-get install {exe}`, or `make setup`)")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    plans, text_report = kind.plan(sizes, seed)
    # The plan's fingerprint covers every utterance's speaker and text, so a change of the text
    # sources (another Debian release of fortunes) or of the speaker rules is never mixed into
    # an earlier run's files.
    digest = hashlib.sha256(repr(sorted(plans.items(), key=lambda kv: kv[0])).encode()).hexdigest()
    plan_path = root / ".synthesis.json"
    plan_key = {"text": text, "sizes": sizes, "seed": seed, "plan_sha256": digest}
    resume = plan_path.exists() and json.loads(plan_path.read_text()) == plan_key
    if not resume:
        plan_path.unlink(missing_ok=True)
        for split in sizes:
            shutil.rmtree(root / split, ignore_errors=True)

    jobs_list: list[tuple[str, Speaker, str, int, str]] = []
    speaker_lines = ["; ID | SPLIT | VOICE | CHANNEL"]
    for split, plan in plans.items():
        spks = plan.speakers
        speaker_lines.append(f"; {split}: {kind.describe_split(split)}")
        per_spk: dict[Speaker, list[str]] = {}
        planned: set[Path] = set()  # this split's files
        for i, (transcript, spoken) in enumerate(zip(plan.transcripts, plan.spoken)):
            spk = spks[i % len(spks)]
            utt = f"{spk.spk_id}-{spk.chapter}-{i // len(spks):04d}"
            per_spk.setdefault(spk, []).append(f"{utt} {transcript}")
            path = root / split / str(spk.spk_id) / str(spk.chapter) / f"{utt}.flac"
            jobs_list.append((str(path), spk, spoken, seed, utt))
            planned.add(path)
        for spk in spks:
            lines = per_spk.get(spk)
            if lines:
                trans = root / split / str(spk.spk_id) / str(spk.chapter) / f"{spk.spk_id}-{spk.chapter}.trans.txt"
                trans.parent.mkdir(parents=True, exist_ok=True)
                trans.write_text("\n".join(lines) + "\n")
                planned.add(trans)
            speaker_lines.append(f"{spk.spk_id} | {split} | {spk.describe()}")
        for f in sorted((root / split).rglob("*")):  # partial files of a killed run, strays
            if f.is_file() and f not in planned:
                f.unlink()
    (root / "SPEAKERS.txt").write_text("\n".join(speaker_lines) + "\n")
    if text_report:
        (root / "TEXT.txt").write_text(text_report)
    else:
        (root / "TEXT.txt").unlink(missing_ok=True)  # an earlier open-text run's report
    plan_path.write_text(json.dumps(plan_key))

    todo = [j for j in jobs_list if not os.path.exists(j[0])]
    if resume and len(todo) < len(jobs_list):
        print(f"resuming synthesis in {root}: {len(jobs_list) - len(todo)} of {len(jobs_list)} utterances already done")
    jobs = jobs or os.cpu_count() or 1
    errors = []
    bar = tqdm(total=len(jobs_list), initial=len(jobs_list) - len(todo), desc="synthesize", unit="utt")
    # spawn, not fork: forking after torch has started its OpenMP pool deadlocks the children
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init) as ex:
        for err in ex.map(_synth_one, todo, chunksize=16):
            bar.update()
            if err:
                errors.append(err)
    bar.close()
    if errors:
        raise RuntimeError(f"{len(errors)} utterances failed to synthesize, e.g. {errors[0]}")
    return root
