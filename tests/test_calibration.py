"""The confidence calibration: the file training writes equals a ridge fit computed here by another method on the
validation split's features (and not on another split's), the command line for older models, the threshold and
the JSON file by hand, and a damaged file falling back to the uncalibrated confidence."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
import sacrebleu

from seq2seq.calibrate import confidence_table
from seq2seq.calibrate import main as calibrate
from seq2seq.calibration import RIDGE, Calibration, fit_calibration, flag_statistics
from seq2seq.decoding.confidence import FEATURE_NAMES
from seq2seq.rank_metrics import spearman
from seq2seq.translator import Translator


def read_pairs(corpus, split: str) -> tuple[list[str], list[str]]:
    return tuple((corpus / f"{split}.{lang}").read_text(encoding="utf-8").splitlines() for lang in ("en", "de"))


def ridge_by_lstsq(features: np.ndarray, chrf: np.ndarray, ridge: float) -> tuple[np.ndarray, float]:
    """Weights on standardized features and the intercept: min |y - b - Z w|^2 + ridge |w|^2 as one least-squares
    problem with ``sqrt(ridge) * I`` rows appended (the intercept unpenalized); constant columns standardize to 0."""
    mean = features.sum(axis=0) / len(features)
    std = np.sqrt(((features - mean) ** 2).sum(axis=0) / len(features))
    z = np.where(std > 0, (features - mean) / np.where(std > 0, std, 1.0), 0.0)
    rows = np.hstack([np.ones((len(z), 1)), z])
    penalty = np.hstack([np.zeros((z.shape[1], 1)), np.sqrt(ridge) * np.eye(z.shape[1])])
    solution = np.linalg.lstsq(np.vstack([rows, penalty]), np.concatenate([chrf / 100, np.zeros(z.shape[1])]),
                               rcond=None)[0]
    return solution[1:], float(solution[0])


@pytest.fixture(scope="module")
def translator(tiny_model_dir) -> Translator:
    return Translator.load(tiny_model_dir, device="cpu")


def fit_here(translator, corpus, split):
    sources, references = read_pairs(corpus, split)
    features, _, best = confidence_table(translator, sources, references)
    chrf = np.array([sacrebleu.sentence_chrf(t.text, [r]).score for t, r in zip(best, references)])
    return features, chrf, ridge_by_lstsq(features, chrf, RIDGE)


def test_the_fit_is_ridge_least_squares_solved_another_way():
    rng = np.random.default_rng(2)
    features = np.hstack([rng.normal(size=(60, 3)) * [1.0, 5.0, 0.1] + [0.0, -3.0, 2.0], np.full((60, 1), 7.0)])
    chrf = np.clip(50 + 20 * features[:, 0] - 2 * features[:, 1] + rng.normal(0, 5, 60), 0, 100)
    fitted = fit_calibration(features, chrf, ["a", "b", "c", "constant"], "dev")
    weights, bias = ridge_by_lstsq(features, chrf, RIDGE)
    assert fitted.weights == pytest.approx(weights.tolist(), abs=1e-9) and fitted.bias == pytest.approx(bias)
    assert fitted.weights[3] == 0.0  # a constant feature carries nothing
    predicted = np.clip(bias + (features - fitted.means) / fitted.scales @ weights, 0, 1)
    assert fitted.spearman == pytest.approx(spearman(predicted, chrf), abs=1e-4) and fitted.spearman > 0.8


def test_training_calibrates_on_the_validation_split(tiny_model_dir, tiny_corpus, translator):
    saved = json.loads((tiny_model_dir / "confidence.json").read_text(encoding="utf-8"))
    assert (saved["split"], saved["sentences"], saved["features"]) == ("val", 100, list(FEATURE_NAMES))
    features, chrf, (weights, bias) = fit_here(translator, tiny_corpus, "val")
    assert saved["means"] == pytest.approx(features.mean(axis=0).tolist(), abs=1e-9)
    assert saved["weights"] == pytest.approx(weights.tolist(), abs=1e-6)
    assert saved["bias"] == pytest.approx(bias, abs=1e-9)
    other, _, _ = fit_here(translator, tiny_corpus, "test_2016_flickr")  # what a fit on the wrong split reads
    assert not np.allclose(other.mean(axis=0), saved["means"], atol=1e-3)


def test_the_command_calibrates_an_older_model_on_its_validation_split_or_given_files(
        tiny_model_dir, tiny_corpus, tmp_path, capsys):
    model_dir = tmp_path / "older"
    shutil.copytree(tiny_model_dir, model_dir, ignore=shutil.ignore_patterns("last", "confidence.json"))
    assert calibrate(["--model", str(model_dir), "--threads", "1", "--no-progress"]) == 0
    assert "Spearman" in capsys.readouterr().out
    written = json.loads((model_dir / "confidence.json").read_text(encoding="utf-8"))
    trained = json.loads((tiny_model_dir / "confidence.json").read_text(encoding="utf-8"))
    assert written == trained  # the config's data.valid_split, as training did
    assert Translator.load(model_dir, device="cpu").calibration is not None

    test_files = [str(tiny_corpus / f"test_2016_flickr.{lang}") for lang in ("en", "de")]
    out = tmp_path / "elsewhere.json"
    assert calibrate(["--model", str(model_dir), "--src", test_files[0], "--ref", test_files[1], "--out", str(out),
                      "--threads", "1", "--no-progress"]) == 0
    given = Calibration.load(out, FEATURE_NAMES)
    assert (given.split, given.sentences) == ("test_2016_flickr.en", 100) and given.means != written["means"]


def test_the_command_names_what_is_wrong(tiny_model_dir, tmp_path, capsys):
    missing = str(tmp_path / "missing.de")
    assert calibrate(["--model", str(tiny_model_dir), "--src", missing, "--ref", missing, "--out",
                      str(tmp_path / "x.json")]) == 2
    assert "--src" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        calibrate(["--model", str(tiny_model_dir), "--src", missing])
    assert exit_info.value.code == 2 and "--ref" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        calibrate(["--model", "hf:org/model"])  # a Hub snapshot is not written into
    assert exit_info.value.code == 2 and "--out" in capsys.readouterr().err


def test_flag_statistics_count_by_hand():
    confidence = [0.1, 0.35, 0.39, 0.4, 0.8, 0.2]
    chrf = [0.05, 0.5, 0.3, 0.1, 0.9, 0.39]  # chrF / 100
    # flagged (< 0.4): 0.1, 0.35, 0.39, 0.2 -> 4 of 6; of those below 0.4 in chrF too: 0.05, 0.3, 0.39 -> 3 of 4
    assert flag_statistics(confidence, chrf, 0.4) == (round(4 / 6, 4), 0.75)
    assert flag_statistics([0.9], [0.1], 0.4) == (0.0, None)


def test_a_calibration_round_trips_through_its_file(tmp_path):
    rng = np.random.default_rng(1)
    features = rng.normal(size=(30, 3))
    chrf = 100 / (1 + np.exp(-features @ [1.0, -0.5, 0.0]))
    fitted = fit_calibration(features, chrf, ["a", "b", "c"], "dev")
    fitted.save(tmp_path / "confidence.json")
    loaded = Calibration.load(tmp_path / "confidence.json", ["a", "b", "c"])
    assert loaded == fitted
    assert np.array_equal(loaded.predict(features), fitted.predict(features))
    assert ((0 <= fitted.predict(features * 50)) & (fitted.predict(features * 50) <= 1)).all()  # clipped
    with pytest.raises(ValueError, match="features this version does not compute.*seq2seq.calibrate"):
        Calibration.load(tmp_path / "confidence.json", ["a", "b"])
    (tmp_path / "confidence.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="confidence.json is not a confidence calibration"):
        Calibration.load(tmp_path / "confidence.json", ["a", "b", "c"])


def test_a_damaged_calibration_costs_the_calibration_not_the_model(tiny_model_dir, tmp_path, caplog):
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir, ignore=shutil.ignore_patterns("last"))
    (model_dir / "confidence.json").write_text('{"features": ["mean_log_prob"]}', encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        translator = Translator.load(model_dir, device="cpu")
    assert translator.calibration is None and "confidences are uncalibrated" in caplog.text
    assert translator.generate(["A dog."])[0][0].confidence_calibrated is False


def test_evaluate_reports_how_well_the_confidence_ranks_sentences(tiny_model_dir, tiny_corpus, capsys):
    from seq2seq.evaluate import main as evaluate
    from seq2seq.metrics import confidence_ranking
    from seq2seq.translator import Translation

    references = ["Ein Mann fährt Fahrrad.", "Zwei Hunde spielen.", "Eine Frau liest.", "Kinder spielen im Park."]
    texts = ["Ein Mann fährt ein Fahrrad.", "Hunde.", "Eine Frau liest ein Buch.", "Ein Auto."]
    translations = [Translation(text=t, tokens=[], score=0.0, confidence=c, confidence_calibrated=True,
                                low_confidence=c < 0.4) for t, c in zip(texts, [0.9, 0.3, 0.7, 0.2])]
    chrf = [sacrebleu.sentence_chrf(t, [r]).score for t, r in zip(texts, references)]
    ranking = confidence_ranking(translations, references)
    assert ranking["confidence_spearman"] == pytest.approx(spearman([0.9, 0.3, 0.7, 0.2], chrf), abs=1e-4)
    assert (ranking["low_confidence_share"], ranking["confidence_calibrated"]) == (0.5, True)

    assert evaluate(["--model", str(tiny_model_dir), "--src", str(tiny_corpus / "test_2016_flickr.en"), "--ref",
                     str(tiny_corpus / "test_2016_flickr.de"), "--json", "--no-progress", "--threads", "1"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["confidence_calibrated"] is True and 0 <= result["confidence_mean"] <= 1
