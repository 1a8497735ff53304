#!/usr/bin/env bash
# Data-parallel training speed on this machine: one process of N threads accumulating N batches against torchrun with
# N processes of one thread (the same batches, in the same order), taking turns for ROUNDS rounds.
# Prints the median target tokens/s of each run's 20-step windows (the first window, with warm-up, left out).
#   scripts/ddp_speed.sh [DATA_DIR] [PROCESSES] [ROUNDS] [extra --set overrides...]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DATA=${1:-../shared/data/multi30k}; PROCESSES=${2:-2}; ROUNDS=${3:-2}; shift $(( $# < 3 ? $# : 3 ))
OUT=runs/ddp_speed
COMMON=(--config configs/multi30k_en_de.yaml --data "$DATA" --max-steps 120 --max-minutes 0
        --set train.valid_every=100000 --set "data.test_splits=[]" --set train.valid_bleu_sentences=20
        --set train.log_every=20 "$@")
median() {
  python - "$1" <<'PY'
import json, statistics, sys
records = [json.loads(line) for line in open(sys.argv[1] + "/train_log.jsonl")]
speeds = [r["tokens_per_s"] for r in records if r["type"] == "train"][1:]
print(f"{sys.argv[1]}: {statistics.median(speeds):.0f} target tokens/s (windows: {speeds})")
PY
}
mkdir -p "$OUT"
for round in $(seq "$ROUNDS"); do
  one="$OUT/one_$round"; many="$OUT/ddp_$round"
  rm -rf "$one" "$many"
  python -m seq2seq.train "${COMMON[@]}" --out "$one" --set train.threads="$PROCESSES" \
    --set train.accumulate="$PROCESSES" > "$one.log" 2>&1
  median "$one"
  mkdir -p "$many" && cp "$one"/tokenizer.*.model "$many"/
  torchrun --standalone --nproc_per_node "$PROCESSES" -m seq2seq.train "${COMMON[@]}" --out "$many" \
    --set train.threads=1 > "$many.log" 2>&1
  median "$many"
done
