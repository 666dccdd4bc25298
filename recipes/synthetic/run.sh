#!/usr/bin/env bash
# Synthetic espeak-ng corpus -> Conformer-CTC -> WER. Run from the repository root.
# Usage: recipes/synthetic/run.sh [extra `asr train` overrides, e.g. trainer.max_epochs=20]
set -euo pipefail
data=${DATA:-data/synthetic}
exp=${EXP:-exp/synthetic_conformer_ctc}
size=${SIZE:-demo}          # tiny | demo

asr prepare synthetic --corpus-dir "$data/LibriSpeech" --out "$data/manifests" --size "$size"
asr train data=synthetic model=conformer_ctc data.manifest_dir="$data/manifests" exp_dir="$exp" "$@"
for split in dev-clean test-clean; do
  asr transcribe --ckpt "$exp/best.ckpt" --data "$data/LibriSpeech/$split" --out "$exp/hyp_$split.txt"
  asr score "$data/manifests/$split.ref.txt" "$exp/hyp_$split.txt" --report "$exp/errors_$split.txt" \
    --plot "$exp/wer_by_length_$split.png"
done
