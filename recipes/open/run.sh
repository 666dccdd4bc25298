#!/usr/bin/env bash
# Open-vocabulary synthetic corpus -> tokenizer -> Conformer-CTC -> WER and CER on held-out sentences and voices.
# The closest stand-in for LibriSpeech this machine allows (recipes/open/README.md).
# Run from the repository root with the venv active (`make setup; source .venv/bin/activate`).
# Usage: [SIZE=small|large|tiny] [MODEL=...] [TOKENIZER=char|bpe] [EPOCHS=N] recipes/open/run.sh [extra `asr train` overrides]
#   SIZE=small (default): 10 h of training audio, char units, 11 epochs: about an hour on a 2-core CPU.
#   SIZE=large: 100 h, BPE 500, for a GPU: add trainer=gpu data.max_duration=600 and a larger model
#     (model.encoder.d_model=256 model.encoder.num_layers=12).
set -euo pipefail
data=${DATA:-data/open}
size=${SIZE:-small}
model=${MODEL:-conformer_ctc}
# At the CPU budget BPE 500 does not leave the CTC plateau in time (BENCHMARKS.md, "Open-vocabulary
# corpus"); characters do. BPE 500 is the tokenizer for the 100 h corpus.
tokenizer=${TOKENIZER:-$([ "$size" = large ] && echo bpe || echo char)}
epochs=${EPOCHS:-11}
exp=${EXP:-exp/open_${size}_${model}_$tokenizer}
man="$data/manifests"

# synthesis is parallel and resumable: rerun the same command after an interruption
asr prepare synthetic --text open --size "$size" --corpus-dir "$data/LibriSpeech" --out "$man" \
  --tokenizer "$tokenizer" --vocab-size 500
asr train data=open model="$model" data.manifest_dir="$man" data.tokenizer="$man/tokenizer_$tokenizer.model" \
  exp_dir="$exp" trainer.max_epochs="$epochs" "$@"
for split in dev-clean test-clean; do
  for method in greedy beam; do
    hyp="$exp/hyp_${split}_$method.txt"
    asr transcribe --ckpt "$exp/best.ckpt" --data "$data/LibriSpeech/$split" --out "$hyp" --method "$method" --quiet
    asr score "$man/$split.ref.txt" "$hyp" --report "$exp/errors_${split}_$method.txt" \
      --plot "$exp/wer_by_length_${split}_$method.png"
    asr score "$man/$split.ref.txt" "$hyp" --cer
    python scripts/bench/open_errors.py --ref "$man/$split.ref.txt" --hyp "$hyp" \
      --train-ref "$man/train-clean.ref.txt" --speakers "$data/LibriSpeech/SPEAKERS.txt" \
      --out "$exp/where_errors_${split}_$method.md"
  done
done
