"""The attention head (issue 13, first part): its loss, its searches and attention rescoring.

Searches run on an untrained head with large output weights, so distributions are peaky and
hypotheses differ between greedy, beam and rescoring (checked, so the equalities below are not
vacuous).
"""

from __future__ import annotations

import math

import pytest
import torch

from asr.decoding import DecodeOptions, build_model_search, build_search, run_search
from asr.decoding.attention import attention_beam_search, attention_greedy_search
from asr.nn.heads import build_head
from asr.nn.heads.attention import reverse_padded

V = 6  # tokenizer size; <sos/eos> is id 6
D = 16


def make_attention(seed: int = 0, reverse_weight: float = 0.3, eos_bias: float = 0.0):
    torch.manual_seed(seed)
    head = build_head("attention", D, V, d_model=16, num_layers=2, num_heads=2, reverse_weight=reverse_weight)
    torch.nn.init.normal_(head.decoder.out.weight, std=1.0)  # peaky, so beams differ from greedy
    with torch.no_grad():
        head.decoder.out.bias[head.eos] += eos_bias  # some hypotheses end before the maximum length
    return head.eval()


def enc_batch(seed: int = 1, lens: tuple[int, ...] = (11, 6, 9)):
    g = torch.Generator().manual_seed(seed)
    enc = torch.randn(len(lens), max(lens), D, generator=g)
    lens_t = torch.tensor(lens)
    return enc.masked_fill(torch.arange(max(lens))[None, :, None] >= lens_t[:, None, None], 1e3), lens_t


def test_reverse_padded_reverses_only_the_valid_part():
    x = torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0], [6, 0, 0, 0]])
    assert reverse_padded(x, torch.tensor([3, 2, 0])).tolist() == [[3, 2, 1, 0], [5, 4, 0, 0], [6, 0, 0, 0]]


def test_loss_is_the_label_smoothed_cross_entropy_of_both_directions():
    """The head's loss against a plain per-utterance computation: targets + eos, sos input,
    right-to-left on the reversed targets, weighted (1 - w, w); padding never counts."""
    head = make_attention()  # eval: no dropout, so the reference below computes the same thing
    enc, enc_lens = enc_batch()
    tokens = torch.tensor([[1, 2, 3], [4, 5, 0], [2, 0, 0]])
    lens = torch.tensor([3, 2, 1])
    with torch.no_grad():
        out = head.loss(enc, enc_lens, tokens, lens)
    total = {"l2r": 0.0, "r2l": 0.0}
    with torch.no_grad():  # the reference needs no graph
        for b in range(3):
            y = tokens[b, : lens[b]].tolist()
            mem, valid = head.memory(enc[b : b + 1, : enc_lens[b]], enc_lens[b : b + 1])
            for name, dec, seq in (("l2r", head.decoder, y), ("r2l", head.r_decoder, y[::-1])):
                ys_in = torch.tensor([[head.sos, *seq]])
                logits = dec(ys_in, torch.tensor([len(seq) + 1]), mem, valid)[0]
                target = torch.tensor([*seq, head.eos])
                total[name] += float(
                    torch.nn.functional.cross_entropy(logits, target, label_smoothing=0.1, reduction="sum")
                )
    n = float((lens + 1).sum())
    assert float(out["l2r"]) == pytest.approx(total["l2r"] / n, rel=1e-5)
    assert float(out["r2l"]) == pytest.approx(total["r2l"] / n, rel=1e-5)
    assert float(out["loss"]) == pytest.approx(0.7 * total["l2r"] / n + 0.3 * total["r2l"] / n, rel=1e-5)
    assert 0 <= float(out["acc"]) <= 1


def test_greedy_score_is_the_decoder_score_and_beam_one_is_greedy():
    """Greedy's accumulated score equals head.score of its output (two code paths); beam=1 makes
    greedy's choices; a wider beam returns its n-best best first and differs from greedy here."""
    head = make_attention(seed=2, reverse_weight=0.0, eos_bias=0.5)
    enc, lens = enc_batch()
    greedy = attention_greedy_search(head, enc, lens)
    assert all(len(g.tokens) < n for g, n in zip(greedy, lens.tolist()))  # all end with <eos>
    beam1 = attention_beam_search(head, enc, lens, beam=1)
    beam4 = attention_beam_search(head, enc, lens, beam=4)
    rescored = head.score(enc, lens, [[h.tokens] for h in greedy])
    for g, b1, b4, r in zip(greedy, beam1, beam4, rescored):
        assert g.score == pytest.approx(r[0], abs=1e-4)
        assert b1.score == pytest.approx(g.score / (len(g.tokens) + 1), abs=1e-4)
        assert b1.tokens == g.tokens
        assert (b4.nbest[0].tokens, b4.nbest[0].score) == (b4.tokens, b4.score)
        assert [h.score for h in b4.nbest] == sorted((h.score for h in b4.nbest), reverse=True)
    assert any(b4.tokens != g.tokens for b4, g in zip(beam4, greedy))  # the beam matters here


@pytest.mark.parametrize("beam", [None, 3])
def test_batched_equals_alone(beam):
    head = make_attention()
    enc, lens = enc_batch()
    search = (
        (lambda e, n: attention_greedy_search(head, e, n))
        if beam is None
        else (lambda e, n: attention_beam_search(head, e, n, beam))
    )
    batched = search(enc, lens)
    for b, n in enumerate(lens.tolist()):
        alone = search(enc[b : b + 1, :n], lens[b : b + 1])[0]
        assert alone.tokens == batched[b].tokens and alone.score == pytest.approx(batched[b].score, abs=1e-4)
        assert [h.tokens for h in alone.nbest] == [h.tokens for h in batched[b].nbest]


def _hybrid():
    torch.manual_seed(0)
    ctc = build_head("ctc", D, V)
    torch.nn.init.normal_(ctc.proj.weight, std=0.6)
    return {"ctc": ctc.eval(), "attention": make_attention()}


@pytest.mark.parametrize("weight", [0.0, 0.3, 0.7, 1.0])
def test_rescoring_picks_the_argmax_of_the_combined_score(weight):
    """Against a plain loop over the CTC prefix beam's n-best; weight 1 keeps the first pass's best."""
    heads = _hybrid()
    enc, lens = enc_batch()
    opts = DecodeOptions("attention_rescoring", beam=4, ctc_weight=weight, reverse_weight=0.3)
    got = run_search(build_model_search(heads, "ctc", opts), enc, lens)
    first = run_search(build_search(heads["ctc"], DecodeOptions("beam", 4)), enc, lens)
    att = heads["attention"].score(enc, lens, [[h.tokens for h in h0.nbest] for h0 in first], reverse_weight=0.3)
    for g, f, a in zip(got, first, att):
        combined = [(1 - weight) * sa + weight * h.score for h, sa in zip(f.nbest, a)]
        best = max(range(len(combined)), key=lambda j: combined[j])
        assert g.tokens == f.nbest[best].tokens and g.score == pytest.approx(combined[best], abs=1e-4)
        assert g.frames == f.nbest[best].frames and g.confidence == f.nbest[best].confidence  # times kept
        assert sorted(h.tokens for h in g.nbest) == sorted(h.tokens for h in f.nbest)
        if weight == 1.0:
            assert g.tokens == f.tokens
    if weight == 0.0:  # rescoring changes the choice somewhere, or this test would be vacuous
        assert any(g.tokens != f.tokens for g, f in zip(got, first))


def test_rescoring_fed_in_chunks_equals_one_pass():
    """Streaming: the first pass advances chunk by chunk, rescoring runs when each stream ends."""
    heads = _hybrid()
    enc, lens = enc_batch()
    opts = DecodeOptions("attention_rescoring", beam=3, ctc_weight=0.3)
    offline = run_search(build_model_search(heads, "ctc", opts), enc, lens)
    search = build_model_search(heads, "ctc", opts)
    state = search.init(3, "cpu")
    for start in range(0, enc.shape[1], 4):
        n = (lens - start).clamp(0, 4)
        state = search.advance(state, enc[:, start : start + 4], n, lens <= start + 4)
    streamed = search.hypotheses(state)
    assert [h.tokens for h in streamed] == [h.tokens for h in offline]
    assert all(math.isclose(a.score, b.score, abs_tol=1e-4) for a, b in zip(streamed, offline))


def test_attention_methods_need_an_attention_head():
    heads = {"ctc": _hybrid()["ctc"]}
    for method in ("attention", "attention_rescoring"):
        with pytest.raises(ValueError, match="needs an attention decoder"):
            build_model_search(heads, "ctc", DecodeOptions(method))
    with pytest.raises(ValueError, match="rescores a CTC or transducer"):
        build_model_search(_hybrid(), "attention", DecodeOptions("attention_rescoring"))


def _log_p_ctc(lp: torch.Tensor, seq: list[int]) -> float:
    """log p_ctc(seq | one utterance's log-probs lp[T, V]) by torch's CTC (-inf when impossible)."""
    if not seq:
        return float(lp[:, 0].sum().detach())
    loss = torch.nn.functional.ctc_loss(
        lp[:, None], torch.tensor([seq]), torch.tensor([lp.shape[0]]), torch.tensor([len(seq)]), reduction="sum"
    )
    return -float(loss)


@pytest.mark.parametrize("weight", [0.0, 0.3, 1.0])
def test_joint_search_finds_the_argmax_of_the_combined_score(weight):
    """A tiny case (2 tokens, 4 and 3 frames) with a beam wide enough to keep every prefix: the
    search returns the label sequence that maximizes w * log p_ctc + (1 - w) * log p_att(.., eos)
    over all sequences of at most one token per frame, found by enumeration; with attention weight
    0 that is also what a wide CTC prefix beam search returns."""
    import itertools

    from asr.decoding import ctc_prefix_beam_search
    from asr.decoding.joint import joint_beam_search

    torch.manual_seed(3)
    ctc = build_head("ctc", D, 3).eval()
    torch.nn.init.normal_(ctc.proj.weight, std=0.8)
    att = build_head("attention", D, 3, d_model=16, num_layers=1, num_heads=2).eval()
    torch.nn.init.normal_(att.decoder.out.weight, std=1.0)
    enc, lens = enc_batch(4, (4, 3))
    got = joint_beam_search(ctc, att, enc, lens, beam=40, ctc_weight=weight)
    lp = ctc(enc).detach()
    for b, n in enumerate(lens.tolist()):
        seqs = [list(s) for m in range(n + 1) for s in itertools.product((1, 2), repeat=m)]
        att_scores = att.score(enc[b : b + 1, :n], lens[b : b + 1], [seqs])[0]
        combined = [
            (weight * _log_p_ctc(lp[b, :n], s) if weight else 0.0) + (1 - weight) * a for s, a in zip(seqs, att_scores)
        ]
        best = max(range(len(seqs)), key=lambda j: combined[j])
        assert got[b].tokens == seqs[best] and got[b].score == pytest.approx(combined[best], abs=1e-4)
        # every finished hypothesis of the beam carries its exact combined score (repeats included)
        assert len(got[b].nbest) >= 8
        for h in got[b].nbest:
            assert h.score == pytest.approx(combined[seqs.index(h.tokens)], abs=1e-4), h.tokens
        if weight == 1.0:
            assert got[b].tokens == ctc_prefix_beam_search(lp[b : b + 1, :n], lens[b : b + 1], beam=40)[0]


def test_joint_search_batched_equals_alone_and_needs_a_ctc_head():
    heads = _hybrid()
    enc, lens = enc_batch()
    search = build_model_search(heads, "ctc", DecodeOptions("joint", beam=3, ctc_weight=0.3))
    batched = run_search(search, enc, lens)
    for b, n in enumerate(lens.tolist()):
        alone = run_search(search, enc[b : b + 1, :n], lens[b : b + 1])[0]
        assert alone.tokens == batched[b].tokens and alone.score == pytest.approx(batched[b].score, abs=1e-4)
    with pytest.raises(ValueError, match="combines a CTC head"):
        build_model_search(heads, "attention", DecodeOptions("joint"))


def test_cached_decoder_steps_equal_the_full_decoder():
    """The searches' incremental decoder (one token a step, keys and values cached) gives at every
    position the logits of the full decoder over the whole prefix, with padded memory, and a
    beam's reordering (cache.select) follows its rows."""
    torch.manual_seed(0)
    head = build_head("attention", D, V, d_model=16, num_layers=2, num_heads=4, dropout=0.3).eval()
    enc, lens = torch.randn(3, 11, D), torch.tensor([11, 7, 2])
    ys = torch.cat([torch.full((3, 1), head.sos), torch.randint(0, V, (3, 6))], dim=1)
    memory, valid = head.memory(enc, lens)
    with torch.no_grad():
        full = head.decoder(ys, torch.full((3,), 7), memory, valid).log_softmax(-1)
        cache = head.start(enc, lens)
        for t in range(ys.shape[1]):
            lp, cache = head.step(cache, ys[:, t])
            torch.testing.assert_close(lp, full[:, t], atol=1e-5, rtol=1e-5)
        order = torch.tensor([2, 0, 0])
        lp, _ = head.step(cache.select(order), ys[order, 0])
    full_next = head.decoder(torch.cat([ys[order], ys[order, :1]], 1), torch.full((3,), 8), memory[order], valid[order])
    torch.testing.assert_close(lp, full_next[:, -1].log_softmax(-1), atol=1e-5, rtol=1e-5)


def test_cached_decoder_prefill_and_ragged_steps():
    """Prefixes of different lengths (TAED's hypotheses): one prefill pass gives decoder.hidden's states,
    then one step per row at its own next position gives the state of the prefix plus that token; a
    merge keeps the lengths of the rows that did not take the step."""
    from asr.nn.heads.attention import decoder_prefill, decoder_step

    torch.manual_seed(1)
    head = build_head("attention", D, V, d_model=16, num_layers=2, num_heads=4).eval()
    dec = head.decoder
    enc, lens_t = torch.randn(3, 9, D), torch.tensor([9, 5, 3])
    memory, valid = head.memory(enc, lens_t)
    ys = torch.cat([torch.full((3, 1), head.sos), torch.randint(0, V, (3, 5))], dim=1)
    lens = torch.tensor([6, 3, 1])
    new = torch.tensor([2, 4, 1])
    with torch.no_grad():
        states, cache = decoder_prefill(dec, ys, lens, memory, valid)
        torch.testing.assert_close(states, dec.hidden(ys, memory, valid), atol=1e-5, rtol=1e-5)
        out, stepped = decoder_step(dec, cache, new)
        for n in range(3):
            longer = torch.cat([ys[n, : lens[n]], new[n : n + 1]])[None]
            ref = dec.hidden(longer, memory[n : n + 1], valid[n : n + 1])[0, -1]
            torch.testing.assert_close(out[n], ref, atol=1e-5, rtol=1e-5)
        assert stepped.lens.tolist() == [7, 4, 2]
        assert stepped.merge(torch.tensor([True, False, True]), cache).lens.tolist() == [7, 3, 2]
