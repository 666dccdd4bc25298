"""How much of the real joint's probability mass the pruned RNN-T windows keep, by window score.

For a pruned-transducer checkpoint and a LibriSpeech-style split: per utterance, the model's
own simple joiner gives the occupancies (rnnt_loss_smoothed, as in training), each window
score of get_rnnt_prune_ranges picks the windows, and the real joint's pruned loss is
compared with its full-lattice loss: kept = P(y | x, paths inside the windows) / P(y | x) =
exp(full - pruned). 1 is lossless; the pruned loss trains on what the windows keep.

    python scripts/bench/bench_prune_windows.py --ckpt exp/pruned/last.ckpt \\
        --data data/LibriSpeech/test-clean --prune-range 2 3 5
"""

from __future__ import annotations

import argparse
import math

import torch

from asr.data.audio import load_audio, pad_waves
from asr.losses import do_rnnt_pruning, get_rnnt_prune_ranges, rnnt_loss, rnnt_loss_pruned, rnnt_loss_smoothed
from asr.losses.mutual_information import lattice_boundary
from asr.losses.pruned_rnnt import WINDOW_SCORES
from asr.model import load_model
from asr.transcribe import split_items


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, help="checkpoint of a model with a pruned_rnnt transducer head")
    p.add_argument("--data", required=True, help="LibriSpeech-style split directory")
    p.add_argument("--head", default="transducer")
    p.add_argument("--prune-range", type=int, nargs="+", default=[2, 3, 5])
    p.add_argument("--max-utts", type=int, default=200)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.ckpt).eval()
    head = model.heads[args.head]
    crit = head.criterion
    if crit.kind != "pruned_rnnt":
        raise SystemExit(f"{args.ckpt}: head {args.head!r} is trained with {crit.kind}, not pruned_rnnt")
    items, refs, _ = split_items(args.data, progress=False)
    items = items[: args.max_utts]
    kept: dict[tuple[str, int], list[float]] = {(s, r): [] for s in WINDOW_SCORES for r in args.prune_range}
    with torch.no_grad():
        for i in range(0, len(items), args.batch):
            chunk = items[i : i + args.batch]
            audio, lens = pad_waves([load_audio(path)[0] for _, path in chunk])
            enc, enc_lens = model(audio, lens)
            tokens = [model.tokenizer.encode(refs[uid]) for uid, _ in chunk]
            u_lens = torch.tensor([len(t) for t in tokens])
            targets = torch.zeros(len(chunk), int(u_lens.max()), dtype=torch.int64)
            for b, t in enumerate(tokens):
                targets[b, : len(t)] = torch.tensor(t)
            pred = head.predict(targets)
            bd = lattice_boundary(u_lens, enc_lens)
            am, lm = crit.simple_am(enc).float(), crit.simple_lm(pred).float()
            _, (px_grad, py_grad) = rnnt_loss_smoothed(
                lm,
                am,
                targets,
                head.blank,
                lm_only_scale=crit.lm_only_scale,
                am_only_scale=crit.am_only_scale,
                boundary=bd,
                rnnt_type=crit.topology,
                reduction="none",
                return_grad=True,
            )
            full = rnnt_loss(
                head.joint(enc, pred).double(), targets, enc_lens, u_lens, reduction="none", rnnt_type=crit.topology
            )
            enc_p, pred_p = head.joint.project_enc(enc), head.joint.project_pred(pred)
            for score in WINDOW_SCORES:
                for r in args.prune_range:
                    ranges = get_rnnt_prune_ranges(px_grad, py_grad, bd, r, rnnt_type=crit.topology, score=score)
                    logits = head.joint.combine(*do_rnnt_pruning(enc_p, pred_p, ranges)).double()
                    pruned = rnnt_loss_pruned(
                        logits, targets, ranges, head.blank, bd, rnnt_type=crit.topology, reduction="none"
                    )
                    kept[score, r] += torch.exp(full - pruned).tolist()
    n = len(items)
    print(f"{args.ckpt}: {n} utterances of {args.data}, topology {crit.topology}")
    print(f"{'score':10} {'range':>5} {'mean kept':>10} {'median':>8} {'min':>8} {'< 0.9':>6} {'mean -log kept':>15}")
    for (score, r), vals in sorted(kept.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        v = torch.tensor(vals, dtype=torch.float64)
        nll = (-torch.log(v.clamp(min=1e-300))).mean().item()
        print(
            f"{score:10} {r:>5} {v.mean().item():>10.4f} {v.median().item():>8.4f} {v.min().item():>8.4f} "
            f"{int((v < 0.9).sum()):>6} {nll if math.isfinite(nll) else float('inf'):>15.4f}"
        )


if __name__ == "__main__":
    main()
