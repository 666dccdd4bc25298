"""Checkpoints of `asr train`: last.ckpt after every epoch, the top k by val_wer, resume.

A tiny regression module with a scripted val_wer drives the same callbacks `asr train`
uses, so which epochs improve is known in advance and the test takes seconds.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from asr.train import checkpoint_callbacks

# val_wer by epoch: only epochs 0, 1, 3 and 6 improve on the best so far; the others must
# still write last.ckpt.
VAL_WER = [0.50, 0.40, 0.60, 0.30, 0.70, 0.65, 0.20, 0.90]


class Scripted(L.LightningModule):
    """Linear regression whose logged val_wer follows VAL_WER, with Adam and a step scheduler."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 1)

    def training_step(self, batch, _):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.lin(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, _):
        self.log("val_wer", VAL_WER[self.current_epoch])

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.parameters(), lr=1e-2)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class LastAfterEachEpoch(L.Callback):
    """Reads last.ckpt at the start of every epoch and at the end of training, which is after
    the previous epoch's checkpoint callbacks have saved (they run after all other callbacks)."""

    def __init__(self, path: Path):
        self.path, self.seen = path, []

    def _read(self) -> None:
        if self.path.exists():
            ck = torch.load(self.path, weights_only=False)
            self.seen.append((ck["epoch"], ck["global_step"]))

    def on_train_epoch_start(self, trainer, pl_module):
        self._read()

    def on_train_end(self, trainer, pl_module):
        self._read()


def _fit(ckpt_dir: Path, max_epochs: int, resume: Path | None = None) -> tuple[L.Trainer, LastAfterEachEpoch]:
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(40, 4, generator=g), torch.randn(40, 1, generator=g))
    top_k, last = checkpoint_callbacks(ckpt_dir, save_top_k=3)
    probe = LastAfterEachEpoch(ckpt_dir / "last.ckpt")
    trainer = L.Trainer(
        max_epochs=max_epochs,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[top_k, last, probe],
    )
    trainer.fit(
        Scripted(),
        DataLoader(data, batch_size=8),
        DataLoader(data, batch_size=40),
        ckpt_path=None if resume is None else str(resume),
    )
    return trainer, probe


def test_last_ckpt_is_written_every_epoch_and_the_top_3_are_kept(tmp_path):
    ckpt_dir = tmp_path / "checkpoints"
    _, probe = _fit(ckpt_dir, max_epochs=6)
    # every epoch, improving or not, leaves last.ckpt at that epoch's global step (5 batches an epoch)
    assert probe.seen == [(e, 5 * (e + 1)) for e in range(6)]
    last = torch.load(ckpt_dir / "last.ckpt", weights_only=False)
    assert last["epoch"] == 5 and last["global_step"] == 30
    # the 3 best by val_wer over epochs 0-5 (0.30, 0.40, 0.50), named by epoch and WER
    assert sorted(p.name for p in ckpt_dir.glob("epoch*.ckpt")) == [
        "epoch00-wer0.5000.ckpt",
        "epoch01-wer0.4000.ckpt",
        "epoch03-wer0.3000.ckpt",
    ]
    assert sorted(p.name for p in ckpt_dir.iterdir()) == sorted(
        ["last.ckpt", "epoch00-wer0.5000.ckpt", "epoch01-wer0.4000.ckpt", "epoch03-wer0.3000.ckpt"]
    )


def test_resume_continues_steps_optimizer_scheduler_and_top_k(tmp_path):
    ckpt_dir = tmp_path / "checkpoints"
    _fit(ckpt_dir, max_epochs=6)
    before = torch.load(ckpt_dir / "last.ckpt", weights_only=False)
    trainer, probe = _fit(ckpt_dir, max_epochs=8, resume=ckpt_dir / "last.ckpt")
    # two more epochs, counted on from the first run's 30 steps
    assert probe.seen == [(5, 30), (6, 35), (7, 40)]
    after = torch.load(ckpt_dir / "last.ckpt", weights_only=False)
    assert after["global_step"] == before["global_step"] + 10
    # Adam's step count and the scheduler went on where they were, not from zero
    assert int(before["optimizer_states"][0]["state"][0]["step"]) == 30
    assert int(after["optimizer_states"][0]["state"][0]["step"]) == 40
    assert before["lr_schedulers"][0]["last_epoch"] == 30 and after["lr_schedulers"][0]["last_epoch"] == 40
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(1e-2 / 41)
    # the top-k list was carried across the resume: epoch 6 (0.20) replaced epoch 0 (0.50)
    assert sorted(p.name for p in ckpt_dir.glob("epoch*.ckpt")) == [
        "epoch01-wer0.4000.ckpt",
        "epoch03-wer0.3000.ckpt",
        "epoch06-wer0.2000.ckpt",
    ]
