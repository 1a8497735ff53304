"""The test splits scored at the end of training: greedy and beam BLEU/chrF of the model directory a run wrote,
saved as ``results.json`` beside it (``python -m seq2seq.evaluate`` is the command line for any other files)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from seq2seq.checkpoint import WEIGHTS_FILE, atomic_write_text
from seq2seq.config import Config
from seq2seq.data import DataError, read_split, test_split_names
from seq2seq.metrics import translate_and_score
from seq2seq.translator import Translator

logger = logging.getLogger("seq2seq.train")


def evaluate_test_splits(cfg: Config, out_dir: Path, device) -> dict[str, Any]:
    """Greedy and beam BLEU/chrF of the best model on each test split -> ``results.json`` (none without test splits).

    Training calls this at its end, on the model directory it wrote, exactly as a user would evaluate it.
    """
    splits = cfg.data.test_splits if cfg.data.test_splits is not None else test_split_names(cfg.data)
    if not splits:
        logger.info("no test splits to score (data.test_splits; the corpus has none besides training and validation)")
        return {}
    if not (out_dir / WEIGHTS_FILE).is_file():
        logger.warning("no best model was saved (no validation ran); skipping the test evaluation")
        return {}
    translator = Translator.load(out_dir, device=str(device))
    results: dict[str, Any] = {}
    for split in splits:
        try:
            raw = read_split(cfg.data, split)
        except DataError as err:
            logger.warning("test split '%s' skipped: %s", split, err)
            continue
        sources, references = list(raw["src"]), list(raw["tgt"])
        results[split] = {}
        for name, beam in (("greedy", 1), (f"beam{cfg.decode.beam_size}", cfg.decode.beam_size)):
            _, result = translate_and_score(translator, sources, references, beam, legacy_lang=cfg.data.tgt_lang)
            results[split][name] = result
            logger.info("test %s %s: BLEU %.2f chrF %.2f (%.1f sentences/s) %s; lowercased Moses-tokenized BLEU "
                        "%.2f %s", split, name, result["bleu"], result["chrf"], result["sentences_per_second"],
                        result["bleu_signature"], result["bleu_lc_moses"], result["bleu_lc_moses_signature"])
    atomic_write_text(out_dir / "results.json", json.dumps(results, indent=2, ensure_ascii=False))
    return results
