"""Viterbi transducer losses (asr/losses/viterbi.py on the compiled rnnt_viterbi / tdt_viterbi ops).

Checked against a brute-force max over every alignment of small lattices (best score and the
best path itself), against the max-semiring pure-torch references (asr/losses/reference.py,
loss and autograd gradient), against autograd of the best path's log-probs gathered from a
full log-softmax, and against finite differences; external alignments against the paths they
must give; packed, padded and one-at-a-time batches against each other.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from devices import DEVICES

from asr.losses import (
    Alignment,
    alignment_frames,
    forced_align,
    path_log_probs,
    rnnt_alignment_path,
    rnnt_best_path,
    rnnt_loss,
    rnnt_viterbi_loss,
    tdt_alignment_path,
    tdt_best_path,
    tdt_loss,
    tdt_viterbi_loss,
)
from asr.losses.reference import rnnt_loss_reference, rnnt_paths, tdt_loss_reference, tdt_paths
from asr.nn.heads import build_head

# (T lengths, U lengths, V): T = 1, U = 0, mixed lengths, B = 1 and B > 1
RNNT_CASES = [
    ([1], [0], 3),
    ([1], [3], 4),
    ([4], [0], 2),
    ([5], [2], 5),
    ([3, 6, 1], [2, 0, 3], 6),
    ([7, 7, 4, 2], [4, 1, 4, 2], 5),
]
# (T lengths, U lengths, durations): with and without duration 0, too few frames (no path)
TDT_CASES = [
    ([1], [0], [0, 1]),
    ([3], [2], [0, 1, 2]),
    ([5, 2, 4], [3, 1, 0], [0, 1, 2, 3]),
    ([6, 4], [2, 3], [1, 2]),  # the second has no path: 3 tokens need 4 frames + the final blank
    ([6], [4], [0, 2, 3]),
]
V_TDT = 5


def make(ts, us, c, dtype=torch.float64, seed=0):
    """Padded logits [B, T, U+1, c] (requiring grad), targets, lengths."""
    g = torch.Generator().manual_seed(seed)
    B, T, U = len(ts), max(ts), max(us)
    logits = (torch.randn(B, T, U + 1, c, generator=g, dtype=dtype) * 2).requires_grad_()
    v = c if c < V_TDT + 1 else V_TDT
    targets = torch.randint(1, min(c, v), (B, max(U, 1)), generator=g)
    return logits, targets, torch.tensor(ts), torch.tensor(us)


def tdt_make(ts, us, durations, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    B, T, U = len(ts), max(ts), max(us)
    logits = (torch.randn(B, T, U + 1, V_TDT + len(durations), generator=g, dtype=dtype) * 2).requires_grad_()
    targets = torch.randint(1, V_TDT, (B, max(U, 1)), generator=g)
    return logits, targets, torch.tensor(ts), torch.tensor(us)


def path_arcs(path, b: int) -> list[tuple]:
    """Utterance b's arcs as (t, u, token[, duration index]) tuples, in path order."""
    m = path.utt == b
    cols = [path.t[m], path.u[m], path.token[m]] + ([path.duration[m]] if path.duration is not None else [])
    return [tuple(int(x) for x in arc) for arc in zip(*cols)]


def rnnt_brute_force(logits, targets, tl, ul, blank=0):
    """Per utterance: (best score, its arcs as (t, u, token)) over every RNN-T path."""
    out = []
    for b in range(logits.shape[0]):
        T, U = int(tl[b]), int(ul[b])
        lp = logits[b].detach().log_softmax(-1)
        best = (-math.inf, None)
        for arcs in rnnt_paths(T, U):
            full = [(t, u, int(targets[b, u]) if label else blank) for t, u, label in arcs]
            score = sum(float(lp[t, u, k]) for t, u, k in full)
            if score > best[0]:
                best = (score, full)
        out.append(best)
    return out


def tdt_brute_force(logits, targets, tl, ul, durations, blank=0, sigma=0.0):
    """Per utterance: (best score, its arcs as (t, u, token, duration index)) over every TDT path."""
    d = len(durations)
    out = []
    for b in range(logits.shape[0]):
        T, U = int(tl[b]), int(ul[b])
        tok = logits[b, ..., :-d].detach().log_softmax(-1) - sigma
        dur = logits[b, ..., -d:].detach().log_softmax(-1)
        best = (-math.inf, None)
        for arcs in tdt_paths(T, U, durations):
            full = [(t, u, int(targets[b, u]) if label else blank, i) for t, u, label, i in arcs]
            score = sum(float(tok[t, u, k] + dur[t, u, i]) for t, u, k, i in full)
            if score > best[0]:
                best = (score, full)
        out.append(best)
    return out


@DEVICES
@pytest.mark.parametrize("ts,us,v", RNNT_CASES)
def test_rnnt_viterbi_is_the_brute_force_best_path(ts, us, v, device):
    logits, targets, tl, ul = make(ts, us, v)
    on = [x.to(device) for x in (logits, targets, tl, ul)]
    loss = rnnt_viterbi_loss(*on, reduction="none").cpu()
    path = rnnt_best_path(*on)
    for b, (score, arcs) in enumerate(rnnt_brute_force(logits, targets, tl, ul)):
        assert loss[b].item() == pytest.approx(-score, abs=1e-10)
        assert path.score[b].item() == pytest.approx(score, abs=1e-10)
        assert path_arcs(path, b) == arcs


@pytest.mark.parametrize("ts,us,durations", TDT_CASES)
@pytest.mark.parametrize("sigma", [0.0, 0.3])
@DEVICES
def test_tdt_viterbi_is_the_brute_force_best_path(ts, us, durations, sigma, device):
    logits, targets, tl, ul = tdt_make(ts, us, durations)
    on = [x.to(device) for x in (logits, targets, tl, ul)]
    loss = tdt_viterbi_loss(*on, durations=durations, sigma=sigma, reduction="none").cpu()
    path = tdt_best_path(*on, durations=durations, sigma=sigma)
    for b, (score, arcs) in enumerate(tdt_brute_force(logits, targets, tl, ul, durations, sigma=sigma)):
        if arcs is None:  # no path: +inf loss, no arcs
            assert loss[b].item() == math.inf and not path.exists[b] and path_arcs(path, b) == []
            continue
        assert loss[b].item() == pytest.approx(-score, abs=1e-10)
        assert path.score[b].item() == pytest.approx(score, abs=1e-10)
        assert path_arcs(path, b) == arcs


@pytest.mark.parametrize("ts,us,v", RNNT_CASES)
def test_rnnt_matches_max_semiring_reference_loss_and_grad(ts, us, v):
    logits, targets, tl, ul = make(ts, us, v)
    weights = torch.arange(1, len(ts) + 1, dtype=logits.dtype)  # distinct per-utterance scales
    ours = rnnt_viterbi_loss(logits, targets, tl, ul, reduction="none")
    (g_ours,) = torch.autograd.grad((ours * weights).sum(), logits)
    ref = rnnt_loss_reference(logits, targets, tl, ul, semiring="max")
    (g_ref,) = torch.autograd.grad((ref * weights).sum(), logits)
    assert torch.allclose(ours, ref, atol=1e-10, rtol=1e-10)
    assert torch.allclose(g_ours, g_ref, atol=1e-10)


@pytest.mark.parametrize("ts,us,durations", TDT_CASES)
def test_tdt_matches_max_semiring_reference_loss_and_grad(ts, us, durations):
    logits, targets, tl, ul = tdt_make(ts, us, durations)
    weights = torch.arange(1, len(ts) + 1, dtype=logits.dtype)
    ours = tdt_viterbi_loss(logits, targets, tl, ul, durations=durations, sigma=0.2, reduction="none")
    ref = tdt_loss_reference(logits, targets, tl, ul, durations, sigma=0.2, semiring="max")
    assert torch.equal(torch.isinf(ours), torch.isinf(ref))
    assert torch.allclose(ours, ref, atol=1e-10, rtol=1e-10)
    ok = torch.isfinite(ref)
    (g_ours,) = torch.autograd.grad((ours[ok] * weights[ok]).sum(), logits)
    (g_ref,) = torch.autograd.grad((ref[ok] * weights[ok]).sum(), logits)
    assert torch.allclose(g_ours, g_ref, atol=1e-10)


def test_the_log_semiring_references_still_match_the_full_sum_losses():
    """The references' shared recursion (semiring argument) still gives the full-sum losses."""
    logits, targets, tl, ul = make([5, 3], [2, 3], 5)
    full = rnnt_loss(logits, targets, tl, ul, reduction="none")
    assert torch.allclose(full, rnnt_loss_reference(logits, targets, tl, ul), atol=1e-10)
    logits, targets, tl, ul = tdt_make([5, 4], [3, 2], [0, 1, 2])
    full = tdt_loss(logits, targets, tl, ul, durations=[0, 1, 2], reduction="none")
    assert torch.allclose(full, tdt_loss_reference(logits, targets, tl, ul, [0, 1, 2]), atol=1e-10)


@pytest.mark.parametrize("seed", range(5))
def test_viterbi_loss_is_at_least_the_full_sum_loss(seed):
    """The best path's probability is at most the sum over all paths: equal only with one path."""
    logits, targets, tl, ul = make([9, 6, 3, 1], [4, 5, 0, 3], 6, seed=seed)
    vit = rnnt_viterbi_loss(logits, targets, tl, ul, reduction="none")
    full = rnnt_loss(logits, targets, tl, ul, reduction="none")
    assert (vit >= full - 1e-12).all()
    assert (vit[:2] > full[:2] + 1e-6).all()  # several paths: strictly more
    assert torch.allclose(vit[2:], full[2:], atol=1e-12)  # U = 0 or T = 1: one path, the same loss
    d = [0, 1, 2]
    logits, targets, tl, ul = tdt_make([9, 6, 3], [4, 5, 0], d, seed=seed)
    vit = tdt_viterbi_loss(logits, targets, tl, ul, durations=d, sigma=0.1, omega=0.2, reduction="none")
    full = tdt_loss(logits, targets, tl, ul, durations=d, sigma=0.1, omega=0.2, reduction="none")
    assert (vit > full + 1e-6).all()


def test_gradient_is_autograd_of_the_best_path_gathered_from_a_full_log_softmax():
    logits, targets, tl, ul = make([7, 5, 4], [3, 4, 0], 6)
    loss = rnnt_viterbi_loss(logits, targets, tl, ul, reduction="sum")
    (g,) = torch.autograd.grad(loss, logits)
    path = rnnt_best_path(logits, targets, tl, ul)
    lp = logits.log_softmax(-1)
    ref = -lp[path.utt, path.t, path.u, path.token].sum()
    (g_ref,) = torch.autograd.grad(ref, logits)
    assert loss.item() == pytest.approx(ref.item(), abs=1e-12)
    assert torch.allclose(g, g_ref, atol=1e-12)
    # softmax - one-hot on each row the path leaves (one arc per row: each node is visited once),
    # zero on every other row
    rows_on_path = torch.zeros(logits.shape[:3], dtype=torch.bool)
    rows_on_path[path.utt, path.t, path.u] = True
    assert int(rows_on_path.sum()) == len(path.utt) == int((tl + ul).sum())
    assert g[~rows_on_path].abs().max() == 0
    assert torch.allclose(g.sum(-1), g.new_zeros(()), atol=1e-12)

    d = [0, 1, 2]
    logits, targets, tl, ul = tdt_make([7, 5], [3, 4], d)
    loss = tdt_viterbi_loss(logits, targets, tl, ul, durations=d, sigma=0.1, reduction="sum")
    (g,) = torch.autograd.grad(loss, logits)
    path = tdt_best_path(logits, targets, tl, ul, durations=d, sigma=0.1)
    tok, dur = logits[..., :V_TDT].log_softmax(-1), logits[..., V_TDT:].log_softmax(-1)
    at = (path.utt, path.t, path.u)
    ref = -(tok[(*at, path.token)] - 0.1 + dur[(*at, path.duration)]).sum()
    (g_ref,) = torch.autograd.grad(ref, logits)
    assert loss.item() == pytest.approx(ref.item(), abs=1e-12)
    assert torch.allclose(g, g_ref, atol=1e-12)


def test_gradcheck_finite_differences():
    logits, targets, tl, ul = make([5, 3], [2, 3], 4)
    assert torch.autograd.gradcheck(
        lambda x: rnnt_viterbi_loss(x, targets, tl, ul, reduction="none"), (logits,), eps=1e-6, atol=1e-6
    )
    d = [0, 1, 2]
    logits, targets, tl, ul = tdt_make([5, 4], [2, 3], d)
    assert torch.autograd.gradcheck(
        lambda x: tdt_viterbi_loss(x, targets, tl, ul, durations=d, sigma=0.1, omega=0.3, reduction="none"),
        (logits,),
        eps=1e-6,
        atol=1e-6,
    )


def test_the_best_paths_alignment_gives_the_same_rnnt_path_loss_and_gradient():
    logits, targets, tl, ul = make([9, 6, 3, 1], [4, 5, 0, 3], 6, seed=3)
    best = rnnt_best_path(logits, targets, tl, ul)
    frames = best.token_frames(int(ul.max()))
    given = rnnt_alignment_path(frames, targets, tl, ul)
    for name in ("utt", "t", "u", "token"):
        assert torch.equal(getattr(given, name), getattr(best, name)), name
    vit = rnnt_viterbi_loss(logits, targets, tl, ul, reduction="sum")
    (g_vit,) = torch.autograd.grad(vit, logits)
    ext = rnnt_viterbi_loss(logits, targets, tl, ul, alignment=frames, reduction="sum")
    (g_ext,) = torch.autograd.grad(ext, logits)
    assert ext.item() == vit.item()
    assert torch.equal(g_ext, g_vit)


def _boost(logits, path, amount=30.0):
    """Raise the logits of the path's arcs (token and duration) so that it is the best path."""
    x = logits.detach().clone()
    x[path.utt, path.t, path.u, path.token] += amount
    if path.duration is not None:
        x[path.utt, path.t, path.u, x.shape[-1] - len(path.durations) + path.duration] += amount
    return x.requires_grad_()


def test_an_alignment_made_best_is_found_by_the_search():
    """Given frames, the alignment's path (RNN-T, and TDT by its mapping) is what the search finds
    once that path's arcs dominate, and the two losses agree."""
    tl, ul = torch.tensor([9, 7, 4]), torch.tensor([4, 3, 0])
    frames = torch.tensor([[0, 2, 2, 7], [1, 1, 6, -1], [-1, -1, -1, -1]])
    logits, targets, _, _ = make(tl.tolist(), ul.tolist(), 6, seed=5)
    given = rnnt_alignment_path(frames, targets, tl, ul)
    x = _boost(logits, given)
    best = rnnt_best_path(x, targets, tl, ul)
    assert all(path_arcs(best, b) == path_arcs(given, b) for b in range(3))
    assert torch.equal(best.token_frames(4), frames)
    a = rnnt_viterbi_loss(x, targets, tl, ul, alignment=frames, reduction="none")
    assert torch.allclose(a, rnnt_viterbi_loss(x, targets, tl, ul, reduction="none"), atol=1e-12)

    d = [0, 1, 2, 4]
    logits, targets, _, _ = tdt_make(tl.tolist(), ul.tolist(), d, seed=5)
    given = tdt_alignment_path(frames, targets, tl, ul, durations=d)
    x = _boost(logits, given)
    best = tdt_best_path(x, targets, tl, ul, durations=d)
    assert all(path_arcs(best, b) == path_arcs(given, b) for b in range(3))
    a = tdt_viterbi_loss(x, targets, tl, ul, durations=d, alignment=frames, reduction="none")
    assert torch.allclose(a, tdt_viterbi_loss(x, targets, tl, ul, durations=d, reduction="none"), atol=1e-12)


def test_tdt_alignment_mapping_follows_the_documented_rule():
    """T = 7, durations (0, 1, 2), tokens at frames 1, 1, 4: blank 0->1; token 0 stays on frame 1
    (d 0, the next token is there too); token 1 takes d 2 (the largest <= 3 frames to token 2);
    blank 3->4; token 2 takes d 2 (the largest <= 6 - 4: it must land on a real frame); blank 6->7."""
    logits, targets, tl, ul = tdt_make([7], [3], [0, 1, 2], seed=2)
    path = tdt_alignment_path(torch.tensor([[1, 1, 4]]), targets, tl, ul, durations=[0, 1, 2])
    y = targets[0].tolist()
    assert path_arcs(path, 0) == [
        (0, 0, 0, 1),
        (1, 0, y[0], 0),
        (1, 1, y[1], 2),
        (3, 2, 0, 1),
        (4, 2, y[2], 2),
        (6, 3, 0, 1),
    ]
    x = logits.detach()
    tok, dur = x[0, ..., :V_TDT].log_softmax(-1), x[0, ..., V_TDT:].log_softmax(-1)
    expected = -sum(float(tok[t, u, k] + dur[t, u, i]) for t, u, k, i in path_arcs(path, 0))
    loss = tdt_viterbi_loss(logits, targets, tl, ul, durations=[0, 1, 2], alignment=torch.tensor([[1, 1, 4]]))
    assert loss.item() == pytest.approx(expected, abs=1e-12)
    # durations (0, 2, 4), T = 6, tokens at 0, 0, 2: token 0 stays (d 0); token 1 takes d 2 to token
    # 2; token 2 takes d 2 (4 would pass the last frame, 5); a blank of 2 lands on T
    path = tdt_alignment_path(torch.tensor([[0, 0, 2]]), targets, torch.tensor([6]), ul, durations=[0, 2, 4])
    assert path_arcs(path, 0) == [(0, 0, y[0], 0), (0, 1, y[1], 1), (2, 2, y[2], 1), (4, 3, 0, 1)]


def test_tdt_alignment_mapping_is_exact_where_the_largest_duration_does_not_fit():
    """Durations (0, 2, 3), T = 6 (issue 14 regression): a token at frame 4 needs blanks 2 + 2
    before it (blank 3 would leave 1 frame, which no blank fills), then duration 0 and blank 2;
    tokens at 0 and 4: the first takes duration 2 (3 would leave 1 frame), then blank 2."""
    d = [0, 2, 3]
    logits, targets, tl, ul = tdt_make([6], [2], d, seed=3)
    y = targets[0].tolist()
    path = tdt_alignment_path(torch.tensor([[4]]), targets[:, :1], tl, torch.tensor([1]), durations=d)
    assert path_arcs(path, 0) == [(0, 0, 0, 1), (2, 0, 0, 1), (4, 0, y[0], 0), (4, 1, 0, 1)]
    frames = torch.tensor([[0, 4]])
    path = tdt_alignment_path(frames, targets, tl, ul, durations=d)
    assert path_arcs(path, 0) == [(0, 0, y[0], 1), (2, 1, 0, 1), (4, 1, y[1], 0), (4, 2, 0, 1)]
    x = logits.detach()
    tok, dur = x[0, ..., :V_TDT].log_softmax(-1), x[0, ..., V_TDT:].log_softmax(-1)
    expected = -sum(float(tok[t, u, k] + dur[t, u, i]) for t, u, k, i in path_arcs(path, 0))
    loss = tdt_viterbi_loss(logits, targets, tl, ul, durations=d, alignment=frames)
    assert loss.item() == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("durations", [[0, 2, 3], [1, 2], [0, 2], [2, 3], [0, 1, 2], [0, 3, 4], [3]])
def test_tdt_alignment_mapping_raises_only_for_frames_no_path_has(durations):
    """Every monotone frame sequence of small lattices: a path with those token frames exists
    (tdt_paths, enumerated) exactly when the mapping gives one, and it gives one of those paths."""
    for T in range(1, 8):
        for U in range(4):
            targets, tl, ul = torch.arange(1, U + 2)[None], torch.tensor([T]), torch.tensor([U])
            paths = {tuple(p) for p in tdt_paths(T, U, durations)}
            representable = {tuple(t for t, _, label, _ in p if label) for p in paths}
            for frames in itertools.combinations_with_replacement(range(T), U):
                alignment = torch.tensor([frames], dtype=torch.int64).reshape(1, U)
                if frames not in representable:
                    with pytest.raises(ValueError, match="alignment of utterance 0"):
                        tdt_alignment_path(alignment, targets, tl, ul, durations=durations)
                    continue
                path = tdt_alignment_path(alignment, targets, tl, ul, durations=durations)
                arcs = tuple((t, u, k != 0, i) for t, u, k, i in path_arcs(path, 0))
                assert arcs in paths, (T, frames, arcs)


def test_ties_follow_the_documented_rule():
    """Uniform logits tie every RNN-T path: backtracking prefers blank, so the last token is
    emitted as early as possible, then the one before it: every token on frame 0. TDT: among the
    tied best paths, the search picks the one whose reversed arcs are smallest by (emits a label,
    duration index), which is what "first arc into a node wins, blanks first" means."""
    tl, ul = torch.tensor([5, 4]), torch.tensor([3, 2])
    targets = torch.tensor([[1, 2, 3], [3, 1, 0]])
    path = rnnt_best_path(torch.zeros(2, 5, 4, 4), targets, tl, ul)
    assert torch.equal(path.token_frames(3), torch.tensor([[0, 0, 0], [0, 0, -1]]))

    d = [0, 1, 2]
    zeros = torch.zeros(2, 5, 4, 4 + len(d), dtype=torch.float64)
    path = tdt_best_path(zeros, targets, tl, ul, durations=d)
    for b in range(2):
        T, U = int(tl[b]), int(ul[b])
        paths = tdt_paths(T, U, d)
        fewest = min(len(p) for p in paths)  # every arc scores the same: the fewest arcs win
        tied = [p for p in paths if len(p) == fewest]
        first = min(tied, key=lambda p: [(label, i) for _, _, label, i in reversed(p)])
        assert [(t, u, i) for t, u, _, i in path_arcs(path, b)] == [(t, u, i) for t, u, _, i in first]
    again = tdt_best_path(zeros, targets, tl, ul, durations=d)
    assert torch.equal(again.t, path.t) and torch.equal(again.duration, path.duration)


def test_ctc_forced_alignment_is_an_alignment_source():
    """forced_align of CTC log-probs over the same frames: Alignment.token_frames puts each token
    at its first frame."""
    g = torch.Generator().manual_seed(0)
    tl, ul = torch.tensor([9, 6]), torch.tensor([3, 2])
    targets = torch.tensor([[2, 2, 4], [1, 3, 0]])
    log_probs = torch.randn(2, 9, 5, generator=g).log_softmax(-1)
    ali = forced_align(log_probs, targets, tl, ul)
    frames = ali.token_frames(targets, tl, ul)
    for b in range(2):
        starts = [first for _, first, _ in ali.token_spans(b)]
        assert frames[b, : int(ul[b])].tolist() == starts
    assert frames[1, 2] == -1 and torch.equal(alignment_frames(frames, targets, tl, ul), frames)
    logits, _, _, _ = make([9, 6], [3, 2], 5, seed=1)
    a = rnnt_viterbi_loss(logits, targets, tl, ul, alignment=frames, reduction="none")
    full = rnnt_loss(logits, targets, tl, ul, reduction="none")
    assert (a >= rnnt_viterbi_loss(logits, targets, tl, ul, reduction="none")).all() and (a > full).all()


def test_bad_alignments_are_clear_errors():
    logits, targets, tl, ul = make([6, 4], [3, 2], 5)
    good = torch.tensor([[0, 2, 5], [1, 3, -1]])
    rnnt_viterbi_loss(logits, targets, tl, ul, alignment=good)
    with pytest.raises(ValueError, match=r"token frames \[B=2, U\], got shape \(6,\)"):
        rnnt_viterbi_loss(logits, targets, tl, ul, alignment=good.flatten())
    with pytest.raises(ValueError, match="alignment has 2 token frames per utterance, but target_lengths needs 3"):
        rnnt_viterbi_loss(logits, targets, tl, ul, alignment=good[:, :2])
    with pytest.raises(ValueError, match="utterance 1: token 1 at frame 4, outside its 4 frames"):
        rnnt_viterbi_loss(logits, targets, tl, ul, alignment=torch.tensor([[0, 2, 5], [1, 4, 0]]))
    with pytest.raises(ValueError, match="utterance 0: token 0 at frame -1"):
        rnnt_viterbi_loss(logits, targets, tl, ul, alignment=torch.tensor([[-1, 2, 5], [1, 3, 0]]))
    with pytest.raises(ValueError, match="utterance 0 is not monotonic: token 2 at frame 1 after token 1 at frame 2"):
        tdt_viterbi_loss(
            torch.zeros(2, 6, 4, 8),
            targets,
            tl,
            ul,
            durations=[0, 1, 2],
            alignment=torch.tensor([[0, 2, 1], [0, 0, 0]]),
        )
    # an Alignment (forced_align's) over other frames, tokens or transcripts
    labels = torch.tensor([[0, 1, 0, 2, 2, 3], [4, 0, 1, -1, -1, -1]])
    starts = torch.tensor([[0, 1, 0, 1, 0, 1], [1, 0, 1, 0, 0, 0]], dtype=torch.bool)
    tg = torch.tensor([[1, 2, 3], [4, 1, 0]])
    ali = Alignment(labels, starts, torch.zeros(2))
    assert ali.token_frames(tg, torch.tensor([6, 3]), ul).tolist() == [[1, 3, 5], [0, 2, -1]]
    with pytest.raises(ValueError, match="utterance 1 covers 3 frames, but logit_lengths says 4"):
        ali.token_frames(tg, tl, ul)
    with pytest.raises(ValueError, match="utterance 0 emits 3 tokens, but target_lengths says 2"):
        ali.token_frames(tg, torch.tensor([6, 3]), torch.tensor([2, 2]))
    with pytest.raises(ValueError, match="utterance 1 emits token 4 at frame 0, but target 0 is 2"):
        ali.token_frames(torch.tensor([[1, 2, 3], [2, 1, 0]]), tl.new_tensor([6, 3]), ul)
    with pytest.raises(ValueError, match="utterance 1: none"):
        Alignment(labels, starts, torch.tensor([0.0, -math.inf])).token_frames(tg, torch.tensor([6, 3]), ul)
    with pytest.raises(ValueError, match=r"alignment must cover B=2 utterances, got labels \(1, 6\)"):
        Alignment(labels[:1], starts[:1], torch.zeros(1)).token_frames(tg, torch.tensor([6, 3]), ul)
    # TDT: alignments its durations cannot represent
    with pytest.raises(ValueError, match="token 1 at frame 2 has no duration <= 0"):
        tdt_alignment_path(torch.tensor([[0, 2, 2]]), tg[:1], tl[:1], ul[:1], durations=[1, 2])
    with pytest.raises(ValueError, match="no blank durations sum to the 1 frames from frame 0 to 1"):
        tdt_alignment_path(torch.tensor([[1, 2, 2]]), tg[:1], tl[:1], ul[:1], durations=[0, 2])


@pytest.mark.parametrize("kind", ["rnnt", "tdt"])
@pytest.mark.parametrize("external", [False, True])
def test_batches_packed_padded_and_one_at_a_time_agree(kind, external):
    ts, us = [7, 3, 5, 1], [3, 2, 0, 1]
    d = [0, 1, 2]
    if kind == "rnnt":
        logits, targets, tl, ul = make(ts, us, 5, seed=4)
        fn = rnnt_viterbi_loss
        kw = {}
    else:
        logits, targets, tl, ul = tdt_make(ts, us, d, seed=4)
        fn = tdt_viterbi_loss
        kw = {"durations": d, "sigma": 0.1, "omega": 0.25}
    frames = torch.tensor([[0, 3, 6], [1, 1, -1], [-1, -1, -1], [0, -1, -1]]) if external else None
    loss = fn(logits, targets, tl, ul, alignment=frames, reduction="none", **kw)
    (g,) = torch.autograd.grad(loss.sum(), logits)
    packed = torch.cat([logits[b, : ts[b], : us[b] + 1].reshape(-1, logits.shape[-1]) for b in range(4)])
    p_loss = fn(packed, targets, tl, ul, alignment=frames, reduction="none", **kw)
    (g_packed,) = torch.autograd.grad(p_loss.sum(), packed)
    assert torch.allclose(p_loss, loss, atol=1e-12)
    assert torch.allclose(g_packed, torch.cat([g[b, : ts[b], : us[b] + 1].reshape(-1, g.shape[-1]) for b in range(4)]))
    for b in range(4):
        x = logits[b : b + 1, : ts[b], : us[b] + 1]
        one = fn(
            x,
            targets[b : b + 1, : max(us[b], 1)],
            tl[b : b + 1],
            ul[b : b + 1],
            alignment=None if frames is None else frames[b : b + 1, : us[b]],
            reduction="none",
            **kw,
        )
        (g_one,) = torch.autograd.grad(one.sum(), logits)
        assert one.item() == pytest.approx(loss[b].item(), abs=1e-12)
        assert torch.allclose(g_one[b], g[b], atol=1e-12)
    # padding gets no gradient, and its values do not matter
    mask = torch.ones(logits.shape[:3], dtype=torch.bool)
    for b in range(4):
        mask[b, : ts[b], : us[b] + 1] = False
    assert g[mask].abs().max() == 0
    noisy = logits.detach().masked_fill(mask[..., None], 1e4)
    assert torch.allclose(fn(noisy, targets, tl, ul, alignment=frames, reduction="none", **kw), loss, atol=1e-12)


def test_no_path_is_infinite_or_zeroed_and_reductions(caplog):
    logits, targets, tl, ul = make([4, 0, 3], [2, 0, 1], 5)
    loss = rnnt_viterbi_loss(logits, targets, tl, ul, reduction="none")
    assert loss[1].item() == math.inf and torch.isfinite(loss[[0, 2]]).all()
    zeroed = rnnt_viterbi_loss(logits, targets, tl, ul, reduction="none", zero_infinity=True)
    assert zeroed[1].item() == 0 and torch.equal(zeroed[[0, 2]], loss[[0, 2]])
    assert "1 utterance(s) have no alignment" in caplog.text
    (g,) = torch.autograd.grad(zeroed.sum(), logits)
    assert torch.isfinite(g).all() and g[1].abs().max() == 0
    total = rnnt_viterbi_loss(logits, targets, tl, ul, reduction="sum", zero_infinity=True)
    mean = rnnt_viterbi_loss(logits, targets, tl, ul, reduction="mean", zero_infinity=True)
    assert total.item() == pytest.approx(zeroed.sum().item()) and mean.item() == pytest.approx(total.item() / 3)
    logits, targets, tl, ul = tdt_make([2, 4], [3, 1], [1, 2])  # 3 tokens without duration 0 need 4 frames
    loss = tdt_viterbi_loss(logits, targets, tl, ul, durations=[1, 2], reduction="none", zero_infinity=True)
    assert loss[0].item() == 0 and loss[1].item() > 0
    with pytest.raises(ValueError, match="reduction"):
        rnnt_viterbi_loss(logits[..., :5], targets, tl, ul, reduction="avg")


@pytest.mark.parametrize("packed", [False, True])
def test_an_empty_batch_gives_an_empty_loss_as_the_full_sum_losses_do(packed):
    """B = 0: reduction none gives [0], sum 0 and mean torch's mean of nothing (nan), with an empty
    gradient, for the Viterbi losses (best path or given frames) and the full-sum ones alike."""
    empty = torch.zeros(0, dtype=torch.int64)
    targets, frames = torch.zeros(0, 2, dtype=torch.int64), torch.zeros(0, 2, dtype=torch.int64)
    d = [0, 1, 2]
    calls = {
        "rnnt_loss": (5, lambda x, **kw: rnnt_loss(x, targets, empty, empty, **kw)),
        "rnnt_viterbi_loss": (5, lambda x, **kw: rnnt_viterbi_loss(x, targets, empty, empty, **kw)),
        "rnnt_viterbi_loss, frames": (
            5,
            lambda x, **kw: rnnt_viterbi_loss(x, targets, empty, empty, alignment=frames, **kw),
        ),
        "tdt_loss": (8, lambda x, **kw: tdt_loss(x, targets, empty, empty, durations=d, omega=0.3, **kw)),
        "tdt_viterbi_loss": (
            8,
            lambda x, **kw: tdt_viterbi_loss(x, targets, empty, empty, durations=d, omega=0.3, **kw),
        ),
        "tdt_viterbi_loss, frames": (
            8,
            lambda x, **kw: tdt_viterbi_loss(x, targets, empty, empty, durations=d, omega=0.3, alignment=frames, **kw),
        ),
    }
    for name, (c, fn) in calls.items():
        x = torch.zeros((0, c) if packed else (0, 4, 3, c), requires_grad=True)
        assert fn(x, reduction="none").shape == (0,), name
        total = fn(x, reduction="sum")
        assert total.item() == 0, name
        (g,) = torch.autograd.grad(total, x)
        assert g.shape == x.shape, name
        assert math.isnan(fn(x, reduction="mean").item()), name
    assert rnnt_best_path(torch.zeros(0, 4, 3, 5), targets, empty, empty).utt.numel() == 0


def test_float32_is_close_to_float64():
    logits, targets, tl, ul = make([60, 40], [20, 12], 30, seed=6)
    l64 = rnnt_viterbi_loss(logits, targets, tl, ul, reduction="none")
    (g64,) = torch.autograd.grad(l64.sum(), logits)
    x32 = logits.detach().float().requires_grad_()
    l32 = rnnt_viterbi_loss(x32, targets, tl, ul, reduction="none")
    (g32,) = torch.autograd.grad(l32.sum(), x32)
    assert l32.dtype == torch.float32
    assert torch.allclose(l32.double(), l64, rtol=1e-6)
    assert torch.allclose(g32.double(), g64, atol=1e-6)


def test_path_log_probs_of_an_rnnt_path_on_tdt_rows_reads_the_token_logits():
    d = [0, 1, 2]
    logits, targets, tl, ul = tdt_make([5, 4], [2, 3], d)
    path = rnnt_best_path(logits[..., :V_TDT], targets, tl, ul)
    rows = logits[path.utt, path.t, path.u]
    lp = path_log_probs(rows, path, num_tokens=V_TDT)
    assert torch.allclose(lp, -rnnt_viterbi_loss(logits[..., :V_TDT], targets, tl, ul, reduction="none"))
    with pytest.raises(ValueError, match="a TDT path needs rows of V \\+ 3 logits"):
        path_log_probs(rows, tdt_best_path(logits, targets, tl, ul, durations=d), num_tokens=4)


# ---- the transducer head's Viterbi option ----

HEAD_V = 7


def _head_batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    enc = torch.randn(3, 12, 16, generator=g, requires_grad=True)
    return enc, torch.tensor([12, 10, 7]), torch.randint(1, HEAD_V, (3, 5), generator=g), torch.tensor([5, 3, 2])


@pytest.mark.parametrize(
    "spec",
    [
        {"kind": "rnnt", "viterbi": True},
        {"kind": "tdt", "durations": [0, 1, 2], "sigma": 0.05, "omega": 0.1, "viterbi": True},
        {"kind": "tdt", "durations": [0, 1, 2], "viterbi": {"full_sum_steps": 0}},
    ],
)
def test_head_viterbi_loss_on_the_path_nodes_equals_the_loss_on_the_whole_lattice(spec):
    """The head runs the joint with grad on the best path's nodes only: the same loss and gradients
    as the Viterbi loss of the joint's outputs on the whole lattice."""
    torch.manual_seed(0)
    head = build_head("transducer", 16, HEAD_V, loss=spec, pred_dim=12, joint_dim=20).eval()
    enc, el, y, yl = _head_batch()
    out = head.loss(enc, el, y, yl)
    g_head = torch.autograd.grad(out["loss"], [enc, *head.parameters()])
    logits = head.joint(enc, head.predict(y))
    if spec["kind"] == "rnnt":
        ref = rnnt_viterbi_loss(logits, y, el, yl, reduction="sum")
    else:
        opts = {k: spec[k] for k in ("durations", "sigma", "omega") if k in spec}
        ref = tdt_viterbi_loss(logits, y, el, yl, reduction="sum", **opts)
    ref = ref / yl.sum()
    g_ref = torch.autograd.grad(ref, [enc, *head.parameters()])
    assert out["loss"].item() == pytest.approx(ref.item(), rel=1e-6)
    for a, b in zip(g_head, g_ref):
        assert torch.allclose(a, b, atol=1e-6)


def test_head_full_sum_steps_then_viterbi():
    torch.manual_seed(0)
    head = build_head(
        "transducer", 16, HEAD_V, loss={"kind": "rnnt", "viterbi": {"full_sum_steps": 100}}, pred_dim=12, joint_dim=20
    ).eval()
    enc, el, y, yl = _head_batch()
    logits = head.joint(enc, head.predict(y))
    full = rnnt_loss(logits, y, el, yl, reduction="sum") / yl.sum()
    vit = rnnt_viterbi_loss(logits, y, el, yl, reduction="sum") / yl.sum()
    assert head.loss(enc, el, y, yl, step=99)["loss"].item() == pytest.approx(full.item(), rel=1e-6)
    assert head.loss(enc, el, y, yl, step=100)["loss"].item() == pytest.approx(vit.item(), rel=1e-6)
    assert vit.item() > full.item()


def test_head_viterbi_options_are_validated():
    def build(loss):
        return build_head("transducer", 8, HEAD_V, loss=loss)

    assert build({"kind": "rnnt", "viterbi": False}).criterion.viterbi.enabled is False
    opts = build({"kind": "tdt", "viterbi": {"full_sum_steps": 5}}).criterion.viterbi
    assert opts.enabled and opts.full_sum_steps == 5
    with pytest.raises(ValueError, match="full_sum_steps must be an int >= 0"):
        build({"kind": "rnnt", "viterbi": {"full_sum_steps": -1}})
    for not_int in (True, False, 2.0, "3"):
        with pytest.raises(ValueError, match=f"full_sum_steps must be an int >= 0, not {not_int!r}"):
            build({"kind": "tdt", "viterbi": {"full_sum_steps": not_int}})
    with pytest.raises(ValueError, match=r"viterbi options are full_sum_steps, not \['warmup'\]"):
        build({"kind": "rnnt", "viterbi": {"warmup": 3}})
    with pytest.raises(ValueError, match="viterbi must be true, false or"):
        build({"kind": "rnnt", "viterbi": "yes"})
    with pytest.raises(ValueError, match="the rnnt loss has no option sigma; its options: topology, viterbi"):
        build({"kind": "rnnt", "sigma": 0.1})
    with pytest.raises(ValueError, match="the pruned_rnnt loss has no option viterbi"):
        build({"kind": "pruned_rnnt", "viterbi": True})
