"""Target prefixes and lexically constrained beam search (dynamic beam allocation): exhaustive references on
tiny models, every constraint present with narrow beams, no constraints = beam search, and the text layer."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from conftest import REPO_ROOT, SUBPROCESS_ENV
from support.search_calls import run_beam, run_greedy
from support.tiny_models import (
    all_outputs,
    gnmt_penalty,
    random_src,
    sharp_model,
    teacher_forced_scores,
)

from seq2seq.decoding.constrained import ConstraintState, allocate
from seq2seq.tokenizer import PAD_ID, UNK_ID

ATOL = 1e-5


def contains(tokens: list[int], phrase: list[int]) -> bool:
    return any(tokens[i : i + len(phrase)] == phrase for i in range(len(tokens) - len(phrase) + 1))


def exhaustive_best(model, src, src_lengths, candidates, alpha, keep=lambda c: True) -> list[tuple[list[int], float]]:
    raw = teacher_forced_scores(model, src, src_lengths, candidates)
    scored = [(c, float(r) / gnmt_penalty(len(c) + 1, alpha)) for c, r in zip(candidates, raw) if keep(c)]
    return sorted(scored, key=lambda item: -item[1])


# ---------------------------------------------------------------------------- the bookkeeping, by hand
def test_constraint_state_tracks_phrases():
    phrases = [[4, 5], [6]]
    state = ConstraintState()
    assert state.wanted(phrases) == {4, 6} and state.pieces_met(phrases) == 0
    state = state.advance(4, phrases)
    assert state.in_progress == (0, 1) and state.wanted(phrases) == {5} and state.pieces_met(phrases) == 1
    broken = state.advance(6, phrases)  # the phrase is broken; the token completes the other one
    assert broken.met == {1} and broken.in_progress is None and broken.pieces_met(phrases) == 1
    state = state.advance(5, phrases)
    assert state.met == {0} and state.in_progress is None and state.wanted(phrases) == {6}
    state = state.advance(7, phrases).advance(6, phrases)
    assert state.complete(phrases) and state.pieces_met(phrases) == 3 and state.wanted(phrases) == set()


def advance_all(tokens: list[int], phrases: list[list[int]]) -> ConstraintState:
    state = ConstraintState()
    for token in tokens:
        state = state.advance(token, phrases)
    return state


@pytest.mark.parametrize("phrases,tokens", [
    ([[4, 4, 5]], [4, 4, 4, 5]),  # a false start that overlaps the real one
    ([[4, 5, 4, 6]], [4, 5, 4, 5, 4, 6]),
    ([[4, 5, 4]], [4, 5, 4]),
    ([[4, 5], [5, 6]], [4, 5, 6]),  # two phrases sharing a piece
    ([[7], [7]], [7]),  # a phrase given twice: the output contains it
])
def test_constraint_state_finds_overlapping_occurrences(phrases, tokens):
    """Every phrase that occurs in the output (the independent reference: ``contains``) is met, also where an
    occurrence overlaps a false start, itself or another phrase."""
    assert all(contains(tokens, p) for p in phrases)
    state = advance_all(tokens, phrases)
    assert state.complete(phrases) and state.pieces_met(phrases) == sum(len(p) for p in phrases)
    assert not advance_all(tokens[:-1], phrases).complete(phrases)  # and not one piece earlier


def test_allocate_shares_slots_between_banks():
    # (score, pieces met, name); 2 constraint pieces -> banks 0, 1, 2; beam 4 -> slots 1, 1, 2
    candidates = [(-1.0, 0, "a"), (-2.0, 0, "b"), (-3.0, 0, "c"), (-5.0, 1, "d"), (-9.0, 2, "e"), (-6.0, 1, "f")]
    assert allocate(candidates, 4, 2) == ["e", "d", "a", "f"]  # bank 2 has one of its 2 slots used: the spare
    assert allocate(candidates, 3, 0) == ["a", "b", "c"]  # one bank: plain beam search
    assert allocate(candidates[:2], 4, 2) == ["a", "b"]  # fewer candidates than slots


# ---------------------------------------------------------------------------- prefixes
@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_beam_with_prefix_equals_exhaustive_search_over_outputs_with_that_prefix(alpha):
    model = sharp_model("gru", vocab=6)
    src, src_lengths = random_src([5], vocab=6)
    prefix = [5, UNK_ID]
    expected = exhaustive_best(model, src, src_lengths, all_outputs([UNK_ID, 4, 5], 4), alpha,
                               keep=lambda c: c[:2] == prefix)
    [beams] = run_beam(model, src, src_lengths, beam_size=64, nbest=5, max_len_a=0.0, max_len_b=4,
                       length_penalty=alpha, prefix=torch.tensor([prefix]))
    assert [h.tokens for h in beams] == [c for c, _ in expected[:5]]
    assert [h.score for h in beams] == pytest.approx([s for _, s in expected[:5]], abs=ATOL)
    [greedy] = run_greedy(model, src, src_lengths, max_len_a=0.0, max_len_b=4, prefix=torch.tensor([prefix]),
                          length_penalty=alpha)
    assert greedy.tokens[:2] == prefix
    [(_, greedy_score)] = exhaustive_best(model, src, src_lengths, [greedy.tokens], alpha)
    assert greedy.score == pytest.approx(greedy_score, abs=ATOL)  # forced pieces count with their probability


def test_prefixes_in_a_batch_equal_each_sentence_alone():
    model = sharp_model("lstm", vocab=9, scale=1.5)
    src, src_lengths = random_src([6, 3, 8], vocab=9)
    prefix = torch.tensor([[5, 6, 7], [PAD_ID, PAD_ID, PAD_ID], [8, PAD_ID, PAD_ID]])  # the second: no prefix
    kwargs = {"max_len_a": 1.0, "max_len_b": 3}
    batch = run_beam(model, src, src_lengths, beam_size=3, nbest=2, prefix=prefix, **kwargs)
    greedy = run_greedy(model, src, src_lengths, prefix=prefix, **kwargs)
    for i, n in enumerate(src_lengths.tolist()):
        row_prefix = prefix[i : i + 1, : int(prefix[i].ne(PAD_ID).sum())]
        row_prefix = row_prefix if row_prefix.size(1) else None
        alone = run_beam(model, src[i : i + 1, :n], src_lengths[i : i + 1], beam_size=3, nbest=2,
                         prefix=row_prefix, **kwargs)[0]
        assert [h.tokens for h in batch[i]] == [h.tokens for h in alone]
        assert [h.score for h in batch[i]] == pytest.approx([h.score for h in alone], abs=ATOL)
        forced = prefix[i][prefix[i].ne(PAD_ID)].tolist()
        assert all(h.tokens[: len(forced)] == forced for h in batch[i]) and greedy[i].tokens[: len(forced)] == forced


# ---------------------------------------------------------------------------- constraints
@pytest.mark.parametrize("phrases", [[[4]], [[5, 4]], [[4], [5]], [[4, 4, 5]], [[5, 4, 5]], [[4], [4]], [[5, 4], [4]]])
@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_wide_constrained_beam_equals_exhaustive_search_over_outputs_with_the_constraints(phrases, alpha):
    """Up to 4 free pieces plus the constraints' length: a beam of 256 drops no candidate, so the n-best must be
    the exact best outputs that contain every phrase."""
    model = sharp_model("gru", vocab=6)
    src, src_lengths = random_src([3], vocab=6)
    max_pieces = 3 + sum(len(p) for p in phrases)
    expected = exhaustive_best(model, src, src_lengths, all_outputs([UNK_ID, 4, 5], max_pieces), alpha,
                               keep=lambda c: all(contains(c, p) for p in phrases))
    [found] = run_beam(model, src, src_lengths, constraints=[phrases], beam_size=256, nbest=5, max_len_a=0.0,
                       max_len_b=3, length_penalty=alpha)
    assert [h.tokens for h in found] == [c for c, _ in expected[:5]]
    assert [h.score for h in found] == pytest.approx([s for _, s in expected[:5]], abs=ATOL)


@pytest.mark.parametrize("rnn_type", ["gru", "lstm"])
def test_every_constraint_appears_with_a_narrow_beam(rnn_type):
    model = sharp_model(rnn_type, vocab=12, scale=2.0)
    src, src_lengths = random_src([7, 4, 9, 2], vocab=12)
    constraints = [[[9]], [[7, 8], [10]], [[11, 11]], []]
    found = run_beam(model, src, src_lengths, constraints=constraints, beam_size=3, nbest=3, max_len_a=1.0,
                     max_len_b=3)
    for hyps, phrases in zip(found, constraints):
        assert len(hyps) == 3
        for hyp in hyps:
            assert all(contains(hyp.tokens, p) for p in phrases), (hyp.tokens, phrases)


def test_no_constraints_is_beam_search():
    model = sharp_model("lstm", vocab=12, scale=1.5)
    src, src_lengths = random_src([6, 2, 9, 4], vocab=12)
    for alpha in (0.0, 1.0):
        kwargs = {"beam_size": 4, "nbest": 3, "max_len_a": 1.0, "max_len_b": 4, "length_penalty": alpha,
                  "return_attention": True}
        plain = run_beam(model, src, src_lengths, **kwargs)
        constrained = run_beam(model, src, src_lengths, constraints=[[]] * 4, **kwargs)
        for a, b in zip(plain, constrained):
            assert [h.tokens for h in a] == [h.tokens for h in b]
            assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=ATOL)
            for ha, hb in zip(a, b):
                torch.testing.assert_close(ha.attention, hb.attention, atol=ATOL, rtol=0)


# ---------------------------------------------------------------------------- the text layer and the CLI
def test_translator_prefix_and_constraints(tiny_model_dir):
    from seq2seq.translator import Translator

    translator = Translator.load(tiny_model_dir, device="cpu", dtype="fp32")
    sources = ["a man is riding a bike", "two dogs play in the snow"]
    with_prefix = translator.translate(sources, beam_size=3, prefix=["Eine Frau", None])
    assert with_prefix[0].startswith("Eine Frau")
    assert with_prefix[1] == translator.translate(sources[1], beam_size=3)
    words = ["Hund", "rote Jacke"]
    constrained = translator.translate(sources, beam_size=4, constraints=words)
    for text in constrained:
        assert all(word in text for word in words), text
    with pytest.raises(ValueError, match="one per input"):
        translator.translate(sources, prefix=["a", "b", "c"])


def test_translate_cli_prefix_and_constraints(tiny_model_dir):
    result = subprocess.run(
        [sys.executable, "-m", "seq2seq.translate", "--model", str(tiny_model_dir), "--device", "cpu", "--dtype",
         "fp32", "--prefix", "Ein Hund", "--constraints", "Schnee", "--constraints", "spielt", "a dog plays"],
        cwd=REPO_ROOT, capture_output=True, text=True, encoding="utf-8", timeout=180, env=SUBPROCESS_ENV,
    )
    assert result.returncode == 0, result.stderr
    [line] = result.stdout.splitlines()
    assert line.startswith("Ein Hund") and "Schnee" in line and "spielt" in line
