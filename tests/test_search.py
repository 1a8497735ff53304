"""Greedy and beam search: scripted step probabilities with hand-computed answers, exhaustive search on a
tiny model, beam 1 == greedy, batch == alone. (The logit constraints themselves: test_logits.py.)"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import pytest
import torch
from support.search_calls import run_beam, run_greedy
from support.tiny_models import random_model, random_src, teacher_forced_scores

from seq2seq.decoding.search import (
    Hypothesis,
)
from seq2seq.model import Seq2Seq
from seq2seq.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID

A, B, C = 4, 5, 6  # the scripted vocabulary: <pad> <unk> <s> </s> a b c
SCRIPT_VOCAB = 7
ATOL = 1e-5


# ---------------------------------------------------------------------------- a scripted model
@dataclass
class ScriptedState:
    """The tokens each row has been fed so far (BOS first)."""

    fed: torch.Tensor  # (N, t)

    def select(self, index: torch.Tensor) -> "ScriptedState":
        return ScriptedState(self.fed.index_select(0, index))


@dataclass
class ScriptedMemory:
    values: torch.Tensor  # (N, S, 1)
    pad_mask: torch.Tensor  # (N, S)
    sentence: torch.Tensor  # (N,) which input sentence (and so which script) a row belongs to

    def repeat_interleave(self, repeats: int) -> "ScriptedMemory":
        tensors = (self.values, self.pad_mask, self.sentence)
        return ScriptedMemory(*(t.repeat_interleave(repeats, dim=0) for t in tensors))

    def select(self, index: torch.Tensor) -> "ScriptedMemory":
        tensors = (self.values, self.pad_mask, self.sentence)
        return ScriptedMemory(*(t.index_select(0, index) for t in tensors))


class ScriptedDecoder:
    """``step`` returns log-probabilities looked up by (sentence, generated prefix).

    A script maps a prefix (generated ids, no BOS) to ``{token: probability}``; unlisted tokens get probability 0,
    and a prefix the script does not list ends (EOS 1.0). ``calls`` counts the steps taken.
    """

    reads_shared_memory = False  # one ScriptedMemory row per hypothesis

    def __init__(self, scripts: list[dict[tuple[int, ...], dict[int, float]]]) -> None:
        self.scripts = scripts
        self.calls = 0
        self.rows: list[int] = []  # rows stepped, per call

    def start(self, encoder_output: tuple[torch.Tensor, torch.Tensor]) -> tuple[ScriptedState, ScriptedMemory]:
        src, src_lengths = encoder_output
        pad_mask = torch.arange(src.size(1)).unsqueeze(0) >= src_lengths.unsqueeze(1)
        memory = ScriptedMemory(torch.zeros(*src.shape, 1), pad_mask, torch.arange(src.size(0)))
        return ScriptedState(torch.empty(src.size(0), 0, dtype=torch.long)), memory

    def step(self, prev_tokens, state, memory):
        self.calls += 1
        self.rows.append(prev_tokens.size(0))
        fed = torch.cat([state.fed, prev_tokens.unsqueeze(1)], dim=1)
        probs = torch.zeros(fed.size(0), SCRIPT_VOCAB)
        for row, (tokens, sentence) in enumerate(zip(fed.tolist(), memory.sentence.tolist())):
            for token, p in self.scripts[sentence].get(tuple(tokens[1:]), {EOS_ID: 1.0}).items():
                probs[row, token] = p
        attn = (~memory.pad_mask).float()
        return probs.log(), ScriptedState(fed), attn / attn.sum(-1, keepdim=True)


class ScriptedModel:
    """What search needs from a model (a DecodingModel): ``encode``, ``eval`` and a ``decoder`` with ``start`` /
    ``step``."""

    def __init__(self, *scripts) -> None:
        self.decoder = ScriptedDecoder(list(scripts))

    def encode(self, src, src_lengths):
        return src, src_lengths

    def eval(self):
        return self


def scripted_src(*lengths: int) -> tuple[torch.Tensor, torch.Tensor]:
    src = torch.full((len(lengths), max(lengths)), PAD_ID)
    for i, n in enumerate(lengths):
        src[i, :n] = A
    return src, torch.tensor(lengths)


def lp(length: int, alpha: float) -> float:
    return ((5 + length) / 6) ** alpha


def assert_hypotheses(hyps: list[Hypothesis], expected: list[tuple[list[int], float]]) -> None:
    """Tokens exactly, scores to float32 precision, in this order."""
    assert [h.tokens for h in hyps] == [tokens for tokens, _ in expected]
    for h, (_, score) in zip(hyps, expected):
        assert h.score == pytest.approx(score, abs=1e-5)


# greedy takes A then EOS (p = .5 * .4); a beam of 2 finds B EOS (p = .4 * .9)
GREEDY_TRAP = {
    (): {A: 0.5, B: 0.4, EOS_ID: 0.1},
    (A,): {EOS_ID: 0.4, A: 0.3, B: 0.3},
    (B,): {EOS_ID: 0.9, A: 0.1},
}
# finished hypotheses: A A (.24), B (.21), A (.18), A B (.12), [] (.1), B C (.09), A A B (.06)
THREE_DEEP = {
    (): {A: 0.6, B: 0.3, EOS_ID: 0.1},
    (A,): {A: 0.5, EOS_ID: 0.3, B: 0.2},
    (B,): {EOS_ID: 0.7, C: 0.3},
    (A, A): {EOS_ID: 0.8, B: 0.2},
    (A, B): {EOS_ID: 1.0},
    (B, C): {EOS_ID: 1.0},
    (A, A, B): {EOS_ID: 1.0},
}


def test_scripted_beam_beats_greedy():
    src, src_lengths = scripted_src(3)
    greedy = run_greedy(ScriptedModel(GREEDY_TRAP), src, src_lengths)
    assert_hypotheses(greedy, [([A], math.log(0.5 * 0.4))])
    model = ScriptedModel(GREEDY_TRAP)
    [hyps] = run_beam(model, src, src_lengths, beam_size=2, nbest=2, length_penalty=0.0)
    assert_hypotheses(hyps, [([B], math.log(0.4 * 0.9)), ([A], math.log(0.5 * 0.4))])
    # after step 2 both finished ones beat the best open beam (A A, .15): no third step
    assert model.decoder.calls == 2


def test_scripted_nbest_order_and_scores():
    src, src_lengths = scripted_src(3)
    [hyps] = run_beam(ScriptedModel(THREE_DEEP), src, src_lengths, beam_size=3, nbest=3, length_penalty=0.0)
    # [] (.1) finished first but was pushed out of the 3-slot buffer by better ones
    assert_hypotheses(hyps, [([A, A], math.log(0.24)), ([B], math.log(0.21)), ([A], math.log(0.18))])
    [hyps] = run_beam(ScriptedModel(THREE_DEEP), src, src_lengths, beam_size=3, nbest=1, length_penalty=0.0)
    assert_hypotheses(hyps, [([A, A], math.log(0.24))])
    greedy = run_greedy(ScriptedModel(THREE_DEEP), src, src_lengths)
    assert_hypotheses(greedy, [([A, A], math.log(0.24))])


def test_scripted_eos_ends_a_hypothesis():
    """EOS as the first token gives an empty hypothesis; tokens never contain EOS; finished ones are not extended."""
    script = {(): {EOS_ID: 0.7, A: 0.3}, (A,): {EOS_ID: 0.2, B: 0.8}, (A, B): {EOS_ID: 1.0}}
    src, src_lengths = scripted_src(2)
    [hyps] = run_beam(ScriptedModel(script), src, src_lengths, beam_size=2, nbest=2, length_penalty=0.0)
    assert_hypotheses(hyps, [([], math.log(0.7)), ([A, B], math.log(0.3 * 0.8))])
    assert_hypotheses(run_greedy(ScriptedModel(script), src, src_lengths), [([], math.log(0.7))])


# raw: A (.3) beats B C C (.45 * .9 * .65 = .263); GNMT alpha 1: log(.263) / 1.5 = -0.89 beats log(.3) / (7/6) = -1.03
LENGTH_TRAP = {
    (): {A: 0.5, B: 0.45, EOS_ID: 0.05},
    (A,): {EOS_ID: 0.6, C: 0.4},
    (B,): {C: 1.0},
    (B, C): {C: 0.9, EOS_ID: 0.1},
    (B, C, C): {EOS_ID: 0.65, A: 0.35},
}


def test_scripted_length_penalty_changes_the_winner():
    src, src_lengths = scripted_src(3)
    kwargs = dict(beam_size=2, nbest=2, max_len_a=0.0, max_len_b=10)
    [raw] = run_beam(ScriptedModel(LENGTH_TRAP), src, src_lengths, length_penalty=0.0, **kwargs)
    long_p = 0.45 * 1.0 * 0.9 * 0.65
    assert_hypotheses(raw, [([A], math.log(0.3)), ([B, C, C], math.log(long_p))])
    [normalized] = run_beam(ScriptedModel(LENGTH_TRAP), src, src_lengths, length_penalty=1.0, **kwargs)
    assert_hypotheses(normalized, [([B, C, C], math.log(long_p) / lp(4, 1.0)), ([A], math.log(0.3) / lp(2, 1.0))])
    greedy = run_greedy(ScriptedModel(LENGTH_TRAP), src, src_lengths, length_penalty=1.0)
    assert_hypotheses(greedy, [([A], math.log(0.3) / lp(2, 1.0))])


def test_scripted_min_length():
    """EOS is banned while fewer than min_length pieces exist; scores keep the unrenormalized log-probs."""
    src, src_lengths = scripted_src(3)
    [hyps] = run_beam(
        ScriptedModel(THREE_DEEP), src, src_lengths, beam_size=3, nbest=3, min_length=2, length_penalty=0.0
    )
    assert_hypotheses(hyps, [([A, A], math.log(0.24)), ([A, B], math.log(0.12)), ([B, C], math.log(0.09))])
    # with min_length 3 only A A B can finish (the other prefixes may only end): fewer than nbest come back
    [hyps] = run_beam(
        ScriptedModel(THREE_DEEP), src, src_lengths, beam_size=3, nbest=3, min_length=3, length_penalty=0.0
    )
    assert_hypotheses(hyps, [([A, A, B], math.log(0.06))])
    greedy = run_greedy(ScriptedModel(THREE_DEEP), src, src_lengths, min_length=3)
    assert_hypotheses(greedy, [([A, A, B], math.log(0.06))])


def test_scripted_max_length_forces_eos():
    """A script that never wants to stop is cut at max_len_a * src_len + b pieces, paying log p(EOS) there."""
    endless = {prefix: {A: 0.9, EOS_ID: 0.1} for prefix in [(A,) * k for k in range(10)]}
    src, src_lengths = scripted_src(1, 3)
    greedy = run_greedy(ScriptedModel(endless, endless), src, src_lengths, max_len_a=1.0, max_len_b=0)
    assert_hypotheses(greedy, [([A], math.log(0.9 * 0.1)), ([A] * 3, math.log(0.9**3 * 0.1))])
    beams = run_beam(
        ScriptedModel(endless, endless), src, src_lengths, beam_size=3, nbest=3, max_len_a=1.0, max_len_b=0,
        length_penalty=0.0,
    )
    assert_hypotheses(beams[0], [([], math.log(0.1)), ([A], math.log(0.09))])  # only two sequences exist
    assert_hypotheses(beams[1], [([], math.log(0.1)), ([A], math.log(0.09)), ([A, A], math.log(0.081))])
    # alpha 1 favours length (A A: log(.081) / (8/6) = -1.88 beats [] at -2.30), but stops at the limit
    [hyps] = run_beam(
        ScriptedModel(endless), *scripted_src(3), beam_size=2, max_len_a=0.0, max_len_b=2, length_penalty=1.0
    )
    assert_hypotheses(hyps, [([A, A], math.log(0.081) / lp(3, 1.0))])


def test_scripted_finished_hypothesis_stops_weaker_beams():
    src, src_lengths = scripted_src(2)
    # EOS first (.5) beats every open beam (.3, .2): the search stops after one step
    model = ScriptedModel({(): {EOS_ID: 0.5, A: 0.3, B: 0.2}, (A,): {A: 1.0}})
    [hyps] = run_beam(model, src, src_lengths, beam_size=2, length_penalty=0.0)
    assert_hypotheses(hyps, [([], math.log(0.5))])
    assert model.decoder.calls == 1
    # EOS first (.4) is kept while A (.45) can still beat it; A EOS (.4275) then wins
    model = ScriptedModel({(): {A: 0.45, EOS_ID: 0.4, B: 0.15}, (A,): {EOS_ID: 0.95, A: 0.05}})
    [hyps] = run_beam(model, src, src_lengths, beam_size=2, nbest=2, length_penalty=0.0)
    assert_hypotheses(hyps, [([A], math.log(0.45 * 0.95)), ([], math.log(0.4))])
    assert model.decoder.calls == 2


def test_scripted_length_penalty_keeps_search_open_until_the_bound():
    """With alpha 1 an open beam whose raw score is already below a finished one may still win (longer = larger
    divisor), so the search goes on until the bound at the maximum length rules it out; with alpha 0 it stops."""
    chain = {(): {EOS_ID: 0.5, A: 0.3, B: 0.2}, **{(A,) * k: {A: 1.0} for k in range(1, 5)}, (A,) * 5: {EOS_ID: 1.0}}
    src, src_lengths = scripted_src(2)
    kwargs = dict(beam_size=2, max_len_a=0.0, max_len_b=5)
    model = ScriptedModel(chain)
    [hyps] = run_beam(model, src, src_lengths, length_penalty=0.0, nbest=1, **kwargs)
    assert_hypotheses(hyps, [([], math.log(0.5))])
    assert model.decoder.calls == 1  # the open beams (.3, .2) cannot beat .5: stopped at once
    model = ScriptedModel(chain)
    [hyps] = run_beam(model, src, src_lengths, length_penalty=1.0, nbest=1, **kwargs)
    assert_hypotheses(hyps, [([A] * 5, math.log(0.3) / lp(6, 1.0))])
    assert model.decoder.calls == 6
    [hyps] = run_beam(ScriptedModel(chain), src, src_lengths, length_penalty=1.0, nbest=2, **kwargs)
    assert_hypotheses(hyps, [([A] * 5, math.log(0.3) / lp(6, 1.0)), ([], math.log(0.5) / lp(1, 1.0))])


def test_scripted_batch_of_different_scripts_equals_each_alone():
    scripts = [GREEDY_TRAP, THREE_DEEP, LENGTH_TRAP, {(): {EOS_ID: 0.5, A: 0.3, B: 0.2}}]
    src, src_lengths = scripted_src(3, 1, 4, 2)
    for alpha in (0.0, 1.0):
        kwargs = dict(beam_size=3, nbest=2, length_penalty=alpha)
        batch = run_beam(ScriptedModel(*scripts), src, src_lengths, **kwargs)
        for i, script in enumerate(scripts):
            [alone] = run_beam(ScriptedModel(script), src[i : i + 1], src_lengths[i : i + 1], **kwargs)
            assert [h.tokens for h in batch[i]] == [h.tokens for h in alone]
            assert [h.score for h in batch[i]] == pytest.approx([h.score for h in alone], abs=1e-6)


def test_scripted_finished_sentences_leave_the_batch():
    """Once a sentence is done the model steps only the others' rows, and every output is what it is alone.

    The first sentence ends after two steps (its second-best, A EOS, ends then), the last after three (its only
    sequence, B C EOS), the middle one after six (the chain under alpha 1, as above). The scripted model reads
    each row's sentence from its memory, so rows mapped to the wrong sentence after the batch shrinks would
    follow the wrong script."""
    chain = {(): {EOS_ID: 0.5, A: 0.3, B: 0.2}, **{(A,) * k: {A: 1.0} for k in range(1, 5)}, (A,) * 5: {EOS_ID: 1.0}}
    quick = {(): {EOS_ID: 0.9, A: 0.1}}
    three = {(): {B: 1.0}, (B,): {C: 1.0}, (B, C): {EOS_ID: 1.0}}
    scripts = [quick, chain, three]
    src, src_lengths = scripted_src(2, 2, 2)
    kwargs = dict(beam_size=2, nbest=2, max_len_a=0.0, max_len_b=5, length_penalty=1.0)
    model = ScriptedModel(*scripts)
    batch = run_beam(model, src, src_lengths, **kwargs)
    assert model.decoder.rows == [6, 6, 4, 2, 2, 2]
    for i, script in enumerate(scripts):
        [alone] = run_beam(ScriptedModel(script), src[i : i + 1], src_lengths[i : i + 1], **kwargs)
        assert [h.tokens for h in batch[i]] == [h.tokens for h in alone]
        assert [h.score for h in batch[i]] == pytest.approx([h.score for h in alone], abs=1e-6)
    assert [h.tokens for h in batch[2]] == [[B, C]]
    # greedy: the first two end at once (EOS .9 and .5), the last steps on alone
    model = ScriptedModel(*scripts)
    greedy = run_greedy(model, src, src_lengths, length_penalty=1.0)
    assert model.decoder.rows == [3, 1, 1]
    assert_hypotheses(greedy, [([], math.log(0.9)), ([], math.log(0.5)), ([B, C], 0.0)])


# ---------------------------------------------------------------------------- random real models
BATCH_LENGTHS = [[6, 2, 9, 4, 1], [3], [7, 7, 2]]


@pytest.mark.parametrize("rnn_type", ["gru", "lstm"])
@pytest.mark.parametrize("min_length,no_repeat_ngram", [(0, 0), (3, 2)])
def test_beam_size_one_equals_greedy(rnn_type, min_length, no_repeat_ngram):
    model = random_model(rnn_type)
    kwargs = dict(max_len_a=1.0, max_len_b=6, min_length=min_length, no_repeat_ngram=no_repeat_ngram)
    for lengths in BATCH_LENGTHS:
        src, src_lengths = random_src(lengths)
        greedy = run_greedy(model, src, src_lengths, length_penalty=0.0, return_attention=True, **kwargs)
        beam = run_beam(
            model, src, src_lengths, beam_size=1, length_penalty=0.0, return_attention=True, **kwargs
        )
        for g, [b] in zip(greedy, beam):
            assert b.tokens == g.tokens
            assert b.score == pytest.approx(g.score, abs=ATOL)  # finished rows leave each batch at other steps
            torch.testing.assert_close(b.attention, g.attention, atol=ATOL, rtol=0)


@pytest.mark.parametrize("rnn_type", ["gru", "lstm"])
@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_wide_beam_equals_exhaustive_search(rnn_type, alpha):
    """vocab 6 = 4 specials + 2 symbols; search may emit UNK, the symbols or EOS, at most 4 pieces.
    There are 1 + 3 + 9 + 27 + 81 = 121 sequences; a step has at most 27 open prefixes x 4 finite
    continuations = 108 candidates, so a beam of 128 never drops one and must find the exact n-best (top 20)."""
    vocab, max_pieces = 6, 4
    model = random_model(rnn_type, vocab=vocab)
    with torch.no_grad():  # sharper distributions than the near-uniform initialisation
        model.decoder.output_layer.weight.mul_(4.0)
    pieces = [UNK_ID] + list(range(4, vocab))
    candidates = [list(seq) for n in range(max_pieces + 1) for seq in itertools.product(pieces, repeat=n)]
    assert len(candidates) == 121
    src, src_lengths = random_src([5, 2], vocab=vocab)
    beams = run_beam(
        model, src, src_lengths, beam_size=128, nbest=20, max_len_a=0.0, max_len_b=max_pieces,
        length_penalty=alpha,
    )
    for i in range(len(src_lengths)):
        raw = teacher_forced_scores(model, src[i : i + 1, : src_lengths[i]], src_lengths[i : i + 1], candidates)
        penalties = torch.tensor([lp(len(c) + 1, alpha) for c in candidates])
        scores, order = (raw / penalties).sort(descending=True)
        assert [h.tokens for h in beams[i]] == [candidates[j] for j in order[:20].tolist()]
        assert [h.score for h in beams[i]] == pytest.approx(scores[:20].tolist(), abs=ATOL)


def textbook_beam_search(model: Seq2Seq, src, src_length, beam_size: int, nbest: int, max_pieces: int,
                         alpha: float) -> list[tuple[list[int], float]]:
    """Beam search written plainly, one prefix at a time, each prefix's next-piece log-probabilities from a
    teacher-forced forward pass: every live prefix is expanded by every piece (PAD and BOS never; only EOS once
    ``max_pieces`` pieces are out); of the best ``2 * beam_size`` candidates, those ending in EOS among the first
    ``beam_size`` finish (score / ((5 + length with EOS) / 6) ** alpha) and the best ``beam_size`` others live on."""
    vocab = model.decoder.output_layer.out_features
    live, finished = [([], 0.0)], []
    for step in range(max_pieces + 1):
        candidates = []
        for prefix, score in live:
            with torch.no_grad():
                logits, _ = model(src, src_length, torch.tensor([[BOS_ID, *prefix]]))
            log_probs = torch.log_softmax(logits[0, -1].float(), dim=-1).tolist()
            for piece in range(vocab):
                if piece in (PAD_ID, BOS_ID) or (step == max_pieces and piece != EOS_ID):
                    continue
                candidates.append((score + log_probs[piece], prefix, piece))
        best = sorted(candidates, key=lambda c: -c[0])[: 2 * beam_size]
        finished += [(prefix, score / lp(step + 1, alpha)) for rank, (score, prefix, piece) in enumerate(best)
                     if piece == EOS_ID and rank < beam_size]
        live = [(prefix + [piece], score) for score, prefix, piece in best if piece != EOS_ID][:beam_size]
        if not live:
            break
    return sorted(finished, key=lambda f: -f[1])[:nbest]


@pytest.mark.parametrize("rnn_type", ["gru", "lstm"])
@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_narrow_beam_equals_a_textbook_beam_search(rnn_type, alpha):
    """Beam 3 over 5 continuations (UNK, 4 symbols) plus EOS for up to 5 pieces: pruning drops most prefixes at
    every step, and the kept n-best must be exactly those of the plain reference above."""
    vocab, max_pieces, beam_size = 9, 5, 3
    model = random_model(rnn_type, vocab=vocab)
    with torch.no_grad():
        model.decoder.output_layer.weight.mul_(4.0)
    src, src_lengths = random_src([5, 2, 7], vocab=vocab)
    beams = run_beam(model, src, src_lengths, beam_size=beam_size, nbest=beam_size, max_len_a=0.0,
                     max_len_b=max_pieces, length_penalty=alpha)
    for i, n in enumerate(src_lengths.tolist()):
        expected = textbook_beam_search(model, src[i : i + 1, :n], src_lengths[i : i + 1], beam_size, beam_size,
                                        max_pieces, alpha)
        assert [h.tokens for h in beams[i]] == [tokens for tokens, _ in expected], i
        assert [h.score for h in beams[i]] == pytest.approx([score for _, score in expected], abs=ATOL)


@pytest.mark.parametrize("rnn_type", ["gru", "lstm"])
def test_batch_equals_each_sentence_alone(rnn_type):
    model = random_model(rnn_type)
    src, src_lengths = random_src([6, 2, 9, 4, 1])
    kwargs = dict(max_len_a=1.0, max_len_b=5)
    greedy = run_greedy(model, src, src_lengths, **kwargs)
    beam = run_beam(model, src, src_lengths, beam_size=5, nbest=3, **kwargs)
    for i, n in enumerate(src_lengths.tolist()):
        alone_src, alone_lengths = src[i : i + 1, :n], src_lengths[i : i + 1]
        [g] = run_greedy(model, alone_src, alone_lengths, **kwargs)
        assert g.tokens == greedy[i].tokens and g.score == pytest.approx(greedy[i].score, abs=ATOL)
        [b] = run_beam(model, alone_src, alone_lengths, beam_size=5, nbest=3, **kwargs)
        assert len(b) == len(beam[i]) == 3
        assert [h.tokens for h in b] == [h.tokens for h in beam[i]]
        assert [h.score for h in b] == pytest.approx([h.score for h in beam[i]], abs=ATOL)
        assert [h.score for h in b] == sorted((h.score for h in b), reverse=True)


def ngrams(tokens: list[int], n: int) -> list[tuple[int, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def has_repeat(tokens: list[int], n: int) -> bool:
    grams = ngrams(tokens, n)
    return len(grams) != len(set(grams))


@pytest.mark.parametrize("ngram_size", [1, 2, 3])
def test_no_repeat_ngram_end_to_end(ngram_size):
    model = random_model("gru", vocab=20)
    src, src_lengths = random_src([5, 8, 3, 6], vocab=20)
    kwargs = dict(max_len_a=0.0, max_len_b=14, min_length=12)  # long outputs: repeats are likely

    def decode(no_repeat_ngram: int) -> list[Hypothesis]:
        greedy = run_greedy(model, src, src_lengths, no_repeat_ngram=no_repeat_ngram, **kwargs)
        beams = run_beam(model, src, src_lengths, beam_size=4, nbest=4, no_repeat_ngram=no_repeat_ngram, **kwargs)
        return greedy + [h for nbest in beams for h in nbest]

    assert any(has_repeat(h.tokens, ngram_size) for h in decode(0))  # the constraint has something to do
    constrained = decode(ngram_size)
    assert len(constrained) == 4 + 16
    for h in constrained:
        assert len(h.tokens) >= 12
        assert not has_repeat(h.tokens, ngram_size), h.tokens


@pytest.mark.parametrize("search", ["greedy", "beam"])
def test_return_attention(search):
    model = random_model("lstm", attention="luong_general")
    src, src_lengths = random_src([6, 2, 9, 4])
    if search == "greedy":
        hyps = run_greedy(model, src, src_lengths, return_attention=True)
        assert run_greedy(model, src, src_lengths)[0].attention is None
        hyp_src_lengths = src_lengths.tolist()
    else:
        beams = run_beam(model, src, src_lengths, beam_size=3, nbest=3, return_attention=True)
        assert run_beam(model, src, src_lengths, beam_size=3)[0][0].attention is None
        hyps = [h for nbest in beams for h in nbest]
        hyp_src_lengths = src_lengths.repeat_interleave(3).tolist()
    assert len(hyps) == len(hyp_src_lengths)
    for h, n in zip(hyps, hyp_src_lengths):
        assert h.attention.shape == (len(h.tokens) + 1, n)  # one row per generated piece and EOS
        torch.testing.assert_close(h.attention.sum(-1), torch.ones(len(h.tokens) + 1), atol=ATOL, rtol=0)


def test_beam_search_rejects_nbest_above_beam_size():
    src, src_lengths = random_src([3])
    with pytest.raises(ValueError, match="nbest"):
        run_beam(random_model(), src, src_lengths, beam_size=2, nbest=3)


def test_max_length_wins_over_min_length():
    """min_length beyond a sentence's length limit: the hypothesis still ends (at the limit), never -inf."""
    endless = {prefix: {A: 0.9, EOS_ID: 0.1} for prefix in [(A,) * k for k in range(10)]}
    src, src_lengths = scripted_src(2)
    kwargs = dict(max_len_a=1.0, max_len_b=0, min_length=5)
    greedy = run_greedy(ScriptedModel(endless), src, src_lengths, **kwargs)
    assert_hypotheses(greedy, [([A, A], math.log(0.9**2 * 0.1))])
    [beams] = run_beam(ScriptedModel(endless), src, src_lengths, beam_size=2, nbest=1, length_penalty=0.0,
                       **kwargs)
    assert_hypotheses(beams, [([A, A], math.log(0.9**2 * 0.1))])
