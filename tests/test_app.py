"""The HTTP service (``seq2seq.serve``) through FastAPI's ASGI test clients, on the real tiny model: answers equal
the Python API, limits and bad input give JSON 413/422 (fuzzed), batched answers equal answers alone, a client
that leaves frees its place, and ``python -m seq2seq.serve`` stops cleanly on SIGTERM."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("fastapi", reason='the service needs the serve extra: pip install -e ".[serve]"')
import httpx
from fastapi.testclient import TestClient

from seq2seq.translator import Translator
from seq2seq.serving.app import create_app
from seq2seq.serving.schema import Limits
from seq2seq.tokenizer import BOS_ID, EOS_ID, PAD_ID

SENTENCES = ["A man is riding a bike.", "Two dogs play in the snow.", "People.",
             "A girl in a red dress is walking down the street with her mother."]
LIMITS = Limits(max_chars=120, max_texts=6, max_body_bytes=3000, max_beam_size=5, max_hypotheses=12,
                max_reply_bytes=400_000)


@pytest.fixture(scope="module")
def translator(tiny_model_dir) -> Translator:
    return Translator.load(tiny_model_dir, device="cpu")


@pytest.fixture(scope="module")
def client(translator, tiny_model_dir):
    with TestClient(create_app(translator, tiny_model_dir, LIMITS, batch_wait_ms=1.0)) as test_client:
        yield test_client


def post(client, body) -> httpx.Response:
    return client.post("/translate", json=body)


def assert_error(response: httpx.Response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    message = response.json()["error"]
    for word in words:
        assert word in message, message


def assert_still_serving(client, translator) -> None:
    response = post(client, {"text": SENTENCES[0]})
    assert response.status_code == 200
    assert response.json()["translations"][0]["text"] == translator.translate(SENTENCES[0])


# ---------------------------------------------------------------------------- answers
def test_one_text_and_a_list_answer_like_the_python_api(client, translator):
    one = post(client, {"text": SENTENCES[1]}).json()
    assert [t["text"] for t in one["translations"]] == [translator.translate(SENTENCES[1])]
    assert set(one["translations"][0]) == {"text", "confidence", "confidence_calibrated", "low_confidence", "pieces",
                                           "piece_probs"}  # the confidence always; scores and attention when asked
    many = post(client, {"text": SENTENCES + [""]}).json()["translations"]
    assert [t["text"] for t in many] == translator.translate(SENTENCES + [""])


def test_scores_nbest_and_attention_are_the_python_apis(client, translator):
    body = {"text": SENTENCES, "beam_size": 3, "nbest": 2, "return_scores": True, "return_attention": True}
    answer = post(client, body).json()
    assert answer["beam_size"] == 3
    expected = translator.generate(SENTENCES, beam_size=3, nbest=2, return_attention=True)
    for entry, hypotheses in zip(answer["translations"], expected):
        assert entry["text"] == hypotheses[0].text and entry["tokens"] == hypotheses[0].tokens
        assert [h["text"] for h in entry["nbest"]] == [h.text for h in hypotheses]
        assert [h["score"] for h in entry["nbest"]] == pytest.approx([h.score for h in hypotheses], abs=1e-4)
        assert entry["src_pieces"] == hypotheses[0].src_pieces
        assert "attention" not in entry and "tgt_pieces" not in entry  # once per hypothesis: in the n-best list
        for sent, hypothesis in zip(entry["nbest"], hypotheses):
            assert sent["tgt_pieces"] == hypothesis.tgt_pieces and "src_pieces" not in sent
            attention = torch.tensor(sent["attention"])
            assert attention.shape == (len(sent["tgt_pieces"]), len(entry["src_pieces"]))
            assert torch.allclose(attention, hypothesis.attention, atol=1e-4)
            assert torch.allclose(attention.sum(dim=1), torch.ones(len(attention)), atol=1e-3)  # distributions


def teacher_forced_logits(translator: Translator, source: str, pieces: list[str]) -> tuple[list[int], torch.Tensor]:
    """The ids of a target piece sequence (``</s>`` = EOS) and the model's (1, T, V) logits for them, from one
    teacher-forced forward pass."""
    tgt = translator.tgt_tokenizer
    lookup = {tgt.id_to_piece(i): i for i in range(tgt.vocab_size)}
    ids = [EOS_ID if p == "</s>" else lookup[p] for p in pieces]
    src = torch.tensor([translator.encode_sources([source])[0]])
    with torch.inference_mode():
        logits, _ = translator.model(src, torch.tensor([src.size(1)]), torch.tensor([[BOS_ID] + ids[:-1]]))
    return ids, logits


def teacher_forced_log_prob(translator: Translator, source: str, pieces: list[str]) -> float:
    """Summed log-probability of a target piece sequence under the model, by one teacher-forced forward pass."""
    ids, logits = teacher_forced_logits(translator, source, pieces)
    log_probs = torch.log_softmax(logits.float(), dim=-1)[0]
    return float(sum(log_probs[t, token] for t, token in enumerate(ids)))


@pytest.mark.parametrize("beam_size", [1, 3])
def test_beam_trace_scores_are_the_models_log_probabilities(client, translator, beam_size):
    source = SENTENCES[0]
    entry = post(client, {"text": source, "beam_size": beam_size, "return_beam": True, "return_scores": True,
                          "return_attention": True}).json()["translations"][0]
    steps = entry["beam"]
    assert steps[-1]["done"] and not any(step["done"] for step in steps[:-1])
    for t, step in enumerate(steps, start=1):
        assert len(step["kept"]) <= beam_size and (step["kept"] or step["done"])
        kept_scores = [h["score"] for h in step["kept"]]
        assert kept_scores == sorted(kept_scores, reverse=True)
        for hyp in step["kept"]:
            assert len(hyp["pieces"]) == t
            assert hyp["score"] == pytest.approx(teacher_forced_log_prob(translator, source, hyp["pieces"]), abs=2e-3)
        if t > 1:  # every kept hypothesis extends one kept at the step before
            previous = {tuple(h["pieces"]) for h in steps[t - 2]["kept"]}
            assert all(tuple(h["pieces"][:-1]) in previous for h in step["kept"] + step["finished"])
    finished = [h for step in steps for h in step["finished"]]
    best = max(finished, key=lambda h: h["score"])
    assert best["pieces"] == entry["tgt_pieces"]  # the translation is the best finished hypothesis
    assert best["score"] == pytest.approx(entry["score"], abs=1e-3)


def test_beam_one_trace_is_greedy_search(client, translator):
    """Independent check: with a beam of one, each step's piece is the argmax of the teacher-forced distribution
    (padding and BOS excluded, as in every search; the final EOS may be forced by the length limit)."""
    source = SENTENCES[1]
    steps = post(client, {"text": source, "beam_size": 1, "return_beam": True}).json()["translations"][0]["beam"]
    assert all(len(step["kept"]) == 1 for step in steps[:-1])
    pieces = steps[-1]["finished"][0]["pieces"]
    ids, logits = teacher_forced_logits(translator, source, pieces)
    logits = logits.clone()
    logits[:, :, [PAD_ID, BOS_ID]] = float("-inf")
    assert ids[-1] == EOS_ID  # chosen, or forced at the maximum length
    assert logits[0, :-1].argmax(dim=-1).tolist() == ids[:-1]
    assert pieces == post(client, {"text": source, "beam_size": 1, "return_attention": True}).json()[
        "translations"][0]["tgt_pieces"]


def strings_in(value) -> list[str]:
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in strings_in(k) + strings_in(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings_in(v)]
    return [value] if isinstance(value, str) else []


def test_health_and_info(client, translator, tiny_model_dir):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["device"] == "cpu" and health["dtype"] == "fp32"
    info = client.get("/info").json()
    assert (info["src_lang"], info["tgt_lang"]) == ("en", "de")
    # tokenizer.vocab_size in TINY_OVERRIDES, and byte fallback's 256 byte pieces on top
    assert (info["src_vocab_size"], info["tgt_vocab_size"]) == (400 + 256, 400 + 256)
    assert info["decode"]["beam_size"] == info["default_beam_size"] == 3
    assert info["model"] == {"rnn_type": "gru", "rnn_impl": "fused", "emb_size": 32, "encoder_hidden_size": 32,
                             "encoder_layers": 1, "bidirectional": True, "decoder_hidden_size": 48, "decoder_layers": 1,
                             "attention": "bahdanau", "input_feeding": True, "attention_layer": "top",
                             "bridge": "bridge", "dropout": 0.0,
                             "tie_embeddings": False, "layer_norm": False, "residual": False, "attention_heads": 1,
                             "word_dropout": 0.0}  # the recipe (configs/multi30k_en_de.yaml) with TINY_OVERRIDES
    assert info["limits"]["max_texts"] == LIMITS.max_texts and info["limits"]["max_reply_bytes"] == 400_000
    results = json.loads((tiny_model_dir / "results.json").read_text(encoding="utf-8"))
    keep = ("bleu", "chrf", "bleu_signature", "chrf_signature", "sentences")
    assert info["results"] == {split: {search: {k: r[k] for k in keep} for search, r in scores.items()}
                               for split, scores in results.items()}
    # nothing about the filesystem: no path (the model's, the corpus's, the cache's) in any key or value
    paths = [str(tiny_model_dir), translator.cfg.data.path, translator.cfg.data.cache_dir]
    assert not [s for s in strings_in(info) + strings_in(health) if "/" in s or any(p in s for p in paths)]
    assert "/translate" in client.get("/openapi.json").json()["paths"]
    assert_error(client.get("/nowhere"), 404, "Not Found")
    assert_error(client.get("/translate"), 405, "Method Not Allowed")


def test_the_page_and_its_script_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and 'id="heatmap"' in page.text and "/static/app.js" in page.text
    script = client.get("/static/app.js")
    assert script.status_code == 200 and "return_attention" in script.text
    assert "http" not in page.text.replace("http-equiv", "")  # nothing fetched from elsewhere: works offline


# ---------------------------------------------------------------------------- limits and bad input
def test_size_limits_answer_413_naming_the_limit(client, translator):
    assert_error(post(client, {"text": ["a dog"] * (LIMITS.max_texts + 1)}), 413, "7 texts", "--max-texts")
    assert_error(post(client, {"text": ["a dog", "x" * (LIMITS.max_chars + 1)]}), 413, "text 1", "121 characters",
                 "--max-chars")
    assert_error(post(client, {"text": "a" * (LIMITS.max_body_bytes + 10)}), 413, "--max-body-bytes")

    def chunks():  # no Content-Length: the body is counted as it arrives
        for _ in range(LIMITS.max_body_bytes // 100 + 2):
            yield b" " * 100

    response = client.post("/translate", content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in response.request.headers
    assert_error(response, 413, "--max-body-bytes")
    assert_still_serving(client, translator)


def test_too_many_hypotheses_answer_413_naming_the_limit(client, translator):
    """texts x nbest is bounded: 5 texts x nbest 3 = 15 > 12 hypotheses (LIMITS.max_hypotheses)."""
    assert_error(post(client, {"text": ["a dog"] * 5, "beam_size": 3, "nbest": 3}), 413, "15 hypotheses",
                 "--max-hypotheses")
    assert post(client, {"text": ["a dog"] * 4, "beam_size": 3, "nbest": 3}).status_code == 200  # 12: allowed
    assert_still_serving(client, translator)


@pytest.fixture(scope="module")
def endless(tiny_model_dir) -> Translator:
    """The tiny model unable to end a hypothesis (EOS logit -1e4): every output runs to the longest the search
    allows, as an untrained model's do; the largest reply any request can make."""
    model = Translator.load(tiny_model_dir, device="cpu")
    with torch.no_grad():
        model.model.decoder.output_layer.bias[EOS_ID] = -1e4
    return model


@pytest.mark.parametrize(("body", "slack"), [
    ({"text": SENTENCES, "beam_size": 3, "nbest": 3, "return_scores": True, "return_attention": True}, 2),
    ({"text": SENTENCES[3], "beam_size": 4, "nbest": 2, "return_attention": True, "return_beam": True}, 6),
    ({"text": SENTENCES[:2] + ["x" * 120]}, None),  # text only: the bound takes every piece as the longest one
])
def test_a_reply_over_max_reply_bytes_is_refused_before_decoding(endless, tiny_model_dir, body, slack):
    """The reply of the worst-case model (``endless``) measured with no limit is ``size`` bytes; with the limit one
    byte below, the request gets 413 naming the flag and nothing is decoded (the bound holds before the work); at
    ``slack`` times the size it is answered (the bound is not so loose that it refuses what fits; the attention's
    weights are counted exactly, the pieces at the longest piece's length)."""
    def answer(max_reply_bytes: int) -> tuple[httpx.Response, int]:
        limits = Limits(max_chars=120, max_texts=6, max_beam_size=5, max_reply_bytes=max_reply_bytes)
        with TestClient(create_app(endless, tiny_model_dir, limits, batch_wait_ms=0)) as test_client:
            response = post(test_client, body)
            return response, test_client.app.state.batcher.stats.decodes

    response, _ = answer(10**9)
    assert response.status_code == 200, response.text
    size = len(response.content)
    entries = response.json()["translations"]
    longest = max(len(h["tgt_pieces"]) for e in entries for h in e.get("nbest", [e]) if "tgt_pieces" in h) \
        if body.get("return_attention") else None
    assert longest is None or longest > 20  # the outputs did run long: the worst case is the one measured
    refused, decodes = answer(size - 1)
    assert_error(refused, 413, f"the limit is {size - 1} bytes", "--max-reply-bytes")
    assert decodes == 0
    if slack is not None:
        accepted, _ = answer(slack * size)
        assert accepted.status_code == 200 and accepted.content == response.content


def test_an_unexpected_error_answers_500_without_details_and_is_logged(tiny_model_dir, monkeypatch, caplog):
    """A bug or an out-of-memory is not "retry later" (503) and its message (paths, internals) stays in the log."""
    broken = Translator.load(tiny_model_dir, device="cpu")
    secret = "CUDA out of memory; model at /home/someone/models/secret"

    def fail(*args, **kwargs):
        raise RuntimeError(secret)

    monkeypatch.setattr(broken, "generate", fail)  # what the service decodes with
    with TestClient(create_app(broken, tiny_model_dir, LIMITS, batch_wait_ms=0)) as test_client:
        response = post(test_client, {"text": "a dog"})
        assert_error(response, 500, "internal error", "server log")
        assert "secret" not in response.text and "memory" not in response.text
        assert test_client.get("/health").json()["status"] == "ok"
    assert secret in caplog.text and "Traceback" in caplog.text  # the server side has it in full


@pytest.mark.parametrize(("args", "words"), [
    (["--max-beam-size", "200"], ["--max-beam-size", "at most 100", "200"]),
    (["--threads", "0"], ["--threads must be >= 1", "got 0"]),
    (["--max-reply-bytes", "0"], ["--max-reply-bytes must be >= 1"]),
    (["--max-hypotheses", "0"], ["--max-hypotheses must be >= 1"]),
])
def test_serve_refuses_impossible_settings_at_start_up(tmp_path, capsys, args, words):
    from seq2seq.serve import main

    with pytest.raises(SystemExit) as exit_info:  # before any model is loaded (this one does not exist)
        main(["--model", str(tmp_path / "no_model"), *args])
    assert exit_info.value.code == 2
    message = capsys.readouterr().err
    for word in words:
        assert word in message, message


@pytest.mark.parametrize(("body", "words"), [
    ({"text": []}, ["text", "at least 1"]),
    ({"text": 5}, ["text"]),
    ({"text": ["a", 5]}, ["text"]),
    ({}, ["text", "Field required"]),
    ({"text": "a", "beam_size": 0}, ["beam_size", "greater than or equal to 1"]),
    ({"text": "a", "beam_size": 6}, ["beam_size 6", "1 to 5", "--max-beam-size"]),
    ({"text": "a", "beam_size": "3"}, ["beam_size"]),
    ({"text": "a", "beam_size": 2, "nbest": 3}, ["nbest 3", "beam_size 2"]),
    ({"text": "a", "return_scores": 1}, ["return_scores"]),
    ({"text": "a", "colour": "red"}, ["colour", "Extra inputs"]),
    ({"text": ["a", "b"], "return_beam": True}, ["return_beam", "single text"]),
    (["a"], ["dictionary"]),
])
def test_bad_input_answers_422_with_a_clear_message(client, translator, body, words):
    assert_error(post(client, body), 422, *words)
    assert_still_serving(client, translator)


def test_bad_json_and_wrong_content_type_answer_422(client, translator):
    response = client.post("/translate", content=b'{"text": "a dog"', headers={"content-type": "application/json"})
    assert_error(response, 422, "not valid JSON")
    response = client.post("/translate", content=b'{"text": "a dog"}', headers={"content-type": "text/plain"})
    assert_error(response, 422, "Content-Type: application/json")
    assert_still_serving(client, translator)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-10, 10) | st.text(max_size=20)
    | st.floats(allow_nan=False, allow_infinity=False),  # the client cannot send NaN or infinity as JSON
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
REQUESTS = st.fixed_dictionaries({"text": st.text(max_size=130) | st.lists(st.text(max_size=40), max_size=8)},
                                 optional={"beam_size": st.integers(-2, 7) | st.none() | st.text(max_size=3),
                                           "nbest": st.integers(-1, 7), "return_scores": st.booleans(),
                                           "return_attention": st.booleans() | st.integers(0, 1),
                                           "return_beam": st.booleans(), "extra": JSON_VALUES})


def check_answer(response: httpx.Response, body) -> None:
    """Only 200, 413 or 422, always JSON; a 200 has one entry per text."""
    assert response.status_code in (200, 413, 422), response.text
    answer = response.json()
    if response.status_code != 200:
        assert isinstance(answer["error"], str) and answer["error"]
        return
    texts = [body["text"]] if isinstance(body["text"], str) else body["text"]
    assert len(answer["translations"]) == len(texts)
    assert all(isinstance(entry["text"], str) for entry in answer["translations"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=REQUESTS | JSON_VALUES)
def test_fuzzed_json_bodies_never_break_the_service(client, body):
    check_answer(post(client, body), body)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=200) | st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
       content_type=st.sampled_from(["application/json", "text/plain", "", "application/json; charset=latin-1"]))
def test_fuzzed_raw_bodies_never_break_the_service(client, raw, content_type):
    response = client.post("/translate", content=raw, headers={"content-type": content_type})
    assert response.status_code in (200, 413, 422), response.text
    assert "error" in response.json() or response.status_code == 200


def test_the_service_is_healthy_after_the_fuzzing(client, translator):
    assert_still_serving(client, translator)
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["pending"] == 0


def test_return_beam_decodes_once(client, translator, monkeypatch):
    """A request with ``return_beam`` runs one search, whose trace it returns: the decoder steps it takes are the
    trace's steps (the translation and the trace used to be two decodes)."""
    calls = []
    step = translator.model.decoder.step
    monkeypatch.setattr(translator.model.decoder, "step", lambda *args: (calls.append(1), step(*args))[1])
    entry = post(client, {"text": SENTENCES[0], "beam_size": 3, "return_beam": True}).json()["translations"][0]
    assert entry["beam"] and len(calls) == len(entry["beam"])
    monkeypatch.undo()
    assert entry["text"] == translator.translate(SENTENCES[0], beam_size=3)
