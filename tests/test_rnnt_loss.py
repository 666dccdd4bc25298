"""Full RNN-T loss (csrc) against the pure-torch reference, gradcheck, packed = padded.

The cases run on every available device: CPU always, CUDA when a GPU and the CUDA
build are present (skipped cleanly otherwise).
"""

from __future__ import annotations

import logging

import pytest
import torch
from devices import DEVICES

from asr.losses import rnnt_loss
from asr.losses.reference import rnnt_loss_reference

# (T lengths, U lengths, V): T=1, U=0, mixed lengths, B=1 and B>1
CASES = [
    ([1], [0], 3),
    ([1], [3], 4),
    ([4], [0], 2),
    ([5], [2], 5),
    ([3, 6, 1], [2, 0, 3], 6),
    ([7, 7, 4, 2], [4, 1, 4, 2], 5),
]


def make(ts, us, v, device, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    B, T, U = len(ts), max(ts), max(us)
    logits = torch.randn(B, T, U + 1, v, generator=g, dtype=dtype) * 2
    targets = torch.randint(1, v, (B, max(U, 1)), generator=g)
    return (
        logits.to(device).requires_grad_(),
        targets.to(device),
        torch.tensor(ts, device=device),
        torch.tensor(us, device=device),
    )


@DEVICES
@pytest.mark.parametrize("ts,us,v", CASES)
@pytest.mark.parametrize("fused", [True, False])
def test_matches_reference_loss_and_grad(ts, us, v, fused, device):
    logits, targets, tl, ul = make(ts, us, v, device)
    if not fused:
        logits = logits.detach().log_softmax(-1).requires_grad_()
    ours = rnnt_loss(logits, targets, tl, ul, reduction="none", fused_log_softmax=fused)
    (g_ours,) = torch.autograd.grad((ours * torch.arange(1, len(ts) + 1, device=device)).sum(), logits)
    ref_in = logits.detach().cpu().requires_grad_()
    ref = rnnt_loss_reference(ref_in, targets.cpu(), tl.cpu(), ul.cpu(), fused_log_softmax=fused)
    (g_ref,) = torch.autograd.grad((ref * torch.arange(1, len(ts) + 1)).sum(), ref_in)
    assert torch.allclose(ours.cpu(), ref, atol=1e-10, rtol=1e-10)
    assert torch.allclose(g_ours.cpu(), g_ref, atol=1e-10)


@DEVICES
def test_padding_gets_zero_gradient_and_values_do_not_matter(device):
    logits, targets, tl, ul = make([3, 6], [2, 4], 5, device)
    loss = rnnt_loss(logits, targets, tl, ul, reduction="sum")
    (g,) = torch.autograd.grad(loss, logits)
    assert g[0, 3:].abs().sum() == 0 and g[0, :, 3:].abs().sum() == 0
    with torch.no_grad():
        poisoned = logits.clone()
        poisoned[0, 3:] = 1e4
        poisoned[0, :, 3:] = -1e4
    assert torch.allclose(rnnt_loss(poisoned, targets, tl, ul, reduction="sum"), loss)


@DEVICES
def test_gradcheck(device):
    logits, targets, tl, ul = make([3, 2], [2, 1], 4, device)
    assert torch.autograd.gradcheck(lambda x: rnnt_loss(x, targets, tl, ul, reduction="sum"), (logits,))
    lp = logits.detach().log_softmax(-1).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda x: rnnt_loss(x, targets, tl, ul, fused_log_softmax=False, reduction="sum"), (lp,)
    )


@DEVICES
def test_packed_equals_padded(device):
    logits, targets, tl, ul = make([5, 2, 7], [3, 1, 2], 6, device)
    padded = rnnt_loss(logits, targets, tl, ul, reduction="none")
    (g_pad,) = torch.autograd.grad(padded.sum(), logits)
    rows = torch.cat([logits[b, : tl[b], : ul[b] + 1].reshape(-1, 6) for b in range(3)]).detach().requires_grad_()
    packed = rnnt_loss(rows, targets, tl, ul, reduction="none")
    (g_packed,) = torch.autograd.grad(packed.sum(), rows)
    assert torch.allclose(packed, padded, atol=1e-12)
    g_pad_rows = torch.cat([g_pad[b, : tl[b], : ul[b] + 1].reshape(-1, 6) for b in range(3)])
    assert torch.allclose(g_packed, g_pad_rows, atol=1e-12)
    with pytest.raises(ValueError, match="packed logits have"):
        rnnt_loss(rows[:-1], targets, tl, ul)


@DEVICES
def test_float32_close_to_float64(device):
    logits, targets, tl, ul = make([20, 13], [6, 9], 30, device)
    l64 = rnnt_loss(logits, targets, tl, ul, reduction="none")
    l32 = rnnt_loss(logits.detach().float(), targets, tl, ul, reduction="none")
    assert l32.dtype == torch.float32
    assert torch.allclose(l32.double(), l64, rtol=1e-5)


@DEVICES
def test_reductions_clamp_and_zero_infinity(device, caplog):
    logits, targets, tl, ul = make([4, 3], [2, 2], 5, device)
    none = rnnt_loss(logits, targets, tl, ul, reduction="none")
    assert torch.allclose(rnnt_loss(logits, targets, tl, ul, reduction="sum"), none.sum())
    assert torch.allclose(rnnt_loss(logits, targets, tl, ul, reduction="mean"), none.mean())
    (g,) = torch.autograd.grad(rnnt_loss(logits, targets, tl, ul, reduction="sum", clamp=0.05), logits)
    assert g.abs().max() <= 0.05 + 1e-12 and g.abs().max() > 0.04
    # T = 0: no alignment exists
    tl0 = torch.tensor([4, 0], device=device)
    inf = rnnt_loss(logits, targets, tl0, ul, reduction="none")
    assert torch.isinf(inf[1]) and torch.isfinite(inf[0])
    with caplog.at_level(logging.WARNING):
        z = rnnt_loss(logits, targets, tl0, ul, reduction="none", zero_infinity=True)
    assert z[1] == 0 and torch.allclose(z[0], inf[0]) and "1 utterance(s) have no alignment" in caplog.text
    (g,) = torch.autograd.grad(z.sum(), logits)
    assert g[1].abs().sum() == 0 and torch.isfinite(g).all()


def test_bad_input_is_a_clear_error():
    logits, targets, tl, ul = make([3], [2], 4, "cpu")
    with pytest.raises(ValueError, match="blank id 0"):
        rnnt_loss(logits, torch.zeros_like(targets), tl, ul)
    with pytest.raises(ValueError, match="too small"):
        rnnt_loss(logits, targets, torch.tensor([9]), ul)
    with pytest.raises(ValueError, match=r"targets must be in \[0, 4\)"):
        rnnt_loss(logits, targets + 10, tl, ul)


@DEVICES
def test_minus_inf_logits_in_column_zero_are_handled(device):
    """Masked (-inf) logits in some rows must not turn the normalizers into NaN."""
    logits, targets, tl, ul = make([4, 3], [2, 2], 5, device)
    with torch.no_grad():
        logits[0, 1, 0, 0] = float("-inf")  # blank impossible at node (t=1, u=0) of utterance 0
    ours = rnnt_loss(logits, targets, tl, ul, reduction="none").cpu()
    ref = rnnt_loss_reference(logits.detach().cpu(), targets.cpu(), tl.cpu(), ul.cpu())
    assert torch.isfinite(ours).all() and torch.allclose(ours, ref, atol=1e-10)


def test_missing_build_is_a_clear_error_naming_the_command(monkeypatch):
    import sys

    import asr
    import asr._ext as ext

    monkeypatch.setattr(ext, "_ops", None)
    monkeypatch.delattr(asr, "_C", raising=False)
    monkeypatch.setitem(sys.modules, "asr._C", None)  # import of asr._C now fails
    with pytest.raises(RuntimeError, match="run `make setup`"):
        ext.ops()
    logits, targets, tl, ul = make([2], [1], 3, "cpu")
    with pytest.raises(RuntimeError, match="not built"):
        rnnt_loss(logits, targets, tl, ul)


@DEVICES
def test_backward_twice_with_retain_graph_gives_the_same_gradient(device):
    logits, targets, tl, ul = make([4, 3], [2, 1], 5, device)
    loss = rnnt_loss(logits, targets, tl, ul, reduction="sum")
    (g1,) = torch.autograd.grad(loss, logits, retain_graph=True)
    (g2,) = torch.autograd.grad(loss, logits)
    assert torch.equal(g1, g2)
