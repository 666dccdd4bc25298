"""Frame skipping (asr.decoding.frame_skip): a transducer search that reads only the frames a CTC
head does not call blank.

Checked against the plain search: with nothing skipped the results are identical; with frames
forced to blank, exactly those are dropped and the result is the plain search over the frames
packed by hand, with token frames mapped back. Chunked calls equal one call (greedy, beam,
fused beam; RNN-T and TDT). The repeat penalty that trains the CTC head for it is tested in
test_fsa.py."""

from __future__ import annotations

import pytest
import torch
from test_fusion_search import BigramLM
from test_transducer import V, make_head

from asr.decoding import DecodeOptions, build_model_search, run_search
from asr.decoding.frame_skip import FrameSkipSearch, pack_frames
from asr.decoding.fusion import Fusion
from asr.nn.heads.ctc import CTCHead

D = 16  # encoder width of test_transducer's heads
MARK = 0  # the encoder feature the forcing CTC head reads: > 0 means blank


def transducer(loss: str):
    return make_head(loss, seed=3, **({"durations": (0, 1, 2, 3)} if loss == "tdt" else {}))


def random_ctc(seed: int = 5) -> CTCHead:
    torch.manual_seed(seed)
    return CTCHead(D, V).eval()


def forcing_ctc() -> CTCHead:
    """A CTC head whose blank posterior is ~1 where enc[..., MARK] = +1 and ~0 where it is -1."""
    head = CTCHead(D, V).eval()
    with torch.no_grad():
        head.proj.weight.zero_()
        head.proj.bias.zero_()
        head.proj.weight[0, MARK] = 60.0
    return head


def marked(seed: int, lens: tuple[int, ...], p_blank: float = 0.5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Encoder frames [B, T, D] whose MARK feature is +1 on random frames ("blank") and -1 on the
    others; lengths [B]; the blank frames [B, T] (False past the lengths)."""
    g = torch.Generator().manual_seed(seed)
    b, t = len(lens), max(lens)
    enc = torch.randn(b, t, D, generator=g)
    lens_t = torch.tensor(lens)
    valid = torch.arange(t)[None, :] < lens_t[:, None]
    blank = (torch.rand(b, t, generator=g) < p_blank) & valid
    enc[..., MARK] = torch.where(blank, 1.0, -1.0)
    return enc, lens_t, blank


def options(method: str, skip: float | None = None) -> DecodeOptions:
    return DecodeOptions(method=method, beam=3, max_symbols=3, skip_blank=skip)


def assert_same(got, want, exact: bool = True) -> None:
    """Hypotheses (and n-best) equal in tokens, frames and durations, and in scores and confidences:
    exactly, or (exact=False: chunked calls, whose joint runs on other shapes) within rounding."""
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert (g.tokens, g.frames, g.durations) == (w.tokens, w.frames, w.durations)
        if exact:
            assert (g.score, g.confidence) == (w.score, w.confidence)
        else:
            torch.testing.assert_close(torch.tensor([g.score, *g.confidence]), torch.tensor([w.score, *w.confidence]))
        assert len(g.nbest) == len(w.nbest)
        if g.nbest:
            assert_same(g.nbest, w.nbest, exact)


@pytest.mark.parametrize("loss", ["rnnt", "tdt"])
@pytest.mark.parametrize("method", ["greedy", "beam"])
def test_threshold_one_keeps_every_frame_and_equals_the_plain_search(loss, method):
    heads = {"transducer": transducer(loss), "ctc": random_ctc()}
    enc, lens, _ = marked(1, (13, 6, 10))
    assert heads["ctc"](enc)[..., 0].exp().max() < 1.0
    search = build_model_search(heads, "transducer", options(method, 1.0))
    assert isinstance(search, FrameSkipSearch)
    plain = run_search(build_model_search(heads, "transducer", options(method)), enc, lens)
    assert sum(len(h.tokens) for h in plain) > 5  # the heads emit labels, so the frames are checked
    assert_same(run_search(search, enc, lens), plain)
    assert (search.counts.seen, search.counts.kept) == (29, 29)


def packed_by_hand(enc: torch.Tensor, lens: torch.Tensor, blank: torch.Tensor) -> tuple[list[list[int]], torch.Tensor]:
    """Per row the original index of each kept frame, and the kept frames packed left ([B, T', D])."""
    kept = [[t for t in range(int(n)) if not bool(blank[b, t])] for b, n in enumerate(lens)]
    out = torch.zeros(len(kept), max(1, max(len(k) for k in kept)), enc.shape[2])
    for b, k in enumerate(kept):
        for j, t in enumerate(k):
            out[b, j] = enc[b, t]
    return kept, out


@pytest.mark.parametrize("loss", ["rnnt", "tdt"])
@pytest.mark.parametrize("method", ["greedy", "beam"])
def test_forced_blank_frames_are_dropped_and_the_rest_decoded_as_the_plain_search(loss, method):
    heads = {"transducer": transducer(loss), "ctc": forcing_ctc()}
    enc, lens, blank = marked(2, (17, 8, 12, 3))
    blank[3] = False  # a row with nothing skipped ...
    blank[1, :8] = True  # ... and one with everything skipped
    enc[..., MARK] = torch.where(blank, 1.0, -1.0)
    search = build_model_search(heads, "transducer", options(method, 0.9))
    state = search.advance(
        search.init(4, "cpu"), enc, lens, torch.ones(4, dtype=torch.bool)
    )  # one call, offline as run_search does
    got = search.hypotheses(state)
    kept, packed = packed_by_hand(enc, lens, blank)
    assert state.kept == kept and state.seen == lens.tolist()
    assert [(c.seen, c.kept) for c in map(state.counts, range(4))] == [(int(n), len(k)) for n, k in zip(lens, kept)]
    assert (search.counts.seen, search.counts.kept) == (40, sum(map(len, kept)))
    want = run_search(
        build_model_search(heads, "transducer", options(method)), packed, torch.tensor(list(map(len, kept)))
    )
    assert sum(len(h.tokens) for h in want) > 2
    assert got[1].tokens == [] and got[3].tokens  # the row of blank frames emits nothing

    def mapped(h, k):
        # frames through the kept index; a token spans its d kept frames (RNN-T: d = 1), a TDT jump
        # past the end as many original frames
        ext = k + [k[-1] + 1 + i for i in range(8)] if k else []  # frames past the last kept one
        durs = [0 if d == 0 else ext[f + d - 1] - k[f] + 1 for f, d in zip(h.frames, h.durations)]
        return [k[f] for f in h.frames], durs

    for g, w, k in zip(got, want, kept):
        assert (g.tokens, g.score, g.confidence) == (w.tokens, w.score, w.confidence)
        assert (g.frames, g.durations) == mapped(w, k)
        assert not any(bool(blank[got.index(g), f]) for f in g.frames)  # no token on a skipped frame
        for gn, wn in zip(g.nbest, w.nbest):  # beam: every n-best entry is mapped too
            assert (gn.tokens, gn.score) == (wn.tokens, wn.score) and (gn.frames, gn.durations) == mapped(wn, k)
        assert len(g.nbest) == len(w.nbest)
    if loss == "rnnt":
        assert all(d == 1 for h in got for d in h.durations)


def chunked(search, enc: torch.Tensor, lens: torch.Tensor, sizes: list[int]):
    """The search fed enc in chunks of the given sizes (cycled), as the streaming runner does."""
    state = search.init(enc.shape[0], "cpu")
    start, i = 0, 0
    while start < enc.shape[1]:
        n = sizes[i % len(sizes)]
        chunk_lens = (lens - start).clamp(0, n)
        final = (lens > start) & (lens <= start + n)  # True once, in the chunk where the frames end
        state = search.advance(state, enc[:, start : start + n], chunk_lens, final)
        start, i = start + n, i + 1
    return search.hypotheses(state)


@pytest.mark.parametrize("loss", ["rnnt", "tdt"])
@pytest.mark.parametrize("method", ["greedy", "beam", "fused"])
def test_chunks_give_the_result_of_one_call(loss, method):
    heads = {"transducer": transducer(loss), "ctc": forcing_ctc()}
    enc, lens, _ = marked(3, (19, 7, 14), p_blank=0.6)
    fusion = Fusion([("lm", BigramLM(V, seed=1), 0.5)]) if method == "fused" else None
    opts = options("beam" if method == "fused" else method, 0.9)
    whole = run_search(build_model_search(heads, "transducer", opts, fusion), enc, lens)
    assert sum(len(h.tokens) for h in whole) > 2
    for sizes in ([1], [4], [3, 5, 2]):
        assert_same(chunked(build_model_search(heads, "transducer", opts, fusion), enc, lens, sizes), whole, False)


def test_pack_frames():
    enc = torch.arange(2 * 4 * 1, dtype=torch.float32).view(2, 4, 1)
    keep = torch.tensor([[False, True, False, True], [False, False, False, False]])
    packed, lens, index = pack_frames(enc, keep)
    assert packed[..., 0].tolist() == [[1.0, 3.0], [0.0, 0.0]] and lens.tolist() == [2, 0]
    assert index[0].tolist() == [1, 3]
    packed, lens, _ = pack_frames(enc, torch.zeros(2, 4, dtype=torch.bool))  # all skipped: one padding frame
    assert packed.shape == (2, 1, 1) and lens.tolist() == [0, 0]
    packed, lens, _ = pack_frames(enc[:, :0], keep[:, :0])  # an empty chunk
    assert packed.shape == (2, 1, 1) and lens.tolist() == [0, 0]


def test_errors_name_the_heads_and_the_option_is_validated():
    rnnt, ctc = transducer("rnnt"), random_ctc()
    msg = r"frame skipping needs a CTC head beside a transducer head; the heads are \[.*\]"
    with pytest.raises(ValueError, match=msg + r" and 'transducer' decodes") as e:
        build_model_search({"transducer": rnnt}, "transducer", options("greedy", 0.9))
    assert "['transducer (transducer)']" in str(e.value)
    with pytest.raises(ValueError, match=msg + r" and 'ctc' decodes"):
        build_model_search({"transducer": rnnt, "ctc": ctc}, "ctc", options("greedy", 0.9))
    with pytest.raises(ValueError, match="frame skipping .* not method 'joint'"):
        build_model_search({"transducer": rnnt, "ctc": ctc}, "ctc", options("joint", 0.9))
    for bad in (0.0, -0.5, 1.5, True, "0.9"):
        with pytest.raises(ValueError, match=r"skip_blank must be a blank posterior in \(0, 1\]"):
            DecodeOptions(skip_blank=bad)
    assert DecodeOptions(skip_blank=1).skip_blank == 1 and DecodeOptions().skip_blank is None
    with pytest.raises(ValueError, match=r"blank threshold of frame skipping must be a blank posterior in \(0, 1\]"):
        FrameSkipSearch(build_model_search({"transducer": rnnt}, "transducer", options("greedy")), ctc, 1.5)


def _skip_model(frame_skip: dict | None):
    from asr.model import ASRModel

    enc = {"name": "conformer", "d_model": D, "num_layers": 1, "num_heads": 2, "subsampling_channels": 4}
    heads = {
        "tdt": {"kind": "transducer", "loss": {"kind": "tdt", "durations": [0, 1, 2]}, "pred_dim": 8, "joint_dim": 8},
        "ctc": {"kind": "ctc", "weight": 0.3},
    }
    torch.manual_seed(0)
    return ASRModel(V, encoder=enc, heads=heads, specaug=None, frame_skip=frame_skip)


def test_frame_skip_in_training_feeds_the_transducer_losses_the_kept_frames():
    """model.frame_skip: the transducer head's loss is its loss on the frames the CTC head keeps
    (packed as at inference), gradients reach the kept frames only, the CTC loss reads all frames,
    a row with nothing kept keeps everything, and nothing changes before after_steps."""
    from asr.data.datamodule import Batch

    model = _skip_model({"threshold": 0.5, "after_steps": 0})
    ctc, tdt = model.heads["ctc"], model.heads["tdt"]
    with torch.no_grad():  # blank wherever MARK > 0, as forcing_ctc does
        ctc.proj.weight.zero_()
        ctc.proj.bias.zero_()
        ctc.proj.weight[0, MARK] = 60.0
    enc, lens, blank = marked(1, (9, 6, 7))
    enc[2, :7, MARK] = 1.0  # row 2: every frame blank -> keeps all of them
    enc.requires_grad_(True)
    got, got_lens = model.reduced_frames(enc, lens)
    keep = ~blank & (torch.arange(9)[None] < lens[:, None])
    keep[2, :7] = True
    want, want_lens, _ = pack_frames(enc, keep)
    assert torch.equal(got_lens, want_lens) and torch.equal(got, want) and got_lens.tolist()[2] == 7
    tokens, token_lens = torch.tensor([[3, 4], [5, 0], [6, 2]]), torch.tensor([2, 1, 2])
    loss = tdt.loss(got, got_lens, tokens, token_lens)["loss"]
    (grad,) = torch.autograd.grad(loss, enc)
    assert (grad.abs().sum(-1) > 0).eq(keep).all()  # the dropped frames get no gradient
    # the whole model: the same packing inside model.losses (a batch through the encoder)
    from asr.data.audio import pad_waves

    g = torch.Generator().manual_seed(0)
    audio, audio_lens = pad_waves([torch.randn(8000, generator=g), torch.randn(6400, generator=g)])
    batch = Batch(audio, audio_lens, tokens[:2], token_lens[:2], ["a", "b"], ["1", "2"])
    model.eval()
    out = model.losses(batch)
    e, n = model.encoder(*model.features(audio, audio_lens))
    red = model.reduced_frames(e, n)
    assert torch.allclose(out["tdt"], tdt.loss(*red, batch.tokens, batch.token_lens)["loss"])
    assert torch.allclose(out["ctc"], ctc.loss(e, n, batch.tokens, batch.token_lens)["loss"])
    late = _skip_model({"threshold": 0.5, "after_steps": 10**6})
    assert late.reduced_frames(enc, lens) is None
    assert _skip_model(None).reduced_frames(enc, lens) is None


def test_frame_skip_training_options_are_checked():
    from asr.model import ASRModel

    with pytest.raises(ValueError, match=r"frame_skip.threshold must be a blank posterior in \(0, 1\]"):
        _skip_model({"threshold": 0.0})
    with pytest.raises(ValueError, match="after_steps must be an integer >= 0"):
        _skip_model({"after_steps": -1})
    enc = {"name": "conformer", "d_model": D, "num_layers": 1, "num_heads": 2, "subsampling_channels": 4}
    with pytest.raises(ValueError, match="frame_skip needs a CTC head beside a transducer head"):
        ASRModel(V, encoder=enc, heads={"ctc": {"kind": "ctc"}}, frame_skip={})
