"""The optional per-step ``trace`` of greedy, beam and constrained beam search (what the service's page draws):
every kept hypothesis and every finishing candidate carries its teacher-forced log-probability, the returned n-best
are among the finished candidates, and a sentence's trace in a batch is its trace alone."""

from __future__ import annotations

import math

import pytest
import torch
from support.search_calls import run_beam, run_greedy
from support.tiny_models import gnmt_penalty as lp
from support.tiny_models import random_model, random_src

from seq2seq.tokenizer import BOS_ID, EOS_ID

ALPHA = 1.0


def log_prob(model, src, src_length: int, tokens: list[int]) -> float:
    """Summed log P(tokens[i] | tokens[:i], src) from one teacher-forced forward pass (an independent reference)."""
    with torch.no_grad():
        logits, _ = model(src[:src_length].unsqueeze(0), torch.tensor([src_length]), torch.tensor([[BOS_ID] + tokens[:-1]]))
    log_probs = torch.log_softmax(logits[0].float(), dim=-1)
    return float(sum(log_probs[t, token] for t, token in enumerate(tokens)))


def run(search: str, model, src, src_lengths, trace: list):
    kwargs = {"max_len_a": 1.0, "max_len_b": 4, "length_penalty": ALPHA, "trace": trace}
    if search == "greedy":
        return [[h] for h in run_greedy(model, src, src_lengths, **kwargs)]
    if search == "constrained":  # one phrase per sentence; the hypotheses that end are the candidates
        phrases = [[[5, 6]], [[7]], [[4], [9]]][: src.size(0)]
        return run_beam(model, src, src_lengths, beam_size=3, nbest=2, constraints=phrases, **kwargs)
    return run_beam(model, src, src_lengths, beam_size=3, nbest=2, **kwargs)


@pytest.mark.parametrize("search", ["greedy", "beam", "constrained"])
def test_trace_scores_are_teacher_forced_log_probabilities(search):
    model = random_model("gru")
    src, src_lengths = random_src([6, 2, 9])
    trace: list = []
    results = run(search, model, src, src_lengths, trace)
    assert trace and bool(trace[-1].done.all())
    for b, n in enumerate(src_lengths.tolist()):
        finished = []
        for t, record in enumerate(trace):
            if t > 0 and bool(trace[t - 1].done[b]):
                break
            for tokens, score in zip(record.tokens[b].tolist(), record.scores[b].tolist()):
                if math.isfinite(score):
                    assert len(tokens) == t + 1 and EOS_ID not in tokens
                    assert score == pytest.approx(log_prob(model, src[b], n, tokens), abs=1e-4)
            for tokens, score, ends in zip(record.candidate_tokens[b].tolist(), record.candidate_scores[b].tolist(),
                                           record.finishing[b].tolist()):
                if ends:
                    assert tokens[-1] == EOS_ID and len(tokens) == t + 1
                    assert score == pytest.approx(log_prob(model, src[b], n, tokens) / lp(t + 1, ALPHA), abs=1e-4)
                    finished.append((tokens[:-1], score))
        done_at = next(t for t, record in enumerate(trace) if bool(record.done[b]))
        if search == "greedy":  # greedy is done for a sentence at the step it emits EOS
            assert done_at == len(results[b][0].tokens)
        else:  # beam search is done no earlier than its n-best have finished
            assert done_at >= max(len(h.tokens) for h in results[b])
        for hyp in results[b]:  # what the search returns is what the trace saw finish
            assert any(tokens == hyp.tokens and score == pytest.approx(hyp.score, abs=1e-5) for tokens, score in finished)


@pytest.mark.parametrize("search", ["greedy", "beam"])
def test_a_sentences_trace_in_a_batch_is_its_trace_alone(search):
    model = random_model("lstm")
    src, src_lengths = random_src([6, 2, 9, 4])
    together: list = []
    run(search, model, src, src_lengths, together)
    for b, n in enumerate(src_lengths.tolist()):
        alone: list = []
        run(search, model, src[b : b + 1, :n], src_lengths[b : b + 1], alone)
        for record, single in zip(together, alone):
            assert record.tokens[b].tolist() == single.tokens[0].tolist()
            assert record.scores[b].tolist() == pytest.approx(single.scores[0].tolist(), abs=1e-5)
            assert record.finishing[b].tolist() == single.finishing[0].tolist()
            assert bool(record.done[b]) == bool(single.done[0])
