#!/usr/bin/env bash
# Synthetic espeak-ng corpus -> a model config (default Conformer-CTC) -> WER. Run from the repository root.
# Usage: [MODEL=conformer_tdt] recipes/synthetic/run.sh [extra `asr train` overrides, e.g. trainer.max_epochs=20]
# MODEL is any conf/model/*.yaml: conformer_ctc, conformer_transducer, conformer_pruned_transducer,
# conformer_tdt, conformer_hybrid_tdt_ctc, lstm_transducer, mingru_ctc.
set -euo pipefail
data=${DATA:-data/synthetic}
model=${MODEL:-conformer_ctc}
exp=${EXP:-exp/synthetic_$model}
size=${SIZE:-demo}          # tiny | demo

asr prepare synthetic --corpus-dir "$data/LibriSpeech" --out "$data/manifests" --size "$size"
asr train data=synthetic model="$model" data.manifest_dir="$data/manifests" exp_dir="$exp" "$@"
for split in dev-clean test-clean; do
  asr transcribe --ckpt "$exp/best.ckpt" --data "$data/LibriSpeech/$split" --out "$exp/hyp_$split.txt"
  asr score "$data/manifests/$split.ref.txt" "$exp/hyp_$split.txt" --report "$exp/errors_$split.txt" \
    --plot "$exp/wer_by_length_$split.png"
done
