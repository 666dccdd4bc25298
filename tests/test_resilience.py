"""Training under faults: non-finite batches are skipped and logged, a run killed with -9 in
the middle of an epoch resumes exactly where its last checkpoint was."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from asr.cli import main
from asr.model import ASRModel

HELPER = Path(__file__).parent / "helpers" / "train_and_kill.py"
TINY = [
    "model.encoder.d_model=32",
    "model.encoder.num_layers=1",
    "data.max_duration=12",  # 8-9 batches an epoch of the 40 training utterances
    "trainer.max_epochs=2",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "cmvn_utterances=20",
    "num_threads=1",
    "checkpoint_every_steps=3",
    "seed=3",
]


def _losses(metrics: Path) -> dict[int, float]:
    with open(metrics) as f:
        return {int(r["step"]): float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")}


def _state(exp: Path) -> dict[str, torch.Tensor]:
    return torch.load(exp / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]


def _train(exp: Path, man: Path, *extra: str, kill_at: int | None = None) -> int:
    env = {**os.environ, "KILL_AT": str(kill_at if kill_at is not None else -1)}
    args = [sys.executable, str(HELPER), f"exp_dir={exp}", f"data.manifest_dir={man}", *TINY, *extra]
    return subprocess.run(args, env=env, capture_output=True, timeout=600).returncode


def test_a_run_killed_mid_epoch_resumes_with_the_same_losses(tiny_manifests, tmp_path):
    """kill -9 after step 5 loses steps 4-5 (last.ckpt is from step 3); resume=true then logs, step
    for step, the losses of an uninterrupted run with the same seed, and ends with its weights.
    Without the sampler's position in the checkpoint the resumed epoch would start over; without
    per-step seeding SpecAugment and dropout would draw other masks (both checked to fail)."""
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert _train(whole, tiny_manifests) == 0
    assert _train(killed, tiny_manifests, kill_at=5) == -signal.SIGKILL
    ckpt = torch.load(killed / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 3 and ckpt["ASRDataModule"] == {"epoch": 0, "batches_done": 3}
    assert not list((killed / "checkpoints").glob("*.tmp"))
    assert _train(killed, tiny_manifests, "resume=true") == 0

    expected = _losses(whole / "csv" / "version_0" / "metrics.csv")
    resumed = _losses(killed / "csv" / "version_1" / "metrics.csv")
    steps_per_epoch = len(expected) // 2
    assert steps_per_epoch > 5, "the kill must fall inside the first epoch"
    assert sorted(resumed) == [s for s in sorted(expected) if s >= 3]
    for step, loss in resumed.items():
        assert loss == pytest.approx(expected[step], rel=1e-6), f"step {step}"
    a, b = _state(whole), _state(killed)
    assert all(torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-7) for k in a)


def _poison_features(monkeypatch, victims: set[str] | None) -> None:
    """Training features of `victims` (all utterances if None) become NaN, as a corrupt
    utterance that got past every check would make them."""
    features = ASRModel.features

    def poisoned(self, audio, audio_lens):
        feats, lens = features(self, audio, audio_lens)
        ids = getattr(self, "_batch_ids", [])
        rows = [i for i, u in enumerate(ids) if victims is None or u in victims]
        if self.training and rows:
            feats = feats.clone()
            feats[rows] = float("nan")
        return feats, lens

    losses = ASRModel.losses

    def losses_with_ids(self, batch):
        self._batch_ids = batch.ids
        return losses(self, batch)

    monkeypatch.setattr(ASRModel, "features", poisoned)
    monkeypatch.setattr(ASRModel, "losses", losses_with_ids)


def _overrides(exp: Path, man: Path) -> list[str]:
    return ["train", f"exp_dir={exp}", f"data.manifest_dir={man}", "data.num_workers=0", *TINY]


def test_a_nan_utterance_does_not_poison_the_weights(tiny_manifests, tmp_path, monkeypatch):
    victim = sorted(line.split()[0] for line in (tiny_manifests / "train-clean.ref.txt").read_text().splitlines())[0]
    _poison_features(monkeypatch, {victim})
    exp = tmp_path / "nan"
    assert main(_overrides(exp, tiny_manifests)) == 0
    lines = (exp / "bad_batches.txt").read_text().splitlines()
    assert len(lines) == 2  # its batch, once per epoch
    assert all(victim in line.split() and "non-finite loss" in line for line in lines)
    assert lines[0].startswith("epoch 0 step ") and lines[1].startswith("epoch 1 step ")
    state = _state(exp)
    assert all(torch.isfinite(v).all() for v in state.values())
    losses = _losses(exp / "csv" / "version_0" / "metrics.csv")
    finite = [v for v in losses.values() if v == v]
    assert len(finite) == len(losses) - 2 and len(losses) > 10  # training went on around them
    opt = torch.load(exp / "checkpoints" / "last.ckpt", weights_only=False)["optimizer_states"][0]["state"]
    assert int(opt[0]["step"]) == len(losses) - 2  # the skipped steps updated nothing


def test_training_stops_after_too_many_bad_batches_in_a_row(tiny_manifests, tmp_path, monkeypatch):
    _poison_features(monkeypatch, None)
    exp = tmp_path / "diverged"
    with pytest.raises(SystemExit, match="4 batches in a row had a non-finite loss or gradient"):
        main([*_overrides(exp, tiny_manifests), "max_bad_batches_in_a_row=4"])
    assert len((exp / "bad_batches.txt").read_text().splitlines()) == 4
    for ckpt in (exp / "checkpoints").glob("*.ckpt"):  # anything saved before the stop is clean
        state = torch.load(ckpt, weights_only=False)["state_dict"]
        assert all(torch.isfinite(v).all() for v in state.values())


def test_resume_from_a_truncated_checkpoint_is_a_clear_error(tiny_manifests, tmp_path):
    ckpt = tmp_path / "x" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    torch.save({"state_dict": {"w": torch.zeros(1000)}, "loops": {}}, ckpt)
    ckpt.write_bytes(ckpt.read_bytes()[:-300])
    with pytest.raises(SystemExit, match="last.ckpt: cannot resume, not a readable checkpoint"):
        main([*_overrides(tmp_path / "x", tiny_manifests), "resume=true"])
