#!/usr/bin/env bash
# Open-vocabulary synthetic corpus -> BPE 500 -> Conformer -> WER and CER on held-out sentences and voices.
# The closest stand-in for LibriSpeech this machine allows (README "Open-vocabulary corpus").
# Run from the repository root with the venv active (`make setup; source .venv/bin/activate`).
# Usage: [SIZE=small|large|tiny] [MODEL=...] [EPOCHS=N] recipes/open/run.sh [extra `asr train` overrides]
#   SIZE=small (default): ~10 h of training audio, about an hour of training on a 2-core CPU.
#   SIZE=large: ~100 h, for a GPU: add trainer=gpu (and a larger model, e.g. model.encoder.d_model=256).
set -euo pipefail
data=${DATA:-data/open}
size=${SIZE:-small}
model=${MODEL:-conformer_ctc_attention}
epochs=${EPOCHS:-12}
exp=${EXP:-exp/open_${size}_$model}

# synthesis is parallel and resumable: rerun the same command after an interruption
asr prepare synthetic --text open --size "$size" --corpus-dir "$data/LibriSpeech" --out "$data/manifests" \
  --tokenizer bpe --vocab-size 500
asr train data=open model="$model" data.manifest_dir="$data/manifests" exp_dir="$exp" \
  trainer.max_epochs="$epochs" "$@"
for split in dev-clean test-clean; do
  for method in greedy beam; do
    hyp="$exp/hyp_${split}_$method.txt"
    asr transcribe --ckpt "$exp/best.ckpt" --data "$data/LibriSpeech/$split" --out "$hyp" --method "$method" --quiet
    asr score "$data/manifests/$split.ref.txt" "$hyp" --report "$exp/errors_${split}_$method.txt" \
      --plot "$exp/wer_by_length_${split}_$method.png"
    asr score "$data/manifests/$split.ref.txt" "$hyp" --cer
  done
done
