"""Mutual-information recursion and pruned RNN-T against references and the full loss."""
from __future__ import annotations

import logging

import pytest
import torch

from asr.losses import rnnt_loss
from asr.losses.mutual_information import mutual_information_recursion
from asr.losses.pruned_rnnt import (do_rnnt_pruning, get_rnnt_prune_ranges, rnnt_loss_pruned, rnnt_loss_simple,
                                    rnnt_loss_smoothed)
from asr.losses.reference import mutual_information_reference


def rand_px_py(b, s, t, modified, seed=0):
    g = torch.Generator().manual_seed(seed)
    px = torch.randn(b, s, t if modified else t + 1, generator=g, dtype=torch.float64)
    py = torch.randn(b, s + 1, t, generator=g, dtype=torch.float64)
    return px.requires_grad_(), py.requires_grad_()


@pytest.mark.parametrize("modified", [False, True])
@pytest.mark.parametrize("b,s,t,bounds", [
    (1, 0, 1, [(0, 0, 0, 1)]),
    (1, 3, 1, [(0, 0, 3, 1)]),
    (2, 3, 5, [(0, 0, 3, 5), (0, 0, 1, 4)]),
    (3, 4, 6, [(0, 0, 4, 6), (1, 2, 3, 5), (0, 0, 2, 2)]),
])
def test_mutual_information_matches_reference(b, s, t, bounds, modified):
    px, py = rand_px_py(b, s, t, modified)
    bd = torch.tensor(bounds)
    ans = mutual_information_recursion(px, py, bd)
    ref = mutual_information_reference(px, py, bd)
    finite = torch.isfinite(ref)
    assert torch.equal(torch.isfinite(ans), finite)
    assert torch.allclose(ans[finite], ref[finite], atol=1e-10)
    w = torch.arange(1.0, b + 1, dtype=torch.float64)
    if finite.any():
        g_ours = torch.autograd.grad((ans[finite] * w[finite]).sum(), (px, py))
        g_ref = torch.autograd.grad((ref[finite] * w[finite]).sum(), (px, py), allow_unused=True)
        for a, r in zip(g_ours, g_ref):
            assert torch.allclose(a, torch.zeros_like(a) if r is None else r, atol=1e-10)  # px is empty when S=0


def test_modified_is_impossible_when_t_shorter_than_s():
    px, py = rand_px_py(1, 4, 3, modified=True)
    assert torch.isinf(mutual_information_recursion(px, py)).all()


@pytest.mark.parametrize("modified", [False, True])
def test_mutual_information_gradcheck_and_return_grad(modified):
    px, py = rand_px_py(2, 2, 3, modified, seed=1)
    assert torch.autograd.gradcheck(lambda a, b: mutual_information_recursion(a, b), (px, py))
    ans, (gx, gy) = mutual_information_recursion(px, py, return_grad=True)
    ref_gx, ref_gy = torch.autograd.grad(mutual_information_recursion(px, py).sum(), (px, py))
    assert torch.allclose(gx, ref_gx) and torch.allclose(gy, ref_gy)


def make_transducer(b=3, t=7, s=4, c=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    am = torch.randn(b, t, c, generator=g, dtype=torch.float64).requires_grad_()
    lm = torch.randn(b, s + 1, c, generator=g, dtype=torch.float64).requires_grad_()
    symbols = torch.randint(1, c, (b, s), generator=g)
    t_len = torch.tensor([t, t - 2, 3][:b])
    s_len = torch.tensor([s, s - 1, 2][:b])
    bd = torch.zeros(b, 4, dtype=torch.int64)
    bd[:, 2], bd[:, 3] = s_len, t_len
    return am, lm, symbols, t_len, s_len, bd


def assert_same_loss_and_grads(ours: torch.Tensor, ref: torch.Tensor, inputs: tuple[torch.Tensor, ...]) -> None:
    assert torch.allclose(ours, ref, atol=1e-10)
    g_ours = torch.autograd.grad(ours.sum(), inputs, retain_graph=True)
    g_ref = torch.autograd.grad(ref.sum(), inputs, retain_graph=True)
    for a, r in zip(g_ours, g_ref):
        assert torch.allclose(a, r, atol=1e-10)


def test_simple_loss_equals_full_rnnt_loss_of_the_additive_joiner():
    am, lm, symbols, t_len, s_len, bd = make_transducer()
    simple = rnnt_loss_simple(lm, am, symbols, 0, bd, reduction="none")
    full = rnnt_loss(am[:, :, None, :] + lm[:, None, :, :], symbols, t_len, s_len, reduction="none")
    assert_same_loss_and_grads(simple, full, (am, lm))
    # with return_grad the loss and its gradient are unchanged, and the occupancies equal autograd's
    simple2, (gx, gy) = rnnt_loss_simple(lm, am, symbols, 0, bd, reduction="none", return_grad=True)
    assert_same_loss_and_grads(simple2, full, (am, lm))
    assert gx.requires_grad is False and torch.isfinite(gx).all() and torch.isfinite(gy).all()


def test_smoothed_loss_interpolates_log_probs():
    am, lm, symbols, t_len, s_len, bd = make_transducer()
    plain = rnnt_loss_simple(lm, am, symbols, 0, bd, reduction="none")
    same = rnnt_loss_smoothed(lm, am, symbols, 0, lm_only_scale=0.0, am_only_scale=0.0, boundary=bd, reduction="none")
    assert torch.allclose(plain, same, atol=1e-10)
    # all weight on the am-only distribution = the full loss of the am alone as joiner
    am_only = rnnt_loss_smoothed(lm, am, symbols, 0, lm_only_scale=0.0, am_only_scale=1.0, boundary=bd,
                                 reduction="none")
    ref = rnnt_loss(am[:, :, None, :].expand(-1, -1, lm.shape[1], -1), symbols, t_len, s_len, reduction="none")
    assert torch.allclose(am_only, ref, atol=1e-10)
    mixed = rnnt_loss_smoothed(lm, am, symbols, 0, lm_only_scale=0.25, am_only_scale=0.0, boundary=bd)
    mixed.backward()
    assert torch.isfinite(mixed) and torch.isfinite(lm.grad).all()


def joiner(am_x: torch.Tensor, lm_x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return torch.tanh(am_x + lm_x) @ w


@pytest.mark.parametrize("rnnt_type", ["regular", "modified"])
def test_pruned_equals_full_when_window_covers_everything(rnnt_type):
    am, lm, symbols, t_len, s_len, bd = make_transducer()
    w = torch.randn(6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    _, (gx, gy) = rnnt_loss_simple(lm, am, symbols, 0, bd, rnnt_type=rnnt_type, return_grad=True)
    s_range = symbols.shape[1] + 1
    ranges = get_rnnt_prune_ranges(gx, gy, bd, s_range)
    am_p, lm_p = do_rnnt_pruning(am, lm, ranges)
    pruned = rnnt_loss_pruned(joiner(am_p, lm_p, w), symbols, ranges, 0, bd, rnnt_type=rnnt_type, reduction="none")
    full_logits = joiner(am[:, :, None, :], lm[:, None, :, :], w)
    if rnnt_type == "regular":
        ref = rnnt_loss(full_logits, symbols, t_len, s_len, reduction="none")
    else:  # the same recursion without pruning (the full loss has no modified topology)
        ref = rnnt_loss_pruned(full_logits, symbols, torch.arange(s_range).expand(3, 7, s_range), 0, bd,
                               rnnt_type="modified", reduction="none")
    assert_same_loss_and_grads(pruned, ref, (am, lm))


def test_pruning_removes_paths_and_ranges_are_well_formed():
    torch.manual_seed(0)
    b, t, s, c = 2, 30, 12, 8
    am = torch.randn(b, t, c, dtype=torch.float64) * 2
    lm = torch.randn(b, s + 1, c, dtype=torch.float64) * 2
    symbols = torch.randint(1, c, (b, s))
    bd = torch.tensor([[0, 0, s, t], [0, 0, 9, 22]])
    _, (gx, gy) = rnnt_loss_simple(lm, am, symbols, 0, bd, return_grad=True)
    w = torch.eye(c, dtype=torch.float64)
    full = rnnt_loss_pruned(joiner(am[:, :, None], lm[:, None], w), symbols,
                            torch.arange(s + 1).expand(b, t, s + 1), 0, bd, reduction="none")
    for s_range in (2, 4):
        ranges = get_rnnt_prune_ranges(gx, gy, bd, s_range)
        assert ranges.shape == (b, t, s_range)
        begin = ranges[:, :, 0]
        assert (begin[:, 0] == 0).all()
        assert (begin[:, 1:] >= begin[:, :-1]).all()  # never moves back
        assert (begin[:, 1:] - begin[:, :-1] <= s_range - 1).all()  # windows overlap
        for i in range(b):
            assert ranges[i, int(bd[i, 3]) - 1, -1] >= bd[i, 2]  # last frame reaches S_b
        am_p, lm_p = do_rnnt_pruning(am, lm, ranges)
        pruned = rnnt_loss_pruned(joiner(am_p, lm_p, w), symbols, ranges, 0, bd, reduction="none")
        assert torch.isfinite(pruned).all()
        assert (pruned >= full - 1e-9).all()  # fewer paths, less probability


def test_delay_penalty_moves_symbol_mass_earlier():
    am, lm, symbols, t_len, s_len, bd = make_transducer(b=1, t=12, s=3)

    def mean_symbol_frame(penalty):
        _, (gx, _) = rnnt_loss_simple(lm, am, symbols, 0, bd[:1], delay_penalty=penalty, return_grad=True)
        frames = torch.arange(gx.shape[2], dtype=gx.dtype)
        return float((gx.sum(1) * frames).sum() / gx.sum())

    assert mean_symbol_frame(0.5) < mean_symbol_frame(0.0) - 0.5


def test_zero_infinity_for_impossible_modified_alignment(caplog):
    am, lm, symbols, t_len, s_len, bd = make_transducer()
    bd = bd.clone()
    bd[2, 3] = 1  # one frame for two symbols: impossible with one symbol per frame
    loss = rnnt_loss_simple(lm, am, symbols, 0, bd, rnnt_type="modified", reduction="none")
    assert torch.isinf(loss[2]) and torch.isfinite(loss[:2]).all()
    with caplog.at_level(logging.WARNING):
        z = rnnt_loss_simple(lm, am, symbols, 0, bd, rnnt_type="modified", reduction="none", zero_infinity=True)
    assert z[2] == 0 and "1 utterance(s) have no alignment" in caplog.text
    ga, gl = torch.autograd.grad(z.sum(), (am, lm))
    assert ga[2].abs().sum() == 0 and torch.isfinite(ga).all() and torch.isfinite(gl).all()
