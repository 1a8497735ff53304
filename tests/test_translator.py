"""The Python API: ``Translator.load(dir).translate(...)`` / ``.generate(...)`` on the real tiny model of
``tiny_model_dir``."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
import torch

from seq2seq.translation import Translation
from seq2seq.translator import Translator
from seq2seq.decoding.sampling import Sampling
from seq2seq.tokenizer import BOS_ID, EOS_ID, PAD_ID

# Different lengths, so that batching (sorted by length inside) has something to reorder.
SENTENCES = [
    "A man is riding a bike.",
    "A girl in a red dress is walking down the street with her mother and her little brother.",
    "Two dogs play in the snow.",
    "People.",
    "A little boy is eating an ice cream cone in the park.",
]


@pytest.fixture(scope="module")
def translator(tiny_model_dir) -> Translator:
    return Translator.load(tiny_model_dir, device="cpu")


#: compute dtypes the equivalence tests run under: fp32 (the tiny model's decode.dtype), bf16, and the default
#: ``auto`` (fp32 or bf16 on a CPU, whichever decodes faster here)
DTYPES = ["fp32", "bf16", "auto"]
#: score tolerance per compute dtype (log-probability units): bf16 keeps about 3 significant digits per
#: step, fp32 differs only by summation order; the tokens must be identical either way
SCORE_TOLERANCE = {None: 1e-4, torch.bfloat16: 2e-2}


@pytest.fixture(scope="module")
def translators(tiny_model_dir, translator) -> dict[str, Translator]:
    return {"fp32": translator, **{dtype: Translator.load(tiny_model_dir, device="cpu", dtype=dtype)
                                   for dtype in ("bf16", "auto")}}


def source_pieces(translator: Translator, text: str) -> int:
    return len(translator.src_tokenizer.encode([text])[0])


def best(translator: Translator, lines: list[str], **options) -> list[Translation]:
    """Each input's best :class:`Translation` (``generate``'s first of each n-best list)."""
    return [entry[0] for entry in translator.generate(lines, **options)]


def test_translate_a_string_returns_a_string(translator):
    out = translator.translate("a man is riding a bike")
    assert isinstance(out, str)
    assert "\n" not in out


def test_translate_a_list_returns_a_list_in_order(translator):
    out = translator.translate(SENTENCES)
    assert isinstance(out, list) and len(out) == len(SENTENCES)
    assert all(isinstance(text, str) for text in out)
    # the tiny model may give every sentence the same text, so order is checked on what each result was decoded
    # from: its attention has one column per source piece (+ EOS) of its own input (the lengths all differ)
    by_length = {len(ids): line for line, ids in zip(SENTENCES, translator.src_tokenizer.encode(SENTENCES))}
    distinct = list(by_length.values())
    assert len(distinct) >= 4
    for order in (distinct, distinct[::-1]):
        rich = best(translator, order, return_attention=True, batch_size=2)
        assert [t.attention.shape[1] for t in rich] == [len(ids) + 1 for ids in translator.src_tokenizer.encode(order)]


def greedy_by_hand(translator: Translator, line: str) -> str:
    """Independent reference for greedy search: the whole prefix fed back through the model's teacher-forced
    forward at every step (no decoder state, no search code), the most probable piece taken, PAD and BOS never,
    EOS not before ``decode.min_length`` and forced at ``max_len_a * source pieces (+ EOS) + max_len_b``."""
    if not line.strip():
        return ""
    decode = translator.cfg.decode
    assert decode.no_repeat_ngram == 0  # the reference has no n-gram bans
    src = [*translator.src_tokenizer.encode([line])[0], EOS_ID]
    limit, tokens = max(int(len(src) * decode.max_len_a + decode.max_len_b), 1), []
    while True:
        with torch.no_grad():
            logits, _ = translator.model(torch.tensor([src]), torch.tensor([len(src)]),
                                         torch.tensor([[BOS_ID, *tokens]]))
        log_probs = logits[0, -1].float().log_softmax(-1)
        log_probs[[PAD_ID, BOS_ID]] = float("-inf")
        if len(tokens) < decode.min_length and len(tokens) < limit:
            log_probs[EOS_ID] = float("-inf")
        token = EOS_ID if len(tokens) >= limit else int(log_probs.argmax())
        if token == EOS_ID:
            return translator.tgt_tokenizer.decode([tokens])[0]
        tokens.append(token)


def test_translate_returns_texts_only_and_refuses_the_rich_flags(tiny_model_dir):
    """One shape per input kind: a str for a str, a list of str (same order, same count) for a list, the greedy
    texts found by hand; n-best lists, scores and attention are generate()'s, and asking translate() for them is a
    TypeError that names generate. The tiny model's weights are redrawn at random: it then writes long, different
    texts for different inputs (trained, it writes "" for most), so the reference has something to tell apart."""
    translator = Translator.load(tiny_model_dir, device="cpu")
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for parameter in translator.model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
    lines = ["two dogs play in the snow .", "", "a man is riding a bike .", "people ."]
    expected = [greedy_by_hand(translator, line) for line in lines]
    assert len({text for text in expected if text}) == 3, expected
    one = translator.translate(lines[0], beam_size=1)
    assert type(one) is str and one == expected[0]
    out = translator.translate(lines, beam_size=1)
    assert type(out) is list and all(type(text) is str for text in out) and out == expected
    sampled = translator.translate(lines[:2], sampling=Sampling(seed=1))
    assert type(sampled) is list and [type(text) for text in sampled] == [str, str] and sampled[1] == ""
    for flag in ({"nbest": 2}, {"return_scores": True}, {"return_attention": True}, {"nbest": 1}):
        with pytest.raises(TypeError, match=r"texts only.*call generate\("):
            translator.translate(lines[0], beam_size=2, **flag)
    with pytest.raises(TypeError, match="unexpected keyword arguments: beam"):
        translator.translate(lines[0], beam=2)


def test_empty_inputs_translate_to_empty_strings(translator):
    assert translator.translate("") == ""
    assert translator.translate([]) == []
    out = translator.translate(["", SENTENCES[0], "   "])
    assert out == ["", translator.translate(SENTENCES[0]), ""]
    [empty] = best(translator, [""])
    assert isinstance(empty, Translation) and empty.text == "" and empty.tokens == []


def test_progress_counts_every_input_once_as_batches_finish(translator):
    """Two empty inputs are done at once; the 5 others decode in length-sorted batches of 2: 2, 2, 1."""
    lines = ["", *SENTENCES[:3], "  ", *SENTENCES[3:5]]
    counts: list[int] = []
    assert translator.translate(lines, batch_size=2, progress=counts.append) == translator.translate(lines)
    assert counts == [2, 2, 2, 1]
    counts.clear()
    translator.translate(SENTENCES[:3], beam_size=2, batch_size=5, progress=counts.append)
    assert counts == [3]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("beam_size", [1, 3])
def test_batched_translation_equals_one_by_one(translators, beam_size, dtype):
    translator = translators[dtype]
    tolerance = SCORE_TOLERANCE[translator.autocast_dtype]
    batched = best(translator, SENTENCES, beam_size=beam_size)
    for sentence, together in zip(SENTENCES, batched):
        [alone] = best(translator, [sentence], beam_size=beam_size)
        assert together.text == alone.text
        assert together.tokens == alone.tokens
        assert together.score == pytest.approx(alone.score, abs=tolerance)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("beam_size", [1, 3])
def test_batch_size_does_not_change_results(translators, beam_size, dtype):
    translator = translators[dtype]
    tolerance = SCORE_TOLERANCE[translator.autocast_dtype]
    default = best(translator, SENTENCES, beam_size=beam_size)
    for batch_size in (1, 2):
        other = best(translator, SENTENCES, beam_size=beam_size, batch_size=batch_size)
        assert [t.text for t in other] == [t.text for t in default]
        assert [t.tokens for t in other] == [t.tokens for t in default]
        assert [t.score for t in other] == pytest.approx([t.score for t in default], abs=tolerance)


@pytest.mark.parametrize("beam_size", [1, 3])
def test_scores_and_attention(translator, beam_size):
    plain = translator.translate(SENTENCES, beam_size=beam_size)
    rich = best(translator, SENTENCES, beam_size=beam_size, return_attention=True)
    assert len(rich) == len(SENTENCES)
    for sentence, text, t in zip(SENTENCES, plain, rich):
        assert isinstance(t, Translation)
        assert t.text == text
        assert all(isinstance(i, int) for i in t.tokens)
        assert isinstance(t.score, float) and t.score <= 0.0
        n_src = source_pieces(translator, sentence)
        assert tuple(t.attention.shape) == (len(t.tokens) + 1, n_src + 1)
        torch.testing.assert_close(t.attention.sum(dim=-1), torch.ones(len(t.tokens) + 1), atol=1e-4, rtol=0)
        assert bool((t.attention >= 0).all())
        assert len(t.src_pieces) == n_src + 1 and len(t.tgt_pieces) == len(t.tokens) + 1
    [scores_only] = best(translator, SENTENCES[:1], beam_size=beam_size)
    assert scores_only.attention is None and scores_only.text == plain[0]


@pytest.mark.parametrize("beam_size, nbest", [(1, 1), (3, 3)])
def test_scores_equal_the_teacher_forced_log_probability(translator, beam_size, nbest):
    """Independent reference: each hypothesis' tokens fed back through the model by teacher forcing (the training
    loss, no search code); the score must be that log-probability over the GNMT penalty ((5 + len) / 6) ** alpha,
    len counting EOS (an EOS forced at the maximum length keeps its log-probability too)."""
    alpha, checked = translator.cfg.decode.length_penalty, 0
    for sentence in SENTENCES:
        src_ids = translator.encode_sources([sentence])[0]
        [hypotheses] = translator.generate([sentence], beam_size=beam_size, nbest=nbest)
        for hypothesis in hypotheses:
            with torch.no_grad():
                _, loss = translator.model(torch.tensor([src_ids]), torch.tensor([len(src_ids)]),
                                           torch.tensor([[BOS_ID, *hypothesis.tokens]]),
                                           torch.tensor([[*hypothesis.tokens, EOS_ID]]))
            expected = -float(loss) / ((5 + len(hypothesis.tokens) + 1) / 6) ** alpha
            assert hypothesis.score == pytest.approx(expected, abs=1e-4), (sentence, hypothesis.tokens)
            checked += 1
    assert checked == len(SENTENCES) * nbest


def test_nbest_returns_hypotheses_best_first(translator):
    [nbest] = translator.generate([SENTENCES[2]], beam_size=3, nbest=3)
    assert isinstance(nbest, list) and len(nbest) == 3
    assert all(isinstance(t, Translation) for t in nbest)
    scores = [t.score for t in nbest]
    assert scores == sorted(scores, reverse=True)
    assert nbest[0].text == translator.translate(SENTENCES[2], beam_size=3)
    assert len({tuple(t.tokens) for t in nbest}) == 3  # distinct hypotheses
    several = translator.generate(SENTENCES[:2], beam_size=3, nbest=2)
    assert [len(entry) for entry in several] == [2, 2]


def test_generate_returns_every_inputs_nbest_list(translator):
    """One shape for every call: per input a list of at most nbest Translations, best first; translate() is its
    best texts."""
    inputs = [SENTENCES[0], "", SENTENCES[2]]
    entries = translator.generate(inputs, beam_size=3, nbest=2)
    assert [len(entry) for entry in entries] == [2, 1, 2]
    assert all(isinstance(t, Translation) for entry in entries for t in entry)
    assert entries[1][0].text == "" and entries[1][0].score == 0.0
    assert [entry[0].text for entry in entries] == translator.translate(inputs, beam_size=3)
    [[first]] = translator.generate([SENTENCES[0]], beam_size=1)
    assert first.text == translator.translate(SENTENCES[0], beam_size=1) and first.attention is None
    with pytest.raises(TypeError, match="list of str"):
        translator.generate(SENTENCES[0])


def test_generate_trace_is_the_search_that_gave_the_translations(translator):
    traces: list = []
    entries = translator.generate([SENTENCES[1], "  ", SENTENCES[3]], beam_size=3, nbest=2, trace=traces)
    assert len(traces) == 3 and traces[1] == []
    for entry, trace in zip([entries[0], entries[2]], [traces[0], traces[2]]):
        finished = [(tokens, score) for record in trace for tokens, score, ends in
                    zip(record.candidate_tokens[0].tolist(), record.candidate_scores[0].tolist(),
                        record.finishing[0].tolist()) if ends]
        best_tokens, best_score = max(finished, key=lambda item: item[1])
        assert best_tokens[:-1] == entry[0].tokens and best_score == pytest.approx(entry[0].score, abs=1e-6)
    assert [e[0].text for e in entries] == [e[0].text for e in translator.generate([SENTENCES[1], "  ", SENTENCES[3]],
                                                                                  beam_size=3, nbest=2)]


def test_invalid_arguments_raise(translator):
    with pytest.raises(ValueError, match="nbest"):
        translator.generate(["a dog"], beam_size=2, nbest=3)
    with pytest.raises(ValueError, match="beam_size"):
        translator.translate("a dog", beam_size=0)
    with pytest.raises(TypeError, match="item 1"):
        translator.translate(["a dog", 3])
    with pytest.raises(ValueError, match="samples per input"):  # sampling: nbest has an upper bound too
        translator.generate(["a dog"], nbest=101, sampling=Sampling())


def test_long_input_is_truncated_with_a_warning(translator, monkeypatch, caplog):
    monkeypatch.setattr(translator.cfg.decode, "max_src_length", 8)
    long_line = " ".join(["a man is riding a bike"] * 10)
    assert source_pieces(translator, long_line) > 8
    # Listen on the module's logger itself: train() (run by the tiny_model_dir fixture) stops the "seq2seq"
    # logger from propagating to the root logger, where caplog listens.
    logger = logging.getLogger("seq2seq.translator_inputs")
    logger.addHandler(caplog.handler)
    try:
        [out] = best(translator, [long_line], return_attention=True)
    finally:
        logger.removeHandler(caplog.handler)
    assert isinstance(out.text, str)
    assert out.attention.shape[1] == 8 + 1
    warnings = {id(r): r for r in caplog.records if r.levelno == logging.WARNING and "max_src_length" in r.getMessage()}
    assert len(warnings) == 1


def test_public_surface_is_light_to_import():
    import seq2seq
    from seq2seq import Translator as Exported

    assert Exported is Translator
    assert isinstance(seq2seq.__version__, str)
    check = "import seq2seq, sys; assert 'torch' not in sys.modules, 'import seq2seq loaded torch'"
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_compute_dtypes_and_int8_translate_every_input(tiny_model_dir):
    lines = ["A man is riding a bike.", "", "Two dogs play in the snow."]
    reference = Translator.load(tiny_model_dir, device="cpu", dtype="fp32")
    assert reference.autocast_dtype is None
    bf16 = Translator.load(tiny_model_dir, device="cpu", dtype="bf16")
    assert bf16.autocast_dtype == torch.bfloat16
    int8 = Translator.load(tiny_model_dir, device="cpu", quantize="int8")
    assert int8.autocast_dtype is None  # int8 GEMMs, no autocast on top
    for translator in (reference, bf16, int8):
        for beam_size in (1, 3):
            out = translator.translate(lines, beam_size=beam_size)
            assert len(out) == 3 and out[1] == "" and all(isinstance(t, str) for t in out)
    # against fp32: the same tokens (a near-tie may flip one sentence), scores within the stated tolerance
    # (bf16 as in SCORE_TOLERANCE per piece; int8, dynamic quantization of the linear layers: 0.25 per sentence)
    exact = best(reference, SENTENCES, beam_size=1)
    for translator, tolerance in ((bf16, lambda t: SCORE_TOLERANCE[torch.bfloat16] * (len(t.tokens) + 1)),
                                  (int8, lambda t: 0.25)):
        approximate = best(translator, SENTENCES, beam_size=1)
        same = [(a, b) for a, b in zip(exact, approximate) if a.tokens == b.tokens]
        assert len(same) >= len(SENTENCES) - 1
        for a, b in same:
            assert b.score == pytest.approx(a.score, abs=tolerance(a))
    with pytest.raises(ValueError, match="dtype"):
        Translator.load(tiny_model_dir, device="cpu", dtype="fp8")
    with pytest.raises(ValueError, match="int8"):
        Translator.load(tiny_model_dir, device="cpu", quantize="int4")


def test_loading_a_model_writes_only_to_the_users_own_cache(tiny_model_dir, tmp_path, monkeypatch):
    """A model directory from elsewhere whose config.yaml says ``decode.dtype: auto`` and names a
    ``data.cache_dir``: loading it measures and caches the dtype in the user's own cache (~/.cache/seq2seq), and
    neither creates nor reads anything where the untrusted file says."""
    import json
    import shutil

    import yaml

    from seq2seq import dtype_auto

    model_dir = tmp_path / "downloaded"
    shutil.copytree(tiny_model_dir, model_dir, ignore=shutil.ignore_patterns("last", "*.log", "*.jsonl", "*.png"))
    elsewhere = tmp_path / "elsewhere"
    config = yaml.safe_load((model_dir / "config.yaml").read_text(encoding="utf-8"))
    config["data"]["cache_dir"] = str(elsewhere)
    config["decode"]["dtype"] = "auto"
    config["decode"]["batch_size"] = 4
    (model_dir / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    Translator.load(model_dir, device="cpu")
    assert not elsewhere.exists()
    cached = json.loads((tmp_path / "home" / ".cache" / "seq2seq" / dtype_auto.CACHE_FILE).read_text("utf-8"))
    assert [entry["choice"] for entry in cached.values()] in (["fp32"], ["bf16"])


def test_prefixes_and_scored_targets_are_bounded_like_the_output(translator):
    """A 3,000-word prefix used to decode 3,000+ pieces and a 20,000-piece target to be scored without a limit: both
    are refused before any decoding once over the longest output the model may give (max_len_a * max_src_length +
    max_len_b pieces, computed here from the config by hand); a prefix within it still decodes."""
    decode = translator.cfg.decode
    limit = int(decode.max_len_a * decode.max_src_length + decode.max_len_b)
    assert translator.max_target_pieces() == limit
    over = " ".join(["Hund"] * (limit + 1))
    assert len(translator.tgt_tokenizer.encode([over])[0]) > limit
    with pytest.raises(ValueError, match=f"the prefix of input 2 has {limit + 1} target pieces; the limit is {limit}"):
        translator.generate(["", "a dog", "a cat"], prefix=[None, over, "Eine"], beam_size=2)
    with pytest.raises(ValueError, match=f"prefix 1 has {limit + 1} target pieces"):
        translator.check_prefix(over)
    with pytest.raises(ValueError, match=f"target 2 has {limit + 1} target pieces; the limit is {limit}"):
        translator.score(["a dog", "a cat"], ["Ein Hund", over])
    [[fine]] = translator.generate(["a dog"], prefix="Ein Hund", beam_size=1)
    assert fine.text.startswith("Ein Hund")
