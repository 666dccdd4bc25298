"""The bindings of asr._C (csrc/bindings.cpp): named arguments, docstrings, one dispatch by device.

No GPU is needed: a tensor on the `meta` device, and a fake CUDA tensor (torch's
FakeTensorMode), reach the dispatch, which must refuse them with an error that names the
op and what is missing, before any kernel reads their (absent) data.
"""

from __future__ import annotations

import re
import types

import pytest
import torch

from asr._ext import ops


def _ops() -> dict[str, types.BuiltinFunctionType]:
    return {name: f for name, f in vars(ops()).items() if isinstance(f, types.BuiltinFunctionType)}


def _signature(op) -> list[tuple[str, str]]:
    """(name, type) of each argument, from the signature line pybind11 writes into the docstring."""
    first = op.__doc__.splitlines()[0]
    m = re.fullmatch(rf"{op.__name__}\((.*)\) -> .*", first)
    assert m, f"no signature line in {op.__name__}'s docstring: {first!r}"
    return [tuple(a.split(": ", 1)) for a in m.group(1).split(", ")] if m.group(1) else []


def _dummy_args(op, device: str) -> dict[str, object]:
    """Keyword arguments of `op`: empty tensors on `device` for its tensors, zeros for the rest."""
    out: dict[str, object] = {}
    for name, kind in _signature(op):
        if "Tensor" in kind:
            out[name] = torch.zeros(2, device=device)
        elif kind == "bool":
            out[name] = False
        elif "Float" in kind or kind == "float":
            out[name] = 0.0
        else:
            out[name] = 0
    return out


def _tensor_ops() -> list[str]:
    return sorted(n for n, f in _ops().items() if any("Tensor" in k for _, k in _signature(f)))


def test_every_op_has_named_arguments_and_a_docstring():
    found = _ops()
    assert {
        "rnnt_forward",
        "tdt_forward",
        "rnnt_viterbi",
        "tdt_viterbi",
        "mutual_information_forward",
        "fsa_compose",
        "dense_intersect_backward",
    } <= set(found)
    for name, op in found.items():
        args = _signature(op)
        assert args, name
        assert not any(re.fullmatch(r"arg\d+", a) for a, _ in args), f"{name} has unnamed arguments: {args}"
        description = op.__doc__.split("\n", 1)[1].strip() if "\n" in op.__doc__ else ""
        assert description, f"{name} has no docstring"
    assert isinstance(ops().with_cuda, bool)


def _rnnt_inputs() -> dict[str, object]:
    """Padded logits [B=2, T=3, U+1=3, V=4] as rows, with the layout the kernel reads."""
    g = torch.Generator().manual_seed(0)
    b, t, u1, v = 2, 3, 3, 4
    logits = torch.randn(b * t * u1, v, generator=g, dtype=torch.float64)
    return dict(
        logits=logits,
        denom=torch.logsumexp(logits, -1),
        targets=torch.tensor([[1, 2], [3, 0]]),
        logit_lengths=torch.tensor([3, 2]),
        target_lengths=torch.tensor([2, 1]),
        row_offsets=torch.arange(b) * (t * u1),
        t_strides=torch.full((b,), u1),
        max_t=t,
        max_u=u1 - 1,
        blank=0,
    )


def test_keyword_call_equals_positional_call():
    kw = _rnnt_inputs()
    positional = ops().rnnt_forward(*kw.values())
    keyword = ops().rnnt_forward(**dict(reversed(list(kw.items()))))  # any order
    assert len(positional) == len(keyword) == 3
    for p, k in zip(positional, keyword):
        assert torch.equal(p, k)
    assert torch.isfinite(positional[0]).all()
    topo = ops().fsa_ctc_topo(vocab_size=4, modified=True)
    for p, k in zip(ops().fsa_ctc_topo(4, True), topo):
        assert torch.equal(p, k)


@pytest.mark.parametrize("op", _tensor_ops())
def test_tensors_on_a_device_without_kernels_are_refused_naming_the_op(op):
    f = getattr(ops(), op)
    with pytest.raises(
        RuntimeError,
        match=rf"^asr\._C\.{op}: got tensors on device 'meta', but .*kernels only for "
        r"the CPU.*Move the inputs to the CPU \(\.cpu\(\)\)",
    ):
        f(**_dummy_args(f, "meta"))


@pytest.mark.parametrize("op", _tensor_ops())
def test_tensors_on_different_devices_are_refused_naming_the_arguments(op):
    f = getattr(ops(), op)
    kw = _dummy_args(f, "meta")
    tensors = [name for name, x in kw.items() if isinstance(x, torch.Tensor)]
    assert len(tensors) > 1, op
    kw[tensors[-1]] = torch.zeros(2)  # the last tensor on the CPU, the others on meta
    with pytest.raises(
        RuntimeError,
        match=rf"^asr\._C\.{op}: all tensor arguments must be on one device, but "
        rf"{tensors[0]} is on meta and {tensors[-1]} on cpu",
    ):
        f(**kw)


def _fake_cuda_tensor() -> torch.Tensor:
    """A tensor whose device is CUDA, without a GPU (torch's FakeTensorMode); skips where torch cannot."""
    if ops().with_cuda:
        pytest.skip("this build has CUDA kernels: a fake CUDA tensor would reach them")
    try:
        from torch._subclasses.fake_tensor import FakeTensorMode

        with FakeTensorMode():
            x = torch.zeros(2, device="cuda")
    except Exception as e:  # a private torch API: its absence only skips this check
        pytest.skip(f"torch cannot make a fake CUDA tensor here: {e}")
    assert x.device.type == "cuda"
    return x


def test_cuda_tensors_without_cuda_kernels_say_what_is_missing():
    x = _fake_cuda_tensor()
    kw = _dummy_args(ops().rnnt_forward, "cpu")
    kw = {k: x if isinstance(v, torch.Tensor) else v for k, v in kw.items()}
    with pytest.raises(RuntimeError) as e:
        ops().rnnt_forward(**kw)
    assert str(e.value).splitlines()[0] == (
        "asr._C.rnnt_forward: got CUDA tensors, but this build of asr has no CUDA kernels (it was built without a "
        "CUDA toolkit or against a torch without CUDA). Rebuild where both are present (`pip install "
        "--no-build-isolation -e .`; ASR_FORCE_CUDA=1 forces the CUDA build), or move the inputs to the CPU (.cpu()) "
        "to use the CPU kernels."
    )
    kw["logits"] = torch.zeros(2)
    with pytest.raises(
        RuntimeError,
        match=r"asr\._C\.rnnt_forward: all tensor arguments must be on one device, "
        r"but logits is on cpu and denom on cuda:0",
    ):
        ops().rnnt_forward(**kw)
