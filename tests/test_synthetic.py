import re

import soundfile as sf

from asr.data.librispeech import read_split


def test_librispeech_layout_disjoint_speakers_and_sentences(tiny_corpus):
    splits = {}
    for split in ("train-clean", "dev-clean", "test-clean"):
        utts = read_split(tiny_corpus / split)
        assert utts, split
        for u in utts:
            spk, ch, idx = u.id.split("-")
            assert u.path == tiny_corpus / split / spk / ch / f"{u.id}.flac"
            assert (u.path.parent / f"{spk}-{ch}.trans.txt").exists()
            assert re.fullmatch(r"[A-Z' ]+", u.text)
            info = sf.info(str(u.path))
            assert info.samplerate == 16000 and info.format == "FLAC" and info.frames > 8000
        splits[split] = utts
    spk = {s: {u.speaker for u in us} for s, us in splits.items()}
    txt = {s: {u.text for u in us} for s, us in splits.items()}
    names = list(splits)
    for i in range(3):
        for j in range(i + 1, 3):
            assert not spk[names[i]] & spk[names[j]]
            assert not txt[names[i]] & txt[names[j]]
    voices = (tiny_corpus / "SPEAKERS.txt").read_text()
    assert "test-clean" in voices and "en-us+" in voices
