"""The CUDA kernels against the CPU kernels on the same inputs, and half precision on the GPU.

Every test here needs a GPU and a CUDA build of asr._C, and skips cleanly without them (CI).
The per-loss files run their reference cases on both devices (`devices.DEVICES`); here each
compiled op's CUDA result is compared with its CPU result for the same inputs, on small lattices
and on lattices whose anti-diagonals (for the FSA: whose graphs' states) outnumber a block's 1024
threads, so that the kernels' loops over a diagonal's nodes take more than one pass (a diagonal
of an RNN-T/TDT lattice has at most min(T, U+1) nodes: both must exceed 1024), and the losses
with bf16/fp16 logits on the GPU are compared with the float32 loss of the same (rounded) values.

Tolerances: float64 agrees to 1e-9 (the kernels compute the same sums in the same order, only
exp/log1p differ in their last bits between libm and CUDA's math library); float32 losses to
1e-5 relative. Viterbi paths are equal exactly (max and + are exact, ties broken alike).
Half precision: the losses upcast bf16/fp16 to float32 (asr.losses.precision), so the loss of
rounded logits equals the float32 loss of the same rounded values to float32 precision (1e-5
relative), and the gradient, returned in the input's dtype, to that dtype's rounding
(bf16: 1e-2 relative, fp16: 1e-3 relative of the largest entry).
"""

from __future__ import annotations

import pytest
import torch
from devices import CUDA

from asr._ext import ops
from asr.fsa import ctc_graphs, intersect_dense, viterbi
from asr.losses import ctc_fst_loss, rnnt_loss, tdt_loss
from asr.losses.lattice import row_layout, row_logsumexp
from asr.losses.pruned_rnnt import get_rnnt_prune_ranges, rnnt_loss_pruned, rnnt_loss_simple

pytestmark = CUDA


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _lattice_batch(ts, us, v, seed=0, dtype=torch.float64, tokens=None):
    """Logits [B, T, U+1, v] and targets below `tokens` (default v: TDT rows hold durations too)."""
    g = _gen(seed)
    logits = torch.randn(len(ts), max(ts), max(us) + 1, v, generator=g, dtype=dtype) * 2
    targets = torch.randint(1, tokens or v, (len(ts), max(max(us), 1)), generator=g)
    return logits, targets, torch.tensor(ts), torch.tensor(us)


def _both(fn, *args, **kwargs):
    """fn on the CPU and on CUDA (tensor arguments moved there), each result as CPU tensors."""

    def run(dev):
        out = fn(*(a.to(dev) if isinstance(a, torch.Tensor) else a for a in args), **kwargs)
        return [o.cpu() for o in out] if isinstance(out, (list, tuple)) else [out.cpu()]

    return run("cpu"), run("cuda")


def _close(cpu, gpu, atol=1e-9, rtol=1e-9):
    for a, b in zip(cpu, gpu):
        assert a.dtype == b.dtype and a.shape == b.shape
        if a.is_floating_point():
            torch.testing.assert_close(b, a, atol=atol, rtol=rtol, equal_nan=True)
        else:
            assert torch.equal(a, b)


# (T lengths, U lengths, V): small, mixed, U + 1 > 1024 with short diagonals (a block of 1024
# threads, most idle), and T, U + 1 > 1024 (diagonals of up to 1031 nodes: longer than a block)
RNNT_SHAPES = [
    ([1], [0], 3),
    ([3, 6, 1, 0], [2, 0, 3, 1], 6),
    ([40, 33], [17, 25], 9),
    ([3, 2], [1100, 700], 4),
    ([1100, 7], [1030, 5], 3),
]


@pytest.mark.parametrize("ts,us,v", RNNT_SHAPES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_rnnt_ops_equal_cpu(ts, us, v, dtype):
    logits, targets, tl, ul = _lattice_batch(ts, us, v, dtype=dtype)
    max_u = int(ul.max())
    rows, off, st, max_t = row_layout(logits, tl, ul, max_u)
    den = row_logsumexp(rows)
    args = (rows.contiguous(), den, targets, tl, ul, off, st)
    cpu, gpu = _both(ops().rnnt_forward, *args, max_t=max_t, max_u=max_u, blank=0)
    tol = 1e-9 if dtype == torch.float64 else 1e-5
    _close(cpu, gpu, atol=tol, rtol=tol)
    loss, alpha, beta = cpu
    scale = torch.rand(len(ts), generator=_gen(1), dtype=dtype) + 0.5
    occ = _both(ops().rnnt_log_occupancy, alpha, beta, loss, scale, tl, ul, off, st, num_rows=rows.shape[0])
    _close(*occ, atol=tol, rtol=tol)

    def posteriors(*a, **k):
        grad = torch.zeros_like(a[0])
        ops().rnnt_subtract_arc_posteriors(grad, *a, **k)
        return grad

    grads = _both(posteriors, *args, alpha, beta, loss, scale, blank=0)
    _close(*grads, atol=tol, rtol=tol)
    _close(*_both(ops().rnnt_viterbi, *args, max_t=max_t, max_u=max_u, blank=0), atol=1e-12, rtol=0)


@pytest.mark.parametrize("modified", [False, True])
@pytest.mark.parametrize("b,s,t", [(3, 4, 6), (2, 30, 80), (2, 1100, 1200)])
def test_mutual_information_ops_equal_cpu(b, s, t, modified):
    g = _gen(b + s + t)
    px = torch.randn(b, s, t if modified else t + 1, generator=g, dtype=torch.float64)
    py = torch.randn(b, s + 1, t, generator=g, dtype=torch.float64)
    bd = torch.tensor([[0, 0, s, t]] + [[1, 2, s // 2 + 1, t - 1]] * (b - 1))
    fwd_cpu, fwd_gpu = _both(ops().mutual_information_forward, px, py, bd, modified=modified)
    _close(fwd_cpu, fwd_gpu)
    ans, p = fwd_cpu
    ans_grad = torch.rand(b, generator=g, dtype=torch.float64)
    _close(*_both(ops().mutual_information_backward, px, py, bd, p, ans, ans_grad, modified=modified))


def test_mutual_information_boundary_is_checked_on_cuda():
    px, py = torch.zeros(1, 2, 4, device="cuda"), torch.zeros(1, 3, 3, device="cuda")
    with pytest.raises(RuntimeError, match="boundary out of range"):
        ops().mutual_information_forward(px, py, torch.tensor([[0, 0, 3, 3]], device="cuda"), modified=False)


@pytest.mark.parametrize("durations,sigma", [((0, 1, 2, 3, 4), 0.0), ((1, 2), 0.05)])
@pytest.mark.parametrize(
    "ts,us",
    # the last: diagonals of up to 1031 nodes, longer than a block (min(T + 1, U + 1) > 1024)
    [([4, 7, 2, 0], [2, 3, 0, 1]), ([60, 45], [20, 31]), ([40], [1100]), ([1100, 9], [1030, 4])],
)
def test_tdt_ops_equal_cpu(ts, us, durations, sigma):
    d = len(durations)
    logits, targets, tl, ul = _lattice_batch(ts, us, 5 + d, seed=3, tokens=5)
    max_u = int(ul.max())
    rows, off, st, max_t = row_layout(logits, tl, ul, max_u)
    rows = rows.contiguous()
    lattice = (
        row_logsumexp(rows[:, :5]),
        row_logsumexp(rows[:, 5:]),
        targets,
        tl,
        ul,
        off,
        st,
        torch.tensor(durations),
    )
    kw = dict(num_tokens=5, blank=0, sigma=sigma)
    cpu, gpu = _both(ops().tdt_forward, rows, *lattice, max_t=max_t, max_u=max_u, **kw)
    _close(cpu, gpu)
    loss, alpha, beta = cpu
    scale = torch.rand(len(ts), generator=_gen(2), dtype=torch.float64) + 0.5

    def posteriors(*a, **k):
        grad = torch.zeros_like(a[0])
        ops().tdt_subtract_arc_posteriors(grad, *a, **k)
        return grad

    _close(*_both(posteriors, rows, *lattice, alpha, beta, loss, scale, **kw))
    _close(*_both(ops().tdt_viterbi, rows, *lattice, max_t=max_t, max_u=max_u, **kw), atol=1e-12, rtol=0)


@pytest.mark.parametrize("topology", ["standard", "modified"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("delay", [False, True])
def test_dense_intersection_equals_cpu(topology, dtype, delay):
    g = _gen(7)
    b, t_max, v = 5, 120, 30
    lp = torch.randn(b, t_max, v, generator=g, dtype=dtype).log_softmax(-1)
    u_lens = torch.tensor([40, 0, 12, 55, 3])
    targets = torch.randint(1, v, (b, 55), generator=g)
    t_lens = torch.tensor([120, 7, 30, 50, 1])  # the 4th and 5th have too few frames: -inf
    graphs = ctc_graphs(targets, u_lens, v, topology)
    extra = {}
    if delay:
        extra = dict(
            arc_extra=(graphs.aux_labels > 0).float(), frame_extra=torch.randn(b, t_max, generator=g, dtype=dtype)
        )
    tol = 1e-9 if dtype == torch.float64 else 1e-5
    res = {}
    for dev in ("cpu", "cuda"):
        x = lp.to(dev).requires_grad_()
        total = intersect_dense(graphs, x, t_lens, **extra)
        (grad,) = torch.autograd.grad(torch.where(torch.isfinite(total), total, 0).sum(), x)
        best, arcs = viterbi(graphs, x, t_lens, **extra)
        res[dev] = [r.cpu() for r in (total, grad, best, arcs)]
    _close(res["cpu"][:3], res["cuda"][:3], atol=tol, rtol=tol)
    assert torch.equal(res["cpu"][3], res["cuda"][3])
    assert torch.isinf(res["cpu"][0][3:]).all() and torch.isfinite(res["cpu"][0][:3]).all()


@pytest.mark.parametrize("topology", ["standard", "modified"])
def test_dense_intersection_graphs_larger_than_a_block_equal_cpu(topology):
    # 600 tokens: graphs of 1202 states, more than a block's 1024 threads (a thread takes several)
    g = _gen(8)
    b, t_max, v = 2, 1300, 20
    lp = torch.randn(b, t_max, v, generator=g, dtype=torch.float64).log_softmax(-1)
    u_lens, t_lens = torch.tensor([600, 500]), torch.tensor([1300, 1100])
    targets = torch.randint(1, v, (b, 600), generator=g)
    graphs = ctc_graphs(targets, u_lens, v, topology)
    assert int(graphs.num_states.max()) > 1024
    extra = dict(
        arc_extra=(graphs.aux_labels > 0).float(), frame_extra=torch.randn(b, t_max, generator=g, dtype=torch.float64)
    )
    res = {}
    for dev in ("cpu", "cuda"):
        x = lp.to(dev).requires_grad_()
        total = intersect_dense(graphs, x, t_lens, **extra)
        (grad,) = torch.autograd.grad(total.sum(), x)
        best, arcs = viterbi(graphs, x, t_lens, **extra)
        res[dev] = [r.cpu() for r in (total, grad, best, arcs)]
    assert torch.isfinite(res["cpu"][0]).all()
    _close(res["cpu"][:3], res["cuda"][:3])
    assert torch.equal(res["cpu"][3], res["cuda"][3])


def test_dense_intersection_bad_graphs_are_refused_on_cuda_with_the_cpu_message():
    lp = torch.zeros(1, 4, 3, device="cuda").log_softmax(-1)
    with pytest.raises(RuntimeError, match="outside the 3 log-prob columns"):
        intersect_dense(ctc_graphs(torch.tensor([[5]]), torch.tensor([1]), 6), lp, torch.tensor([4]))
    with pytest.raises(RuntimeError, match=r"lengths\[0\] outside \[0, 4\]"):
        intersect_dense(ctc_graphs(torch.tensor([[1]]), torch.tensor([1]), 3), lp, torch.tensor([5]))


# ---- the losses end to end: CUDA equals CPU, and half precision on the GPU -------------------


def _loss_and_grad(fn, x, *args, **kwargs):
    x = x.detach().requires_grad_()
    loss = fn(x, *args, **kwargs)
    (grad,) = torch.autograd.grad(loss.sum(), x)
    return loss.detach(), grad


LOSSES = {
    "rnnt": lambda x, y, tl, ul: rnnt_loss(x, y, tl, ul, reduction="none"),
    "rnnt_modified": lambda x, y, tl, ul: rnnt_loss(x, y, tl, ul, reduction="none", rnnt_type="modified"),
    "tdt": lambda x, y, tl, ul: tdt_loss(x, y, tl, ul, durations=(0, 1, 2), reduction="none"),
}


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_transducer_losses_equal_cpu(name):
    logits, targets, tl, ul = _lattice_batch([30, 22, 9], [8, 11, 3], 12, seed=4, dtype=torch.float32, tokens=9)
    cpu = _loss_and_grad(LOSSES[name], logits, targets, tl, ul)
    gpu = _loss_and_grad(LOSSES[name], logits.cuda(), targets.cuda(), tl.cuda(), ul.cuda())
    _close(cpu, [t.cpu() for t in gpu], atol=1e-5, rtol=1e-5)


def test_pruned_rnnt_equals_cpu():
    g = _gen(9)
    b, t, s, c = 3, 40, 12, 16
    am, lm = torch.randn(b, t, c, generator=g), torch.randn(b, s + 1, c, generator=g)
    symbols = torch.randint(1, c, (b, s), generator=g)
    bd = torch.tensor([[0, 0, 12, 40], [0, 0, 9, 33], [0, 0, 4, 10]])
    out = {}
    for dev in ("cpu", "cuda"):
        a, l_ = am.to(dev).requires_grad_(), lm.to(dev).requires_grad_()
        simple, (gx, gy) = rnnt_loss_simple(l_, a, symbols.to(dev), 0, bd.to(dev), reduction="none", return_grad=True)
        ranges = get_rnnt_prune_ranges(gx, gy, bd.to(dev), 5)
        logits = (a[:, :, None, :] + l_[:, None, :, :]).gather(
            2, ranges[..., None].expand(-1, -1, -1, c)
        )  # an additive joiner on the pruned positions
        pruned = rnnt_loss_pruned(logits, symbols.to(dev), ranges, 0, bd.to(dev), reduction="none")
        grads = torch.autograd.grad((simple + pruned).sum(), (a, l_))
        out[dev] = [x.detach().cpu() for x in (simple, pruned, ranges, *grads)]
    _close(out["cpu"], out["cuda"], atol=1e-5, rtol=1e-5)


def test_ctc_fst_loss_equals_cpu_and_stays_on_the_gpu():
    g = _gen(5)
    lp = torch.randn(4, 50, 20, generator=g).log_softmax(-1)
    targets, u_lens, t_lens = (
        torch.randint(1, 20, (4, 15), generator=g),
        torch.tensor([15, 3, 9, 0]),
        torch.tensor([50, 20, 31, 5]),
    )
    cpu = _loss_and_grad(ctc_fst_loss, lp, targets, t_lens, u_lens, reduction="none", delay_penalty=0.1)
    gpu = _loss_and_grad(
        ctc_fst_loss, lp.cuda(), targets.cuda(), t_lens.cuda(), u_lens.cuda(), reduction="none", delay_penalty=0.1
    )
    assert gpu[0].is_cuda and gpu[1].is_cuda
    _close(cpu, [t.cpu() for t in gpu], atol=1e-5, rtol=1e-5)
    vit_cpu = _loss_and_grad(ctc_fst_loss, lp, targets, t_lens, u_lens, reduction="none", viterbi=True)
    vit_gpu = _loss_and_grad(ctc_fst_loss, lp.cuda(), targets, t_lens, u_lens, reduction="none", viterbi=True)
    _close(vit_cpu, [t.cpu() for t in vit_gpu], atol=1e-5, rtol=1e-5)


HALF = {torch.bfloat16: 1e-2, torch.float16: 1e-3}


@pytest.mark.parametrize("dtype", sorted(HALF, key=str))
@pytest.mark.parametrize("name", sorted(LOSSES) + ["ctc_fst"])
def test_half_precision_logits_match_float32_on_the_gpu(name, dtype):
    if name == "ctc_fst":
        g = _gen(6)
        x = torch.randn(3, 40, 16, generator=g).log_softmax(-1).cuda()
        args = (torch.randint(1, 16, (3, 10), generator=g).cuda(), torch.tensor([40, 33, 12]), torch.tensor([10, 7, 4]))

        def fn(z, *a):
            return ctc_fst_loss(z, *a, reduction="none")
    else:
        logits, targets, tl, ul = _lattice_batch([30, 22, 9], [8, 11, 3], 12, seed=4, dtype=torch.float32, tokens=9)
        x, args, fn = logits.cuda(), (targets.cuda(), tl.cuda(), ul.cuda()), LOSSES[name]
    low = x.to(dtype)
    loss_low, grad_low = _loss_and_grad(fn, low, *args)
    loss_32, grad_32 = _loss_and_grad(fn, low.float(), *args)  # the same rounded values, in float32
    assert loss_low.dtype == torch.float32 and grad_low.dtype == dtype
    torch.testing.assert_close(loss_low, loss_32, atol=1e-5, rtol=1e-5)
    scale = grad_32.abs().max()
    assert (grad_low.float() - grad_32).abs().max() <= HALF[dtype] * scale
