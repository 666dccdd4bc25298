#!/usr/bin/env python
"""Synthesize a LibriSpeech-layout corpus with espeak-ng and flite (see asr/data/synthetic.py).

    python scripts/synthesize_corpus.py OUT_DIR [--text grammar|open] [--train 2400 --dev 160 --test 240]
        [--seed 0 --jobs 2]

An interrupted run continues where it stopped when rerun with the same arguments.

Then prepare it with `asr prepare librispeech --root OUT_DIR --out MANIFESTS --tokenizer char`
(or do both at once with `asr prepare synthetic`).
"""

from __future__ import annotations

import argparse

from asr.data.synthetic import synthesize_corpus


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", help="corpus root; split folders are written inside")
    p.add_argument("--train", type=int, default=2400, help="train-clean utterances")
    p.add_argument("--dev", type=int, default=160, help="dev-clean utterances")
    p.add_argument("--test", type=int, default=240, help="test-clean utterances")
    p.add_argument("--text", choices=["grammar", "open"], default="grammar", help="sentence source")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=None, help="parallel processes (default: all cores)")
    a = p.parse_args()
    sizes = {"train-clean": a.train, "dev-clean": a.dev, "test-clean": a.test}
    root = synthesize_corpus(a.out, sizes, seed=a.seed, jobs=a.jobs, text=a.text)
    print(f"corpus written to {root}; speakers in {root / 'SPEAKERS.txt'}")


if __name__ == "__main__":
    main()
