#!/usr/bin/env bash
# Train an English->German translator end to end, then translate a sample sentence.
#   tokenizers -> model -> best model (validation BLEU) -> test BLEU (results.json) -> a sample translation
# The recipe is picked by device: configs/multi30k_en_de.yaml on a CPU, configs/multi30k_en_de_gpu.yaml when a
# CUDA GPU is present (and --device cpu is not given); CONFIG=file overrides the choice. Both anneal the learning
# rate to the end of the time budget (--max-minutes; the recipes default to 20 minutes on a CPU, 10 on a GPU).
# Arguments pass through to `python -m seq2seq.train`, e.g.:
#   scripts/train_translator.sh --data ../shared/data/multi30k --max-minutes 20
# The default corpus is the Hugging Face hub copy of Multi30k (bentrevett/multi30k); offline, pass --data DIR.
# The model lands in runs/multi30k_en_de (override with OUT=dir). Add --resume to continue an interrupted run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${OUT:-runs/multi30k_en_de}"
PYTHON="${PYTHON:-python}"

if [ -z "${CONFIG:-}" ]; then
  CONFIG=configs/multi30k_en_de.yaml
  wants_cpu=no
  previous=""
  for arg in "$@"; do
    if [ "$arg" = "--device=cpu" ] || { [ "$previous" = "--device" ] && [ "$arg" = "cpu" ]; }; then wants_cpu=yes; fi
    previous="$arg"
  done
  if [ "$wants_cpu" = no ] && "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    CONFIG=configs/multi30k_en_de_gpu.yaml
  fi
fi
echo "Recipe: $CONFIG"
"$PYTHON" -m seq2seq.train --config "$CONFIG" --out "$OUT" "$@"
echo
echo "Test scores: $OUT/results.json; curves: $OUT/curves.png"
echo "Sample translation (python -m seq2seq.translate --model $OUT \"A man is riding a bike.\"):"
"$PYTHON" -m seq2seq.translate --model "$OUT" "A man is riding a bike."
