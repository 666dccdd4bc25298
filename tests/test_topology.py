"""Transducer topologies (regular, modified, constrained, rna) for the full, simple and pruned losses.

Every loss is checked against a brute-force sum over the alignments enumerated one by one from
each topology's definition (asr.losses.reference.transducer_paths_reference), values and
gradients in float64; the pruned loss with windows from get_rnnt_prune_ranges must keep a path
for every topology and window score.
"""

from __future__ import annotations

import math

import pytest
import torch

from asr.losses import rnnt_loss
from asr.losses.pruned_rnnt import (
    do_rnnt_pruning,
    get_rnnt_prune_ranges,
    rnnt_loss_pruned,
    rnnt_loss_simple,
)
from asr.losses.reference import frame_paths, rnnt_paths, transducer_paths_reference
from asr.losses.topology import TOPOLOGIES, min_prune_range

ONE_PER_FRAME = ("modified", "constrained", "rna")


def batch(lengths, v=5, seed=0):
    """Padded float64 logits [B, T, U+1, V] and targets (no blank) for (T_b, U_b) pairs."""
    g = torch.Generator().manual_seed(seed)
    t_max = max(t for t, _ in lengths)
    u_max = max(u for _, u in lengths)
    logits = torch.randn(len(lengths), t_max, u_max + 1, v, generator=g, dtype=torch.float64)
    targets = torch.randint(1, v, (len(lengths), max(u_max, 1)), generator=g)
    t_len = torch.tensor([t for t, _ in lengths])
    u_len = torch.tensor([u for _, u in lengths])
    return logits, targets, t_len, u_len


def reference(logits, targets, t_len, u_len, rnnt_type):
    out = []
    for b in range(logits.shape[0]):
        t, u = int(t_len[b]), int(u_len[b])
        lp = logits[b, :t, : u + 1].log_softmax(-1)
        out.append(transducer_paths_reference(lp, targets[b, :u].tolist(), rnnt_type))
    return torch.stack(out)


def pack(logits, t_len, u_len):
    return torch.cat([logits[b, : t_len[b], : u_len[b] + 1].reshape(-1, logits.shape[-1]) for b in range(len(t_len))])


LENGTHS = [(4, 2), (3, 3), (5, 1), (2, 0), (3, 1)]


@pytest.mark.parametrize("rnnt_type", TOPOLOGIES)
def test_full_loss_and_gradient_equal_the_enumerated_alignments(rnnt_type):
    logits, targets, t_len, u_len = batch(LENGTHS)
    x = logits.clone().requires_grad_()
    loss = rnnt_loss(x, targets, t_len, u_len, rnnt_type=rnnt_type, reduction="none")
    y = logits.clone().requires_grad_()
    ref = reference(y, targets, t_len, u_len, rnnt_type)
    torch.testing.assert_close(loss, ref)
    loss.sum().backward()
    ref.sum().backward()
    torch.testing.assert_close(x.grad, y.grad)
    if rnnt_type != "regular":
        assert bool(loss[1] < ref.new_tensor(float("inf")))  # U = T: the one path emitting on every frame


@pytest.mark.parametrize("rnnt_type", ONE_PER_FRAME)
def test_one_output_per_frame_topologies_have_no_path_when_u_exceeds_t(rnnt_type):
    logits, targets, t_len, u_len = batch([(2, 3), (4, 2)])
    loss = rnnt_loss(logits, targets, t_len, u_len, rnnt_type=rnnt_type, reduction="none")
    assert torch.isinf(loss[0]) and torch.isfinite(loss[1])
    x = logits.clone().requires_grad_()
    rnnt_loss(x, targets, t_len, u_len, rnnt_type=rnnt_type, zero_infinity=True).backward()
    assert bool(torch.isfinite(x.grad).all()) and bool((x.grad[0] == 0).all())


@pytest.mark.parametrize("rnnt_type", ONE_PER_FRAME)
def test_packed_and_log_prob_inputs_give_the_padded_result(rnnt_type):
    logits, targets, t_len, u_len = batch(LENGTHS, seed=1)
    padded = rnnt_loss(logits, targets, t_len, u_len, rnnt_type=rnnt_type, reduction="none")
    packed = rnnt_loss(pack(logits, t_len, u_len), targets, t_len, u_len, rnnt_type=rnnt_type, reduction="none")
    torch.testing.assert_close(packed, padded)
    lp = rnnt_loss(logits.log_softmax(-1), targets, t_len, u_len, rnnt_type=rnnt_type, fused_log_softmax=False)
    torch.testing.assert_close(lp, padded.mean())


def test_rna_is_the_modified_lattice_and_constrained_costs_more():
    logits, targets, t_len, u_len = batch(LENGTHS, seed=2)
    loss = {k: rnnt_loss(logits, targets, t_len, u_len, rnnt_type=k, reduction="none") for k in TOPOLOGIES}
    torch.testing.assert_close(loss["rna"], loss["modified"], rtol=0, atol=0)
    # the forced blank after each symbol only multiplies path probabilities by numbers < 1
    has_symbols = u_len > 0
    assert bool((loss["constrained"][has_symbols] > loss["modified"][has_symbols]).all())


def test_clamp_and_unknown_topologies_are_rejected():
    logits, targets, t_len, u_len = batch(LENGTHS)
    with pytest.raises(ValueError, match="clamp"):
        rnnt_loss(logits, targets, t_len, u_len, rnnt_type="modified", clamp=1.0)
    with pytest.raises(ValueError, match="rnnt_type"):
        rnnt_loss(logits, targets, t_len, u_len, rnnt_type="monotone")


def simple_inputs(lengths, c=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    b = len(lengths)
    t_max = max(t for t, _ in lengths)
    u_max = max(u for _, u in lengths)
    lm = torch.randn(b, u_max + 1, c, generator=g, dtype=torch.float64)
    am = torch.randn(b, t_max, c, generator=g, dtype=torch.float64)
    symbols = torch.randint(1, c, (b, u_max), generator=g)
    bd = torch.zeros(b, 4, dtype=torch.int64)
    bd[:, 2] = torch.tensor([u for _, u in lengths])
    bd[:, 3] = torch.tensor([t for t, _ in lengths])
    return lm, am, symbols, bd


@pytest.mark.parametrize("rnnt_type", TOPOLOGIES)
def test_simple_loss_equals_the_enumerated_alignments_of_its_joiner(rnnt_type):
    lengths = [(4, 2), (3, 3), (5, 1)]
    lm, am, symbols, bd = simple_inputs(lengths)
    simple = rnnt_loss_simple(lm, am, symbols, 0, bd, rnnt_type=rnnt_type, reduction="none")
    logits = lm[:, None] + am[:, :, None]  # [B, T, U+1, C], materialized only here
    ref = reference(logits, symbols, bd[:, 3], bd[:, 2], rnnt_type)
    torch.testing.assert_close(simple, ref)


@pytest.mark.parametrize("rnnt_type", TOPOLOGIES)
def test_pruned_loss_with_every_position_kept_is_the_full_loss(rnnt_type):
    lengths = [(4, 2), (3, 3), (5, 1), (3, 0)]
    logits, targets, t_len, u_len = batch(lengths, seed=3)
    s1 = logits.shape[2]
    ranges = torch.arange(s1).expand(len(lengths), logits.shape[1], s1).clone()
    bd = torch.zeros(len(lengths), 4, dtype=torch.int64)
    bd[:, 2], bd[:, 3] = u_len, t_len
    x = logits.clone().requires_grad_()
    pruned = rnnt_loss_pruned(x, targets, ranges, 0, bd, rnnt_type=rnnt_type, reduction="none")
    y = logits.clone().requires_grad_()
    full = rnnt_loss(y, targets, t_len, u_len, rnnt_type=rnnt_type, reduction="none")
    torch.testing.assert_close(pruned, full)
    pruned.sum().backward()
    full.sum().backward()
    torch.testing.assert_close(x.grad, y.grad)


@pytest.mark.parametrize("score", ["occupancy", "paper"])
@pytest.mark.parametrize("rnnt_type", TOPOLOGIES)
def test_prune_ranges_keep_a_path_for_every_topology(rnnt_type, score):
    """Long random lattices with the narrowest windows: the pruned loss stays finite and above the full one.

    One-output-per-frame windows must not move more than one position per frame: with
    s_range 4 a window that jumped 3 positions would leave a path at its bottom behind.
    """
    g = torch.Generator().manual_seed(7)
    for trial in range(6):
        b, t, s = 3, 40, 25
        t_len = torch.tensor([t, 31, 26])
        s_len = torch.tensor([s, 25, 26 if rnnt_type == "regular" else 24])
        bd = torch.stack([torch.zeros(b, dtype=torch.int64), torch.zeros(b, dtype=torch.int64), s_len, t_len], 1)
        c = 8
        lm = 3 * torch.randn(b, s + 2, c, generator=g, dtype=torch.float64)
        am = 3 * torch.randn(b, t, c, generator=g, dtype=torch.float64)
        symbols = torch.randint(1, c, (b, s + 1), generator=g)
        _, (px_grad, py_grad) = rnnt_loss_simple(lm, am, symbols, 0, bd, rnnt_type=rnnt_type, return_grad=True)
        for s_range in (min_prune_range(bd, rnnt_type), 4):
            ranges = get_rnnt_prune_ranges(px_grad, py_grad, bd, s_range, rnnt_type=rnnt_type, score=score)
            am_p, lm_p = do_rnnt_pruning(am, lm, ranges)
            pruned = rnnt_loss_pruned(am_p + lm_p, symbols, ranges, 0, bd, rnnt_type=rnnt_type, reduction="none")
            full = rnnt_loss(lm[:, None] + am[:, :, None], symbols, t_len, s_len, rnnt_type=rnnt_type, reduction="none")
            assert bool(torch.isfinite(pruned).all()), (trial, s_range, pruned)
            assert bool((pruned >= full - 1e-9).all())


def test_constrained_needs_two_positions_and_named_topologies_must_match_the_shapes():
    lm, am, symbols, bd = simple_inputs([(6, 3), (5, 5)])
    _, (px_grad, py_grad) = rnnt_loss_simple(lm, am, symbols, 0, bd, rnnt_type="constrained", return_grad=True)
    assert min_prune_range(bd, "constrained") == 2
    assert get_rnnt_prune_ranges(px_grad, py_grad, bd, 1, rnnt_type="constrained").shape[2] == 2
    with pytest.raises(ValueError, match="shape"):
        get_rnnt_prune_ranges(px_grad, py_grad, bd, 2, rnnt_type="regular")
    with pytest.raises(ValueError, match="score"):
        get_rnnt_prune_ranges(px_grad, py_grad, bd, 2, rnnt_type="constrained", score="best")


@pytest.mark.parametrize("rnnt_type", ONE_PER_FRAME)
def test_one_output_per_frame_windows_follow_a_path_where_the_mass_jumps(rnnt_type):
    """Occupancy that jumps from position 0 to 6 between frames 0 and 1 (as a poor simple joiner's
    may): a path of these topologies is still at 0 or 1 on frame 1, so the window may move only one
    position per frame, or the pruned lattice has no path (+inf loss)."""
    b, s, t, s_range = 1, 8, 10, 4
    bd = torch.tensor([[0, 0, s, t]])
    py_grad = torch.zeros(b, s + 1, t, dtype=torch.float64)
    px_grad = torch.zeros(b, s, t, dtype=torch.float64)
    py_grad[0, 0, 0] = 1.0
    py_grad[0, 6, 1:] = 1.0
    ranges = get_rnnt_prune_ranges(px_grad, py_grad, bd, s_range, rnnt_type=rnnt_type)
    begin = ranges[0, :, 0]
    assert int((begin[1:] - begin[:-1]).max()) <= 1 and int(begin[-1]) >= s + 1 - s_range
    logits, targets, _, _ = batch([(t, s)], seed=4)
    pruned_logits = torch.gather(logits, 2, ranges[..., None].expand(b, t, s_range, logits.shape[-1]))
    loss = rnnt_loss_pruned(pruned_logits, targets, ranges, 0, bd, rnnt_type=rnnt_type)
    assert bool(torch.isfinite(loss))


def test_window_scores_match_their_definitions():
    """occupancy: sum over the window of blank + symbol posteriors leaving each node; paper (Kuang et
    al. 2022, 3.2): blank posteriors in the window minus the symbol arc entering its first position."""
    from asr.losses.pruned_rnnt import _window_scores

    lm, am, symbols, bd = simple_inputs([(6, 4), (5, 3)], seed=9)
    _, (px_grad, py_grad) = rnnt_loss_simple(lm, am, symbols, 0, bd, return_grad=True)
    r = 3
    occ = _window_scores(px_grad, py_grad, r, "occupancy")
    paper = _window_scores(px_grad, py_grad, r, "paper")
    b, s1, t = py_grad.shape
    for i in range(b):
        for s in range(s1 + 1 - r):
            for f in range(t):
                node = sum(
                    float(py_grad[i, k, f]) + (float(px_grad[i, k, f]) if k < s1 - 1 else 0) for k in range(s, s + r)
                )
                blank = sum(float(py_grad[i, k, f]) for k in range(s, s + r))
                entering = float(px_grad[i, s - 1, f]) if s > 0 else 0.0
                assert abs(float(occ[i, s, f]) - node) < 1e-9
                assert abs(float(paper[i, s, f]) - (blank - entering)) < 1e-9


def test_the_path_enumerators_give_every_path_once():
    """rnnt_paths: C(T+U-1, U) paths of T blanks and U labels, the last arc a blank, none when
    T = 0 (the final blank needs a frame); frame_paths: C(T, U) paths of T arcs, one a frame
    (none when U > T; the empty path when T = U = 0)."""
    for T in range(5):
        for U in range(4):
            regular, per_frame = rnnt_paths(T, U), frame_paths(T, U)
            assert len(regular) == (math.comb(T + U - 1, U) if T else 0)
            assert len(per_frame) == math.comb(T, U)
            if T == 0:
                continue  # at most the empty path
            for paths, n_arcs in ((regular, T + U), (per_frame, T)):
                assert len({tuple(p) for p in paths}) == len(paths)
                for arcs in paths:
                    assert len(arcs) == n_arcs and sum(label for _, _, label in arcs) == U
                    t, u, label = arcs[-1]
                    assert (t, u + label) == (T - 1, U)
            assert all(not p[-1][2] for p in regular)
            assert all([t for t, _, _ in p] == list(range(T)) for p in per_frame)
