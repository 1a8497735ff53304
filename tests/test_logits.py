"""The logit constraints of decoding/logits.py against brute force (n-gram bans, EOS before min_length, EOS at
the length limit, the length limits, the GNMT penalty), and decode.min_length end to end: it defaults to 1, so a
non-empty source never gets an empty translation unless min_length is 0.

The end-to-end tests run the real tiny model with its output bias pushed towards EOS, so that EOS is the argmax at
every step (as in a barely trained model that translates `a man is riding a bike` to an empty line)."""

from __future__ import annotations

import math
import shutil

import pytest
import torch
import yaml

from seq2seq.translator import Translator
from seq2seq.checkpoint import WEIGHTS_FILE, load_weights, save_weights
from seq2seq.config import Config, DecodeConfig
from seq2seq.decoding.logits import (
    ban_eos_before_min_length,
    ban_repeated_ngrams,
    force_eos_at_max_length,
    length_penalty,
    max_output_lengths,
)
from seq2seq.tokenizer import BOS_ID, EOS_ID, PAD_ID, TGT_TOKENIZER_FILE, Tokenizer

SENTENCES = ["A man is riding a bike.", "Two dogs play in the snow.", "People."]


@pytest.fixture(scope="module")
def eos_model_dir(tiny_model_dir, tmp_path_factory):
    """A copy of the tiny model whose output layer adds 100 to the EOS logit."""
    model_dir = tmp_path_factory.mktemp("eos_model") / "model"
    shutil.copytree(tiny_model_dir, model_dir, ignore=shutil.ignore_patterns("last", "*.log", "*.png"))
    weights = load_weights(model_dir / WEIGHTS_FILE)
    weights["decoder.output_layer.bias"][EOS_ID] += 100.0
    # the bare word boundary "▁" (a piece of its own with byte fallback) would make the one forced piece a space:
    # push it down, so that the piece min_length forces is one with text
    space = Tokenizer.load(model_dir / TGT_TOKENIZER_FILE)._sp.piece_to_id("\u2581")
    weights["decoder.output_layer.bias"][space] -= 100.0
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
    nbest = tr.generate(SENTENCES, beam_size=beam_size, nbest=beam_size)
    for hypotheses in nbest:
        assert len(hypotheses) == beam_size
        # EOS may end the output as soon as one piece is there, and it dominates: exactly one piece each
        assert all(len(h.tokens) == 1 for h in hypotheses), [h.tokens for h in hypotheses]
    best = tr.translate(SENTENCES, beam_size=beam_size)
    assert all(text.strip() for text in best), best


@pytest.mark.parametrize("beam_size", [1, 3])
def test_min_length_zero_allows_the_empty_translation(eos_model_dir, beam_size):
    tr = Translator.load(eos_model_dir, device="cpu")
    tr.cfg.decode.min_length = 0
    out = [entry[0] for entry in tr.generate(SENTENCES, beam_size=beam_size)]
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


# ---------------------------------------------------------------------------- helpers against brute force
def ngrams(tokens: list[int], n: int) -> list[tuple[int, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def banned_by_brute_force(history: list[int], ngram_size: int, vocab: int) -> set[int]:
    if ngram_size == 1:
        return set(history)
    seen = set(ngrams(history, ngram_size))
    prefix = tuple(history[len(history) - ngram_size + 1 :]) if len(history) >= ngram_size - 1 else None
    return {v for v in range(vocab) if prefix is not None and prefix + (v,) in seen}


@pytest.mark.parametrize("ngram_size", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("length", [0, 1, 2, 3, 5, 12])
def test_ban_repeated_ngrams_matches_brute_force(ngram_size, length):
    vocab = 5  # small, so repeats are common
    history = torch.randint(0, vocab, (64, length))
    log_probs = torch.randn(64, vocab)
    out = ban_repeated_ngrams(log_probs.clone(), history, ngram_size)
    for row in range(64):
        banned = banned_by_brute_force(history[row].tolist(), ngram_size, vocab) if ngram_size > 0 else set()
        for v in range(vocab):
            if v in banned:
                assert out[row, v] == float("-inf")
            else:
                assert out[row, v] == log_probs[row, v]


@pytest.mark.parametrize("length", [0, 1, 2, 3, 4])
def test_ban_eos_before_min_length(length):
    log_probs = torch.randn(3, 8)
    out = ban_eos_before_min_length(log_probs.clone(), torch.full((3, length), 5), min_length=3)
    expected = log_probs.clone()
    if length < 3:
        expected[:, EOS_ID] = float("-inf")
    assert torch.equal(out, expected)


def test_force_eos_at_max_length():
    log_probs = torch.randn(4, 8)
    out = force_eos_at_max_length(log_probs.clone(), step=3, max_lengths=torch.tensor([2, 3, 4, 10]))
    for row, at_limit in enumerate([True, True, False, False]):
        for v in range(8):
            expected = float("-inf") if at_limit and v != EOS_ID else float(log_probs[row, v])
            assert float(out[row, v]) == expected


@pytest.mark.parametrize("a,b", [(1.5, 10), (0.0, 4), (1.2, 0), (0.5, 1), (0.0, 0)])
def test_max_output_lengths(a, b):
    lengths = torch.tensor([1, 2, 3, 7, 10, 33])
    expected = [max(1, math.floor(a * n + b)) for n in lengths.tolist()]
    assert max_output_lengths(lengths, a, b).tolist() == expected


@pytest.mark.parametrize("alpha", [0.0, 0.6, 1.0, 2.0])
def test_length_penalty(alpha):
    lengths = torch.arange(1, 30)
    expected = torch.tensor([((5 + n) / 6) ** alpha for n in lengths.tolist()])
    torch.testing.assert_close(length_penalty(lengths.float(), alpha), expected, rtol=1e-6, atol=0)
    assert length_penalty(1.0, alpha) == 1.0  # a one-token hypothesis is never rescaled
    assert length_penalty(7.0, alpha) == pytest.approx(2.0**alpha)
    if alpha == 0.0:
        assert torch.all(length_penalty(lengths.float(), alpha) == 1.0)
