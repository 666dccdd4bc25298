#!/usr/bin/env python
"""Cost of the fusion score providers (n-gram LM, hotword graph) alone, under the query load of
CTC prefix beam search and transducer beam search over a test split.

    python scripts/bench/bench_fusion_providers.py [--utts 40] [--frames 100] [--beam 4] [--order 3]
        [--tokenizer data/synthetic/manifests/tokenizer_char.model --text train.ref.txt --skip-ids]

Without --tokenizer/--text it trains a BPE-120 tokenizer and the LM on 2000 sentences of the
synthetic grammar. The hotword graph holds --phrases phrases (word pairs of the text).

- ctc: per utterance, per frame, each of `beam` prefixes is extended by `beam` tokens (the
  prefix search's token pruning): scalar `score` calls. Prefixes follow the utterance's
  reference tokens, with the other candidates random tokens, so states are as varied as a
  real search's.
- transducer: one `score_all` over all B * beam hypotheses per search step (frames + tokens).

Prints microseconds per call and the total per split, cold (empty row caches) and warm.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import torch

from asr.data.synthetic import generate_sentences
from asr.data.tokenizer import load_tokenizer, train_tokenizer
from asr.decoding.hotwords import ContextGraph, phrases_from_lines
from asr.lm import NgramLM, train_lm
from asr.lm.train import TextReport, read_sentences


def ctc_load(provider, refs: list[list[int]], frames: int, beam: int, vocab: int, rng: random.Random) -> int:
    """Scalar queries as a prefix beam search makes them; returns the number of calls."""
    calls = 0
    for ref in refs:
        states = [provider.initial_state()] * beam
        pos = [0] * beam
        for t in range(frames):
            target = min(len(ref), (t + 1) * len(ref) // frames)
            for k in range(beam):
                cands = [ref[pos[k]] if pos[k] < len(ref) else 1] + [rng.randrange(1, vocab) for _ in range(beam - 1)]
                for tok in cands:
                    provider.score(states[k], tok)
                    calls += 1
                if pos[k] < target:  # the prefix grows along the reference (now and then a wrong token)
                    tok = ref[pos[k]] if rng.random() > 0.1 * (k + 1) else cands[-1]
                    states[k] = provider.score(states[k], tok)[1]
                    pos[k] += 1
    return calls


def transducer_load(provider, refs: list[list[int]], frames: int, beam: int, rng: random.Random) -> int:
    """Batched queries: one score_all over B * beam states per step; returns the number of calls."""
    b = len(refs)
    states = torch.full((b * beam,), provider.initial_state(), dtype=torch.long)
    steps = frames + max(len(r) for r in refs)
    for step in range(steps):
        _, nxt = provider.score_all(states)
        pick = torch.tensor(
            [
                refs[i // beam][min(step * len(refs[i // beam]) // steps, len(refs[i // beam]) - 1)]
                if rng.random() > 0.2
                else rng.randrange(1, nxt.shape[1])
                for i in range(b * beam)
            ]
        )
        emit = torch.rand(b * beam) < 0.4  # the others take blank (state unchanged)
        states = torch.where(emit, nxt[torch.arange(b * beam), pick], states)
    return steps


def timed(fn) -> tuple[float, int]:
    t0 = time.perf_counter()
    n = fn()
    return time.perf_counter() - t0, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--utts", type=int, default=40)
    ap.add_argument("--frames", type=int, default=100, help="encoder frames per utterance (4 s at 40 ms)")
    ap.add_argument("--beam", type=int, default=4)
    ap.add_argument("--order", type=int, default=3)
    ap.add_argument("--phrases", type=int, default=100)
    ap.add_argument("--tokenizer")
    ap.add_argument("--text")
    ap.add_argument("--skip-ids", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rng = random.Random(0)
    work = Path(tempfile.mkdtemp(prefix="bench_fusion_"))
    if args.tokenizer and args.text:
        tok, text = load_tokenizer(args.tokenizer), Path(args.text)
    else:
        sents = generate_sentences(2000, random.Random(0), set())
        text = work / "text.txt"
        text.write_text("\n".join(sents) + "\n")
        tok = train_tokenizer(sents, work / "tok.model", "bpe", 120)
    t0 = time.perf_counter()
    est, _ = train_lm(text, tok, work / "lm.arpa", args.order, args.skip_ids)
    print(f"LM: order {args.order}, {[len(t) for t in est.arpa.ngrams]} n-grams, trained in "
          f"{time.perf_counter() - t0:.2f} s")  # fmt: skip
    lines = [line.split()[1:] if args.skip_ids else line.split() for line in text.read_text().splitlines()]
    pairs = list(dict.fromkeys(" ".join(w[i : i + 2]) for w in lines for i in range(len(w) - 1)))
    rng.shuffle(pairs)
    refs = list(read_sentences(text, tok, args.skip_ids, TextReport()))[: args.utts]
    providers = {
        "lm": lambda: NgramLM.load(work / "lm.arpa", tok),
        f"hotwords({min(args.phrases, len(pairs))})": lambda: ContextGraph(
            phrases_from_lines(pairs[: args.phrases], tok), len(tok)
        ),
    }
    print(f"{args.utts} utterances x {args.frames} frames, beam {args.beam}, V={len(tok)}")
    for name, make in providers.items():
        p = make()
        for label, load in (
            ("ctc scalar score", lambda p=p: ctc_load(p, refs, args.frames, args.beam, len(tok), random.Random(1))),
            ("transducer score_all", lambda p=p: transducer_load(p, refs, args.frames, args.beam, random.Random(1))),
        ):
            p = make()  # cold caches
            cold, n = timed(lambda load=load, p=p: load(p))
            warm, _ = timed(lambda load=load, p=p: load(p))
            print(f"{name:16s} {label:22s} {n:7d} calls  cold {cold:6.3f} s ({1e6 * cold / n:7.1f} us/call)  "
                  f"warm {warm:6.3f} s ({1e6 * warm / n:7.1f} us/call)")  # fmt: skip


if __name__ == "__main__":
    main()
