#!/usr/bin/env bash
# Real LibriSpeech -> Conformer-CTC (BPE 500) -> WER on dev/test clean and other.
# Needs the corpus unpacked under $LIBRISPEECH (folders train-clean-100, dev-clean, ...).
# Usage: LIBRISPEECH=/data/LibriSpeech recipes/librispeech/run.sh [extra `asr train` overrides]
set -euo pipefail
: "${LIBRISPEECH:?set LIBRISPEECH to the folder holding train-clean-100, dev-clean, ...}"
man=${MANIFESTS:-data/librispeech/manifests}
exp=${EXP:-exp/librispeech_conformer_ctc}
splits=${SPLITS:-"train-clean-100 train-clean-360 train-other-500 dev-clean dev-other test-clean test-other"}

asr prepare librispeech --root "$LIBRISPEECH" --out "$man" --splits $splits --tokenizer bpe --vocab-size 500
# A ~30M-parameter Conformer; on one GPU use trainer.devices=1, on several it runs DDP.
asr train data=librispeech model=conformer_ctc trainer=gpu exp_dir="$exp" \
  data.manifest_dir="$man" data.train_splits="[$(echo $splits | tr ' ' '\n' | grep '^train' | paste -sd, -)]" \
  model.encoder.d_model=256 model.encoder.num_layers=16 model.encoder.conv_kernel=31 \
  model.encoder.subsampling_channels=256 model.specaug.freq_width=27 model.specaug.time_masks=10 \
  optim.lr=2e-3 optim.warmup_steps=10000 "$@"
for split in dev-clean dev-other test-clean test-other; do
  [ -d "$LIBRISPEECH/$split" ] || continue
  asr transcribe --ckpt "$exp/best.ckpt" --data "$LIBRISPEECH/$split" --out "$exp/hyp_$split.txt" \
    --method beam --beam 8
  asr score "$man/$split.ref.txt" "$exp/hyp_$split.txt" --report "$exp/errors_$split.txt"
done
