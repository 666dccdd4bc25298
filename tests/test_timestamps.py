"""Token times and confidences from every search, words from tokens, and the output formats.

The accuracy of the times (against forced alignment) and of the confidences (AUROC) on
trained models is tested in test_train.py; here: the times are where the searches emit, they
survive chunking (streaming), rescoring and batching, and the writers write what they say.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from test_transducer import enc_batch, make_head, reference_greedy

from asr.decoding import DecodeOptions, build_search, run_search
from asr.decoding.confidence import entropy_confidence
from asr.decoding.ctc import (
    ctc_greedy_continue,
    ctc_greedy_init,
    ctc_prefix_beam_continue,
    ctc_prefix_beam_init,
)
from asr.decoding.search import Hypothesis
from asr.decoding.timestamps import Transcript, Word, group_words, hypothesis_words
from asr.decoding.transducer import (
    transducer_beam_continue,
    transducer_beam_init,
    transducer_greedy_continue,
    transducer_greedy_init,
)
from asr.metrics import auroc, matched_words
from asr.transcripts import srt_cues, write_transcripts


def _peaky(frames: list[int], v: int = 5, p: float = 0.9) -> torch.Tensor:
    """log_probs [1, T, V]: token frames[t] has probability p on frame t, the rest share 1 - p."""
    lp = torch.full((1, len(frames), v), math.log((1 - p) / (v - 1)))
    for t, k in enumerate(frames):
        lp[0, t, k] = math.log(p)
    return lp


def _fields(h: Hypothesis) -> tuple:
    return h.tokens, h.frames, h.durations, [round(c, 5) for c in h.confidence]


def test_ctc_greedy_times_are_the_runs_of_the_best_path():
    # blank a a blank b b b blank a (a = 1, b = 2); the last frame is less sure
    lp = _peaky([0, 1, 1, 0, 2, 2, 2, 0, 1])
    lp[0, 8] = torch.tensor([0.2, 0.4, 0.2, 0.1, 0.1]).log()
    state = ctc_greedy_continue(lp, torch.tensor([9]), ctc_greedy_init(1))
    (h,) = state.hypotheses()
    assert h.tokens == [1, 2, 1] and h.frames == [1, 4, 8] and h.durations == [2, 3, 1]
    sure, unsure = entropy_confidence(lp[0, 1]).item(), entropy_confidence(lp[0, 8]).item()
    assert h.confidence == pytest.approx([sure, sure, unsure]) and 0 < unsure < sure < 1
    # a run split by a chunk boundary is one token whose duration spans both chunks
    for chunk in (1, 2, 3, 5):
        s = ctc_greedy_init(1)
        for start in range(0, 9, chunk):
            s = ctc_greedy_continue(lp[:, start : start + chunk], torch.tensor([min(chunk, 9 - start)]), s)
        assert _fields(s.hypotheses()[0]) == _fields(h), chunk


def test_ctc_prefix_beam_times_follow_the_most_probable_paths():
    """On peaky frames the prefix beam's times equal the best path's; in chunks they equal one call."""
    lp = _peaky([0, 1, 1, 0, 2, 2, 2, 0, 1, 1])
    state = ctc_prefix_beam_continue(lp, torch.tensor([10]), ctc_prefix_beam_init(1), beam=4)
    greedy = ctc_greedy_continue(lp, torch.tensor([10]), ctc_greedy_init(1)).hypotheses()[0]
    best = state.hypotheses()[0]
    assert _fields(best) == _fields(greedy)
    assert all(n.frames is not None and len(n.frames) == len(n.tokens) for n in best.nbest)
    torch.manual_seed(0)
    lp = (torch.randn(3, 13, 6) * 2).log_softmax(-1)
    lens = torch.tensor([13, 8, 2])
    offline = ctc_prefix_beam_continue(lp, lens, ctc_prefix_beam_init(3), beam=3).hypotheses()
    assert sum(len(h.tokens) for h in offline) > 4
    for h, n in zip(offline, lens.tolist()):
        assert h.frames == sorted(h.frames) and all(0 <= f < n for f in h.frames)
        assert all(d >= 1 and f + d <= n for f, d in zip(h.frames, h.durations))
    for chunk in (1, 4, 5):
        s = ctc_prefix_beam_init(3)
        for start in range(0, 13, chunk):
            s = ctc_prefix_beam_continue(lp[:, start : start + chunk], (lens - start).clamp(0, chunk), s, beam=3)
        assert [_fields(h) for h in s.hypotheses()] == [_fields(h) for h in offline], chunk


@pytest.mark.parametrize("loss", ["rnnt", "tdt"])
def test_transducer_greedy_times_are_the_frames_it_emits_on(loss):
    """Against the plain frame-looping reference: each label's frame and (TDT) duration."""
    kw = {"durations": (0, 1, 2, 3, 4)} if loss == "tdt" else {}
    head = make_head(loss, seed=13, **kw)
    enc, lens = enc_batch(seed=14)
    hyps = run_search(build_search(head, DecodeOptions("greedy", max_symbols=2)), enc, lens)
    assert sum(len(h.tokens) for h in hyps) > 5
    for i, n in enumerate(lens.tolist()):
        trace: list[tuple[int, int]] = []
        assert hyps[i].tokens == reference_greedy(head, enc[i, :n], n, 2, trace)
        assert list(zip(hyps[i].frames, hyps[i].durations)) == trace
        assert all(0 <= c <= 1 for c in hyps[i].confidence)
    if loss == "tdt":
        assert {d for h in hyps for d in h.durations} - {1}  # durations other than one frame were seen


@pytest.mark.parametrize("loss", ["rnnt", "tdt"])
@pytest.mark.parametrize("chunk", [1, 3])
def test_transducer_times_survive_chunks_and_beam_one_is_greedy(loss, chunk):
    kw = {"durations": (0, 1, 2, 3, 4)} if loss == "tdt" else {}
    head = make_head(loss, seed=13, **kw)
    with torch.no_grad():
        head.joint.out.weight.mul_(0.5)
    enc, lens = enc_batch(seed=14)
    b = enc.shape[0]
    greedy = run_search(build_search(head, DecodeOptions("greedy", max_symbols=2)), enc, lens)
    beam1 = run_search(build_search(head, DecodeOptions("beam", 1, max_symbols=2)), enc, lens)
    assert [_fields(h) for h in beam1] == [_fields(h) for h in greedy]
    beam4 = run_search(build_search(head, DecodeOptions("beam", 4, max_symbols=2)), enc, lens)
    g, s = transducer_greedy_init(head, b), transducer_beam_init(head, b, beam=4)
    for start in range(0, enc.shape[1], chunk):
        n = (lens - start).clamp(0, chunk)
        final = (lens > start) & (lens <= start + chunk)
        g = transducer_greedy_continue(head, enc[:, start : start + chunk], n, g, 2)
        s = transducer_beam_continue(head, enc[:, start : start + chunk], n, s, 2, final)
    assert [_fields(h) for h in g.hypotheses()] == [_fields(h) for h in greedy]
    assert [_fields(h) for h in s.hypotheses()] == [_fields(h) for h in beam4]
    for h, n in zip(beam4, lens.tolist()):
        assert h.frames == sorted(h.frames) and all(0 <= f < n for f in h.frames)


def test_words_from_tokens():
    pieces = ["\u2581THE", "\u2581", "C", "A", "T", "\u2581S", "AT"]
    spans = [(0.0, 0.2), (0.2, 0.24), (0.3, 0.34), (0.34, 0.4), (0.44, 0.48), (0.6, 0.64), (0.7, 0.8)]
    words = group_words(pieces, spans, [0.9, 1.0, 0.5, 0.6, 0.7, 0.2, 0.4])
    assert [(w.word, w.start, w.end) for w in words] == [("THE", 0.0, 0.2), ("CAT", 0.3, 0.48), ("SAT", 0.6, 0.8)]
    assert [w.confidence for w in words] == pytest.approx([0.9, 0.6, 0.3])  # the mean of a word's tokens
    # frames -> seconds: a TDT label of duration 0 still covers its frame; an offset shifts all
    h = Hypothesis([5, 6], -1.0, frames=[3, 3], durations=[0, 2], confidence=[0.5, 1.0])
    piece = {5: "\u2581A", 6: "B"}.get
    assert hypothesis_words(h, piece, 0.04, offset=10) == [Word("AB", 13 * 0.04, 15 * 0.04, 0.75)]
    with pytest.raises(ValueError, match="no token times"):
        hypothesis_words(Hypothesis([5], 0.0), piece, 0.04)
    with pytest.raises(ValueError, match="frames has 1 entries for 2 tokens"):
        Hypothesis([5, 6], 0.0, frames=[1])


def test_writers_json_ctm_srt(tmp_path, capsys):
    words = [Word("HELLO", 0.1, 0.5, 0.9), Word("WORLD", 0.6, 1.0, 0.5), Word("AGAIN", 2.0, 2.4, 0.7)]
    results = {"u2": Transcript("HELLO WORLD AGAIN", words), "u1": Transcript("", [])}
    write_transcripts(results, ["u2", "u1"], "json")
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert lines[0] == {
        "id": "u2",
        "text": "HELLO WORLD AGAIN",
        "words": [w.to_dict() for w in words],
    } and lines[1] == {"id": "u1", "text": "", "words": []}
    assert lines[0]["words"][1] == {"word": "WORLD", "start": 0.6, "end": 1.0, "confidence": 0.5}
    write_transcripts(results, ["u2", "u1"], "ctm", tmp_path / "a.ctm")
    assert (tmp_path / "a.ctm").read_text().splitlines()[1] == "u2 1 0.60 0.40 WORLD 0.5000"
    said = write_transcripts(results, ["u2", "u1"], "srt", tmp_path / "srt")
    assert "2 subtitle files" in said
    # the 1 s pause before AGAIN starts a new cue
    assert (tmp_path / "srt" / "u2.srt").read_text() == (
        "1\n00:00:00,100 --> 00:00:01,000\nHELLO WORLD\n\n2\n00:00:02,000 --> 00:00:02,400\nAGAIN\n\n"
    )
    many = [Word(f"W{i:02d}", i * 0.3, i * 0.3 + 0.2) for i in range(30)]
    cues = srt_cues(many)
    assert all(len(text) <= 42 and e - s <= 5.0 for s, e, text in cues) and len(cues) > 1
    assert " ".join(text for _, _, text in cues) == " ".join(w.word for w in many)
    with pytest.raises(ValueError, match="folder"):
        write_transcripts(results, ["u2"], "srt")
    with pytest.raises(ValueError, match="needs word times"):
        write_transcripts({"u": Transcript("A")}, ["u"], "ctm")


def test_matched_words_and_auroc():
    assert matched_words("the cat sat on the mat", "the hat sat on the mat now") == [0, None, 2, 3, 4, 5, None]
    assert matched_words("a b c d", "a c d") == [0, 2, 3]  # b deleted
    assert matched_words("", "a b") == [None, None] and matched_words("a", "") == []
    torch.manual_seed(0)
    scores = torch.rand(40).tolist()
    scores[5] = scores[6]  # a tie
    labels = [bool(x > 0.5) for x in torch.rand(40).tolist()]
    pairs = [(p, n) for p, lp in zip(scores, labels) if lp for n, ln in zip(scores, labels) if not ln]
    brute = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs) / len(pairs)
    assert auroc(scores, labels) == pytest.approx(brute)
    assert auroc([0.9, 0.8, 0.1], [True, True, False]) == 1.0
    with pytest.raises(ValueError, match="both classes"):
        auroc([0.5], [True])
