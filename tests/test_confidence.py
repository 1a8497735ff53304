"""Confidence: piece probabilities against a softmax of the model's logits written out (single models, ensembles,
the stepped path onnxruntime takes), the features against values worked out by hand, every search mode through
the Python API, the uncalibrated fallback, and the fields in ``translate --json`` and the service's reply."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from support.cli import run
from support.tiny_models import random_src, sharp_model

from seq2seq.decoding.confidence import (
    FEATURE_NAMES,
    SourcePieceStats,
    assess_outputs,
    confidence_features,
    forced_pass,
)
from seq2seq.decoding.driver import score_ids
from seq2seq.decoding.sampling import Sampling
from seq2seq.sentence_confidence import confidence_json
from seq2seq.tokenizer import BOS_ID, EOS_ID, PAD_ID
from seq2seq.translator import Translator

SENTENCES = ["A man is riding a bike.", "Two dogs play in the snow.", "People.",
             "A girl in a red dress is walking down the street with her mother."]


def probabilities_by_hand(models, src_row: torch.Tensor, length: int, output: list[int]) -> list[float]:
    """Step each model's decoder through BOS + output, softmax of each step's logits written out in fp64; per
    position the exponent of the members' mean log-probability."""
    per_model = []
    for model in models:
        with torch.no_grad():
            state, memory = model.decoder.start(model.encode(src_row[None, :length], torch.tensor([length])))
            previous, logs = torch.tensor([BOS_ID]), []
            for token in output + [EOS_ID]:
                logits, state, _ = model.decoder.step(previous, state, memory)
                row = logits[0].double()
                exps = torch.exp(row - row.max())
                logs.append(math.log(float(exps[token] / exps.sum())))
                previous = torch.tensor([token])
        per_model.append(logs)
    return [math.exp(sum(column) / len(column)) for column in zip(*per_model)]


class NotAModule:
    """A model seen only through ``encode`` and ``decoder`` (as an onnxruntime model is): forced_pass steps it."""

    def __init__(self, model) -> None:
        self.encode, self.decoder = model.encode, model.decoder

    def eval(self) -> "NotAModule":  # the rest of seq2seq/decoding_model.py's DecodingModel
        return self


def uniform_vocabulary(size: int) -> SourcePieceStats:
    return SourcePieceStats(piece_log_prob=-torch.arange(size, dtype=torch.float32),
                            rare=torch.zeros(size, dtype=torch.bool))


OUTPUTS = [[4, 5, 6], [], [7, 7, 8, 4, 5, 6, 7], [8]]


@pytest.mark.parametrize("members", [["gru"], ["lstm", "gru"], ["gru-feeding"]])
def test_piece_probabilities_are_a_softmax_of_the_logits(members):
    models = [sharp_model(name.split("-")[0], vocab=9, input_feeding=name.endswith("feeding")) for name in members]
    src, lengths = random_src([5, 3, 7, 2], vocab=9)
    src_ids = [src[i, : lengths[i]].tolist() + [EOS_ID] for i in range(4)]
    assessed = assess_outputs(models, src_ids, OUTPUTS, [1, 1, 1, 1], uniform_vocabulary(9), batch_size=3)
    for i, (output, assessment) in enumerate(zip(OUTPUTS, assessed)):
        row = torch.tensor(src_ids[i])
        expected = probabilities_by_hand(models, row, len(src_ids[i]), output)
        assert [math.exp(x) for x in assessment.token_log_probs] == pytest.approx(expected, abs=1e-5)


def test_models_without_a_forward_are_stepped_to_the_same_values():
    model = sharp_model("lstm", vocab=9)
    src, src_lengths = random_src([6, 4], vocab=9)
    src = torch.cat([src, torch.zeros(2, 1, dtype=torch.long)], dim=1)
    src[torch.arange(2), src_lengths] = EOS_ID
    tgt, tgt_lengths = torch.tensor([[4, 5, 6], [7, PAD_ID, PAD_ID]]), torch.tensor([3, 1])
    fast = forced_pass(model, src, src_lengths + 1, tgt, tgt_lengths)
    stepped = forced_pass(NotAModule(model), src, src_lengths + 1, tgt, tgt_lengths)
    assert torch.allclose(fast[0], stepped[0], atol=1e-5)
    for row, length in enumerate((tgt_lengths + 1).tolist()):  # positions past a row's end are not compared
        assert torch.allclose(fast[1][row, :length], stepped[1][row, :length], atol=1e-5)


def test_features_equal_values_worked_out_by_hand():
    # one sentence: 3 source pieces (ids 4, 5, 6; 6 is rare) + EOS, in 2 words; the output: 2 pieces + EOS
    probs = torch.tensor([[0.5, 0.1, 0.9, 0.3]])  # the last position is past the row's end
    attention = torch.tensor([[[0.8, 0.1, 0.0, 0.1], [0.7, 0.2, 0.0, 0.1], [0.1, 0.5, 0.1, 0.3], [0, 0, 1.0, 0]]])
    src = torch.tensor([[4, 5, 6, EOS_ID, PAD_ID]])  # padded one column further
    scores = torch.tensor([0.0, 0.0, 0.0, 0.0, -2.0, -3.0, -9.0])
    rare = torch.tensor([False] * 6 + [True])
    features = confidence_features(probs.log(), torch.tensor([3]), torch.cat([attention, torch.zeros(1, 4, 1)], 2),
                                   src, torch.tensor([4]), torch.tensor([2]), SourcePieceStats(scores, rare))
    expected = {
        "mean_log_prob": (math.log(0.5) + math.log(0.1) + math.log(0.9)) / 3,
        "min_log_prob": math.log(0.1),
        "low_prob_share": 1 / 3,  # 0.1 < 0.2
        "unattended_share": 1 / 3,  # attention received over the 3 real positions: 1.6, 0.8, 0.1 (< 0.3)
        "length_ratio": math.log(3) - math.log(4),  # (2 pieces + 1) against (3 pieces + 1)
        "pieces_per_word": 3 / 2,
        "rare_piece_share": 1 / 3,
        "source_piece_log_prob": (-2.0 - 3.0 - 9.0) / 3,
    }
    assert dict(zip(FEATURE_NAMES, features[0].tolist())) == pytest.approx(expected, abs=1e-6)


@pytest.fixture(scope="module")
def translator(tiny_model_dir) -> Translator:
    return Translator.load(tiny_model_dir, device="cpu")


SEARCHES = {
    "greedy": dict(beam_size=1),
    "beam, n-best": dict(beam_size=3, nbest=2),
    "sampling": dict(sampling=Sampling(temperature=1.0, seed=3), nbest=2),
    "prefix": dict(beam_size=3, prefix="Ein Mann"),
    "constraints": dict(beam_size=3, constraints=["Hund"]),
}


@pytest.mark.parametrize("search", list(SEARCHES))
def test_every_search_mode_gets_the_forced_scores_of_its_outputs(translator, search):
    results = translator.generate(SENTENCES + [""], **SEARCHES[search])
    assert results[-1][0].confidence is None and results[-1][0].piece_probs == []  # an empty input: nothing decoded
    src_ids = translator.encode_sources(SENTENCES)
    for ids, entry in zip(src_ids, results):
        scored = score_ids(translator.models, [ids] * len(entry), [t.tokens for t in entry], translator.decode_options())
        for translation, score in zip(entry, scored):
            assert translation.piece_probs == pytest.approx([math.exp(x) for x in score.token_log_probs], abs=1e-5)
            assert 0.0 <= translation.confidence <= 1.0 and translation.confidence_calibrated
            assert set(translation.confidence_features) == set(FEATURE_NAMES)


def test_an_ensemble_has_piece_probabilities_of_its_mean(tiny_model_dir, translator):
    ensemble = Translator.load([tiny_model_dir, tiny_model_dir], device="cpu")
    alone, both = translator.generate(SENTENCES[:2]), ensemble.generate(SENTENCES[:2])
    for one, two in zip(alone, both):  # two copies of one model: the mean of equal log-probabilities
        assert two[0].piece_probs == pytest.approx(one[0].piece_probs, abs=1e-5)


def test_without_a_calibration_the_confidence_is_the_geometric_mean_and_says_so(tiny_model_dir, tmp_path, capsys):
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir, ignore=shutil.ignore_patterns("last", "confidence.json"))
    uncalibrated = Translator.load(model_dir, device="cpu")
    assert uncalibrated.calibration is None
    for entry in uncalibrated.generate(SENTENCES):
        t = entry[0]
        geometric = math.exp(sum(math.log(p) for p in t.piece_probs) / len(t.piece_probs))
        assert t.confidence == pytest.approx(geometric, abs=1e-6) and not t.confidence_calibrated
        assert t.low_confidence == (t.confidence < 0.25)
    from seq2seq.translate import main as translate

    assert translate(["--model", str(model_dir), "--json", "--threads", "1", *SENTENCES[:2]]) == 0
    out, err = capsys.readouterr()
    assert err.count("python -m seq2seq.calibrate --model") == 1  # said once, not per line
    assert [json.loads(line)["translations"][0]["confidence_calibrated"] for line in out.splitlines()] == [False] * 2


def test_translate_json_carries_the_confidence_of_the_api(tiny_model_dir, translator):
    result = run("seq2seq.translate", "--model", str(tiny_model_dir), "--json", "--nbest", "2", *SENTENCES[:2])
    assert result.returncode == 0, result.stderr
    assert "seq2seq.calibrate" not in result.stderr  # calibrated: nothing to say
    expected = translator.generate(SENTENCES[:2], nbest=2)
    for line, entry in zip(result.stdout.splitlines(), expected):
        for got, translation in zip(json.loads(line)["translations"], entry):
            want = confidence_json(translation, translator.tgt_tokenizer.id_to_piece)
            assert got["pieces"] == want["pieces"] and got["low_confidence"] == want["low_confidence"]
            assert got["confidence"] == pytest.approx(want["confidence"], abs=2e-4)
            assert got["piece_probs"] == pytest.approx(want["piece_probs"], abs=2e-4)
            assert len(got["piece_probs"]) == len(translation.tokens) + 1 and got["pieces"][-1] == "</s>"


def test_the_service_reply_carries_the_confidence_of_the_api(tiny_model_dir, translator):
    pytest.importorskip("fastapi", reason='the service needs the serve extra: pip install -e ".[serve]"')
    from fastapi.testclient import TestClient

    from seq2seq.serving.app import create_app

    with TestClient(create_app(translator, tiny_model_dir, batch_wait_ms=1.0)) as client:
        reply = client.post("/translate", json={"text": SENTENCES, "beam_size": 3, "nbest": 2}).json()
    expected = translator.generate(SENTENCES, beam_size=3, nbest=2)
    for entry, hypotheses in zip(reply["translations"], expected):
        for got, translation in [(entry, hypotheses[0])] + list(zip(entry["nbest"], hypotheses)):
            want = confidence_json(translation, translator.tgt_tokenizer.id_to_piece)
            assert got["confidence"] == pytest.approx(want["confidence"], abs=2e-4)
            assert got["piece_probs"] == pytest.approx(want["piece_probs"], abs=2e-4)
            assert (got["pieces"], got["confidence_calibrated"], got["low_confidence"]) == \
                (want["pieces"], True, want["low_confidence"])


def test_rare_source_pieces_are_unk_and_byte_pieces(translator):
    import re

    tokenizer = translator.src_tokenizer
    vocabulary = SourcePieceStats.of(tokenizer)
    pieces = [tokenizer.id_to_piece(i) for i in range(tokenizer.vocab_size)]
    expected = [i == 1 or re.fullmatch(r"<0x[0-9A-F]{2}>", piece) is not None for i, piece in enumerate(pieces)]
    assert vocabulary.rare.tolist() == expected and sum(expected) == 257  # <unk> and 256 byte pieces
    learned = [score for score, rare in zip(tokenizer.piece_log_probs()[4:], expected[4:]) if not rare]
    assert vocabulary.piece_log_prob[vocabulary.rare].unique().tolist() == [pytest.approx(min(learned))]
