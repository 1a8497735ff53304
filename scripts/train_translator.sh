#!/usr/bin/env bash
# Train a translator for any language pair end to end, then translate a sample sentence in the source language.
#   tokenizers -> model -> best model (validation BLEU) -> test BLEU (results.json) -> a sample translation
# The pair is --src-lang / --tgt-lang (default en -> de); the corpus is --data (default: Multi30k, the Hugging Face
# hub copy bentrevett/multi30k; offline pass --data ../shared/data/multi30k), or your own: a directory of
# {split}.{lang}[.gz] files or a TSV file (docs/data.md). The recipe is picked by device and corpus:
# configs/multi30k_en_de.yaml on a CPU for Multi30k (any of its pairs), configs/own_corpus.yaml (the same recipe
# without Multi30k's names) for your own corpus, configs/multi30k_en_de_gpu.yaml when a CUDA GPU is present (and
# --device cpu is not given); CONFIG=file overrides the choice. They anneal the learning rate to the end of the
# time budget (--max-minutes; 20 minutes on a CPU, 10 on a GPU). Arguments pass through to
# `python -m seq2seq.train`, e.g.:
#   scripts/train_translator.sh --data ../shared/data/multi30k --max-minutes 20
#   scripts/train_translator.sh --data ../shared/data/multi30k --src-lang en --tgt-lang fr
#   scripts/train_translator.sh --data my_corpus.tsv --src-lang en --tgt-lang fr
# The model lands in runs/CORPUS_SRC_TGT (runs/multi30k_en_de, runs/multi30k_en_fr, runs/my_corpus_en_fr, ...;
# override with OUT=dir). Add --resume to continue an interrupted run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python}"

src=en tgt=de data="" wants_cpu=no previous=""
for arg in "$@"; do
  case "$previous" in
    --src-lang) src="$arg" ;;
    --tgt-lang) tgt="$arg" ;;
    --data) data="$arg" ;;
    --device) [ "$arg" = cpu ] && wants_cpu=yes ;;
  esac
  case "$arg" in
    --src-lang=*) src="${arg#*=}" ;;
    --tgt-lang=*) tgt="${arg#*=}" ;;
    --data=*) data="${arg#*=}" ;;
    --device=cpu) wants_cpu=yes ;;
  esac
  previous="$arg"
done
corpus=multi30k
if [ -n "$data" ]; then
  corpus="$(basename "${data%/}")"
  corpus="${corpus%.gz}"; corpus="${corpus%.tsv}"; corpus="${corpus%.txt}"
fi
OUT="${OUT:-runs/${corpus}_${src}_${tgt}}"

extra=()
if [ -z "${CONFIG:-}" ]; then
  if [ "$corpus" = multi30k ]; then CONFIG=configs/multi30k_en_de.yaml; else CONFIG=configs/own_corpus.yaml; fi
  if [ "$wants_cpu" = no ] && "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    CONFIG=configs/multi30k_en_de_gpu.yaml
    # your corpus's own test splits, not Multi30k's
    if [ "$corpus" != multi30k ]; then extra=(--set "data.test_splits=null"); fi
  fi
fi
echo "Recipe: $CONFIG; corpus ${data:-bentrevett/multi30k}, $src -> $tgt; run directory $OUT"
"$PYTHON" -m seq2seq.train --config "$CONFIG" --out "$OUT" --src-lang "$src" --tgt-lang "$tgt" ${extra[@]+"${extra[@]}"} "$@"
echo
echo "Test scores: $OUT/results.json; curves: $OUT/curves.png; cleaning: $OUT/cleaning.json"
# a sample sentence in the source language: one of ours for en/de/fr/cs, else the first validation source line
sample="$("$PYTHON" - "$OUT" <<'PY'
import sys
from pathlib import Path

SAMPLES = {"en": "A man is riding a bike.", "de": "Ein Mann fährt Fahrrad.", "fr": "Un homme fait du vélo.",
           "cs": "Muž jede na kole."}
from seq2seq.config import load_config
from seq2seq.data import read_split

run = Path(sys.argv[1])
cfg = load_config(run / "config.yaml")
if cfg.data.src_lang in SAMPLES:
    print(SAMPLES[cfg.data.src_lang])
elif (run / f"held_out.{cfg.data.src_lang}").is_file():
    print((run / f"held_out.{cfg.data.src_lang}").read_text(encoding="utf-8").splitlines()[0])
else:
    print(read_split(cfg.data, cfg.data.valid_split)["src"][0])
PY
)"
echo "Sample translation (python -m seq2seq.translate --model $OUT \"$sample\"):"
"$PYTHON" -m seq2seq.translate --model "$OUT" "$sample"
