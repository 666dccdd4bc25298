"""Training on the CPU is reproducible: the same seed and thread count give the same run.

What makes it so: `seed` seeds Python, NumPy and torch in the main process and, through
Lightning, in every data-loader worker (speed perturbation draws there); the lhotse sampler
takes the same seed; `trainer=cpu` sets `deterministic: warn`, so torch uses its deterministic
kernels and warns about any op that has none. Across machines, float rounding differs with the CPU's kernels;
BENCHMARKS.md reports how much the demo's WER moved between two machines.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from asr.cli import main

TINY = [
    "model.encoder.d_model=32",
    "model.encoder.num_layers=1",
    "data.max_duration=20",
    "trainer.max_epochs=2",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "cmvn_utterances=20",
    "num_threads=2",
]


def _losses(exp: Path) -> list[float]:
    with open(exp / "csv" / "version_0" / "metrics.csv") as f:
        return [float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")]


@pytest.mark.slow
def test_two_runs_with_one_seed_are_identical_and_another_seed_differs(tiny_manifests, tmp_path):
    runs = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        exp = tmp_path / name
        assert main(["train", f"exp_dir={exp}", f"data.manifest_dir={tiny_manifests}", f"seed={seed}", *TINY]) == 0
        state = torch.load(exp / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
        runs[name] = (_losses(exp), state)
    (la, sa), (lb, sb), (lc, _) = runs["a"], runs["b"], runs["c"]
    assert len(la) >= 4, "the run should log several training losses"
    assert la == lb  # bit for bit, every logged loss
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert la != lc  # the seed matters (initialization, batches, augmentation)
