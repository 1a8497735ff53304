"""Corpus metrics (seq2seq/metrics.py): the lowercased, Moses-tokenized BLEU beside sacreBLEU, checked against BLEU
worked out by hand and against sacreBLEU run on text tokenized by hand; where ``evaluate`` and results.json report it."""

from __future__ import annotations

import json
import math
import shutil

from sacrebleu.metrics import BLEU

from seq2seq.config import load_config
from seq2seq.evaluate import main
from seq2seq.final_evaluation import evaluate_test_splits
from seq2seq.metrics import legacy_bleu, bleu_and_chrf


def test_legacy_bleu_equals_bleu_worked_out_by_hand():
    """hyp 'Ein Mann, der "lacht".' -> ein mann , der " lacht " . (8 tokens); ref 'ein Mann, der lacht.' -> ein mann ,
    der lacht . (6 tokens). Matches: 6/8 unigrams, 3/7 bigrams (ein mann, mann ",", ", der"), 2/6 trigrams, 1/5
    4-grams; the hypothesis is longer, so no brevity penalty."""
    expected = 100 * math.exp((math.log(6 / 8) + math.log(3 / 7) + math.log(2 / 6) + math.log(1 / 5)) / 4)
    result = legacy_bleu(['Ein Mann, der "lacht".'], ["ein Mann, der lacht."], "de")
    assert abs(result["bleu_lc_moses"] - round(expected, 2)) < 1e-9
    assert "case:lc" in result["bleu_lc_moses_signature"] and "tok:moses-de" in result["bleu_lc_moses_signature"]
    assert "sacremoses-" in result["bleu_lc_moses_signature"]
    # sacreBLEU (cased, 13a) scores the same pair otherwise: "Ein" is not "ein" there
    assert bleu_and_chrf(['Ein Mann, der "lacht".'], ["ein Mann, der lacht."])["bleu"] < result["bleu_lc_moses"]


def test_legacy_bleu_equals_sacrebleu_on_text_tokenized_by_hand():
    hypotheses = ["A man's dog (brown) runs, fast.", "Two Women sit on a bench!", "The child eats an apple."]
    references = ["A man's brown dog runs fast.", "Two women are sitting on a bench.", "A child eats an apple ."]
    by_hand_hyp = ["a man 's dog ( brown ) runs , fast .", "two women sit on a bench !", "the child eats an apple ."]
    by_hand_ref = ["a man 's brown dog runs fast .", "two women are sitting on a bench .", "a child eats an apple ."]
    expected = BLEU(tokenize="none").corpus_score(by_hand_hyp, [by_hand_ref]).score
    assert legacy_bleu(hypotheses, references, "en")["bleu_lc_moses"] == round(expected, 2)
    both = bleu_and_chrf(hypotheses, references, legacy_lang="en")
    assert both["bleu_lc_moses"] == round(expected, 2) and both["bleu"] != both["bleu_lc_moses"]
    assert "bleu_lc_moses" not in bleu_and_chrf(hypotheses, references)  # validation's scores stay sacreBLEU only


def test_evaluate_prints_the_legacy_bleu_with_its_signature(tmp_path, capsys):
    hyp, ref = tmp_path / "hyp.txt", tmp_path / "test.de"
    hyp.write_text('Ein Mann, der "lacht".\n', encoding="utf-8")
    ref.write_text("ein Mann, der lacht.\n", encoding="utf-8")

    def evaluate(*args: str) -> str:
        assert main(["--hyp", str(hyp), *args]) == 0
        return capsys.readouterr().out

    printed = evaluate("--ref", str(ref))  # the language from the reference's extension
    assert "lowercased, Moses-tokenized BLEU = 38.26" in printed
    assert "lowercased Moses-tokenized BLEU signature: nrefs:1|case:lc|eff:no|tok:moses-de+sacremoses-" in printed
    as_json = json.loads(evaluate("--ref", str(ref), "--lang", "de", "--json"))
    assert as_json["bleu_lc_moses"] == 38.26
    shutil.copy(ref, tmp_path / "reference")
    assert "give the target language with --lang" in evaluate("--ref", str(tmp_path / "reference"))


def test_results_json_reports_the_legacy_bleu(tiny_model_dir, tiny_corpus, tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    cfg = load_config(model_dir / "config.yaml", [f"data.path={tiny_corpus}", "data.test_splits=[test_2016_flickr]",
                                                  "decode.beam_size=2"])
    results = evaluate_test_splits(cfg, model_dir, "cpu")
    saved = json.loads((model_dir / "results.json").read_text(encoding="utf-8"))
    assert saved == results
    for result in saved["test_2016_flickr"].values():
        assert 0 <= result["bleu_lc_moses"] <= 100
        assert result["bleu_lc_moses_signature"].startswith("nrefs:1|case:lc|eff:no|tok:moses-de+sacremoses-")
