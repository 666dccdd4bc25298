"""TDT loss (csrc) against the pure-torch reference, gradcheck, omega, packed = padded."""

from __future__ import annotations

import logging

import pytest
import torch
from devices import DEVICES

from asr.losses import rnnt_loss, tdt_loss
from asr.losses.reference import tdt_loss_reference

CASES = [([1], [0]), ([3], [1]), ([5], [2]), ([4, 7, 2], [2, 3, 0]), ([6, 6], [5, 1])]


def make(ts, us, v, durations, seed=0):
    g = torch.Generator().manual_seed(seed)
    B, T, U = len(ts), max(ts), max(us)
    logits = (torch.randn(B, T, U + 1, v + len(durations), generator=g, dtype=torch.float64) * 1.5).requires_grad_()
    targets = torch.randint(1, v, (B, max(U, 1)), generator=g)
    return logits, targets, torch.tensor(ts), torch.tensor(us)


def on(device, *xs):
    """xs on `device`; differentiable, so gradients reach the CPU leaves make() returns."""
    return tuple(x.to(device) for x in xs)


@pytest.mark.parametrize("ts,us", CASES)
@pytest.mark.parametrize("durations,sigma", [((0, 1, 2, 3, 4), 0.0), ((0, 1, 2), 0.05), ((1, 2), 0.0)])
@DEVICES
def test_matches_reference(ts, us, durations, sigma, device):
    logits, targets, tl, ul = make(ts, us, 5, durations)
    ours = tdt_loss(*on(device, logits, targets, tl, ul), durations=durations, sigma=sigma, reduction="none").cpu()
    ref = tdt_loss_reference(logits, targets, tl, ul, list(durations), sigma=sigma)
    assert torch.equal(torch.isinf(ours), torch.isinf(ref))
    fin = torch.isfinite(ref)
    assert torch.allclose(ours[fin], ref[fin], atol=1e-10)
    w = torch.arange(1.0, len(ts) + 1, dtype=torch.float64)
    (g_ours,) = torch.autograd.grad((ours[fin] * w[fin]).sum(), logits)
    (g_ref,) = torch.autograd.grad((ref[fin] * w[fin]).sum(), logits)
    assert torch.allclose(g_ours, g_ref, atol=1e-10)


@DEVICES
def test_gradcheck_and_packed_equals_padded(device):
    logits, targets, tl, ul = on(device, *make([4, 3], [2, 1], 4, (0, 1, 2)))
    logits = logits.detach().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda x: tdt_loss(x, targets, tl, ul, durations=(0, 1, 2), sigma=0.1, reduction="sum"), (logits,)
    )
    padded = tdt_loss(logits, targets, tl, ul, durations=(0, 1, 2), reduction="none")
    (g_pad,) = torch.autograd.grad(padded.sum(), logits)
    rows = torch.cat([logits[b, : tl[b], : ul[b] + 1].reshape(-1, 7) for b in range(2)]).detach().requires_grad_()
    packed = tdt_loss(rows, targets, tl, ul, durations=(0, 1, 2), reduction="none")
    (g_packed,) = torch.autograd.grad(packed.sum(), rows)
    assert torch.allclose(packed, padded, atol=1e-12)
    assert torch.allclose(
        g_packed, torch.cat([g_pad[b, : tl[b], : ul[b] + 1].reshape(-1, 7) for b in range(2)]), atol=1e-12
    )


@DEVICES
def test_omega_mixes_standard_rnnt_loss(device):
    logits, targets, tl, ul = on(device, *make([5, 3], [2, 2], 5, (0, 1, 2)))
    tdt = tdt_loss(logits, targets, tl, ul, durations=(0, 1, 2), reduction="none")
    rnnt = rnnt_loss(logits[..., :5], targets, tl, ul, reduction="none")
    mixed = tdt_loss(logits, targets, tl, ul, durations=(0, 1, 2), omega=0.3, reduction="none")
    assert torch.allclose(mixed, 0.7 * tdt + 0.3 * rnnt, atol=1e-12)


@DEVICES
def test_too_few_frames_is_infinite_and_zero_infinity(caplog, device):
    # U=3 symbols need 3 landing frames < T plus a final blank: T=2 is impossible with durations (1,)
    logits, targets, tl, ul = on(device, *make([2, 6], [3, 1], 4, (1,)))
    logits = logits.detach().requires_grad_()
    loss = tdt_loss(logits, targets, tl, ul, durations=(1,), reduction="none")
    assert torch.isinf(loss[0]) and torch.isfinite(loss[1])
    with caplog.at_level(logging.WARNING):
        z = tdt_loss(logits, targets, tl, ul, durations=(1,), reduction="none", zero_infinity=True)
    assert z[0] == 0 and "1 utterance(s) have no alignment" in caplog.text
    (g,) = torch.autograd.grad(z.sum(), logits)
    assert g[0].abs().sum() == 0 and torch.isfinite(g).all()


def test_bad_arguments():
    logits, targets, tl, ul = make([3], [1], 4, (0, 1))
    with pytest.raises(ValueError, match="blank may not take duration 0"):
        tdt_loss(logits[..., :-1], targets, tl, ul, durations=(0,))
    with pytest.raises(ValueError, match="distinct"):
        tdt_loss(logits, targets, tl, ul, durations=(1, 1))
    with pytest.raises(ValueError, match=r"sigma >= 0 and 0 <= omega <= 1 \(got sigma=-0.1, omega=0.0\)"):
        tdt_loss(logits, targets, tl, ul, durations=(0, 1), sigma=-0.1)
    with pytest.raises(ValueError, match=r"got sigma=0.0, omega=1.5"):
        tdt_loss(logits, targets, tl, ul, durations=(0, 1), omega=1.5)
    with pytest.raises(ValueError, match=r"logits: last dim 3 must hold V >= 2 tokens \+ 2 durations"):
        tdt_loss(logits[..., :3], targets, tl, ul, durations=(0, 1))


def test_every_tdt_entry_point_checks_its_options_alike():
    """One check (asr.losses.tdt.check_tdt_options) for the losses, the Viterbi search and loss,
    the pruned losses and the head's strategies: the same messages everywhere."""
    from asr.losses import tdt_best_path, tdt_loss_pruned, tdt_viterbi_loss
    from asr.nn.heads.transducer_loss import build_transducer_loss

    logits, targets, tl, ul = make([3], [1], 4, (0, 1))
    ranges = torch.zeros(1, 3, 2, dtype=torch.int64)
    ranges[..., 1] = 1
    calls = {
        "tdt_loss": lambda **kw: tdt_loss(logits, targets, tl, ul, **kw),
        "tdt_viterbi_loss": lambda **kw: tdt_viterbi_loss(logits, targets, tl, ul, **kw),
        "tdt_best_path": lambda **kw: tdt_best_path(logits, targets, tl, ul, **kw),
        "tdt_loss_pruned": lambda **kw: tdt_loss_pruned(logits, targets, ranges, **kw),
        "head tdt": lambda **kw: build_transducer_loss({"kind": "tdt", **kw}, 8, 6, 4),
        "head pruned_tdt": lambda **kw: build_transducer_loss({"kind": "pruned_tdt", **kw}, 8, 6, 4),
    }
    for name, call in calls.items():
        for kw, msg in [
            ({"durations": (1, 1)}, r"durations must be distinct non-negative ints, got \[1, 1\]"),
            ({"durations": (0,)}, "blank may not take duration 0"),
            ({"durations": (0, 1), "sigma": -0.5}, "TDT needs sigma >= 0"),
            ({"durations": (0, 1), "omega": 2.0}, "TDT needs sigma >= 0 and 0 <= omega <= 1"),
        ]:
            if name == "tdt_best_path" and "omega" in kw:
                continue  # no omega there
            with pytest.raises(ValueError, match=msg):
                call(**kw)
