"""Long-form decoding (asr.longform): windows merged without dropping or doubling tokens, the
streaming path equal to stream_decode, word times from the file start and monotonic, and the
CLI switching to it for long files. The accuracy test on a trained model is marked slow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from asr.decoding import DecodeOptions, Hypothesis, build_search, run_search
from asr.decoding.endpoint import Endpointer
from asr.longform import LongFormOptions, WindowMerger, Windows, transcribe_long
from asr.nn.heads import build_head

WORD = 1  # the word-start token of the synthetic tests ("▁")


def _frame_local_ctc(vocab: int):
    """A CTC head whose log-probs are its input frames' (identity projection): its greedy search on a
    window sees exactly the frames of one pass over the whole sequence."""
    head = build_head("ctc", vocab, vocab).eval()
    with torch.no_grad():
        head.proj.weight.copy_(torch.eye(vocab))
        head.proj.bias.zero_()
    return head


def _emissions(frames: int, vocab: int, seed: int = 0) -> torch.Tensor:
    """Logits [1, T, V] of words (a word start, then 1-5 letters) on random frames, blank between."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(1, frames, vocab)
    x[0, :, 0] = 5.0  # blank
    t = int(torch.randint(0, 4, (), generator=g))
    while t < frames - 12:
        for tok in [WORD] + torch.randint(2, vocab, (int(torch.randint(1, 6, (), generator=g)),), generator=g).tolist():
            x[0, t, tok] = 10.0
            t += int(torch.randint(1, 4, (), generator=g))
        t += int(torch.randint(0, 15, (), generator=g))  # sometimes a pause between words
    return x


@pytest.mark.parametrize("window,overlap", [(200, 40), (97, 30), (64, 0)])
def test_windows_merge_to_the_one_pass_hypothesis(window, overlap):
    vocab = 12
    enc = _emissions(3000, vocab)
    search = build_search(_frame_local_ctc(vocab), DecodeOptions(method="greedy"))
    whole = run_search(search, enc, torch.tensor([enc.shape[1]]))[0]
    w = Windows(window, overlap)
    merger = WindowMerger(w, lambda t: t == WORD)
    for start in range(0, enc.shape[1], w.hop):
        x = enc[:, start : start + window]
        merger.add(run_search(search, x, torch.tensor([x.shape[1]]))[0])
        if start + window >= enc.shape[1]:
            break
    got = merger.result()
    assert got.tokens == whole.tokens and got.frames == whole.frames
    assert merger.word_cuts + merger.token_cuts == merger.k - 1 and (overlap == 0 or merger.word_cuts > 0)


def test_a_word_the_windows_place_a_frame_apart_is_kept_once():
    """Window 2 emits the words around the boundary one frame later than window 1 (different context):
    the cut is at a word both emit, so nothing is doubled or dropped."""
    w = Windows(window=100, overlap=20)  # boundary between windows 0 and 1: frame 90
    first = Hypothesis([WORD, 5, 6, WORD, 7, 8, WORD, 9], 0.0, frames=[10, 11, 12, 86, 88, 89, 95, 97])
    # window 1 starts at frame 80: its frames are counted from there
    second = Hypothesis([WORD, 7, 8, WORD, 9, WORD, 4], 0.0, frames=[7, 9, 10, 16, 18, 40, 41])
    merger = WindowMerger(w, lambda t: t == WORD, match_frames=2)
    merger.add(first)
    merger.add(second)
    got = merger.result()
    assert got.tokens == [WORD, 5, 6, WORD, 7, 8, WORD, 9, WORD, 4]
    assert got.frames == sorted(got.frames) and merger.word_cuts == 1


def test_long_form_options_are_validated_once():
    with pytest.raises(ValueError, match="overlap <= window / 2"):
        LongFormOptions(window_seconds=10, overlap_seconds=6)
    with pytest.raises(ValueError, match="finite left context"):
        LongFormOptions(left_context_ms=-1)
    with pytest.raises(ValueError, match="pause_ms >= 0"):
        LongFormOptions(pause_ms=-1)
    with pytest.raises(ValueError, match="lead_ms must be in"):
        LongFormOptions(lead_ms=200)


def test_endpointer_starts_segments_where_speech_resumes_after_a_pause():
    """Speech-like noise bursts (with dips of 50 ms inside, like the gaps between words) separated by
    pauses of 200-600 ms, fed in odd-sized blocks: a segment starts at each burst after a pause,
    on its first 10 ms frame (or `lead_frames` of its pause before), and nowhere else."""
    g = torch.Generator().manual_seed(0)
    parts, onsets, t = [], [], 0
    for k, (burst, pause) in enumerate([(0.9, 0.3), (1.4, 0.6), (0.5, 0.2), (1.1, 0.0)]):
        wave = 0.3 * torch.randn(round(burst * 16000), generator=g) * (1 + torch.rand(1, generator=g))
        wave[4000:4800] *= 0.001  # a 50 ms dip: shorter than a pause
        if k:
            onsets.append(t)
        gap = 1e-4 * torch.randn(round(pause * 16000), generator=g)  # quiet, not digital silence
        parts += [wave, gap]
        t += len(wave) + len(gap)
    audio = torch.cat(parts)
    pauses = [30, 60, 20]  # frames
    for lead in (0, 3, 40):  # a lead longer than a pause starts the segment where its pause starts
        ep, starts, i = Endpointer(span_frames=15, pause_db=30, lead_frames=lead), [], 0
        for n in [1000, 3333, 160, 7777] * 100:
            starts += ep.accept(audio[i : i + n])
            i += n
        # every onset is a multiple of 160 here: exactly the first frame, less the lead
        assert starts == [t - 160 * min(lead, p) for t, p in zip(onsets, pauses)]


def _model(tmp_path: Path, causal: bool):
    from asr.data.tokenizer import train_tokenizer
    from asr.model import ASRModel

    tok = train_tokenizer(["THE QUICK BROWN FOX", "JUMPS OVER SEVEN LAZY DOGS"] * 5, tmp_path / "t.model", "char")
    torch.manual_seed(0)
    enc = {"name": "conformer", "d_model": 32, "num_layers": 1, "num_heads": 4, "subsampling_channels": 8}
    model = ASRModel(len(tok), encoder={**enc, "causal": causal}, heads={"ctc": {"kind": "ctc"}}).eval()
    with torch.no_grad():  # an untrained head emits a token on nearly every frame: let it emit some blanks
        model.heads["ctc"].proj.bias[0] = 2.0
    model.tokenizer = tok
    return model, tok


def _long_file(tmp_path: Path, speech_wave: torch.Tensor, repeats: int) -> tuple[Path, torch.Tensor]:
    import soundfile as sf

    wave = speech_wave.repeat(repeats)
    path = tmp_path / "long.wav"
    sf.write(str(path), wave.numpy(), 16000, subtype="FLOAT")
    return path, wave


def _monotonic(words) -> bool:
    return all(a.start <= b.start and a.start <= a.end for a, b in zip(words, words[1:]))


def test_streaming_path_equals_stream_decode(tmp_path, speech_wave, one_thread):
    from asr.decoding.streaming import StreamingRecognizer, stream_decode

    model, _ = _model(tmp_path, causal=True)
    path, wave = _long_file(tmp_path, speech_wave, 4)
    lf = LongFormOptions(left_context_ms=640, pause_ms=0)  # one stream: no endpoints
    tr, stats = transcribe_long(model, str(path), long_form=lf, progress=False)
    rec = StreamingRecognizer(model, 8, 16)
    stream_decode(rec, [wave], 5120)
    assert stats.path == "streaming" and tr == model.transcript(rec.results()[0])
    assert tr.words and _monotonic(tr.words) and tr.words[-1].end <= len(wave) / 16000 + model.frame_seconds


def test_windowed_path_for_a_model_that_does_not_stream(tmp_path, speech_wave, one_thread):
    model, _ = _model(tmp_path, causal=False)
    path, wave = _long_file(tmp_path, speech_wave, 5)
    seconds = len(wave) / 16000
    lf = LongFormOptions(window_seconds=4, overlap_seconds=1, pause_ms=0)  # fixed windows
    tr, stats = transcribe_long(model, str(path), long_form=lf)
    assert stats.path == "windowed" and stats.windows == -(-(seconds - 1) // 3) and stats.pause_cuts == 0
    assert tr.words and _monotonic(tr.words) and tr.words[-1].end <= seconds + model.frame_seconds


@pytest.mark.parametrize("windowed,lead_ms", [(False, 0), (True, 0), (False, 50), (True, 50)])
def test_two_utterances_apart_decode_like_each_alone(tmp_path, speech_wave, one_thread, windowed, lead_ms):
    """Speech, half a second of silence, speech: an endpoint at the second utterance's first sound
    starts a fresh stream (or segment), so the file decodes like its two parts decoded alone, the
    second's times offset by where it starts."""
    import soundfile as sf

    from asr.data.audio import SAMPLE_RATE
    from asr.decoding.streaming import StreamingRecognizer, stream_decode

    model, _ = _model(tmp_path, causal=True)
    wave = torch.cat([speech_wave, torch.zeros(8000), speech_wave])
    path = tmp_path / "two.wav"
    sf.write(str(path), wave.numpy(), SAMPLE_RATE, subtype="FLOAT")
    lf = LongFormOptions(left_context_ms=640, windowed=windowed, lead_ms=lead_ms)
    tr, stats = transcribe_long(model, str(path), long_form=lf, progress=False)
    cuts = lf.endpointer().accept(wave)
    assert stats.pause_cuts == len(cuts) >= 1 and len(speech_wave) < cuts[-1] <= len(speech_wave) + 8000 + 1600
    bounds = [0, *cuts, len(wave)]
    frame = round(model.frame_seconds * SAMPLE_RATE)
    tokens, frames, durations, conf = [], [], [], []
    for a, b in zip(bounds, bounds[1:]):
        if windowed:
            hyp = model.decode(wave[None, a:b], torch.tensor([b - a]))[0]
        else:
            rec = StreamingRecognizer(model, 8, 16)
            stream_decode(rec, [wave[a:b]], 5120)
            hyp = rec.results()[0]
        tokens += hyp.tokens
        frames += [round(a / frame) + f for f in hyp.frames]
        durations += hyp.durations
        conf += hyp.confidence
    want = Hypothesis(tokens, 0.0, frames=frames, durations=durations, confidence=conf)
    assert tr == model.transcript(want) and _monotonic(tr.words)


def test_transcribe_decodes_long_files_long_form(tmp_path, speech_wave, capsys, one_thread):
    from test_cli import save_checkpoint

    from asr.cli import main

    model, tok = _model(tmp_path, causal=False)
    save_checkpoint(model, tok, tmp_path / "m.ckpt")
    path, wave = _long_file(tmp_path, speech_wave, 3)
    args = ["transcribe", "--ckpt", str(tmp_path / "m.ckpt"), str(path), "--format", "json"]
    assert main([*args, "--long-form-seconds", "5", "--window-seconds", "4", "--overlap-seconds", "1"]) == 0
    out = capsys.readouterr()
    rec = json.loads(out.out)
    assert rec["id"] == "long" and "long.wav (windowed)" in out.err  # the long-form progress bar
    starts = [w["start"] for w in rec["words"]]
    assert starts == sorted(starts) and starts[-1] < len(wave) / 16000
    with pytest.raises(SystemExit, match="overlap <= window / 2"):
        main([*args, "--overlap-seconds", "15"])
    with pytest.raises(SystemExit, match=r"lead_ms must be in \[0, pause_ms = 150\]"):
        main([*args, "--lead-ms", "500"])  # --lead-ms reaches LongFormOptions


@pytest.mark.slow
def test_concatenated_test_split_long_form(transducer_exp, prepared, tmp_path):
    """The 60 test utterances (about 2.6 min) in one file, decoded long-form by the shared
    streaming transducer, both paths cut at pauses: word times monotonic, WER within 2 points of
    the per-utterance WER (measured: windowed 9.53% vs 8.14%, the extra errors all on sentences'
    first words: this small model, trained on sentences that start at the file start, reads the
    first word partly from its place; the 1-point target is met by the demo recipe trained with
    data.shift_ms=60 and decoded with lead_ms=20, BENCHMARKS.md "Long-form decoding")."""
    from asr.data.audio import concatenate_audio, load_audio
    from asr.metrics import read_kaldi_text, score
    from asr.model import load_model

    _, corpus, man = prepared
    refs = read_kaldi_text(man / "test-clean.ref.txt")
    paths = {p.stem: p for p in (corpus / "test-clean").rglob("*.flac")}
    ids = sorted(refs)
    long = tmp_path / "concat.wav"
    concatenate_audio([paths[i] for i in ids], long)
    model = load_model(transducer_exp / "best.ckpt")
    torch.set_num_threads(2)
    per_utt = {}
    for i in ids:
        w = load_audio(paths[i])[0]
        per_utt[i] = model.transcribe(w[None], torch.tensor([len(w)]))[0]
    base = score(refs, per_utt).error_rate
    for windowed in (False, True):
        tr, stats = transcribe_long(model, str(long), long_form=LongFormOptions(windowed=windowed), progress=False)
        assert tr.words and _monotonic(tr.words)
        wer = score({"x": " ".join(refs[i] for i in ids)}, {"x": tr.text}).error_rate
        print(f"{stats.path}: concatenation WER {100 * wer:.2f}% vs per-utterance {100 * base:.2f}%")
        assert wer <= base + 0.02 and stats.pause_cuts >= len(ids) - 5
