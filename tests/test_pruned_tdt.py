"""Pruned TDT (issue 14): the simple loss, the prune ranges and the pruned loss.

Checked against the full tdt_loss (whole windows, the additive joiner's materialized logits) and
against pure-torch loop references (narrow windows, smoothing, arc posteriors), all in float64 with
utterance-weighted gradients; by gradcheck; padded batches against one utterance at a time; and the
windows' connectivity rule against adversarial occupancies.
"""

from __future__ import annotations

import logging

import pytest
import torch
from devices import DEVICES

from asr.losses import (
    do_rnnt_pruning,
    get_tdt_prune_ranges,
    rnnt_loss_pruned,
    tdt_arc_loss,
    tdt_loss,
    tdt_loss_pruned,
    tdt_loss_simple,
)
from asr.losses.lattice import row_softmax_and_logsumexp
from asr.losses.reference import tdt_arc_loss_reference
from asr.nn.heads import build_head
from asr.nn.heads.transducer_loss import build_transducer_loss

CASES = [([1], [0]), ([4], [2]), ([6, 3, 5], [3, 1, 0]), ([7, 7], [4, 2]), ([8, 5], [6, 4])]
DURATIONS = [((0, 1, 2, 3, 4), 0.0), ((0, 1, 2), 0.05), ((1, 2), 0.05), ((0, 1, 3), 0.1)]
V = 5


def make(ts, us, durations, seed=0):
    """am [B, T, V+D], lm [B, S+1, V+D] (float64, requiring grad), symbols [B, S], lengths, boundary."""
    g = torch.Generator().manual_seed(seed)
    b, t, s, c = len(ts), max(ts), max(us), V + len(durations)
    am = (torch.randn(b, t, c, generator=g, dtype=torch.float64) * 1.5).requires_grad_()
    lm = (torch.randn(b, s + 1, c, generator=g, dtype=torch.float64) * 1.5).requires_grad_()
    symbols = torch.randint(1, V, (b, s), generator=g)
    tl, ul = torch.tensor(ts), torch.tensor(us)
    bd = torch.zeros(b, 4, dtype=torch.int64)
    bd[:, 2], bd[:, 3] = ul, tl
    return am, lm, symbols, tl, ul, bd


def weighted_grads(loss: torch.Tensor, inputs) -> tuple[torch.Tensor, ...]:
    """Gradient of sum_b (b + 1) * loss[b] over the finite losses: each utterance keeps its own scale."""
    if not loss.requires_grad:  # a reference with no path at all: constants
        return tuple(torch.zeros_like(x) for x in inputs)
    w = torch.arange(1.0, loss.shape[0] + 1, dtype=loss.dtype)
    fin = torch.isfinite(loss)
    return torch.autograd.grad((loss[fin] * w[fin]).sum(), inputs, retain_graph=True, allow_unused=True)


def assert_same(ours: torch.Tensor, ref: torch.Tensor, inputs, atol=1e-10) -> None:
    assert torch.equal(torch.isinf(ours), torch.isinf(ref))
    fin = torch.isfinite(ref)
    assert torch.allclose(ours[fin], ref[fin], atol=atol), (ours, ref)
    for a, r in zip(weighted_grads(ours, inputs), weighted_grads(ref, inputs)):
        r = torch.zeros_like(a) if r is None else r
        assert torch.allclose(a, r, atol=atol), (a - r).abs().max()


def arcs_reference(tok_lp, dur_lp, symbols, ul, sigma, blank=0):
    """Arc rows [B, T, S+1, 2+D] from per-node token [B, T, S+1, V] and duration [B, T, S+1, D] log-probs,
    one node at a time: the next symbol's column is -inf where there is none (s >= S_b)."""
    b, t, s1, _ = tok_lp.shape
    rows = []
    for i in range(b):
        for f in range(t):
            for s in range(s1):
                nxt = tok_lp[i, f, s, int(symbols[i, s])] if s < int(ul[i]) else tok_lp.new_tensor(float("-inf"))
                rows.append(torch.cat([torch.stack([tok_lp[i, f, s, blank], nxt]) - sigma, dur_lp[i, f, s]]))
    return torch.stack(rows).reshape(b, t, s1, -1)


# ---- tdt_arc_loss: the compiled lattice on given arc log-probs --------------------------------


@DEVICES
@pytest.mark.parametrize("ts,us", CASES)
@pytest.mark.parametrize("durations", [(0, 1, 2, 3), (1, 2), (0, 2)])
def test_arc_loss_matches_reference_with_removed_arcs(ts, us, durations, device):
    g = torch.Generator().manual_seed(1)
    b, t, s = len(ts), max(ts), max(us)
    arcs = torch.randn(b, t, s + 1, 2 + len(durations), generator=g, dtype=torch.float64)
    # remove a third of the nodes and a sixth of the single entries
    arcs[torch.rand(b, t, s + 1, generator=g) < 0.3] = float("-inf")
    arcs[torch.rand(arcs.shape, generator=g) < 0.15] = float("-inf")
    arcs.requires_grad_()
    tl, ul = torch.tensor(ts), torch.tensor(us)
    ours = tdt_arc_loss(arcs.to(device), tl.to(device), ul.to(device), durations).cpu()
    ref = tdt_arc_loss_reference(arcs, tl, ul, list(durations))
    assert_same(ours, ref, (arcs,))
    # the posteriors are d log P / d arcs, and the backward that scales them is the same backward
    loss2, post = tdt_arc_loss(arcs.to(device), tl.to(device), ul.to(device), durations, return_posteriors=True)
    loss2, post = loss2.cpu(), post.cpu()
    (g_ours,) = weighted_grads(loss2, (arcs,))
    (g_ref,) = weighted_grads(ours, (arcs,))
    assert torch.allclose(g_ours, g_ref, atol=1e-12)
    (neg_post,) = torch.autograd.grad(ours[torch.isfinite(ours)].sum(), arcs)
    assert torch.allclose(post, -neg_post, atol=1e-12) and not post.requires_grad


# ---- tdt_loss_simple -----------------------------------------------------------------------------


@pytest.mark.parametrize("ts,us", CASES)
@pytest.mark.parametrize("durations,sigma", DURATIONS)
def test_simple_loss_equals_tdt_loss_of_the_additive_joiner(ts, us, durations, sigma):
    am, lm, symbols, tl, ul, bd = make(ts, us, durations)
    simple = tdt_loss_simple(lm, am, symbols, durations, boundary=bd, sigma=sigma, reduction="none")
    full = tdt_loss(am[:, :, None] + lm[:, None], symbols, tl, ul, durations, sigma=sigma, reduction="none")
    assert_same(simple, full, (am, lm))
    # return_grad changes neither the loss nor its gradient (its backward scales the posteriors)
    simple2, _ = tdt_loss_simple(
        lm, am, symbols, durations, boundary=bd, sigma=sigma, reduction="none", return_grad=True
    )
    assert_same(simple2, full, (am, lm))


@pytest.mark.parametrize("durations,sigma", DURATIONS[:3])
def test_simple_loss_smoothing_and_occupancy_match_reference(durations, sigma):
    """Smoothing mixes the joint, lm-only and am-only log-probs of tokens and durations alike; the
    occupancy at (s, t) is the posterior mass of the arcs leaving (t', s) whose span [t', t' + d)
    holds t (duration 0: t' = t), the posteriors being d log P / d (duration arc log-probs)."""
    am, lm, symbols, tl, ul, bd = make([7, 5, 4], [3, 2, 1], durations, seed=2)
    lms, ams = 0.25, 0.15
    simple, occ = tdt_loss_simple(
        lm, am, symbols, durations, boundary=bd, sigma=sigma, lm_only_scale=lms, am_only_scale=ams,
        reduction="none", return_grad=True,
    )  # fmt: skip
    d = len(durations)

    def mix(part):
        joint = (am[:, :, None, part] + lm[:, None, :, part]).log_softmax(-1)
        return (
            (1 - lms - ams) * joint
            + lms * lm[:, None, :, part].log_softmax(-1)
            + ams * am[:, :, None, part].log_softmax(-1)
        )

    arcs = arcs_reference(mix(slice(0, V)), mix(slice(V, V + d)), symbols, ul, sigma)
    ref = tdt_arc_loss_reference(arcs, tl, ul, list(durations))
    assert_same(simple, ref, (am, lm))
    arcs = arcs.detach().requires_grad_()
    (post,) = torch.autograd.grad(-tdt_arc_loss_reference(arcs, tl, ul, list(durations)).sum(), arcs)
    b, t, s1, _ = post.shape
    ref_occ = torch.zeros(b, s1, t, dtype=torch.float64)
    for i in range(b):
        for f in range(t):
            for s in range(s1):
                for k, dd in enumerate(durations):
                    for f2 in range(f, min(t, f + max(dd, 1))):
                        ref_occ[i, s, f2] += post[i, f, s, 2 + k]
    assert occ.shape == (3, s1, t) and not occ.requires_grad
    assert torch.allclose(occ, ref_occ, atol=1e-10)
    # a flow: each frame of an utterance is spanned by one arc of duration > 0 of every path
    zero = post[..., 2 + durations.index(0)].sum(2) if 0 in durations else 0  # [B, T]: duration-0 symbols
    per_frame = occ.sum(1) - zero
    for i in range(b):
        assert torch.allclose(per_frame[i, : int(tl[i])], torch.ones(int(tl[i]), dtype=torch.float64))


def test_simple_loss_lm_only_and_am_only_are_those_joiners_alone():
    am, lm, symbols, tl, ul, bd = make([6, 4], [3, 2], (0, 1, 2), seed=3)
    t, s1 = am.shape[1], lm.shape[1]
    for lms, ams, logits in (
        (1.0, 0.0, lm[:, None].expand(-1, t, -1, -1)),
        (0.0, 1.0, am[:, :, None].expand(-1, -1, s1, -1)),
    ):
        ours = tdt_loss_simple(
            lm, am, symbols, (0, 1, 2), boundary=bd, lm_only_scale=lms, am_only_scale=ams, reduction="none"
        )
        assert_same(ours, tdt_loss(logits, symbols, tl, ul, (0, 1, 2), reduction="none"), (am, lm))


# ---- tdt_loss_pruned -----------------------------------------------------------------------------


@pytest.mark.parametrize("ts,us", CASES)
@pytest.mark.parametrize("durations,sigma", DURATIONS)
@pytest.mark.parametrize("omega", [0.0, 0.3])
def test_pruned_equals_full_when_windows_cover_everything(ts, us, durations, sigma, omega):
    g = torch.Generator().manual_seed(4)
    b, t, s = len(ts), max(ts), max(us)
    logits = (torch.randn(b, t, s + 1, V + len(durations), generator=g, dtype=torch.float64) * 1.5).requires_grad_()
    symbols = torch.randint(1, V, (b, s), generator=g)
    tl, ul = torch.tensor(ts), torch.tensor(us)
    bd = torch.stack([torch.zeros_like(tl), torch.zeros_like(tl), ul, tl], 1)
    ranges = torch.arange(s + 1).expand(b, t, s + 1)
    ours = tdt_loss_pruned(logits, symbols, ranges, durations, boundary=bd, sigma=sigma, omega=omega, reduction="none")
    full = tdt_loss(logits, symbols, tl, ul, durations, sigma=sigma, omega=omega, reduction="none")
    assert_same(ours, full, (logits,))


def test_pruned_equals_full_through_the_joiner_in_float32():
    """The whole pipeline (do_rnnt_pruning, a tanh joiner) in float32, against the full joiner's tdt_loss."""
    am, lm, symbols, tl, ul, bd = make([9, 6, 7], [4, 3, 4], (0, 1, 2, 4), seed=5)
    am, lm = am.detach().float().requires_grad_(), lm.detach().float().requires_grad_()
    w = torch.randn(V + 4, V + 4, generator=torch.Generator().manual_seed(6))
    ranges = torch.arange(5).expand(3, 9, 5)
    am_p, lm_p = do_rnnt_pruning(am, lm, ranges)
    kw = {"durations": (0, 1, 2, 4), "sigma": 0.05, "omega": 0.1, "reduction": "none"}
    ours = tdt_loss_pruned(torch.tanh(am_p + lm_p) @ w, symbols, ranges, boundary=bd, **kw)
    full = tdt_loss(torch.tanh(am[:, :, None] + lm[:, None]) @ w, symbols, tl, ul, **kw)
    assert ours.dtype == torch.float32
    assert_same(ours, full, (am, lm), atol=1e-4)


def random_windows(b, t, s, r, g):
    """Random strictly increasing positions, r of 0..S per frame (not contiguous: the loss takes any)."""
    return torch.stack([torch.randperm(s + 1, generator=g)[:r].sort().values for _ in range(b * t)]).reshape(b, t, r)


@pytest.mark.parametrize("durations,sigma", DURATIONS)
def test_pruned_matches_reference_on_narrow_windows(durations, sigma):
    """Kept nodes one at a time: each (t, ranges[t, k]) reads its own row of logits; the rest has no arcs."""
    g = torch.Generator().manual_seed(7)
    ts, us, r = [7, 6, 5], [4, 3, 2], 3
    b, t, s, d = 3, 7, 4, len(durations)
    logits = (torch.randn(b, t, r, V + d, generator=g, dtype=torch.float64) * 1.5).requires_grad_()
    symbols = torch.randint(1, V, (b, s), generator=g)
    ranges = random_windows(b, t, s, r, g)
    ranges[:, 0] = torch.arange(r)  # keep (0, 0) so that some utterances have paths
    tl, ul = torch.tensor(ts), torch.tensor(us)
    bd = torch.stack([torch.zeros_like(tl), torch.zeros_like(tl), ul, tl], 1)
    ours = tdt_loss_pruned(logits, symbols, ranges, durations, boundary=bd, sigma=sigma, reduction="none")
    neg = torch.tensor(float("-inf"), dtype=torch.float64)
    tok_lp = [[[neg.expand(V)] * (s + 1) for _ in range(t)] for _ in range(b)]
    dur_lp = [[[neg.expand(d)] * (s + 1) for _ in range(t)] for _ in range(b)]
    for i in range(b):
        for f in range(t):
            for k in range(r):
                tok_lp[i][f][int(ranges[i, f, k])] = logits[i, f, k, :V].log_softmax(-1)
                dur_lp[i][f][int(ranges[i, f, k])] = logits[i, f, k, V:].log_softmax(-1)

    def stack(x):
        return torch.stack([torch.stack([torch.stack(row) for row in utt]) for utt in x])

    ref = tdt_arc_loss_reference(
        arcs_reference(stack(tok_lp), stack(dur_lp), symbols, ul, sigma), tl, ul, list(durations)
    )
    assert torch.isfinite(ref).any()
    assert_same(ours, ref, (logits,))
    # omega mixes in the pruned RNN-T loss of the token logits on the same windows
    mixed = tdt_loss_pruned(logits, symbols, ranges, durations, boundary=bd, sigma=sigma, omega=0.4, reduction="none")
    rnnt = rnnt_loss_pruned(logits[..., :V], symbols, ranges, 0, bd, reduction="none")
    fin = torch.isfinite(ours) & torch.isfinite(rnnt)
    assert torch.allclose(mixed[fin], (0.6 * ours + 0.4 * rnnt)[fin], atol=1e-10)


def test_gradcheck_tiny():
    am, lm, symbols, tl, ul, bd = make([4, 3], [2, 1], (0, 1, 2), seed=8)
    assert torch.autograd.gradcheck(
        lambda a, b: tdt_loss_simple(
            b, a, symbols, (0, 1, 2), boundary=bd, sigma=0.1, lm_only_scale=0.2, reduction="sum"
        ),
        (am, lm),
    )
    g = torch.Generator().manual_seed(9)
    logits = torch.randn(2, 4, 2, V + 3, generator=g, dtype=torch.float64, requires_grad=True)
    ranges = torch.tensor([[[0, 1], [0, 1], [1, 2], [1, 2]], [[0, 1], [0, 1], [0, 1], [0, 1]]])
    assert torch.isfinite(tdt_loss_pruned(logits, symbols, ranges, (0, 1, 2), boundary=bd, reduction="none")).all()
    assert torch.autograd.gradcheck(
        lambda x: tdt_loss_pruned(x, symbols, ranges, (0, 1, 2), boundary=bd, sigma=0.1, omega=0.2, reduction="sum"),
        (logits,),
    )


def test_pruned_backward_twice_and_softmax_into_column_slices():
    """The forward's softmax buffer is used up by the first backward; a second one (retain_graph)
    recomputes it. row_softmax_and_logsumexp fills a column slice of a buffer correctly
    (aten::_softmax.out alone writes such an out as if it were contiguous)."""
    g = torch.Generator().manual_seed(16)
    logits = torch.randn(2, 5, 3, V + 3, generator=g, dtype=torch.float64, requires_grad=True)
    symbols = torch.randint(1, V, (2, 4), generator=g)
    ranges = torch.tensor([0, 1, 2]).expand(2, 5, 3) + torch.tensor([0, 0, 1, 2, 2])[None, :, None]
    loss = tdt_loss_pruned(logits, symbols, ranges, (0, 1, 2), sigma=0.1, reduction="sum")
    (g1,) = torch.autograd.grad(loss, logits, retain_graph=True)
    (g2,) = torch.autograd.grad(loss, logits)
    assert torch.isfinite(loss) and torch.equal(g1, g2)
    x = torch.randn(7, 9, generator=g, dtype=torch.float64)
    out = torch.zeros_like(x)
    lse = row_softmax_and_logsumexp(x[:, 2:], out[:, 2:])
    assert torch.allclose(out[:, 2:], x[:, 2:].softmax(-1)) and (out[:, :2] == 0).all()
    assert torch.allclose(lse, x[:, 2:].logsumexp(-1))


# ---- get_tdt_prune_ranges --------------------------------------------------------------------


@pytest.mark.parametrize("durations", [(0, 1, 2, 3, 4), (0, 1, 4), (1, 2, 3), (1,)])
def test_windows_from_the_simple_loss_keep_paths_and_lose_probability(durations):
    torch.manual_seed(10)
    b, t, s, d = 3, 24, 10, len(durations)
    am = torch.randn(b, t, V + d, dtype=torch.float64) * 2
    lm = torch.randn(b, s + 1, V + d, dtype=torch.float64) * 2
    symbols = torch.randint(1, V, (b, s))
    bd = torch.tensor([[0, 0, s, t], [0, 0, 7, 19], [0, 0, 3, 8]])
    _, occ = tdt_loss_simple(lm, am, symbols, durations, boundary=bd, return_grad=True)
    logits = am[:, :, None] + lm[:, None]
    full = tdt_loss(logits, symbols, bd[:, 3], bd[:, 2], durations, reduction="none")
    for s_range in (2, 3, 5):
        ranges = get_tdt_prune_ranges(occ, bd, s_range, durations)
        assert ranges.shape == (b, t, s_range)
        begin = ranges[:, :, 0]
        assert (begin[:, 0] == 0).all() and (begin[:, 1:] >= begin[:, :-1]).all()
        assert (begin[:, 1:] - begin[:, :-1] <= (s_range - 1 if 0 in durations else 1)).all()
        for i in range(b):
            assert ranges[i, int(bd[i, 3]) - 1, -1] >= bd[i, 2]  # the last frame reaches S_b
        pruned_logits = torch.gather(logits, 2, ranges[..., None].expand(-1, -1, -1, V + d))
        pruned = tdt_loss_pruned(pruned_logits, symbols, ranges, durations, boundary=bd, omega=0.2, reduction="none")
        assert torch.isfinite(pruned).all()
        plain = tdt_loss_pruned(pruned_logits, symbols, ranges, durations, boundary=bd, reduction="none")
        assert (plain >= full - 1e-9).all()  # fewer paths, less probability
    # the windows follow the mass: at s_range 5 they keep most of it
    assert (plain - full < 0.5).all(), plain - full


@pytest.mark.parametrize("durations", [(0, 1), (0, 1, 2, 3, 4), (1, 2), (1, 3)])
@pytest.mark.parametrize("t,s", [(6, 5), (9, 4), (5, 9), (12, 11)])
def test_windows_hold_a_path_whatever_the_occupancies(durations, t, s):
    """The documented rule: random (adversarial) occupancies still give windows with a path
    whenever the full lattice has one (durations with 0: widened as needed; without: S_b <= T_b - 1)."""
    g = torch.Generator().manual_seed(t * 100 + s)
    b, d = 8, len(durations)
    s_len = torch.randint(0, s + 1, (b,), generator=g)
    s_len[0] = s
    t_len = torch.randint(1, t + 1, (b,), generator=g)
    t_len[0] = t
    bd = torch.stack([torch.zeros_like(s_len), torch.zeros_like(s_len), s_len, t_len], 1)
    symbols = torch.randint(1, V, (b, s), generator=g)
    for trial in range(4):
        occ = torch.rand(b, s + 1, t, generator=g) ** 8  # peaky: the argmax windows jump around
        for s_range in (1, 2, 3):
            ranges = get_tdt_prune_ranges(occ, bd, s_range, durations)
            logits = torch.randn(b, t, ranges.shape[2], V + d, generator=g, dtype=torch.float64)
            pruned = tdt_loss_pruned(logits, symbols, ranges, durations, boundary=bd, reduction="none")
            full_logits = torch.zeros(b, t, s + 1, V + d, dtype=torch.float64)
            full = tdt_loss(full_logits, symbols, t_len, s_len, durations, reduction="none")
            assert torch.equal(torch.isfinite(pruned), torch.isfinite(full)), (trial, s_range, ranges[:, :, 0])


def test_durations_without_one_are_rejected():
    am, lm, symbols, tl, ul, bd = make([6], [2], (0, 2))
    _, occ = tdt_loss_simple(lm, am, symbols, (0, 2), boundary=bd, return_grad=True)
    with pytest.raises(ValueError, match="needs duration 1"):
        get_tdt_prune_ranges(occ, bd, 3, (0, 2))
    with pytest.raises(ValueError, match="pruned TDT needs duration 1 among the durations"):
        build_transducer_loss({"kind": "pruned_tdt", "durations": [0, 2, 4]}, 8, 6, V)


# ---- batches, edge cases, arguments -------------------------------------------------------------


def test_padded_batch_equals_one_utterance_at_a_time():
    durations = (0, 1, 2, 3)
    am, lm, symbols, tl, ul, bd = make([9, 6, 7], [5, 3, 2], durations, seed=11)
    simple, occ = tdt_loss_simple(
        lm, am, symbols, durations, boundary=bd, sigma=0.05, reduction="none", return_grad=True
    )
    ranges = get_tdt_prune_ranges(occ, bd, 2, durations)
    g = torch.Generator().manual_seed(12)
    logits = torch.randn(3, 9, 2, V + 4, generator=g, dtype=torch.float64, requires_grad=True)
    kw = {"sigma": 0.05, "omega": 0.2, "reduction": "none"}
    pruned = tdt_loss_pruned(logits, symbols, ranges, durations, boundary=bd, **kw)
    g_am, g_lm, g_logits = weighted_grads(simple + pruned, (am, lm, logits))
    for i, (t, s) in enumerate(zip(tl.tolist(), ul.tolist())):
        a, m, x = (y[i : i + 1].detach().requires_grad_() for y in (am[:, :t], lm[:, : s + 1], logits[:, :t]))
        sym = symbols[i : i + 1, :s]
        one, occ1 = tdt_loss_simple(m, a, sym, durations, sigma=0.05, reduction="none", return_grad=True)
        one_p = tdt_loss_pruned(x, sym, ranges[i : i + 1, :t], durations, **kw)
        assert torch.allclose(one, simple[i], atol=1e-10) and torch.allclose(one_p, pruned[i], atol=1e-10)
        assert torch.allclose(occ1[0], occ[i, : s + 1, :t], atol=1e-10)
        ga, gm, gl = torch.autograd.grad((one + one_p).sum() * (i + 1), (a, m, x))
        assert torch.allclose(ga[0], g_am[i, :t], atol=1e-10) and torch.allclose(gm[0], g_lm[i, : s + 1], atol=1e-10)
        assert torch.allclose(gl[0], g_logits[i, :t], atol=1e-10)
        # padding gets no gradient
        assert g_am[i, t:].abs().sum() == 0 and g_lm[i, s + 1 :].abs().sum() == 0 and g_logits[i, t:].abs().sum() == 0


def test_impossible_utterance_and_zero_infinity(caplog):
    # 3 symbols need 3 landing frames < T when each takes a frame: T = 3 is one short with durations (1, 2)
    am, lm, symbols, tl, ul, bd = make([3, 6], [3, 2], (1, 2), seed=13)
    loss = tdt_loss_simple(lm, am, symbols, (1, 2), boundary=bd, reduction="none")
    assert torch.isinf(loss[0]) and torch.isfinite(loss[1])
    logits = (am[:, :, None] + lm[:, None]).detach().requires_grad_()
    ranges = torch.arange(4).expand(2, 6, 4)
    with caplog.at_level(logging.WARNING):
        z = tdt_loss_pruned(logits, symbols, ranges, (1, 2), boundary=bd, reduction="none", zero_infinity=True)
    assert z[0] == 0 and torch.isfinite(z[1]) and "1 utterance(s) have no alignment" in caplog.text
    (g,) = torch.autograd.grad(z.sum(), logits)
    assert g[0].abs().sum() == 0 and torch.isfinite(g).all() and g[1].abs().sum() > 0


def test_bad_arguments():
    am, lm, symbols, tl, ul, bd = make([5], [2], (0, 1))
    logits = torch.randn(1, 5, 2, V + 2, dtype=torch.float64)
    ranges = torch.tensor([0, 1]).expand(1, 5, 2)
    with pytest.raises(ValueError, match="strictly increasing"):
        tdt_loss_pruned(logits, symbols, torch.zeros_like(ranges), (0, 1))
    with pytest.raises(ValueError, match="symbol positions"):
        tdt_loss_pruned(logits, symbols, ranges + 2, (0, 1))
    with pytest.raises(ValueError, match="start at"):
        tdt_loss_pruned(logits, symbols, ranges, (0, 1), boundary=torch.tensor([[0, 1, 2, 5]]))
    with pytest.raises(ValueError, match="blank may not take duration 0"):
        tdt_loss_simple(lm[..., :-1], am[..., :-1], symbols, (0,))
    with pytest.raises(ValueError, match="contain the blank"):
        tdt_loss_simple(lm, am, torch.zeros_like(symbols), (0, 1))


# ---- the head's loss strategy ----------------------------------------------------------------------


def test_pruned_tdt_head_with_full_range_equals_full_tdt():
    """With prune_range >= U+1 and no simple loss the head's loss is tdt_loss of the same joint."""
    torch.manual_seed(14)
    spec = {"kind": "pruned_tdt", "durations": [0, 1, 2], "sigma": 0.05, "omega": 0.1, "prune_range": 10}
    head = build_head("transducer", 16, V, loss={**spec, "simple_loss_scale": 0.0}, pred_dim=12, joint_dim=20).eval()
    assert head.durations == (0, 1, 2) and head.joint.out.out_features == V + 3
    assert head.criterion.simple_am.out_features == V + 3
    enc = torch.randn(3, 12, 16)
    enc_lens, target_lens = torch.tensor([12, 10, 7]), torch.tensor([5, 3, 2])
    targets = torch.randint(1, V, (3, 5))
    out = head.loss(enc, enc_lens, targets, target_lens, step=10**6)
    full = tdt_loss(
        head.joint(enc, head.predict(targets)), targets, enc_lens, target_lens, (0, 1, 2), sigma=0.05, omega=0.1,
        reduction="sum",
    )  # fmt: skip
    assert torch.allclose(out["loss"], full / target_lens.sum(), atol=1e-4)
    assert torch.allclose(out["pruned"], out["loss"]) and set(out) == {"loss", "simple", "pruned"}


def test_pruned_tdt_head_trains_and_warms_up_like_pruned_rnnt():
    torch.manual_seed(15)
    spec = {"kind": "pruned_tdt", "durations": [0, 1, 2, 3], "prune_range": 3, "warmup_steps": 100}
    head = build_head("transducer", 16, V, loss=spec, pred_dim=12, joint_dim=20)
    rnnt = build_transducer_loss({"kind": "pruned_rnnt", "warmup_steps": 100}, 16, 12, V)
    assert all(head.criterion.loss_scales(k) == rnnt.loss_scales(k) for k in (0, 30, 100, 1000))
    enc = torch.randn(2, 15, 16, requires_grad=True)
    out = head.loss(enc, torch.tensor([15, 11]), torch.randint(1, V, (2, 6)), torch.tensor([6, 4]), step=50)
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and enc.grad.abs().sum() > 0
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in head.parameters())
