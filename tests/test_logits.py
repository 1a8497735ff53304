"""decode.min_length defaults to 1: a non-empty source never gets an empty translation unless min_length is 0.

Checked on the real tiny model with its output bias pushed towards EOS, so that EOS is the argmax at every step
(as in a barely trained model that translates `a man is riding a bike` to an empty line)."""

from __future__ import annotations

import shutil

import pytest
import torch
import yaml

from seq2seq.api import Translator
from seq2seq.checkpoint import WEIGHTS_FILE, load_weights, save_weights
from seq2seq.config import Config, DecodeConfig
from seq2seq.tokenizer import BOS_ID, EOS_ID, PAD_ID

SENTENCES = ["A man is riding a bike.", "Two dogs play in the snow.", "People."]


@pytest.fixture(scope="module")
def eos_model_dir(tiny_model_dir, tmp_path_factory):
    """A copy of the tiny model whose output layer adds 100 to the EOS logit."""
    model_dir = tmp_path_factory.mktemp("eos_model") / "model"
    shutil.copytree(tiny_model_dir, model_dir, ignore=shutil.ignore_patterns("last", "*.log", "*.png"))
    weights = load_weights(model_dir / WEIGHTS_FILE)
    weights["decoder.output_layer.bias"][EOS_ID] += 100.0
    save_weights(weights, model_dir / WEIGHTS_FILE)
    return model_dir


def test_the_default_is_one_everywhere(tiny_model_dir):
    assert DecodeConfig().min_length == 1 and Config().decode.min_length == 1
    saved = yaml.safe_load((tiny_model_dir / "config.yaml").read_text(encoding="utf-8"))
    assert saved["decode"]["min_length"] == 1  # what training writes into a new model directory


@pytest.mark.parametrize("beam_size", [1, 3])
def test_eos_first_model_gives_a_non_empty_translation_by_default(eos_model_dir, beam_size):
    tr = Translator.load(eos_model_dir, device="cpu")
    assert tr.cfg.decode.min_length == 1
    nbest = tr.translate(SENTENCES, beam_size=beam_size, nbest=beam_size, return_scores=True)
    for hypotheses in nbest:
        hypotheses = hypotheses if isinstance(hypotheses, list) else [hypotheses]
        assert len(hypotheses) == beam_size
        # EOS may end the output as soon as one piece is there, and it dominates: exactly one piece each
        assert all(len(h.tokens) == 1 for h in hypotheses), [h.tokens for h in hypotheses]
    best = tr.translate(SENTENCES, beam_size=beam_size)
    assert all(text.strip() for text in best), best


@pytest.mark.parametrize("beam_size", [1, 3])
def test_min_length_zero_allows_the_empty_translation(eos_model_dir, beam_size):
    tr = Translator.load(eos_model_dir, device="cpu")
    tr.cfg.decode.min_length = 0
    out = tr.translate(SENTENCES, beam_size=beam_size, return_scores=True)
    assert [t.tokens for t in out] == [[]] * len(SENTENCES)  # EOS is the argmax at step 0
    assert [t.text for t in out] == [""] * len(SENTENCES)


def test_a_saved_min_length_zero_is_kept(eos_model_dir, tmp_path):
    """A model directory whose config.yaml says min_length: 0 (any trained before the default became 1) keeps it."""
    model_dir = tmp_path / "model"
    shutil.copytree(eos_model_dir, model_dir)
    config = model_dir / "config.yaml"
    raw = yaml.safe_load(config.read_text(encoding="utf-8"))
    raw["decode"]["min_length"] = 0
    config.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    tr = Translator.load(model_dir, device="cpu")
    assert tr.cfg.decode.min_length == 0
    assert tr.translate(SENTENCES, beam_size=1) == [""] * len(SENTENCES)


def test_the_bias_makes_eos_the_argmax_at_the_first_step(eos_model_dir):
    """The premise of the tests above, checked on the decoder's first step directly."""
    tr = Translator.load(eos_model_dir, device="cpu")
    src_ids = tr.encode_sources(SENTENCES)
    width = max(len(ids) for ids in src_ids)
    src = torch.tensor([ids + [PAD_ID] * (width - len(ids)) for ids in src_ids])
    lengths = torch.tensor([len(ids) for ids in src_ids])
    with torch.inference_mode():
        state, memory = tr.model.decoder.start(tr.model.encode(src, lengths))
        logits, _, _ = tr.model.decoder.step(torch.full((len(SENTENCES),), BOS_ID), state, memory)
    assert logits.argmax(dim=-1).tolist() == [EOS_ID] * len(SENTENCES)
