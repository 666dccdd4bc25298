"""Mixed precision (issue 16): bfloat16/float16 inputs into every loss, every model config under
autocast, and a real `asr train trainer.precision=bf16-mixed` run.

Losses (asr/losses/precision.py): a loss given bf16/fp16 inputs computes on them in float32, so it
must equal the float32 loss of the same rounded values upcast, and its gradient, handed back in the
input's dtype, the float32 gradient rounded to that dtype: both up to LOSS_RTOL, which leaves room
for nothing but float32 reordering (measured: identical bit for bit). Against float64 on the same
rounded values the loss agrees to FLOAT64_RTOL (measured <= 2.1e-7; a bfloat16 accumulation would
be off by ~1e-2) and the gradient to one ulp of the input's dtype. Before the change every
compiled loss and torch's CPU CTC raised NotImplementedError on bf16/fp16 inputs, and under
autocast the simple losses' matmul normalizer ran in bfloat16 (loss off by 2.3e-4 relative).

Models: under bf16 autocast the encoder and the heads' layers run in bfloat16, the features and
the losses in float32; the first loss is within MODEL_LOSS_RTOL of float32's on the same weights
and batch (measured on espeak speech: <= 1.6e-3 bf16, conformer_ctc; <= 7.1e-5 fp16), and a few
training steps give finite losses and gradients. fp16 autocast runs on the CPU too (Lightning's
16-mixed does not: it trains bf16-mixed there), as a check of the numerics GPU 16-mixed gets:
before the change the fbank overflowed float16 (nan losses) and minGRU's scan its -1e30.
"""

from __future__ import annotations

import csv
import logging
import random
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from asr.cli import main
from asr.data.datamodule import collate
from asr.data.features import Fbank
from asr.losses import (
    ctc_fst_loss,
    ctc_loss,
    get_rnnt_prune_ranges,
    get_tdt_prune_ranges,
    rnnt_loss,
    rnnt_loss_pruned,
    rnnt_loss_simple,
    rnnt_loss_smoothed,
    rnnt_viterbi_loss,
    tdt_loss,
    tdt_loss_pruned,
    tdt_loss_simple,
    tdt_viterbi_loss,
)

LOW = [torch.bfloat16, torch.float16]
LOSS_RTOL = 1e-6  # loss and gradient vs float32 on the same rounded inputs (measured: equal)
FLOAT64_RTOL = 1e-5  # loss vs float64 on the same rounded inputs (measured <= 2.1e-7)
GRAD_ATOL = 1e-7  # float16's subnormals are 6e-8 apart: near 0 an ulp is absolute
MODEL_LOSS_RTOL = 0.01  # first loss under autocast vs float32 (measured <= 1.6e-3 bf16, 7.1e-5 fp16)

B, T, U, V, R = 2, 40, 8, 24, 4  # batch, frames, symbols, vocabulary, prune range
DURS = (0, 1, 2, 3)


def _case() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    targets = torch.randint(1, V, (B, U), generator=g)
    bd = torch.tensor([[0, 0, U, T], [0, 0, U - 3, T - 9]])
    lm, am = torch.randn(B, U + 1, V, generator=g) * 2, torch.randn(B, T, V, generator=g) * 2
    lm_t, am_t = torch.randn(B, U + 1, V + 4, generator=g), torch.randn(B, T, V + 4, generator=g)
    # one set of windows for every precision: only the pruned losses' logits vary
    _, (px_grad, py_grad) = rnnt_loss_simple(lm, am, targets, 0, bd, return_grad=True)
    _, occ = tdt_loss_simple(lm_t, am_t, targets, DURS, boundary=bd, return_grad=True)
    return {
        "targets": targets,
        "bd": bd,
        "log_probs": (torch.randn(B, T, V, generator=g) * 2).log_softmax(-1),
        "logits": torch.randn(B, T, U + 1, V, generator=g) * 2,
        "tdt_logits": torch.randn(B, T, U + 1, V + 4, generator=g) * 2,
        "lm": lm,
        "am": am,
        "lm_t": lm_t,
        "am_t": am_t,
        "ranges": get_rnnt_prune_ranges(px_grad, py_grad, bd, R),
        "tdt_ranges": get_tdt_prune_ranges(occ, bd, R, DURS),
        "pruned": torch.randn(B, T, R, V, generator=g) * 2,
        "tdt_pruned": torch.randn(B, T, R, V + 4, generator=g) * 2,
    }


CASE = _case()


def _lens() -> tuple[torch.Tensor, torch.Tensor]:
    return CASE["bd"][:, 3], CASE["bd"][:, 2]


# name -> (the names of its float inputs in CASE, the loss of those inputs [B])
LOSSES: dict[str, tuple[list[str], Callable[..., torch.Tensor]]] = {
    "ctc": (["log_probs"], lambda x: ctc_loss(x, CASE["targets"], *_lens(), reduction="none")),
    "ctc_fst": (
        ["log_probs"],
        lambda x: ctc_fst_loss(x, CASE["targets"], *_lens(), delay_penalty=0.1, reduction="none"),
    ),
    "ctc_fst_viterbi": (
        ["log_probs"],
        lambda x: ctc_fst_loss(x, CASE["targets"], *_lens(), viterbi=True, reduction="none"),
    ),
    "rnnt": (["logits"], lambda x: rnnt_loss(x, CASE["targets"], *_lens(), reduction="none")),
    "rnnt_modified": (
        ["logits"],
        lambda x: rnnt_loss(x, CASE["targets"], *_lens(), reduction="none", rnnt_type="modified"),
    ),
    "rnnt_viterbi": (["logits"], lambda x: rnnt_viterbi_loss(x, CASE["targets"], *_lens(), reduction="none")),
    "rnnt_smoothed": (
        ["lm", "am"],
        lambda lm, am: rnnt_loss_smoothed(lm, am, CASE["targets"], 0, 0.25, 0.1, CASE["bd"], reduction="none"),
    ),
    "rnnt_pruned": (
        ["pruned"],
        lambda x: rnnt_loss_pruned(x, CASE["targets"], CASE["ranges"], 0, CASE["bd"], reduction="none"),
    ),
    "tdt": (
        ["tdt_logits"],
        lambda x: tdt_loss(x, CASE["targets"], *_lens(), DURS, sigma=0.05, omega=0.1, reduction="none"),
    ),
    "tdt_viterbi": (
        ["tdt_logits"],
        lambda x: tdt_viterbi_loss(x, CASE["targets"], *_lens(), DURS, sigma=0.05, omega=0.1, reduction="none"),
    ),
    "tdt_simple": (
        ["lm_t", "am_t"],
        lambda lm, am: tdt_loss_simple(
            lm, am, CASE["targets"], DURS, boundary=CASE["bd"], lm_only_scale=0.25, reduction="none"
        ),
    ),
    "tdt_pruned": (
        ["tdt_pruned"],
        lambda x: tdt_loss_pruned(
            x, CASE["targets"], CASE["tdt_ranges"], DURS, boundary=CASE["bd"], sigma=0.05, omega=0.1, reduction="none"
        ),
    ),
}


def _loss_and_grads(
    fn, inputs: list[torch.Tensor], autocast: torch.dtype | None = None
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """The loss [B] of the inputs (computed under autocast to that dtype if given) and the gradients of
    sum_b (b + 1) * loss[b] (each utterance its own scale), taken outside autocast as Lightning does."""
    xs = [x.detach().requires_grad_() for x in inputs]
    with torch.autocast("cpu", dtype=autocast or torch.bfloat16, enabled=autocast is not None):
        loss = fn(*xs)
    w = torch.arange(1.0, loss.shape[0] + 1, dtype=loss.dtype)
    return loss.detach(), torch.autograd.grad((loss * w).sum(), xs)


@pytest.mark.parametrize("dtype", LOW, ids=["bf16", "fp16"])
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_loss_of_low_precision_inputs_is_the_float32_loss_of_their_values(name, dtype):
    names, fn = LOSSES[name]
    low = [CASE[n].to(dtype) for n in names]
    loss, grads = _loss_and_grads(fn, low)
    loss32, grads32 = _loss_and_grads(fn, [x.float() for x in low])
    loss64, grads64 = _loss_and_grads(fn, [x.double() for x in low])
    assert loss.dtype == torch.float32 and all(g.dtype == dtype for g in grads)
    assert torch.isfinite(loss).all()
    torch.testing.assert_close(loss, loss32, rtol=LOSS_RTOL, atol=0)
    assert float(((loss.double() - loss64) / loss64).abs().max()) < FLOAT64_RTOL
    for g, g32, g64 in zip(grads, grads32, grads64):
        # the float32 gradient rounded once, to the input's dtype; the float64 one to within an ulp
        torch.testing.assert_close(g, g32.to(dtype), rtol=LOSS_RTOL, atol=0)
        torch.testing.assert_close(g, g64.to(dtype), rtol=torch.finfo(dtype).eps, atol=GRAD_ATOL)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_autocast_does_not_reach_into_the_losses(name):
    """float32 inputs under bf16 autocast: the loss is computed as without it (the simple losses'
    normalizer is a matmul, which autocast would run in bfloat16)."""
    names, fn = LOSSES[name]
    inputs = [CASE[n] for n in names]
    ref, ref_grads = _loss_and_grads(fn, inputs)
    loss, grads = _loss_and_grads(fn, inputs, autocast=torch.bfloat16)
    assert torch.equal(loss, ref) and all(torch.equal(g, r) for g, r in zip(grads, ref_grads))


@pytest.mark.parametrize("dtype", LOW, ids=["bf16", "fp16"])
def test_fbank_stays_float32_under_autocast(speech_wave, dtype):
    """Before: bfloat16 features off by up to 0.07 (log-mel), and float16 ones inf (the power spectrum
    overflows it)."""
    fbank = Fbank()
    wave, lens = speech_wave[None], torch.tensor([speech_wave.shape[0]])
    ref, _ = fbank(wave, lens)
    with torch.autocast("cpu", dtype=dtype):
        feats, _ = fbank(wave, lens)
    assert feats.dtype == torch.float32 and torch.equal(feats, ref)


def test_lightning_16_mixed_on_cpu_trains_bf16_mixed():
    """What `trainer.precision=16-mixed` does on a CPU: Lightning warns and trains bf16-mixed."""
    import lightning as L

    with pytest.warns(UserWarning, match="AMP with fp16 is not supported on CPU"):
        trainer = L.Trainer(accelerator="cpu", precision="16-mixed", logger=False, enable_checkpointing=False)
    assert trainer.precision == "bf16-mixed"


# ---- every model config under autocast --------------------------------------------------------

TRAIN_STEPS = 3


def _speech_batch(wave: torch.Tensor, vocab: int):
    """Two utterances of real speech (3 s and 2 s, so one is padded), random transcripts."""
    g = torch.Generator().manual_seed(0)
    waves = [wave, wave[: 2 * 16000]]
    tokens = [torch.randint(1, vocab, (n,), generator=g).tolist() for n in (12, 8)]
    return collate(waves, tokens, ["a", "b"], ["a", "b"])


def _model_configs() -> list[str]:
    from test_model import MODEL_CONFIGS

    return MODEL_CONFIGS


@pytest.mark.parametrize("dtype", LOW, ids=["bf16", "fp16"])
@pytest.mark.parametrize("name", _model_configs())
def test_every_model_config_trains_under_autocast(name, dtype, speech_wave, one_thread):
    """The first loss is float32's within MODEL_LOSS_RTOL (eval mode: same weights, batch, no dropout);
    then TRAIN_STEPS training steps under autocast, each with a finite loss and a finite gradient
    for every parameter."""
    from test_model import tiny_model

    if name == "lstm_transducer" and dtype == torch.float16:
        pytest.skip("torch's CPU LSTM (oneDNN) has no float16 kernel; cuDNN has, and Lightning's CPU 16-mixed is bf16")
    vocab = 12
    batch = _speech_batch(speech_wave, vocab)
    random.seed(0)  # dynamic chunk training samples its chunk sizes from `random`
    torch.manual_seed(0)
    model = tiny_model(name, vocab)
    model.normalizer.fit_([model.fbank(batch.audio, batch.audio_lens)])
    model.eval()
    with torch.no_grad():
        ref = float(model.losses(batch)["loss"])
        with torch.autocast("cpu", dtype=dtype):
            out = model.losses(batch)
    assert all(v.dtype == torch.float32 for v in out.values())
    assert abs(float(out["loss"]) - ref) < MODEL_LOSS_RTOL * ref, (float(out["loss"]), ref)

    model.train()
    optimizer = model.configure_optimizers()["optimizer"]
    for step in range(TRAIN_STEPS):
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=dtype):
            loss = model.losses(batch)["loss"]
        assert loss.dtype == torch.float32 and torch.isfinite(loss), step
        loss.backward()
        bad = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
        assert not bad, f"step {step}: no or non-finite gradient for {bad}"
        optimizer.step()


# ---- a real bf16-mixed training run -----------------------------------------------------------


def test_asr_train_bf16_mixed(tiny_corpus, tmp_path, caplog):
    """`asr train trainer.precision=bf16-mixed` with a tiny pruned transducer (features, encoder, simple
    and pruned losses all under autocast) on the tiny corpus for 2 epochs: Lightning trains with
    bfloat16 autocast, every logged loss is finite, the checkpoint's weights too (~10 s)."""
    from test_reproducibility import TINY

    man = tmp_path / "manifests"
    assert main(["prepare", "librispeech", "--root", str(tiny_corpus), "--out", str(man), "--tokenizer", "char"]) == 0
    exp = tmp_path / "exp"
    small = ["model.heads.transducer.pred_dim=32", "model.heads.transducer.joint_dim=32"]
    with warnings.catch_warnings(), caplog.at_level(logging.INFO):
        warnings.simplefilter("ignore")  # Lightning's notes on a tiny run (few batches, workers)
        args = ["train", f"exp_dir={exp}", f"data.manifest_dir={man}", "model=conformer_pruned_transducer"]
        assert main([*args, "trainer.precision=bf16-mixed", *small, *TINY]) == 0
    assert "bfloat16 Automatic Mixed Precision" in caplog.text
    with open(exp / "csv" / "version_0" / "metrics.csv") as f:
        losses = [float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")]
    assert len(losses) >= 4 and all(torch.isfinite(torch.tensor(losses)))
    ckpt = torch.load(Path(exp / "checkpoints" / "last.ckpt"), weights_only=False)
    assert ckpt["epoch"] == 1 and all(
        torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point()
    )
