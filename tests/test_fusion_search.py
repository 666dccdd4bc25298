"""LM fusion, internal-LM subtraction and hotwords inside the searches: CTC prefix beam search and
transducer beam search find the argmax of the fused score, fuse nothing at weight 0, resume
across chunks (streaming), and greedy search with fusion is the beam of 1.

Accuracy on trained models (an LM lowers WER, hotwords fix the words they name) is tested in
test_train.py."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from test_transducer import make_head, sequence_probabilities

from asr.decoding import DecodeOptions, build_search, run_search
from asr.decoding.ctc import ctc_prefix_beam_continue, ctc_prefix_beam_init
from asr.decoding.fusion import Fusion
from asr.decoding.transducer import _internal_lm, transducer_beam_continue, transducer_beam_init


class BigramLM:
    """A ScoreProvider: a fixed random bigram table over V tokens (state = the last token, 0 at the
    start; blank is no event), with an end-of-sentence score per state."""

    def __init__(self, v: int, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.vocab_size = v
        table = (torch.randn(v, v + 1, generator=g) * 2).log_softmax(-1)  # last column: </s>
        self.lp = table[:, :v].clone()
        self.lp[:, 0] = 0.0  # blank: no event
        self.end = table[:, v]

    def initial_state(self) -> int:
        return 0

    def score(self, state: int, token: int) -> tuple[float, int]:
        return (0.0, state) if token == 0 else (float(self.lp[state, token]), token)

    def final_score(self, state: int) -> float:
        return float(self.end[state])

    def score_all(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        nxt = torch.arange(self.vocab_size).expand(len(states), -1).clone()
        nxt[:, 0] = states
        return self.lp[states], nxt

    def sequence(self, tokens) -> float:
        state, total = 0, 0.0
        for t in tokens:
            d, state = self.score(state, t)
            total += d
        return total + self.final_score(state)


def _ctc_labelings(lp: torch.Tensor) -> dict[tuple[int, ...], float]:
    """log p_CTC of every labeling of lp[T, V], by enumerating all paths."""
    t, v = lp.shape
    out: dict[tuple[int, ...], float] = {}
    for path in itertools.product(range(v), repeat=t):
        s = sum(lp[i, p].item() for i, p in enumerate(path))
        lab = tuple(k for i, k in enumerate(path) if k != 0 and (i == 0 or path[i - 1] != k))
        out[lab] = s if lab not in out else max(out[lab], s) + math.log1p(math.exp(-abs(out[lab] - s)))
    return out


def test_ctc_prefix_beam_finds_the_argmax_of_the_fused_score():
    lm = BigramLM(3, seed=1)
    torch.manual_seed(3)
    changed = 0
    for trial in range(8):
        lp = (torch.randn(1, 6, 3) * 1.5).log_softmax(-1)
        labelings = _ctc_labelings(lp[0])
        for w in (0.0, 0.8):
            fused = {k: s + w * lm.sequence(k) for k, s in labelings.items()}
            state = ctc_prefix_beam_init(1, Fusion([("lm", lm, w)]))
            state = ctc_prefix_beam_continue(lp, torch.tensor([6]), state, beam=64, token_prune=3)
            h = state.hypotheses()[0]
            best = max(fused, key=fused.get)
            assert tuple(h.tokens) == best, trial
            assert h.score == pytest.approx(fused[best], abs=1e-4)
            if w == 0.0:
                plain = ctc_prefix_beam_continue(lp, torch.tensor([6]), ctc_prefix_beam_init(1), beam=64, token_prune=3)
                p = plain.hypotheses()[0]
                assert h.tokens == p.tokens and h.score == pytest.approx(p.score)
            else:
                changed += best != max(labelings, key=labelings.get)
    assert changed  # the LM changed the answer somewhere, so the test would see it ignored


@pytest.mark.parametrize("loss", ["rnnt", "tdt"])
def test_transducer_beam_finds_the_argmax_of_the_fused_score(loss):
    kw = {"durations": (0, 1, 2)} if loss == "tdt" else {}
    head = make_head(loss, seed=11, **kw)
    with torch.no_grad():
        head.joint.out.weight.mul_(0.4)
        head.joint.out.bias[: head.vocab_size].zero_()
    lm = BigramLM(head.vocab_size, seed=2)
    enc = torch.randn(2, 3, 16, generator=torch.Generator().manual_seed(12))
    lens = torch.tensor([3, 2])
    changed = 0
    for w in (0.0, 1.0):
        fusion = Fusion([("lm", lm, w)])
        state = transducer_beam_init(head, 2, beam=3000, fusion=fusion)
        state = transducer_beam_continue(head, enc, lens, state, 1, torch.ones(2, dtype=torch.bool), fusion)
        hyps = state.hypotheses()
        for i, n in enumerate(lens.tolist()):
            with torch.no_grad():
                totals = sequence_probabilities(head, enc[i], n, 1)
            fused = {k: math.log(p) + w * lm.sequence(k) for k, p in totals.items()}
            best = max(fused, key=fused.get)
            assert tuple(hyps[i].tokens) == best
            assert hyps[i].score == pytest.approx(fused[best], abs=1e-4)
            changed += w > 0 and best != max(totals, key=totals.get)
    assert changed


@pytest.mark.parametrize("kind", ["ctc", "rnnt"])
def test_fused_searches_resume_across_chunks_and_greedy_is_the_beam_of_one(kind):
    from test_transducer import enc_batch

    from asr.nn.heads import build_head

    torch.manual_seed(0)
    head = make_head("rnnt", seed=5) if kind == "rnnt" else build_head("ctc", 16, 7).eval()
    if kind == "ctc":
        torch.nn.init.normal_(head.proj.weight, std=0.7)
    fusion = Fusion([("lm", BigramLM(7, seed=4), 0.7)])
    enc, lens = enc_batch(seed=6)
    opts = DecodeOptions("beam", 3, max_symbols=2)
    offline = run_search(build_search(head, opts, fusion), enc, lens)
    plain = run_search(build_search(head, opts), enc, lens)
    assert [h.tokens for h in offline] != [h.tokens for h in plain]  # fusion changes results here
    search = build_search(head, opts, fusion)
    state = search.init(enc.shape[0], "cpu")
    for start in range(0, enc.shape[1], 4):
        n = (lens - start).clamp(0, 4)
        state = search.advance(state, enc[:, start : start + 4], n, (lens > start) & (lens <= start + 4))
    for got, want in zip(search.hypotheses(state), offline, strict=True):
        assert got.tokens == want.tokens and got.frames == want.frames
        assert got.score == pytest.approx(want.score, abs=1e-4)
    greedy = run_search(build_search(head, DecodeOptions("greedy", max_symbols=2), fusion), enc, lens)
    beam1 = run_search(build_search(head, DecodeOptions("beam", 1, max_symbols=2), fusion), enc, lens)
    assert [h.tokens for h in greedy] == [h.tokens for h in beam1]


def test_internal_lm_is_the_joint_without_the_encoder():
    head = make_head("rnnt", seed=7)
    pred_p = torch.randn(5, 20)
    ilm = _internal_lm(head, pred_p)
    assert torch.all(ilm[:, head.blank] == 0)
    rest = torch.cat([ilm[:, : head.blank], ilm[:, head.blank + 1 :]], dim=1)
    assert torch.allclose(rest.logsumexp(-1), torch.zeros(5), atol=1e-5)  # a distribution over labels
    assert head.blank == 0
    want = (torch.tanh(pred_p) @ head.joint.out.weight.T + head.joint.out.bias)[:, 1:].log_softmax(-1)
    assert torch.allclose(rest, want, atol=1e-5)
    # subtracting it changes what a fused beam search picks (a decoding test would see it ignored)
    from test_transducer import enc_batch

    enc, lens = enc_batch(seed=8)
    fusion = Fusion([("lm", BigramLM(head.vocab_size, seed=9), 0.5)])
    a = transducer_beam_continue(head, enc, lens, transducer_beam_init(head, 4, 4, fusion=fusion), 2, None, fusion)
    b = transducer_beam_continue(head, enc, lens, transducer_beam_init(head, 4, 4, fusion=fusion), 2, None, fusion, 1.0)
    assert a.best() != b.best()
    with pytest.raises(ValueError, match="fusion the beam state was made with"):
        transducer_beam_continue(head, enc, lens, transducer_beam_init(head, 4, 4), 2, None, fusion)
