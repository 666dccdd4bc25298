"""Training that survives faults: bad batches skipped, exact mid-epoch resume, whole checkpoints.

Three Lightning plug-ins that `asr train` always uses:

- NonFiniteGuard: a batch whose loss or gradient is not finite does not update the weights;
  its utterance ids go to `exp_dir/bad_batches.txt`; after `max_in_a_row` such batches in a
  row training stops with TrainingDiverged (the data or the learning rate is broken, and
  skipping more would only hide it).
- StepSeed: seeds torch's RNG from (seed, rank, epoch, batch index) before every training
  batch, so dropout and SpecAugment draw the same masks for a batch whether the run went
  straight through or was killed and resumed (the loader's workers draw per utterance, see
  asr.data.datamodule.utterance_rng).
- AtomicCheckpointIO: checkpoints are written to a temporary file and renamed, so `kill -9`
  during a save leaves the previous last.ckpt whole.
"""

from __future__ import annotations

import logging
import os
import zlib
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """Too many consecutive batches had a non-finite loss or gradient."""


class NonFiniteGuard(L.Callback):
    """Skips optimizer steps whose loss or gradients are not finite, and logs the batch.

    Args:
        log_path: text file the skipped batches are appended to, a line each:
            `epoch E step S rank R: <what> <utterance ids>`.
        max_in_a_row: consecutive skipped steps after which training stops.

    The step is skipped by dropping every gradient (p.grad = None): AdamW then leaves the
    parameter and its moments untouched, where a zeroed gradient would still move the weights
    by their momentum. Under DDP the decision is reduced over ranks (gradients are already
    averaged, but a rank's loss is its own), so all ranks skip together and stay in sync.
    With fp16's GradScaler an overflowing gradient is the scaler's business (it skips the step
    and lowers the scale); only a non-finite loss counts as a bad batch there.
    """

    def __init__(self, log_path: str | Path, max_in_a_row: int = 20):
        if max_in_a_row < 1:
            raise ValueError(f"max_in_a_row must be >= 1, got {max_in_a_row}")
        self.log_path = Path(log_path)
        self.max_in_a_row = max_in_a_row
        self.in_a_row = 0
        self.skipped = 0
        self._ids: list[str] = []  # utterances of the batches accumulated since the last step
        self._empty = True  # no utterance of those batches could be loaded
        self._loss_bad: torch.Tensor | None = None  # kept on the device: no host sync per micro-batch

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int):
        if batch is not None:
            self._ids.extend(batch.ids)
            self._empty = False

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        bad = ~torch.isfinite(loss.detach()).all()
        self._loss_bad = bad if self._loss_bad is None else self._loss_bad | bad

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        dev = pl_module.device
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        scaled = getattr(trainer.precision_plugin, "scaler", None) is not None
        grad_bad = torch.zeros((), dtype=torch.bool, device=dev)
        if grads and not scaled:
            grad_bad = ~torch.isfinite(torch.nn.utils.get_total_norm(grads)).to(dev)
        loss_bad = self._loss_bad if self._loss_bad is not None else torch.zeros((), dtype=torch.bool, device=dev)
        mine = torch.stack([loss_bad.to(dev), grad_bad, torch.tensor(self._empty, device=dev)]).float()
        total = trainer.strategy.reduce(mine.clone(), reduce_op="sum")  # identity without DDP (in place with it)
        # the step's one host sync; this rank's own flags come along for the message
        mine_loss, mine_grad, _, loss_bad_any, grad_bad_any, empty_ranks = torch.cat([mine, total]).tolist()
        if loss_bad_any + grad_bad_any > 0:
            what = "non-finite loss" if mine_loss else "non-finite gradient" if mine_grad else "another rank"
            self._skip(pl_module)
            self.skipped += 1
            self.in_a_row += 1
            line = f"epoch {trainer.current_epoch} step {trainer.global_step} rank {trainer.global_rank}: {what}:"
            with self.log_path.open("a") as f:  # a short append per rank: lines do not interleave
                f.write(f"{line} {' '.join(self._ids)}\n")
            log.warning(
                "%s skipped (%d utterances, listed in %s); %d bad batches so far, %d in a row",
                line.rstrip(":"),
                len(self._ids),
                self.log_path,
                self.skipped,
                self.in_a_row,
            )
        elif int(empty_ranks) == trainer.world_size:  # nothing was loaded anywhere: nothing to learn from
            self._skip(pl_module)
        else:
            self.in_a_row = 0
        self._ids, self._empty, self._loss_bad = [], True, None
        if self.in_a_row >= self.max_in_a_row:
            raise TrainingDiverged(
                f"{self.in_a_row} batches in a row had a non-finite loss or gradient (listed in {self.log_path}); "
                "stopping. Check those utterances, lower optim.lr, or resume from the last checkpoint "
                "with resume=true once fixed"
            )

    @staticmethod
    def _skip(pl_module: L.LightningModule) -> None:
        for p in pl_module.parameters():
            p.grad = None

    def state_dict(self) -> dict[str, int]:
        return {"in_a_row": self.in_a_row, "skipped": self.skipped}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self.in_a_row = int(state_dict.get("in_a_row", 0))
        self.skipped = int(state_dict.get("skipped", 0))


class StepSeed(L.Callback):
    """Seeds torch's RNG before every training batch from (seed, rank, epoch, batch index)."""

    def __init__(self, seed: int):
        self.seed = seed

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int):
        key = f"{self.seed}/{trainer.global_rank}/{trainer.current_epoch}/{batch_idx}"
        torch.manual_seed(zlib.crc32(key.encode()))


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save to `<path>.tmp`, then rename over `<path>`: a checkpoint is whole or absent."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        tmp = f"{path}.tmp"
        super().save_checkpoint(checkpoint, tmp, storage_options)
        os.replace(tmp, path)
