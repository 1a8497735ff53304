#!/usr/bin/env bash
# Train the reference English->German translator end to end, then translate a sample sentence.
#   tokenizers -> model -> best model (validation BLEU) -> test BLEU (results.json) -> a sample translation
# Arguments pass through to `python -m seq2seq.train`, e.g.:
#   scripts/train_translator.sh --data ../shared/data/multi30k --max-minutes 20
# The default corpus is the Hugging Face hub copy of Multi30k (bentrevett/multi30k); offline, pass --data DIR.
# The model lands in runs/multi30k_en_de (override with OUT=dir). Add --resume to continue an interrupted run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${OUT:-runs/multi30k_en_de}"
PYTHON="${PYTHON:-python}"

"$PYTHON" -m seq2seq.train --config configs/multi30k_en_de.yaml --out "$OUT" "$@"
echo
echo "Test scores: $OUT/results.json; curves: $OUT/curves.png"
echo "Sample translation (python -m seq2seq.translate --model $OUT \"A man is riding a bike.\"):"
"$PYTHON" -m seq2seq.translate --model "$OUT" "A man is riding a bike."
