"""Sampling: draws follow the model's exact distribution (with temperature, top-k and top-p applied per step by an
independent reference), are reproducible from the seed, and the command line samples."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import pytest
import torch
from conftest import REPO_ROOT, SUBPROCESS_ENV
from support.search_calls import run_sampling
from support.tiny_models import all_outputs, random_src, sharp_model, teacher_forced_scores

from seq2seq.decoding.sampling import Sampler, Sampling, make_generator
from seq2seq.tokenizer import BOS_ID, EOS_ID, UNK_ID

VOCAB, MAX_PIECES = 6, 2  # pieces UNK, 4, 5: 1 + 3 + 9 = 13 possible outputs
DRAWS = 4000


def step_distribution(model, src, src_lengths, prefix: list[int]) -> dict[int, float]:
    """The model's next-token probabilities after ``prefix`` (one teacher-forced forward pass), PAD/BOS removed."""
    with torch.no_grad():
        logits, _ = model(src, src_lengths, torch.tensor([[BOS_ID] + prefix]))
    probs = torch.softmax(logits[0, -1].double(), dim=-1).tolist()
    return {token: p for token, p in enumerate(probs) if token not in (0, BOS_ID)}


def truncate(probs: dict[int, float], temperature: float, top_k: int, top_p: float) -> dict[int, float]:
    """Textbook temperature / top-k / nucleus truncation of one step's distribution, renormalized."""
    tempered = {t: p ** (1.0 / temperature) for t, p in probs.items()}
    ranked = sorted(tempered.items(), key=lambda item: -item[1])
    if top_k > 0:
        ranked = ranked[:top_k]
    total = sum(p for _, p in ranked)
    kept, mass = [], 0.0
    for token, p in ranked:
        kept.append((token, p))
        mass += p / total
        if mass >= top_p:
            break
    kept_total = sum(p for _, p in kept)
    return {token: p / kept_total for token, p in kept}


def exact_distribution(model, src, src_lengths, temperature=1.0, top_k=0, top_p=1.0) -> dict[tuple, float]:
    """P(output) for every output of at most MAX_PIECES pieces (EOS forced at the limit), by enumeration."""
    exact = {}
    for output in all_outputs([UNK_ID, 4, 5], MAX_PIECES):
        probability = 1.0
        for position in range(len(output) + 1):
            if position == MAX_PIECES:
                break  # at the length limit EOS is the only choice
            step = truncate(step_distribution(model, src, src_lengths, output[:position]), temperature, top_k, top_p)
            token = output[position] if position < len(output) else EOS_ID
            probability *= step.get(token, 0.0)
        exact[tuple(output)] = probability
    assert sum(exact.values()) == pytest.approx(1.0, abs=1e-9)
    return exact


def drawn_distribution(model, src, src_lengths, sampler: Sampler) -> dict[tuple, float]:
    [samples] = run_sampling(model, src, src_lengths, sampler, nbest=DRAWS, max_len_a=0.0,
                             max_len_b=MAX_PIECES)
    counts = Counter(tuple(h.tokens) for h in samples)
    return {output: count / DRAWS for output, count in counts.items()}


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, 0, 1.0), (0.7, 0, 1.0), (1.5, 2, 1.0), (1.0, 0, 0.6),
                                                     (0.8, 3, 0.9)])
def test_samples_follow_the_exact_distribution(temperature, top_k, top_p):
    """Total variation between 4,000 seeded draws and the exact distribution over all 13 outputs < 0.04
    (its expected value for 13 outcomes and 4,000 draws is about 0.02)."""
    model = sharp_model("gru", vocab=VOCAB, scale=3.0)
    src, src_lengths = random_src([4], vocab=VOCAB)
    exact = exact_distribution(model, src, src_lengths, temperature, top_k, top_p)
    sampler = Sampler(temperature, top_k, top_p, make_generator(1234, "cpu"))
    drawn = drawn_distribution(model, src, src_lengths, sampler)
    assert set(drawn) <= {output for output, p in exact.items() if p > 0}, "drew an output of probability 0"
    total_variation = 0.5 * sum(abs(exact.get(o, 0.0) - drawn.get(o, 0.0)) for o in set(exact) | set(drawn))
    assert total_variation < 0.04, (total_variation, exact, drawn)


def test_sample_scores_are_the_models_log_probabilities():
    model = sharp_model("lstm", vocab=VOCAB, scale=3.0)
    src, src_lengths = random_src([5], vocab=VOCAB)
    [samples] = run_sampling(model, src, src_lengths, Sampler(0.5, generator=make_generator(0, "cpu")),
                             nbest=20, max_len_a=0.0, max_len_b=MAX_PIECES)
    expected = teacher_forced_scores(model, src, src_lengths, [h.tokens for h in samples])
    for hyp, log_prob in zip(samples, expected.tolist()):  # untempered, unnormalized (alpha 0): log P(output + EOS)
        assert hyp.score == pytest.approx(log_prob, abs=1e-5)


def test_same_seed_same_samples_and_batches_keep_their_order():
    model = sharp_model("gru", vocab=9, scale=1.0)
    src, src_lengths = random_src([5, 3, 7], vocab=9)

    def draw(seed):
        sampler = Sampling(temperature=1.2, seed=seed).sampler("cpu")
        return [[h.tokens for h in hyps] for hyps in run_sampling(model, src, src_lengths, sampler, nbest=4)]

    first, again, other = draw(7), draw(7), draw(8)
    assert first == again
    assert first != other
    assert len(first) == 3 and all(len(samples) == 4 for samples in first)
    assert len({tuple(t) for samples in first for t in samples}) > 3  # draws, not one repeated output


@pytest.mark.parametrize("settings,message", [({"temperature": 0.0}, "temperature"), ({"top_k": -1}, "top_k"),
                                              ({"top_p": 0.0}, "top_p"), ({"top_p": 1.5}, "top_p")])
def test_sampler_rejects_bad_settings(settings, message):
    with pytest.raises(ValueError, match=message):
        Sampling(**settings).sampler()


def run_translate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "seq2seq.translate", *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, encoding="utf-8", timeout=180, env=SUBPROCESS_ENV)


def test_sampling_cli_is_seeded_and_equals_the_api(tiny_model_dir):
    from seq2seq.translator import Translator

    args = ["--model", str(tiny_model_dir), "--device", "cpu", "--dtype", "fp32", "--sampling", "--nbest", "5",
            "--top-k", "20", "--seed", "3", "a man is riding a bike"]
    first, again = run_translate(*args), run_translate(*args)
    assert first.returncode == 0, first.stderr
    assert first.stdout == again.stdout
    lines = first.stdout.splitlines()
    assert len(lines) == 5
    translator = Translator.load(tiny_model_dir, device="cpu", dtype="fp32")
    [samples] = translator.generate(["a man is riding a bike"], nbest=5, sampling=Sampling(top_k=20, seed=3))
    assert [line.split("\t", 1)[1] for line in lines] == [s.text for s in samples]
    bad = run_translate("--model", str(tiny_model_dir), "--sampling", "--temperature", "0", "a dog")
    assert bad.returncode == 2 and "temperature must be > 0" in bad.stderr and "Traceback" not in bad.stderr


def test_an_inputs_seeded_samples_are_the_same_alone_in_a_batch_and_streamed(tiny_model_dir):
    """Issue 21 item 8: each input draws from its own stream (seed + its source ids), so its samples do not
    depend on its neighbours, its place in the batches, or how lines arrive on stdin."""
    from seq2seq.translator import Translator

    translator = Translator.load(tiny_model_dir, device="cpu", dtype="fp32")
    sampling = Sampling(temperature=1.5, seed=11)
    sentences = ["a man is riding a bike", "two dogs play in the snow", "a woman", "the child eats an apple"]
    alone = [[t.text for t in translator.generate([s], nbest=3, sampling=sampling)[0]] for s in sentences]
    assert len({text for samples in alone for text in samples}) > 4  # draws, not one repeated output
    mixed = sentences[::-1] + sentences
    for batch_size in (1, 3, 8):
        batched = translator.generate(mixed, nbest=3, sampling=sampling, batch_size=batch_size)
        assert [[t.text for t in entry] for entry in batched] == alone[::-1] + alone
    other_seed = translator.generate(sentences, nbest=3, sampling=Sampling(temperature=1.5, seed=12))
    assert [[t.text for t in entry] for entry in other_seed] != alone

    args = [sys.executable, "-m", "seq2seq.translate", "--model", str(tiny_model_dir), "--device", "cpu", "--dtype",
            "fp32", "--sampling", "--temperature", "1.5", "--seed", "11", "--nbest", "3", "--json", "--no-progress"]
    with subprocess.Popen(args, cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                          encoding="utf-8", env=SUBPROCESS_ENV) as process:
        streamed = []
        for sentence in sentences:  # one line at a time: each is its own batch
            process.stdin.write(sentence + "\n")
            process.stdin.flush()
            streamed.append([t["text"] for t in json.loads(process.stdout.readline())["translations"]])
        process.stdin.close()
        assert process.wait(timeout=60) == 0
    assert streamed == alone
