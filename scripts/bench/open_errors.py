#!/usr/bin/env python
"""Where the errors are on the open-vocabulary corpus: by voice and channel, on words unseen in
training against known ones, and which substitutions are homophones.

    python scripts/bench/open_errors.py --ref data/open/manifests/test-clean.ref.txt \\
        --hyp exp/open/hyp_test-clean_beam.txt --train-ref data/open/manifests/train-clean.ref.txt \\
        --speakers data/open/LibriSpeech/SPEAKERS.txt [--out report.md]

- WER and CER by speaker group: TTS engine and voice, noise kind and SNR, room, pass band.
- Word accuracy (the reference word aligned to an identical hypothesis word) for words that occur
  in the training text and for those that do not (out of vocabulary).
- The most frequent substitutions, and the share of substitutions whose two words espeak-ng
  pronounces identically (en-us phonemes): homophones no acoustic model can tell apart.
"""

from __future__ import annotations

import argparse
import re
import subprocess
from collections import Counter, defaultdict
from functools import cache
from pathlib import Path

import jiwer

from asr.metrics import normalize, read_kaldi_text, score


def speaker_groups(speakers_txt: Path) -> dict[str, list[str]]:
    """speaker id -> the groups it belongs to, read from SPEAKERS.txt's descriptions."""
    out: dict[str, list[str]] = {}
    for line in speakers_txt.read_text().splitlines():
        if line.startswith(";") or "|" not in line:
            continue
        spk, _, desc = (x.strip() for x in line.split("|", 2))
        voice, _, channel = desc.partition(";")
        groups = ["engine " + voice.split()[0], "voice " + voice.split(",")[0].split()[-1].split("+")[-1]]
        m = re.search(r"(\w+) noise (\d+) dB", channel)
        if m:
            snr = int(m.group(2))
            groups += [
                f"noise {m.group(1)}",
                "SNR < 15 dB" if snr < 15 else "SNR 15-22 dB" if snr <= 22 else "SNR > 22 dB",
            ]
        else:
            groups.append("no noise")
        groups.append("reverberant" if "RT60" in channel else "dry")
        groups.append("band-limited" if "band " in channel else "full band")
        out[spk] = groups
    return out


@cache
def phonemes(word: str) -> str:
    r = subprocess.run(["espeak-ng", "-q", "-x", "-v", "en-us", word.lower()], capture_output=True, text=True)
    return r.stdout.strip()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ref", required=True, type=Path)
    p.add_argument("--hyp", required=True, type=Path)
    p.add_argument("--train-ref", required=True, type=Path, help="the training split's ref.txt (vocabulary)")
    p.add_argument("--speakers", required=True, type=Path, help="the corpus's SPEAKERS.txt")
    p.add_argument("--out", type=Path, help="also write the report here")
    a = p.parse_args()
    refs, hyps = read_kaldi_text(a.ref), read_kaldi_text(a.hyp)
    known = {w for t in read_kaldi_text(a.train_ref).values() for w in normalize(t).split()}
    groups = speaker_groups(a.speakers)
    lines = []
    wer, cer = score(refs, hyps), score(refs, hyps, cer=True)
    lines.append(
        f"overall: WER {100 * wer.error_rate:.2f}%, CER {100 * cer.error_rate:.2f}% over {len(refs)} utterances"
    )

    by_group: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])  # word err, words, char err, chars, utts
    for w, c in zip(wer.utts, cer.utts):
        for g in groups.get(w.id.split("-")[0], ["unknown speaker"]):
            acc = by_group[g]
            acc[0] += w.errors
            acc[1] += w.ref_len
            acc[2] += c.errors
            acc[3] += c.ref_len
            acc[4] += 1
    lines += ["", "| speaker group | utterances | WER | CER |", "| --- | --- | --- | --- |"]
    for g, (we, wn, ce, cn, n) in sorted(by_group.items()):
        lines.append(f"| {g} | {n} | {100 * we / max(wn, 1):.2f}% | {100 * ce / max(cn, 1):.2f}% |")

    right = Counter()
    total = Counter()
    subs: Counter = Counter()
    for uid in sorted(refs):
        ref, hyp = normalize(refs[uid]), normalize(hyps.get(uid, ""))
        if not ref:
            continue
        if not hyp:
            for word in ref.split():
                total[word in known] += 1
            continue
        out = jiwer.process_words(ref, hyp)
        rw, hw = out.references[0], out.hypotheses[0]
        for chunk in out.alignments[0]:
            for i in range(chunk.ref_start_idx, chunk.ref_end_idx):
                total[rw[i] in known] += 1
                right[rw[i] in known] += chunk.type == "equal"
            if chunk.type == "substitute":
                for i, j in zip(
                    range(chunk.ref_start_idx, chunk.ref_end_idx), range(chunk.hyp_start_idx, chunk.hyp_end_idx)
                ):
                    subs[(rw[i], hw[j])] += 1
    lines += [
        "",
        f"words seen in training: {total[True]}, recognized {100 * right[True] / max(total[True], 1):.2f}%",
        f"words not seen in training (OOV): {total[False]} ({100 * total[False] / max(sum(total.values()), 1):.2f}%),"
        f" recognized {100 * right[False] / max(total[False], 1):.2f}%",
    ]
    n_sub = sum(subs.values())
    homo = sum(n for (r, h), n in subs.items() if phonemes(r) == phonemes(h))
    lines += [
        "",
        f"substitutions: {n_sub}; same espeak-ng en-us phonemes (homophones, phonetic spellings): {homo}"
        f" ({100 * homo / max(n_sub, 1):.1f}%)",
    ]
    lines.append("most frequent: " + ", ".join(f"{r}->{h} {n}" for (r, h), n in subs.most_common(15)))
    homs = [(r, h, n) for (r, h), n in subs.most_common() if phonemes(r) == phonemes(h)][:10]
    lines.append("homophone pairs: " + ", ".join(f"{r}->{h} {n}" for r, h, n in homs))
    text = "\n".join(lines)
    print(text)
    if a.out:
        a.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
