"""Transducer head (predictors, joint, losses through the head) and its decoders."""

import math

import pytest
import torch

from asr.decoding import transducer_beam_search, transducer_greedy_search
from asr.decoding.transducer import (
    transducer_beam_continue,
    transducer_beam_init,
    transducer_greedy_continue,
    transducer_greedy_init,
)
from asr.losses import rnnt_loss
from asr.nn.heads import build_head
from asr.nn.heads.transducer import LSTMPredictor, StatelessPredictor

V = 7


LOSS_OPTIONS = ("durations", "sigma", "omega", "topology")  # make_head passes these to the loss strategy


def make_head(loss="rnnt", predictor="stateless", seed=0, **kw):
    torch.manual_seed(seed)
    spec = {"kind": loss, **{k: kw.pop(k) for k in LOSS_OPTIONS if k in kw}}
    head = build_head("transducer", 16, V, loss=spec, predictor={"kind": predictor}, pred_dim=12, joint_dim=20, **kw)
    # larger output weights: peaky distributions, so decoders emit labels and durations vary
    torch.nn.init.normal_(head.joint.out.weight, std=2.0)
    return head.eval()


def enc_batch(seed=1, lens=(23, 9, 17, 1)):
    g = torch.Generator().manual_seed(seed)
    enc = torch.randn(len(lens), max(lens), 16, generator=g)
    lens_t = torch.tensor(lens)
    enc = enc.masked_fill(torch.arange(max(lens))[None, :, None] >= lens_t[:, None, None], 1e3)  # loud padding
    return enc, lens_t


@torch.no_grad()
def reference_greedy(head, enc, n, max_symbols, trace: list | None = None):
    """One utterance, frame-looping greedy search written plainly (RNN-T or TDT). `trace`, if
    given, receives each label's (frame, duration): TDT its predicted duration, RNN-T 1."""
    v = head.vocab_size
    out, state = head.predictor(torch.tensor([[head.blank]]))
    hyp, t, on_frame = [], 0, 0
    while t < n:
        logits = head.joint(enc[None, t : t + 1], out)[0, 0, 0]
        if head.durations:
            durs = list(head.durations)
            lp_tok, lp_dur = logits[:v].log_softmax(-1), logits[v:].log_softmax(-1)
            cands = [
                ((lp_tok[k] + lp_dur[j]).item(), k, durs[j])
                for k in range(v)
                for j in range(len(durs))
                if not (k == head.blank and durs[j] == 0)
            ]
            _, k, adv = max(cands)
        else:
            k = int(logits[:v].argmax())
            adv = 1 if k == head.blank else 0
        if k == head.blank:
            t, on_frame = t + adv, 0
            continue
        hyp.append(k)
        if trace is not None:
            trace.append((t, adv if head.durations else 1))
        out, state = head.predictor(torch.tensor([[k]]), state)
        on_frame = on_frame + 1 if adv == 0 else 0
        t += adv
        if on_frame >= max_symbols:
            t, on_frame = t + 1, 0
    return hyp


@pytest.mark.parametrize("loss,predictor", [("rnnt", "stateless"), ("rnnt", "lstm"), ("tdt", "stateless")])
@pytest.mark.parametrize("max_symbols", [1, 3])
def test_greedy_matches_plain_reference_and_ignores_padding(loss, predictor, max_symbols):
    head = make_head(loss, predictor)
    enc, lens = enc_batch()
    batched = transducer_greedy_search(head, enc, lens, max_symbols=max_symbols)
    assert sum(len(h) for h in batched) > 3  # the test exercises emission
    for i, n in enumerate(lens.tolist()):
        alone = transducer_greedy_search(head, enc[i : i + 1, :n], lens[i : i + 1], max_symbols=max_symbols)
        assert alone[0] == batched[i] == reference_greedy(head, enc[i, :n], n, max_symbols)


def test_greedy_respects_max_symbols():
    head = make_head("rnnt")
    with torch.no_grad():  # a joint that always prefers label 3: only the cap moves time
        head.joint.out.bias.zero_()
        head.joint.out.bias[3] = 100.0
    enc, lens = enc_batch()
    hyps = transducer_greedy_search(head, enc, lens, max_symbols=2)
    assert [len(h) for h in hyps] == [2 * n for n in lens.tolist()]


@pytest.mark.parametrize("loss", ["rnnt", "tdt"])
@pytest.mark.parametrize("max_symbols", [1, 3])
def test_beam_one_equals_greedy_under_the_same_rules(loss, max_symbols):
    head = make_head(loss, seed=3)
    enc, lens = enc_batch(seed=4)
    assert transducer_beam_search(head, enc, lens, beam=1, max_symbols=max_symbols) == transducer_greedy_search(
        head, enc, lens, max_symbols=max_symbols
    )


@pytest.mark.parametrize("loss", ["rnnt", "tdt"])
def test_beam_search_is_batch_independent(loss):
    head = make_head(loss, seed=5)
    enc, lens = enc_batch(seed=6)
    batched = transducer_beam_search(head, enc, lens, beam=4)
    for i, n in enumerate(lens.tolist()):
        assert transducer_beam_search(head, enc[i : i + 1, :n], lens[i : i + 1], beam=4)[0] == batched[i]


def _in_chunks(search_init, search_continue, enc, lens, chunk, **kw):
    """Feed enc[B, T, D] to a resumable search `chunk` frames at a time (utterances end in
    different chunks; `final` marks each one's last). Returns the final state."""
    state = search_init()
    for start in range(0, enc.shape[1], chunk):
        n = (lens - start).clamp(0, chunk)
        final = (lens > start) & (lens <= start + chunk)
        state = search_continue(enc[:, start : start + chunk], n, state, final=final, **kw)
    return state


@pytest.mark.parametrize("loss", ["rnnt", "tdt"])
@pytest.mark.parametrize("max_symbols", [1, 2])
@pytest.mark.parametrize("chunk", [1, 2, 5])
def test_searches_fed_in_chunks_equal_one_call(loss, max_symbols, chunk):
    """Greedy and beam searches resume across chunks of frames (streaming) and end with exactly
    the hypotheses of one call: TDT jumps across chunk ends and past an utterance's end included."""
    head = make_head(loss, seed=13, **({"durations": (0, 1, 2, 3, 4)} if loss == "tdt" else {}))
    with torch.no_grad():
        head.joint.out.weight.mul_(0.5)  # less peaky: the beam's hypotheses compete and merge
    enc, lens = enc_batch(seed=14)
    b = enc.shape[0]
    greedy = _in_chunks(
        lambda: transducer_greedy_init(head, b),
        lambda e, n, s, final, **kw: transducer_greedy_continue(head, e, n, s, **kw),
        enc,
        lens,
        chunk,
        max_symbols=max_symbols,
    )
    assert greedy.tokens == transducer_greedy_search(head, enc, lens, max_symbols=max_symbols)
    offline = transducer_beam_search(head, enc, lens, beam=4, max_symbols=max_symbols)
    assert offline != transducer_greedy_search(head, enc, lens, max_symbols=max_symbols)  # the beam matters here
    state = _in_chunks(
        lambda: transducer_beam_init(head, b, beam=4),
        lambda e, n, s, final, **kw: transducer_beam_continue(head, e, n, s, final=final, **kw),
        enc,
        lens,
        chunk,
        max_symbols=max_symbols,
    )
    assert state.best() == offline


def sequence_probabilities(head, enc, n, max_symbols):
    """Every decision path of the beam search's rules, enumerated: {labels: total probability}.
    A label stays on its frame (RNN-T, TDT duration 0) until max_symbols labels are on it;
    blank moves one frame (RNN-T) or its duration > 0 (TDT)."""
    v = head.vocab_size
    totals: dict[tuple, float] = {}

    def walk(seq, t, on_frame, p):
        if t >= n:
            totals[seq] = totals.get(seq, 0.0) + p
            return
        out, _ = head.predictor(torch.tensor([[head.blank, *seq]]))
        logits = head.joint(enc[None, t : t + 1], out[:, -1:])[0, 0, 0].double()
        p_tok = logits[:v].softmax(-1)
        if head.durations:
            p_dur = logits[v:].softmax(-1)
            moves = [(d, float(p_dur[j])) for j, d in enumerate(head.durations)]
        for k in range(v):
            if not head.durations:
                moves = [(1 if k == head.blank else 0, 1.0)]
            for d, pd in moves:
                if k == head.blank and d == 0:
                    continue
                if d == 0:
                    adv = 1 if on_frame + 1 >= max_symbols else 0
                else:
                    adv = d
                walk(
                    seq if k == head.blank else seq + (k,),
                    t + adv,
                    on_frame + 1 if adv == 0 else 0,
                    p * float(p_tok[k]) * pd,
                )

    walk((), 0, 0, 1.0)
    return totals


@pytest.mark.parametrize("loss", ["rnnt", "tdt"])
@pytest.mark.parametrize("max_symbols", [1, 2])
def test_wide_beam_finds_the_most_probable_sequence(loss, max_symbols):
    """A beam too wide to prune merges every path: it returns the exact argmax over label sequences."""
    kw = {"durations": (0, 1, 2)} if loss == "tdt" else {}
    head = make_head(loss, seed=11, **kw)
    with torch.no_grad():
        head.joint.out.weight.mul_(0.4)  # flatter distributions: many sequences compete
        v = head.vocab_size
        head.joint.out.bias[:v].zero_()
    g = torch.Generator().manual_seed(12)
    enc = torch.randn(3, 4, 16, generator=g)
    # short utterances: the enumeration grows exponentially with frames (3 frames at 2 symbols
    # took 10-17 s a case; 2 frames still let TDT jump and emit twice on a frame)
    lens = torch.tensor([3, 2, 1]) if max_symbols == 1 else torch.tensor([2, 2, 1])
    hyps = transducer_beam_search(head, enc, lens, beam=3000, max_symbols=max_symbols)
    state = transducer_beam_continue(
        head, enc, lens, transducer_beam_init(head, 3, beam=3000), max_symbols, final=torch.ones(3, dtype=torch.bool)
    )
    for i, n in enumerate(lens.tolist()):
        with torch.no_grad():
            totals = sequence_probabilities(head, enc[i], n, max_symbols)
        mass = sum(totals.values())  # TDT drops blank with duration 0: less than 1
        assert abs(mass - 1.0) < 1e-6 if loss == "rnnt" else 0.5 < mass < 1.0
        best = max(totals, key=totals.get)
        assert tuple(hyps[i]) == best, (totals[tuple(hyps[i])], totals[best])
        # paths were merged into their label sequences: one slot per sequence, holding the
        # probability of its surviving paths (all of them when the beam pruned nothing)
        alive = [
            (tuple(h.tokens), math.exp(sc)) for h, sc in zip(state.hyps[i], state.score[i].tolist()) if sc > -math.inf
        ]
        assert len(dict(alive)) == len(alive)
        assert all(p <= totals[seq] + 1e-6 for seq, p in alive)
        if len(totals) <= 1000:
            assert dict(alive).keys() == totals.keys()
            assert all(abs(p - totals[seq]) < 1e-6 for seq, p in alive)


def test_tdt_with_unit_duration_is_frame_synchronous():
    """durations=(1,): one decision per frame, exactly RNN-T greedy with max_symbols=1 on the token logits."""
    tdt = make_head("tdt", durations=(1,), seed=7)
    rnnt = make_head("rnnt", seed=8)
    rnnt.predictor.load_state_dict(tdt.predictor.state_dict())
    with torch.no_grad():
        for name in ("enc_proj", "pred_proj"):
            getattr(rnnt.joint, name).load_state_dict(getattr(tdt.joint, name).state_dict())
        rnnt.joint.out.weight.copy_(tdt.joint.out.weight[:V])
        rnnt.joint.out.bias.copy_(tdt.joint.out.bias[:V])
    enc, lens = enc_batch(seed=9)
    hyps = transducer_greedy_search(tdt, enc, lens, max_symbols=5)
    assert hyps == transducer_greedy_search(rnnt, enc, lens, max_symbols=1)
    assert all(len(h) <= n for h, n in zip(hyps, lens.tolist()))


@pytest.mark.parametrize("cls,kw", [(StatelessPredictor, {"context_size": 3}), (LSTMPredictor, {"hidden": 10})])
def test_predictor_step_by_step_equals_full_sequence(cls, kw):
    torch.manual_seed(0)
    p = cls(V, 8, **kw).eval()
    tokens = torch.randint(0, V, (3, 6))
    full, _ = p(tokens, p.init_state(3))
    state, outs = p.init_state(3), []
    for u in range(6):
        o, state = p(tokens[:, u : u + 1], state)
        outs.append(o)
    assert torch.allclose(torch.cat(outs, 1), full, atol=1e-6)


def test_pruned_head_loss_with_full_range_equals_full_rnnt():
    """With prune_range >= U+1 the pruned loss is the full RNN-T loss of the same joint."""
    torch.manual_seed(0)
    head = build_head(
        "transducer",
        16,
        V,
        loss={"kind": "pruned_rnnt", "prune_range": 10, "simple_loss_scale": 0.0},
        pred_dim=12,
        joint_dim=20,
    ).eval()
    enc = torch.randn(3, 12, 16)
    enc_lens = torch.tensor([12, 10, 7])
    targets = torch.randint(1, V, (3, 5))
    target_lens = torch.tensor([5, 3, 2])
    out = head.loss(enc, enc_lens, targets, target_lens, step=10**6)
    full = rnnt_loss(head.joint(enc, head.predict(targets)), targets, enc_lens, target_lens, reduction="sum")
    assert torch.allclose(out["loss"], full / target_lens.sum(), atol=1e-4)
    assert torch.allclose(out["pruned"], out["loss"])


def test_pruned_warmup_schedule():
    head = build_head("transducer", 8, V, loss={"kind": "pruned_rnnt", "warmup_steps": 100, "simple_loss_scale": 0.5})
    loss_scales = head.criterion.loss_scales
    assert loss_scales(0) == (1.0, 0.1)
    assert loss_scales(50) == pytest.approx((0.75, 0.55))
    assert loss_scales(100) == loss_scales(10**6) == (0.5, 1.0)


@pytest.mark.parametrize("loss", ["rnnt", "pruned_rnnt", "tdt", "pruned_tdt"])
def test_head_losses_are_finite_and_give_gradients(loss):
    torch.manual_seed(0)
    head = build_head("transducer", 16, V, loss=loss, pred_dim=12, joint_dim=20, predictor={"kind": "lstm"})
    enc = torch.randn(2, 15, 16, requires_grad=True)
    out = head.loss(enc, torch.tensor([15, 11]), torch.randint(1, V, (2, 6)), torch.tensor([6, 4]))
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and enc.grad.abs().sum() > 0
    assert all(p.grad is not None for p in head.parameters() if p.requires_grad)


@pytest.mark.parametrize("topology", ["modified", "rna", "constrained"])
def test_one_output_per_frame_topologies_cap_every_search_at_one_label_per_frame(topology):
    head = make_head("rnnt", topology=topology)
    with torch.no_grad():  # a joint that always prefers label 3: only the cap moves time
        head.joint.out.bias.zero_()
        head.joint.out.bias[3] = 100.0
    enc, lens = enc_batch()
    assert head.symbols_per_frame(5) == 1 and make_head("rnnt").symbols_per_frame(5) == 5
    for hyps in (
        transducer_greedy_search(head, enc, lens, max_symbols=5),
        transducer_beam_search(head, enc, lens, beam=2, max_symbols=5),
    ):
        assert [len(h) for h in hyps] == lens.tolist()


@pytest.mark.parametrize("loss", ["rnnt", "pruned_rnnt"])
@pytest.mark.parametrize("topology", ["regular", "modified", "constrained"])
def test_head_trained_with_each_topology_learns_to_transcribe(loss, topology):
    """Memorize four label sequences from fixed random 'encoder' frames: greedy decoding under the
    topology's cap must return them after training (and does not before)."""
    torch.manual_seed(0)
    spec = {"kind": loss, "topology": topology} | ({"prune_range": 3} if loss == "pruned_rnnt" else {})
    head = build_head("transducer", 16, V, loss=spec, pred_dim=16, joint_dim=32)
    g = torch.Generator().manual_seed(5)
    enc = torch.randn(4, 8, 16, generator=g)
    lens = torch.tensor([8, 7, 6, 8])
    targets = torch.tensor([[1, 2, 3, 4], [5, 6, 1, 0], [2, 2, 0, 0], [6, 5, 4, 3]])
    target_lens = torch.tensor([4, 3, 2, 4])
    want = [t[:n].tolist() for t, n in zip(targets, target_lens)]
    head.eval()
    assert transducer_greedy_search(head, enc, lens) != want
    head.train()
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    for step in range(120):
        opt.zero_grad()
        head.loss(enc, lens, targets, target_lens, step=step)["loss"].backward()
        opt.step()
    head.eval()
    assert transducer_greedy_search(head, enc, lens) == want


def test_bad_head_options_are_clear_errors():
    with pytest.raises(ValueError, match="transducer loss"):
        build_head("transducer", 8, V, loss="ctc")
    with pytest.raises(ValueError, match="unknown predictor"):
        build_head("transducer", 8, V, predictor={"kind": "gru"})
