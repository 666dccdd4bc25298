#!/usr/bin/env python
"""Training step time (features + forward + backward + AdamW step) of a model config.

    python scripts/bench/bench_train_step.py [--model conformer_ctc] [--batch-seconds 100] [--autocast bf16]
        [overrides...]

The batch is `--batch-seconds` of audio split into 3-second utterances with 30 tokens each,
like a demo batch. `--chunk N` fixes the encoder's chunk (encoder frames) for every step, as
dynamic chunk training samples it per batch (TAED's decoder then runs once per chunk).
`--autocast bf16|fp16` runs the forward pass and the losses under torch.autocast on the CPU, as
Lightning's `trainer.precision=bf16-mixed` does (the backward and the optimizer step outside it).
Memory: how much the process's peak resident set size grew during the steps (a step's
working memory and the optimizer state, above the model and the batch).
"""

from __future__ import annotations

import argparse
import resource
import time

import torch
from omegaconf import OmegaConf

from asr.data.datamodule import collate
from asr.model import ASRModel
from asr.train import compose


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="conformer_ctc")
    p.add_argument("--batch-seconds", type=float, default=100.0)
    p.add_argument("--utt-seconds", type=float, default=3.0)
    p.add_argument("--vocab", type=int, default=28)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--autocast", choices=["bf16", "fp16"], default=None, help="mixed precision (default: float32)")
    p.add_argument("--chunk", type=int, default=None, help="encoder chunk for every step (default: the config's)")
    p.add_argument("overrides", nargs="*", help="Hydra overrides for the model group, e.g. model.encoder.num_layers=12")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    cfg = compose([f"model={a.model}", *a.overrides])
    m = OmegaConf.to_container(cfg.model, resolve=True)
    model = ASRModel(a.vocab, m["encoder"], m["heads"], m.get("features"), m.get("specaug"), m.get("optim"))
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    b = max(1, int(a.batch_seconds / a.utt_seconds))
    g = torch.Generator().manual_seed(0)
    waves = [0.1 * torch.randn(int(a.utt_seconds * 16000), generator=g) for _ in range(b)]
    toks = [torch.randint(1, a.vocab, (30,), generator=g).tolist() for _ in range(b)]
    batch = collate(waves, toks, [""] * b, [str(i) for i in range(b)])
    if a.chunk is not None:  # every step trains with this chunk, as if dynamic chunk training drew it
        model.encoder.training_chunking = lambda: (a.chunk, -1)
    low = {"bf16": torch.bfloat16, "fp16": torch.float16, None: None}[a.autocast]
    times = []
    rss = 0
    for i in range(a.steps + 2):
        if i == 0:  # the peak so far: model and batch
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=low or torch.bfloat16, enabled=low is not None):
            loss = model.losses(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i >= 2:  # skip warm-up steps
            times.append(time.perf_counter() - t)
    med = sorted(times)[len(times) // 2]
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss) / 2**20
    n_params = sum(p.numel() for p in model.parameters()) / 1e6
    print(
        f"{a.model} ({n_params:.2f}M params), batch {b} x {a.utt_seconds:.0f} s = {b * a.utt_seconds:.0f} s audio, "
        f"{torch.get_num_threads()} threads, {a.autocast or 'float32'}: median step {med * 1000:.0f} ms "
        f"({b * a.utt_seconds / med:.0f} s of audio per second), peak memory +{grown:.2f} GiB"
    )


if __name__ == "__main__":
    main()
