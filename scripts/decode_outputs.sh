#!/usr/bin/env bash
# Every decoding mode's output on one test set, one file each, to compare two versions of the code byte for byte:
#   scripts/decode_outputs.sh MODEL_DIR OUT_DIR [SRC] [REF]     (defaults: test_2016_flickr en -> de)
#   (git worktree add /tmp/old OLD; cd /tmp/old && scripts/decode_outputs.sh MODEL /tmp/before) ... then
#   scripts/decode_outputs.sh MODEL /tmp/after && diff -r /tmp/before /tmp/after
# Greedy, beam 5 with 3-best and scores, seeded sampling, a forced prefix, lexical constraints and forced-decoding
# scores, all in fp32 on the CPU (one thread count, so the arithmetic is the same on every run).
# TRANSLATE_FLAGS="--no-preserve" adds flags to every translate call (to switch a later default off against an
# older version; docs/architecture.md, "Behaviour unchanged").
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
MODEL="$1"; OUT="$2"
SRC="${3:-../shared/data/multi30k/test_2016_flickr.en.gz}"
REF="${4:-../shared/data/multi30k/test_2016_flickr.de.gz}"
PYTHON="${PYTHON:-python}"
mkdir -p "$OUT"
read -r -a extra <<< "${TRANSLATE_FLAGS:-}"
common=(--model "$MODEL" --device cpu --dtype fp32 --threads 2 --no-progress "${extra[@]}")
zcat -f "$SRC" > "$OUT/source.txt"
zcat -f "$REF" > "$OUT/reference.txt"
head -n 200 "$OUT/source.txt" > "$OUT/source200.txt"
"$PYTHON" -m seq2seq.translate "${common[@]}" --beam-size 1 < "$OUT/source.txt" > "$OUT/greedy.txt"
"$PYTHON" -m seq2seq.translate "${common[@]}" --beam-size 5 < "$OUT/source.txt" > "$OUT/beam5.txt"
"$PYTHON" -m seq2seq.translate "${common[@]}" --beam-size 5 --nbest 3 --json < "$OUT/source200.txt" > "$OUT/beam5_nbest3.jsonl"
"$PYTHON" -m seq2seq.translate "${common[@]}" --sampling --top-p 0.9 --nbest 3 --seed 1 --json \
    < "$OUT/source200.txt" > "$OUT/sampling.jsonl"
"$PYTHON" -m seq2seq.translate "${common[@]}" --beam-size 5 --prefix "Ein" < "$OUT/source200.txt" > "$OUT/prefix.txt"
"$PYTHON" -m seq2seq.translate "${common[@]}" --beam-size 5 --constraints Hund --constraints "auf dem" \
    < "$OUT/source200.txt" > "$OUT/constrained.txt"
"$PYTHON" -m seq2seq.score --model "$MODEL" --device cpu --dtype fp32 --threads 2 --json \
    --src "$OUT/source.txt" --tgt "$OUT/reference.txt" > "$OUT/scores.jsonl"
rm "$OUT/source.txt" "$OUT/reference.txt" "$OUT/source200.txt"
wc -l "$OUT"/*
