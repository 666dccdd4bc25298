"""FSA core and CTC over FSA graphs: against torch's CTC, path enumeration, gradcheck, OpenFst text."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from devices import DEVICES

from asr.fsa import (
    Fsa,
    compose,
    ctc_graphs,
    ctc_topo,
    from_openfst_text,
    intersect_dense,
    linear_fsa,
    to_openfst_text,
    viterbi,
)
from asr.losses import ctc_fst_loss, forced_align
from asr.losses.reference import ctc_paths_reference


def _batch(seed: int, b: int, t_max: int, v: int, u_max: int, dtype=torch.float64, repeats: bool = False):
    g = torch.Generator().manual_seed(seed)
    lp = torch.randn(b, t_max, v, generator=g, dtype=dtype).log_softmax(-1)
    u_lens = torch.randint(0, u_max + 1, (b,), generator=g)
    targets = torch.randint(1, v, (b, max(u_max, 1)), generator=g)
    if repeats:  # force repeated neighbours, which need a blank between them in standard CTC
        targets[:, 1::2] = targets[:, 0::2][:, : targets[:, 1::2].shape[1]]
    # the fewest frames a path needs: one per token, plus one blank between equal neighbours
    need = torch.tensor(
        [int(u) + int((targets[i, 1:u] == targets[i, : max(int(u) - 1, 0)]).sum()) for i, u in enumerate(u_lens)]
    )
    t_lens = torch.maximum(need, torch.randint(1, t_max + 1, (b,), generator=g)).clamp(max=t_max)
    return lp, targets, t_lens, u_lens, need


def _torch_ctc(lp, targets, t_lens, u_lens, reduction="none"):
    return F.ctc_loss(lp.transpose(0, 1), targets, t_lens, u_lens, blank=0, reduction=reduction, zero_infinity=False)


def _compare_with_torch(lp, targets, t_lens, u_lens, reduction="none", device="cpu"):
    """Loss and gradient against torch's CTC, through a log_softmax over logits.

    torch's CTC backward returns the gradient with respect to the logits under the
    log_softmax (p - posterior) rather than d loss / d log_probs (-posterior); through the
    log_softmax both give p - posterior, so the comparison is on the logits.
    """
    x = lp.clone().requires_grad_()
    y = lp.clone().requires_grad_()
    on = (t.to(device) for t in (targets, t_lens, u_lens))
    ours = ctc_fst_loss(x.to(device).log_softmax(-1), *on, reduction=reduction).cpu()
    ref = _torch_ctc(y.log_softmax(-1), targets, t_lens, u_lens, reduction=reduction)
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=1e-6)
    w = torch.rand(ours.shape, dtype=ours.dtype) if reduction == "none" else torch.tensor(1.0, dtype=ours.dtype)
    (ours * w).sum().backward()
    (ref * w).sum().backward()
    torch.testing.assert_close(x.grad, y.grad, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize(
    "b,t_max,v,u_max,repeats",
    [(1, 1, 2, 1, False), (1, 5, 3, 0, False), (4, 12, 5, 4, True), (6, 30, 7, 10, False), (3, 9, 4, 4, True)],
)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@DEVICES
def test_standard_topology_equals_torch_ctc(b, t_max, v, u_max, repeats, reduction, device):
    lp, targets, t_lens, u_lens, _ = _batch(b * 100 + t_max, b, t_max, v, u_max, repeats=repeats)
    _compare_with_torch(lp, targets, t_lens, u_lens, reduction, device)


def test_minimum_feasible_length_and_blank_only_targets():
    lp, targets, _, u_lens, need = _batch(7, 5, 10, 4, 5, repeats=True)
    u_lens[0] = 0  # blank only
    need[0] = 0
    t_lens = need.clamp(min=1)  # exactly the fewest frames (at least one frame)
    _compare_with_torch(lp, targets, t_lens, u_lens)


def test_too_few_frames_is_inf_or_zeroed(caplog, monkeypatch):
    from asr.losses import ctc_fst

    monkeypatch.setattr(ctc_fst, "_no_alignment", {"utterances": 0, "next_log": 1})
    lp, targets, _, u_lens, _ = _batch(3, 3, 8, 5, 4, repeats=True)
    u_lens[:] = 4
    need = 4 + int((targets[1, 1:4] == targets[1, :3]).sum())
    t_lens = torch.tensor([8, need - 1, 8])  # utterance 1 is one frame short
    with caplog.at_level(logging.WARNING):
        loss = ctc_fst_loss(lp, targets, t_lens, u_lens, reduction="none")
    assert torch.isinf(loss[1]) and torch.isfinite(loss[[0, 2]]).all()
    assert "1 of 3 utterances have no alignment" in caplog.text and "1 so far" in caplog.text
    x = lp.clone().requires_grad_()
    loss = ctc_fst_loss(x, targets, t_lens, u_lens, reduction="sum", zero_infinity=True)
    loss.backward()
    assert torch.isfinite(loss)
    assert x.grad[1].abs().max() == 0 and x.grad[0].abs().max() > 0


@DEVICES
@pytest.mark.parametrize("modified", [False, True])
def test_topologies_match_enumeration_of_all_paths(modified, device):
    g = torch.Generator().manual_seed(5)
    for T, target in [(1, [1]), (4, [1, 1]), (5, [2, 1, 1]), (5, [2, 2, 2]), (3, []), (4, [1, 2])]:
        lp = torch.randn(T, 3, generator=g, dtype=torch.float64).log_softmax(-1)
        x = lp.clone().requires_grad_()
        r = lp.clone().requires_grad_()
        ours = -ctc_fst_loss(
            x[None].to(device),
            torch.tensor([target or [1]], device=device),
            torch.tensor([T], device=device),
            torch.tensor([len(target)], device=device),
            topology="modified" if modified else "standard",
            reduction="sum",
        ).cpu()
        ref = ctc_paths_reference(r, target, modified=modified)
        torch.testing.assert_close(ours, ref, atol=1e-9, rtol=1e-9)
        if torch.isfinite(ref):
            ours.backward()
            ref.backward()
            torch.testing.assert_close(x.grad, r.grad, atol=1e-9, rtol=1e-9)
    # the modified topology fits "a a" into two frames, the standard one needs three
    lp = torch.zeros(1, 2, 3, dtype=torch.float64)
    two = (torch.tensor([[1, 1]]), torch.tensor([2]), torch.tensor([2]))
    loss = ctc_fst_loss(lp.to(device), *two, topology="modified" if modified else "standard")
    assert bool(torch.isfinite(loss)) == modified


def test_training_graph_sizes():
    targets, lens = torch.tensor([[3, 3, 4, 0], [1, 2, 3, 4]]), torch.tensor([3, 4])
    g = ctc_graphs(targets, lens, vocab_size=6)
    assert g.num_states.tolist() == [2 * 3 + 2, 2 * 4 + 2]  # 2U+1 CTC states + the final state
    # arcs that first emit a token: 3 from the start, 3 again only after a blank, 4 after blank or 3
    assert int((g[0].aux_labels > 0).sum()) == 1 + 1 + 2
    topo = ctc_topo(6, modified=True)
    assert int(topo.num_states[0]) == 7 and topo.arcs.shape[0] == 6 * 6 + 5 + 6
    assert compose(topo, linear_fsa(targets, lens)).num_states.tolist()[1] >= 10


@DEVICES
@pytest.mark.parametrize("modified", [False, True])
def test_viterbi_alignment_is_a_valid_best_path(modified, device):
    g = torch.Generator().manual_seed(11)
    topology = "modified" if modified else "standard"
    for T, target in [(6, [1, 2, 2]), (5, [2, 1]), (4, []), (3, [1, 1, 1] if modified else [1])]:
        lp = torch.randn(1, T, 3, generator=g, dtype=torch.float64).log_softmax(-1)
        ali = forced_align(lp.to(device), [target], torch.tensor([T]), topology=topology)
        assert ali.labels.device.type == device
        ali = type(ali)(ali.labels.cpu(), ali.starts.cpu(), ali.scores.cpu())
        ref = ctc_paths_reference(lp[0], target, modified=modified, viterbi=True)
        torch.testing.assert_close(ali.scores[0], ref, atol=1e-9, rtol=0)
        labels = ali.labels[0]
        assert (labels >= 0).all()
        # the path's score is its frame log-probs, and its emissions spell the target
        torch.testing.assert_close(lp[0, torch.arange(T), labels].sum(), ref, atol=1e-9, rtol=0)
        spans = ali.token_spans(0)
        assert [tok for tok, _, _ in spans] == target
        for tok, s, e in spans:
            assert (labels[s : e + 1] == tok).all() and ali.starts[0, s]
        if not modified:  # collapsing repeats and dropping blanks gives the target
            collapsed = [int(x) for i, x in enumerate(labels) if x != 0 and (i == 0 or labels[i - 1] != x)]
            assert collapsed == target


@DEVICES
def test_viterbi_loss_gradient_is_the_best_path(device):
    lp, targets, t_lens, u_lens, _ = _batch(21, 3, 10, 5, 4)
    x = lp.clone().requires_grad_()
    loss = ctc_fst_loss(x.to(device), targets.to(device), t_lens, u_lens, viterbi=True, reduction="sum").cpu()
    ali = forced_align(lp.to(device), targets, t_lens, u_lens)
    ali = type(ali)(ali.labels.cpu(), ali.starts.cpu(), ali.scores.cpu())
    torch.testing.assert_close(loss, -ali.scores.sum())
    loss.backward()
    expected = torch.zeros_like(lp)
    for b in range(3):
        for t in range(int(t_lens[b])):
            expected[b, t, ali.labels[b, t]] -= 1
    torch.testing.assert_close(x.grad, expected)
    # the full-sum loss is never above the best path's
    assert (ctc_fst_loss(lp, targets, t_lens, u_lens, reduction="none") <= -ali.scores + 1e-9).all()


def _delay_reference(lp: torch.Tensor, target: list[int], penalty: float, repeat_penalty: float = 0.0) -> torch.Tensor:
    """Standard CTC with each token's first frame t scoring penalty * ((T-1)/2 - t), and each frame
    that repeats a token -repeat_penalty, by enumeration."""
    import itertools

    from asr.losses.reference import _ctc_path_repeats

    T, V = lp.shape
    scores = []
    for frames in itertools.product(range(V), repeat=T):
        paths = _ctc_path_repeats(frames, target, False)  # standard: one path per labeling
        if not paths:
            continue
        bonus = sum(
            penalty * ((T - 1) / 2 - t) for t, x in enumerate(frames) if x != 0 and (t == 0 or frames[t - 1] != x)
        )
        bonus -= repeat_penalty * next(iter(paths))
        scores.append(lp[torch.arange(T), torch.tensor(frames)].sum() + bonus)
    return torch.logsumexp(torch.stack(scores), 0)


@DEVICES
def test_delay_penalty_matches_enumeration_and_favours_early_paths(device):
    g = torch.Generator().manual_seed(2)
    for T, target in [(5, [1, 2]), (6, [2, 2]), (4, [1])]:
        lp = torch.randn(T, 3, generator=g, dtype=torch.float64).log_softmax(-1)
        x = lp.clone().requires_grad_()
        r = lp.clone().requires_grad_()
        ours = -ctc_fst_loss(
            x[None].to(device),
            torch.tensor([target]),
            torch.tensor([T]),
            torch.tensor([len(target)]),
            delay_penalty=0.5,
            reduction="sum",
        ).cpu()
        ref = _delay_reference(r, target, 0.5)
        torch.testing.assert_close(ours, ref, atol=1e-9, rtol=1e-9)
        ours.backward()
        ref.backward()
        torch.testing.assert_close(x.grad, r.grad, atol=1e-9, rtol=1e-9)
    # with a uniform network, the penalty moves the expected emission frame earlier
    lp = torch.full((1, 20, 3), -torch.log(torch.tensor(3.0)), dtype=torch.float64, requires_grad=True)
    tgt, tl, ul = torch.tensor([[1, 2]]), torch.tensor([20]), torch.tensor([2])
    frames = torch.arange(20, dtype=torch.float64)

    def mean_emission_frame(penalty: float) -> float:
        lp.grad = None
        ctc_fst_loss(lp.to(device), tgt, tl, ul, delay_penalty=penalty, reduction="sum").backward()
        occ = -lp.grad[0, :, 1:].sum(-1)  # posterior of a non-blank label per frame
        return float((occ * frames).sum() / occ.sum())

    assert mean_emission_frame(0.3) < mean_emission_frame(0.0) - 1.0


def _one(lp: torch.Tensor, target: list[int], device: str, **kw) -> torch.Tensor:
    """-ctc_fst_loss of one utterance lp[T, V] (its log P, as the references give it)."""
    return -ctc_fst_loss(
        lp[None].to(device),
        torch.tensor([target or [1]]),
        torch.tensor([lp.shape[0]]),
        torch.tensor([len(target)]),
        reduction="sum",
        **kw,
    ).cpu()


CASES = [(1, [1]), (4, [1, 1]), (5, [2, 1, 1]), (5, [2, 2, 2]), (3, []), (4, [1, 2]), (5, [1])]


@DEVICES
@pytest.mark.parametrize("modified", [False, True])
def test_repeat_penalty_matches_enumeration_of_all_paths(modified, device):
    """Loss and gradient against the enumerated paths, each scored -repeat_penalty per repeated
    frame (the modified topology's emissions of the same token again are not repeats)."""
    g = torch.Generator().manual_seed(11)
    topology = "modified" if modified else "standard"
    for T, target in CASES:
        lp = torch.randn(T, 3, generator=g, dtype=torch.float64).log_softmax(-1)
        x, r = lp.clone().requires_grad_(), lp.clone().requires_grad_()
        ours = _one(x, target, device, topology=topology, repeat_penalty=0.75)
        ref = ctc_paths_reference(r, target, modified=modified, repeat_penalty=0.75)
        torch.testing.assert_close(ours, ref, atol=1e-9, rtol=1e-9)
        ours.backward()
        ref.backward()
        torch.testing.assert_close(x.grad, r.grad, atol=1e-9, rtol=1e-9)
        # Viterbi: the best single path, penalties included
        best = _one(lp, target, device, topology=topology, repeat_penalty=0.75, viterbi=True)
        torch.testing.assert_close(
            best, ctc_paths_reference(lp, target, modified=modified, viterbi=True, repeat_penalty=0.75)
        )
        # 0 is the plain loss exactly, and a penalty costs something only where a path repeats
        plain = _one(lp, target, device, topology=topology)
        assert torch.equal(_one(lp, target, device, topology=topology, repeat_penalty=0.0), plain)
        need = len(target) + (0 if modified else sum(a == b for a, b in zip(target, target[1:])))
        can_repeat = bool(target) and T > need  # a frame left over for a token to repeat on
        assert bool(ours < plain) == can_repeat and (can_repeat or torch.equal(ours.detach(), plain))


@DEVICES
def test_repeat_and_delay_penalties_combine(device):
    g = torch.Generator().manual_seed(12)
    for T, target in [(5, [1, 2]), (6, [2, 2]), (4, [1])]:
        lp = torch.randn(T, 3, generator=g, dtype=torch.float64).log_softmax(-1)
        x, r = lp.clone().requires_grad_(), lp.clone().requires_grad_()
        ours = _one(x, target, device, delay_penalty=0.5, repeat_penalty=1.25)
        ref = _delay_reference(r, target, 0.5, repeat_penalty=1.25)
        torch.testing.assert_close(ours, ref, atol=1e-9, rtol=1e-9)
        ours.backward()
        ref.backward()
        torch.testing.assert_close(x.grad, r.grad, atol=1e-9, rtol=1e-9)


@DEVICES
@pytest.mark.parametrize("topology", ["standard", "modified"])
def test_repeat_penalty_gradcheck_and_blank_regularization(topology, device):
    lp, targets, t_lens, u_lens, _ = _batch(6, 3, 6, 4, 2, repeats=True)
    x = lp.clone().to(device).requires_grad_()
    on = [t.to(device) for t in (targets, t_lens, u_lens)]

    def loss(a: torch.Tensor) -> torch.Tensor:
        return ctc_fst_loss(
            a.log_softmax(-1), *on, topology=topology, delay_penalty=0.3, repeat_penalty=0.5, reduction="none"
        )

    assert torch.autograd.gradcheck(loss, (x,))
    # with a uniform network, the penalty moves the posterior from repeated tokens to blank
    u = torch.full((1, 12, 4), -torch.log(torch.tensor(4.0)), dtype=torch.float64, requires_grad=True)
    tgt, tl, ul = torch.tensor([[1, 2, 3]]), torch.tensor([12]), torch.tensor([3])

    def token_frames(penalty: float) -> float:
        u.grad = None
        ctc_fst_loss(u.to(device), tgt, tl, ul, topology=topology, repeat_penalty=penalty, reduction="sum").backward()
        return float(-u.grad[0, :, 1:].sum())  # expected frames read as a token (not blank)

    assert token_frames(0.0) > token_frames(1.0) + 1.0 and token_frames(1.0) > token_frames(3.0)
    assert token_frames(3.0) > 3.0 - 1e-9  # each token still takes at least its one frame


def test_repeat_penalty_is_validated():
    lp, targets, t_lens, u_lens, _ = _batch(1, 2, 4, 3, 2)
    for bad in (-0.1, float("nan"), float("inf"), "1"):
        with pytest.raises(ValueError, match="repeat_penalty must be a finite number >= 0"):
            ctc_fst_loss(lp, targets, t_lens, u_lens, repeat_penalty=bad)
    from asr.nn.heads.ctc import CTCHead

    with pytest.raises(ValueError, match="repeat_penalty must be a finite number >= 0"):
        CTCHead(8, 5, loss="ctc_fst", repeat_penalty=-1.0)
    with pytest.raises(ValueError, match="need the FSA loss"):
        CTCHead(8, 5, loss="ctc", repeat_penalty=0.5)
    head = CTCHead(8, 5, loss="ctc_fst", repeat_penalty=0.5)
    enc, lens = torch.randn(2, 6, 8), torch.tensor([6, 5])
    tok, tl = torch.tensor([[1, 1], [2, 3]]), torch.tensor([2, 2])
    expected = ctc_fst_loss(head(enc), tok, lens, tl, repeat_penalty=0.5, reduction="sum", zero_infinity=True) / 4
    torch.testing.assert_close(head.loss(enc, lens, tok, tl)["loss"], expected)


@DEVICES
def test_gradcheck_intersect_dense(device):
    lp, targets, t_lens, u_lens, _ = _batch(4, 2, 5, 3, 2)
    graphs = ctc_graphs(targets, u_lens, 3, "modified")
    x = lp.clone().to(device).requires_grad_()
    arc_extra = (graphs.aux_labels > 0).float()
    frame_extra = torch.randn(2, 5, dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda a: intersect_dense(graphs, a, t_lens, arc_extra=arc_extra, frame_extra=frame_extra), (x,)
    )


@DEVICES
def test_shared_graph_by_index_and_float32(device):
    lp, targets, t_lens, u_lens, _ = _batch(8, 4, 12, 6, 3, dtype=torch.float32)
    one = ctc_graphs(targets[:1], u_lens[:1], 6)
    shared = intersect_dense(one, lp.to(device), t_lens).cpu()  # one graph for the whole batch
    per = intersect_dense(ctc_graphs(targets[:1].expand(4, -1), u_lens[:1].expand(4), 6), lp.to(device), t_lens).cpu()
    torch.testing.assert_close(shared, per)
    ref = -_torch_ctc(lp, targets[:1].expand(4, -1), t_lens, u_lens[:1].expand(4))
    torch.testing.assert_close(shared, ref, atol=1e-4, rtol=1e-5)
    best, arcs = (x.cpu() for x in viterbi(one, lp.to(device), t_lens))
    assert (best <= shared + 1e-5).all() and ((arcs >= 0).sum(1) == t_lens).all()


@DEVICES
def test_bad_input_errors(device):
    lp = torch.zeros(1, 4, 3, device=device).log_softmax(-1)
    with pytest.raises(RuntimeError, match="labels must be > 0"):
        ctc_fst_loss(lp, torch.tensor([[1, 0, 2]]), torch.tensor([4]), torch.tensor([3]))
    with pytest.raises(RuntimeError, match="outside the 3 log-prob columns"):
        intersect_dense(ctc_graphs(torch.tensor([[5]]), torch.tensor([1]), 6), lp, torch.tensor([4]))
    with pytest.raises(ValueError, match="topology"):
        ctc_fst_loss(lp, torch.tensor([[1]]), torch.tensor([4]), torch.tensor([1]), topology="compact")


@DEVICES
def test_backward_checks_the_graphs_it_is_given(device):
    """The backward indexes beta and the gradient by the arcs' states and labels: graphs other than
    the forward's are checked there too, with the forward's messages."""
    from asr._ext import ops
    from asr.fsa import _prepare

    lp = torch.randn(1, 5, 4, dtype=torch.float64).log_softmax(-1).to(device)
    graphs = ctc_graphs(torch.tensor([[1, 2]]), torch.tensor([2]), 4)
    args = _prepare(graphs, lp, torch.tensor([5]), None, None, None)
    total, alpha, alpha_offsets = ops().dense_intersect_forward(**args, log_probs=lp, viterbi=False)
    bad = args["arcs"].clone()
    bad[0, 1] = 1000  # a destination state outside the graph
    with pytest.raises(RuntimeError, match="has a state outside"):
        ops().dense_intersect_backward(
            **{**args, "arcs": bad},
            log_probs=lp,
            total=total,
            alpha=alpha,
            alpha_offsets=alpha_offsets,
            grad_total=torch.ones_like(total),
        )


def test_openfst_text_round_trip():
    targets, lens = torch.tensor([[3, 3, 1], [2, 0, 0]]), torch.tensor([3, 1])
    graphs = ctc_graphs(targets, lens, 4, "modified")
    for n in range(len(graphs)):
        g = graphs[n]
        text = to_openfst_text(g)
        assert from_openfst_text(text) == g
        assert to_openfst_text(from_openfst_text(text)) == text
    acc = linear_fsa(torch.tensor([[2, 5, 7]]), torch.tensor([3]))
    text = to_openfst_text(acc, acceptor=True)
    assert text.splitlines() == ["0 1 2 0", "1 2 5 0", "2 3 7 0", "3 0"]
    assert from_openfst_text(text, acceptor=True) == acc


def test_openfst_text_from_another_tool():
    # OpenFst numbering: start = first source (here 7), weights are costs, a final weight
    text = "7 3 1 1 0.5\n3 9 2 2\n7 9 2 2 1.25\n9 0.75\n"
    f = from_openfst_text(text)
    assert int(f.num_states[0]) == 4
    assert f.arcs.tolist() == [[0, 1, 1, 1], [0, 2, 2, 2], [1, 2, 2, 2], [2, 3, -1, -1]]
    assert f.scores.tolist() == [-0.5, -1.25, -0.0, -0.75]
    lp = torch.zeros(1, 2, 3, dtype=torch.float64)
    torch.testing.assert_close(
        intersect_dense(f, lp, torch.tensor([2]))[0], torch.tensor(-0.5 - 0.75, dtype=torch.float64)
    )
    with pytest.raises(ValueError, match="line 2"):
        from_openfst_text("0 1 2 3 4\n1 2 3 4 5 6\n")


def test_fsa_batch_indexing():
    targets, lens = torch.tensor([[1, 2], [2, 0]]), torch.tensor([2, 1])
    batch = linear_fsa(targets, lens)
    assert len(batch) == 2 and isinstance(batch[1], Fsa)
    assert batch[1].arcs.tolist() == [[0, 1, 2, 2], [1, 2, -1, -1]]
