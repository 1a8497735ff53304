"""Scoring (forced decoding): per-piece log-probabilities against an independent teacher-forced forward pass,
beam search's own outputs scored back to beam search's scores, the text API and the command line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import REPO_ROOT, SUBPROCESS_ENV
from support.search_calls import run_beam
from support.tiny_models import (
    all_outputs,
    gnmt_penalty,
    random_src,
    sharp_model,
    teacher_forced_scores,
)

from seq2seq.decoding.options import DecodeOptions
from seq2seq.decoding.driver import pad_batch, score_ids, source_ids
from seq2seq.decoding.forced import score_targets
from seq2seq.tokenizer import EOS_ID, PAD_ID, UNK_ID

ATOL = 1e-5


def padded(targets: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    tgt = torch.full((len(targets), max(1, max(len(t) for t in targets))), PAD_ID)
    for row, target in enumerate(targets):
        tgt[row, : len(target)] = torch.tensor(target, dtype=torch.long)
    return tgt, torch.tensor([len(t) for t in targets])


@pytest.mark.parametrize("rnn_type", ["gru", "lstm"])
@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_scores_equal_teacher_forced_forward(rnn_type, alpha):
    model = sharp_model(rnn_type, vocab=7)
    candidates = all_outputs([UNK_ID, 4, 5, 6], 2) + [[4, 5, 6, 4, 5]]  # includes the empty output
    src, src_lengths = random_src([5], vocab=7)
    expected = teacher_forced_scores(model, src, src_lengths, candidates)
    tgt, tgt_lengths = padded(candidates)
    n = len(candidates)
    scored = score_targets(model, src.expand(n, -1), src_lengths.expand(n), tgt, tgt_lengths, alpha)
    for result, candidate, log_prob in zip(scored, candidates, expected.tolist()):
        assert result.tokens == candidate
        assert len(result.token_log_probs) == len(candidate) + 1  # the pieces, then EOS
        assert sum(result.token_log_probs) == pytest.approx(log_prob, abs=ATOL)
        assert result.log_prob == pytest.approx(log_prob, abs=ATOL)
        assert result.score == pytest.approx(log_prob / gnmt_penalty(len(candidate) + 1, alpha), abs=ATOL)


def test_per_piece_log_probs_are_the_step_distributions():
    """Each piece's value is log softmax of that position's logits, read from an independent forward pass."""
    model = sharp_model("gru", vocab=7)
    src, src_lengths = random_src([4], vocab=7)
    target = [5, 4, 6]
    tgt_in = torch.tensor([[2, 5, 4, 6]])
    with torch.no_grad():
        logits, _ = model(src, src_lengths, tgt_in)
    expected = torch.log_softmax(logits[0], dim=-1).gather(1, torch.tensor([[5], [4], [6], [EOS_ID]])).squeeze(1)
    tgt, tgt_lengths = padded([target])
    [result] = score_targets(model, src, src_lengths, tgt, tgt_lengths)
    assert result.token_log_probs == pytest.approx(expected.tolist(), abs=ATOL)


@pytest.mark.parametrize("alpha", [0.0, 0.6, 1.0])
def test_scoring_the_beams_own_output_gives_its_score_back(alpha):
    model = sharp_model("lstm", vocab=9, scale=2.0)
    src, src_lengths = random_src([6, 3, 8, 1], vocab=9)
    beams = run_beam(model, src, src_lengths, beam_size=4, nbest=4, max_len_a=1.0, max_len_b=4,
                     length_penalty=alpha)
    decode = DecodeOptions(length_penalty=alpha, batch_size=3)
    src_ids = [src[i, :n].tolist() for i, n in enumerate(src_lengths.tolist())]
    pairs = [(i, h) for i, hyps in enumerate(beams) for h in hyps]
    scored = score_ids(model, [src_ids[i] for i, _ in pairs], [h.tokens for _, h in pairs], decode)
    assert len(pairs) == 16
    for (_, hyp), result in zip(pairs, scored):
        assert result.tokens == hyp.tokens
        assert result.score == pytest.approx(hyp.score, abs=ATOL)


def test_score_ids_rejects_unpaired_input():
    with pytest.raises(ValueError, match="pair up"):
        score_ids(sharp_model(), [[4, EOS_ID]], [[4], [5]], DecodeOptions())


def test_source_ids_and_padding_helpers():
    assert source_ids([7, 8, 9], 2) == [7, 8, EOS_ID]
    ids, lengths = pad_batch([[4, 3], [5, 6, 3]], torch.device("cpu"))
    assert ids.tolist() == [[4, 3, PAD_ID], [5, 6, 3]] and lengths.tolist() == [2, 3]


# ---------------------------------------------------------------------------- the text API and the CLI
def test_translator_score_matches_beam_search(tiny_model_dir):
    """On a trained model: every n-best hypothesis scored back (ids), and through text where it re-tokenizes."""
    from seq2seq.translator import Translator
    from seq2seq.decoding.driver import translate_ids

    translator = Translator.load(tiny_model_dir, device="cpu", dtype="fp32")
    sources = ["a man is riding a bike", "two dogs play in the snow", "a woman sings"]
    src_ids = translator.encode_sources(sources)
    beams = translate_ids(translator.models, src_ids, translator.decode_options(beam_size=3, nbest=3))
    pairs = [(ids, h) for ids, hyps in zip(src_ids, beams) for h in hyps]
    scored = score_ids(translator.models, [ids for ids, _ in pairs], [h.tokens for _, h in pairs],
                       translator.decode_options())
    assert len(pairs) == 9
    for (_, hyp), result in zip(pairs, scored):
        assert result.score == pytest.approx(hyp.score, abs=1e-5)

    best = translator.generate(sources, beam_size=3, nbest=3)
    texts = [h.text for entry in best for h in entry]
    repeated = [s for s in sources for _ in range(3)]
    results = translator.score(repeated, texts)
    retokenized = translator.tgt_tokenizer.encode(texts)  # a text may re-tokenize differently from the beam's ids
    by_ids = score_ids(translator.models, translator.encode_sources(repeated), retokenized, translator.decode_options())
    for result, ids, expected, hyp in zip(results, retokenized, by_ids, [h for entry in best for h in entry]):
        assert result.tokens == ids
        assert result.score == pytest.approx(expected.score, abs=1e-6)
        assert result.pieces == [translator.tgt_tokenizer.id_to_piece(i) for i in ids] + ["</s>"]
        if ids == hyp.tokens:  # the same output: the beam's score
            assert result.score == pytest.approx(hyp.score, abs=1e-4)
    single = translator.score("a man", "ein Mann")
    assert single.log_prob == pytest.approx(sum(single.token_log_probs), abs=ATOL)
    with pytest.raises(ValueError, match="pair up"):
        translator.score(["a", "b"], ["x"])


def run_score(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "seq2seq.score", *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, encoding="utf-8", timeout=180, env=SUBPROCESS_ENV)


def test_score_cli_matches_the_api(tiny_model_dir, tmp_path):
    from seq2seq.translator import Translator

    sources, targets = ["a man is riding a bike", "a dog"], ["ein Mann fährt Fahrrad", ""]
    (tmp_path / "src.en").write_text("\n".join(sources) + "\n", encoding="utf-8")
    (tmp_path / "tgt.de").write_text("\n".join(targets) + "\n", encoding="utf-8")
    args = ["--model", str(tiny_model_dir), "--src", str(tmp_path / "src.en"), "--tgt", str(tmp_path / "tgt.de"),
            "--device", "cpu", "--dtype", "fp32"]
    plain, as_json = run_score(*args), run_score(*args, "--json")
    assert plain.returncode == 0 and as_json.returncode == 0, plain.stderr + as_json.stderr
    expected = Translator.load(tiny_model_dir, device="cpu", dtype="fp32").score(sources, targets)
    assert [float(line) for line in plain.stdout.splitlines()] == pytest.approx([e.score for e in expected], abs=1e-5)
    records = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [r["pieces"] for r in records] == [e.pieces for e in expected]
    assert records[1]["pieces"] == ["</s>"] and len(records[1]["token_log_probs"]) == 1  # empty target: EOS only
    for record in records:
        assert record["log_prob"] == pytest.approx(sum(record["token_log_probs"]), abs=1e-4)


def test_score_cli_errors_name_the_files(tiny_model_dir, tmp_path):
    (tmp_path / "src.en").write_text("a\nb\n", encoding="utf-8")
    (tmp_path / "tgt.de").write_text("x\n", encoding="utf-8")
    result = run_score("--model", str(tiny_model_dir), "--src", str(tmp_path / "src.en"), "--tgt", str(tmp_path / "tgt.de"))
    assert result.returncode == 2
    assert "src.en has 2 lines but" in result.stderr and "tgt.de has 1" in result.stderr
    assert "Traceback" not in result.stderr
    missing = run_score("--model", str(tmp_path / "nowhere"), "--src", str(tmp_path / "src.en"),
                        "--tgt", str(tmp_path / "src.en"))
    assert missing.returncode == 2 and "nowhere" in missing.stderr and "Traceback" not in missing.stderr
    threads = run_score("--model", str(tiny_model_dir), "--src", str(tmp_path / "src.en"), "--tgt",
                        str(tmp_path / "src.en"), "--threads", "0")
    assert threads.returncode == 2 and "--threads must be >= 1" in threads.stderr
