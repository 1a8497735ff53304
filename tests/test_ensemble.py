"""Ensembles: per step the mean of the members' log-probabilities (checked against each member's own forward
pass), exhaustive search over that mean, an ensemble of one model twice equals the model, and loading checks."""

from __future__ import annotations

import shutil
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

from seq2seq.decoding.ensemble import Ensemble
from seq2seq.decoding_model import DecodingModel, StepDecoder
from seq2seq.decoding.forced import score_targets
from seq2seq.tokenizer import BOS_ID, UNK_ID

ATOL = 1e-5


def test_members_are_decoding_models_and_others_are_refused_by_name():
    model = sharp_model("gru", vocab=7)
    assert isinstance(model, DecodingModel) and isinstance(model.decoder, StepDecoder)
    assert model.decoder.reads_shared_memory  # the torch decoder reads a sentence's memory row once for its beams

    class NoFlag:  # a decoder that does not say whether it reads shared memory rows
        def start(self, encoded):
            return encoded

        def step(self, prev_tokens, state, memory):
            return prev_tokens, state, memory

    class Model:
        decoder = NoFlag()

        def encode(self, src, src_lengths):
            return src

        def eval(self):
            return self

    with pytest.raises(TypeError, match="Model is not a DecodingModel.*reads_shared_memory"):
        Ensemble([model, Model()])
    NoFlag.reads_shared_memory = False
    assert len(Ensemble([model, Model()])) == 2


def test_step_is_the_mean_of_the_members_log_probs():
    members = [sharp_model("gru", vocab=7), sharp_model("lstm", vocab=7), sharp_model("gru", vocab=7, scale=1.0)]
    src, src_lengths = random_src([5, 3], vocab=7)
    tgt_in = torch.tensor([[BOS_ID, 4, 5], [BOS_ID, 6, 4]])
    expected = []
    with torch.no_grad():
        for model in members:
            logits, _ = model(src, src_lengths, tgt_in)
            expected.append(torch.log_softmax(logits, dim=-1))
    expected = torch.stack(expected).mean(dim=0)  # (B, T, V)
    ensemble = Ensemble(members)
    state, memory = ensemble.start(src, src_lengths)
    for position in range(tgt_in.size(1)):
        log_probs, state, attn = ensemble.step(tgt_in[:, position], state, memory)
        torch.testing.assert_close(log_probs, expected[:, position], atol=ATOL, rtol=0)
        torch.testing.assert_close(attn.sum(-1), torch.ones(2), atol=ATOL, rtol=0)


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_wide_beam_over_an_ensemble_equals_exhaustive_search(alpha):
    """All 1 + 3 + 9 + 27 = 40 outputs of at most 3 pieces, scored by the mean of the members' teacher-forced
    scores; a beam of 64 drops none, so its 10-best must be the exact 10-best."""
    members = [sharp_model("gru", vocab=6), sharp_model("lstm", vocab=6)]
    candidates = all_outputs([UNK_ID, 4, 5], 3)
    src, src_lengths = random_src([4], vocab=6)
    [beams] = run_beam(members, src, src_lengths, beam_size=64, nbest=10, max_len_a=0.0, max_len_b=3,
                       length_penalty=alpha)
    raw = torch.stack([teacher_forced_scores(m, src, src_lengths, candidates) for m in members]).mean(dim=0)
    scores = raw / torch.tensor([gnmt_penalty(len(c) + 1, alpha) for c in candidates])
    best, order = scores.sort(descending=True)
    assert [h.tokens for h in beams] == [candidates[i] for i in order[:10].tolist()]
    assert [h.score for h in beams] == pytest.approx(best[:10].tolist(), abs=ATOL)


def test_ensemble_score_is_the_mean_of_member_scores():
    members = [sharp_model("gru", vocab=7), sharp_model("lstm", vocab=7)]
    src, src_lengths = random_src([6], vocab=7)
    tgt, tgt_lengths = torch.tensor([[4, 6, 5]]), torch.tensor([3])
    [together] = score_targets(members, src, src_lengths, tgt, tgt_lengths, 1.0)
    alone = [score_targets(m, src, src_lengths, tgt, tgt_lengths, 1.0)[0].score for m in members]
    assert together.score == pytest.approx(sum(alone) / 2, abs=ATOL)


def test_a_model_twice_decodes_as_the_model():
    model = sharp_model("lstm", vocab=9, scale=1.5)
    src, src_lengths = random_src([6, 2, 8], vocab=9)
    greedy_alone, greedy_twice = run_greedy(model, src, src_lengths), run_greedy([model, model], src, src_lengths)
    beam_alone = [h for hyps in run_beam(model, src, src_lengths, beam_size=4, nbest=2) for h in hyps]
    beam_twice = [h for hyps in run_beam([model, model], src, src_lengths, beam_size=4, nbest=2) for h in hyps]
    for alone, twice in ((greedy_alone, greedy_twice), (beam_alone, beam_twice)):
        assert [h.tokens for h in alone] == [h.tokens for h in twice]
        assert [h.score for h in alone] == pytest.approx([h.score for h in twice], abs=ATOL)


def test_translator_loads_an_ensemble_and_checks_tokenizers(tiny_model_dir, tmp_path):
    from seq2seq.translator import Translator

    sentences = ["a man is riding a bike", "two dogs"]
    single = Translator.load(tiny_model_dir, device="cpu", dtype="fp32")
    pair = Translator.load([tiny_model_dir, tiny_model_dir], device="cpu", dtype="fp32")
    assert len(pair.models) == 2
    assert pair.translate(sentences, beam_size=3) == single.translate(sentences, beam_size=3)

    other = tmp_path / "other_tokenizer"
    shutil.copytree(tiny_model_dir, other)
    src_model = (other / "tokenizer.src.model").read_bytes()
    shutil.copy(other / "tokenizer.src.model", other / "tokenizer.tgt.model")  # a different target tokenizer
    assert src_model != (tiny_model_dir / "tokenizer.tgt.model").read_bytes()
    with pytest.raises(ValueError, match="target tokenizers differ"):
        Translator.load([tiny_model_dir, other], device="cpu")
    result = subprocess.run([sys.executable, "-m", "seq2seq.translate", "--model", str(tiny_model_dir), "--model",
                             str(other), "a dog"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=180,
                            env=SUBPROCESS_ENV)
    assert result.returncode == 2
    assert "cannot ensemble" in result.stderr and "Traceback" not in result.stderr
