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

from seq2seq.api import Translator
from seq2seq.serving.app import create_app
from seq2seq.serving.schema import Limits
from seq2seq.tokenizer import BOS_ID, EOS_ID, PAD_ID

SENTENCES = ["A man is riding a bike.", "Two dogs play in the snow.", "People.",
             "A girl in a red dress is walking down the street with her mother."]
LIMITS = Limits(max_chars=120, max_texts=6, max_body_bytes=3000, max_beam_size=5)


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
    assert one["translations"] == [{"text": translator.translate(SENTENCES[1])}]
    many = post(client, {"text": SENTENCES + [""]}).json()["translations"]
    assert [t["text"] for t in many] == translator.translate(SENTENCES + [""])


def test_scores_nbest_and_attention_are_the_python_apis(client, translator):
    body = {"text": SENTENCES, "beam_size": 3, "nbest": 2, "return_scores": True, "return_attention": True}
    answer = post(client, body).json()
    assert answer["beam_size"] == 3
    expected = translator.translate(SENTENCES, beam_size=3, nbest=2, return_scores=True, return_attention=True)
    for entry, hypotheses in zip(answer["translations"], expected):
        assert entry["text"] == hypotheses[0].text and entry["tokens"] == hypotheses[0].tokens
        assert [h["text"] for h in entry["nbest"]] == [h.text for h in hypotheses]
        assert [h["score"] for h in entry["nbest"]] == pytest.approx([h.score for h in hypotheses], abs=1e-4)
        assert entry["src_pieces"] == hypotheses[0].src_pieces and entry["tgt_pieces"] == hypotheses[0].tgt_pieces
        attention = torch.tensor(entry["attention"])
        assert attention.shape == (len(entry["tgt_pieces"]), len(entry["src_pieces"]))
        assert torch.allclose(attention, hypotheses[0].attention, atol=1e-4)
        assert torch.allclose(attention.sum(dim=1), torch.ones(len(attention)), atol=1e-3)  # rows are distributions


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


def test_health_and_info(client, tiny_model_dir):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["device"] == "cpu" and health["dtype"] == "fp32"
    info = client.get("/info").json()
    assert (info["src_lang"], info["tgt_lang"]) == ("en", "de")
    assert info["config"]["decode"]["beam_size"] == info["default_beam_size"] == 3
    assert info["limits"]["max_texts"] == LIMITS.max_texts
    assert info["results"] == json.loads((tiny_model_dir / "results.json").read_text(encoding="utf-8"))
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
