"""Dynamic batching (``seq2seq.serving.dynamic_batcher``) alone and through the service, a client that leaves, and the service as
a process: ``python -m seq2seq.serve`` on a loopback port, stopped with SIGTERM; the package without FastAPI."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading

import pytest
from conftest import REPO_ROOT
from support.serving import ENV, http_json, start_server

from seq2seq.serving.dynamic_batcher import BatcherBusy, DynamicBatcher

SENTENCES = ["A man is riding a bike.", "Two dogs play in the snow.", "People.", "A boy eats an ice cream.",
             "A girl in a red dress is walking down the street with her mother.", "Three men sit on a bench."]


# ---------------------------------------------------------------------------- the batcher alone
def test_requests_waiting_together_are_one_decode_and_each_gets_its_own_results():
    calls = []

    def decode(key, texts):
        calls.append((key, list(texts)))
        return [f"{key}:{text.upper()}" for text in texts]

    async def scenario():
        batcher = DynamicBatcher(decode, max_wait_ms=60_000, max_batch_texts=5)  # closes when 5 texts wait
        await batcher.start()
        requests = [(["a", "b"], 1), (["c"], 2), (["d"], 1), (["e"], 2)]
        results = await asyncio.gather(*(batcher.submit(texts, key) for texts, key in requests))
        await batcher.stop()
        return batcher, results

    batcher, results = asyncio.run(scenario())
    assert results == [["1:A", "1:B"], ["2:C"], ["1:D"], ["2:E"]]
    assert sorted(calls) == [(1, ["a", "b", "d"]), (2, ["c", "e"])]  # one decode per key, arrival order kept
    assert batcher.stats.decodes == 2 and batcher.stats.texts == 5 and batcher.pending == 0


def test_a_cancelled_request_is_never_decoded_and_frees_its_place():
    release = threading.Event()
    seen = []

    def decode(key, texts):
        seen.extend(texts)
        release.wait(timeout=60)
        return texts

    async def scenario():
        batcher = DynamicBatcher(decode, max_wait_ms=0, max_requests=1, max_pending=2)
        await batcher.start()
        first = asyncio.ensure_future(batcher.submit(["first"], 0))
        while not seen:  # the worker is now busy decoding "first"
            await asyncio.sleep(0.01)
        second = asyncio.ensure_future(batcher.submit(["second"], 0))
        await asyncio.sleep(0)
        with pytest.raises(BatcherBusy, match="max_pending=2"):
            await batcher.submit(["third"], 0)
        second.cancel()  # its client went away
        await asyncio.gather(second, return_exceptions=True)
        assert batcher.pending == 1
        release.set()
        assert await first == ["first"]
        assert await batcher.submit(["fourth"], 0) == ["fourth"]
        await batcher.stop()
        return batcher

    batcher = asyncio.run(scenario())
    assert seen == ["first", "fourth"]
    assert batcher.stats.cancelled == 1 and batcher.pending == 0


def test_batching_off_decodes_one_request_at_a_time():
    calls = []

    async def scenario():
        batcher = DynamicBatcher(lambda key, texts: calls.append(texts) or texts, max_wait_ms=50, max_requests=1)
        await batcher.start()
        results = await asyncio.gather(*(batcher.submit([str(i)], 0) for i in range(4)))
        await batcher.stop()
        return results

    assert asyncio.run(scenario()) == [["0"], ["1"], ["2"], ["3"]]
    assert calls == [["0"], ["1"], ["2"], ["3"]]


def test_stop_in_the_wait_window_answers_every_caller():
    """Requests the worker has taken from the queue and is gathering with, one still queued, and one submitted
    after stop(): each gets an error naming the shutdown (the service answers 503), none waits forever."""
    async def scenario():
        batcher = DynamicBatcher(lambda key, texts: texts, max_wait_ms=60_000, max_batch_texts=3)
        await batcher.start()
        gathered = [asyncio.ensure_future(batcher.submit([text], 0)) for text in ("a", "b")]
        while batcher._queue.qsize():  # the worker holds both and waits up to a minute for more
            await asyncio.sleep(0.001)
        queued = asyncio.ensure_future(batcher.submit(["c", "d"], 1))  # would close the batch: not yet gathered
        await asyncio.sleep(0)
        await batcher.stop()
        late = asyncio.ensure_future(batcher.submit(["e"], 0))
        outcomes = await asyncio.wait_for(asyncio.gather(*gathered, queued, late, return_exceptions=True), 10)
        return batcher, outcomes

    batcher, outcomes = asyncio.run(scenario())
    assert [type(o).__name__ for o in outcomes] == ["BatcherStopped"] * 4, outcomes
    assert all(isinstance(o, RuntimeError) and "shutting down" in str(o) for o in outcomes)
    assert batcher.pending == 0 and batcher.stats.decodes == 0


# ---------------------------------------------------------------------------- through the service
@pytest.fixture(scope="module")
def translator(tiny_model_dir):
    pytest.importorskip("fastapi", reason='the service needs the serve extra: pip install -e ".[serve]"')
    from seq2seq.translator import Translator

    return Translator.load(tiny_model_dir, device="cpu")


async def post_all(app, bodies: list[dict]) -> list[dict]:
    """POST all bodies at once through the ASGI transport (the app's lifespan runs around them)."""
    import httpx

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            responses = await asyncio.gather(*(client.post("/translate", json=body) for body in bodies))
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    return [r.json()["translations"] for r in responses]


@pytest.mark.parametrize("beam_sizes", [(3,), (1, 3)])
def test_concurrent_requests_share_a_decode_and_equal_translations_alone(translator, tiny_model_dir, beam_sizes):
    from seq2seq.serving.app import create_app

    bodies = [{"text": text, "beam_size": beam_sizes[i % len(beam_sizes)], "return_scores": True}
              for i, text in enumerate(SENTENCES)]
    app = create_app(translator, tiny_model_dir, batch_wait_ms=60_000, max_batch_texts=len(SENTENCES))
    answers = asyncio.run(post_all(app, bodies))
    stats = app.state.batcher.stats
    assert stats.decodes == len(beam_sizes) and stats.texts == len(SENTENCES)  # one decode per beam size
    assert stats.largest_batch_requests == len(SENTENCES) // len(beam_sizes)
    for body, (entry,) in zip(bodies, answers):
        [[alone]] = translator.generate([body["text"]], beam_size=body["beam_size"])
        assert entry["text"] == alone.text and entry["tokens"] == alone.tokens
        assert entry["score"] == pytest.approx(alone.score, abs=1e-4)


def test_a_client_that_disconnects_frees_its_place(translator, tiny_model_dir):
    """A raw ASGI call whose client is gone right after sending the body: no decode, no answer, nothing pending."""
    from seq2seq.serving.app import create_app

    app = create_app(translator, tiny_model_dir, batch_wait_ms=200)
    body = json.dumps({"text": SENTENCES[0], "beam_size": 3}).encode()
    sent = []

    async def scenario():
        messages = [{"type": "http.request", "body": body, "more_body": False}, {"type": "http.disconnect"}]

        async def receive():
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
                 "path": "/translate", "raw_path": b"/translate", "query_string": b"", "root_path": "",
                 "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
                 "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000)}
        async with app.router.lifespan_context(app):
            await app(scope, receive, send)
            assert app.state.batcher.pending == 0
            import httpx

            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
                response = await client.post("/translate", json={"text": SENTENCES[1]})
        return response

    response = asyncio.run(scenario())
    assert sent[0]["status"] == 499
    assert response.status_code == 200 and response.json()["translations"][0]["text"] == translator.translate(SENTENCES[1])
    stats = app.state.batcher.stats
    assert stats.cancelled == 1 and stats.texts == 1  # only the second request was decoded


# ---------------------------------------------------------------------------- the process
def test_serve_process_answers_and_on_sigterm_finishes_the_decode_in_flight(tiny_model_dir):
    """``python -m seq2seq.serve`` on loopback answers; a slow decode (64 texts, beam 16: seconds on one thread) is
    in flight; a second request finds --max-pending 1 taken and gets 503; SIGTERM then arrives, and the service
    answers the first request in full before it exits 0."""
    import urllib.error

    pytest.importorskip("uvicorn", reason='the service needs the serve extra: pip install -e ".[serve]"')
    process, url = start_server(tiny_model_dir, "--max-pending", "1", "--batch-wait-ms", "0")
    slow = {"text": [SENTENCES[4] * 3] * 64, "beam_size": 16}
    answers: list = []
    client = threading.Thread(target=lambda: answers.append(http_json(url + "/translate", slow)))
    try:
        answer = http_json(url + "/translate", {"text": ["A dog runs.", ""]})
        assert len(answer["translations"]) == 2 and answer["translations"][1]["text"] == ""
        health = http_json(url + "/health")
        assert health["status"] == "ok" and health["device"] == "cpu"  # --device auto: the tests hide any GPU
        client.start()
        while http_json(url + "/health")["pending"] == 0:  # the slow request is being decoded
            assert client.is_alive(), "the slow request was answered before the test could look"
        with pytest.raises(urllib.error.HTTPError) as busy:
            http_json(url + "/translate", {"text": "A dog."})
        assert busy.value.code == 503 and "server busy" in json.loads(busy.value.read())["error"]
        process.send_signal(signal.SIGTERM)
        client.join(timeout=120)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    assert len(answers) == 1 and len(answers[0]["translations"]) == 64
    assert process.returncode == 0, output
    # uvicorn waited for the open request: the shutdown began before the slow request was answered
    assert output.index("Shutting down") < output.rindex('"POST /translate HTTP/1.1" 200'), output
    assert "Finished server process" in output and "Traceback" not in output
    assert "127.0.0.1" in output


def test_serve_with_a_missing_model_exits_2_with_one_message(tmp_path):
    pytest.importorskip("uvicorn", reason='the service needs the serve extra: pip install -e ".[serve]"')
    result = subprocess.run([sys.executable, "-m", "seq2seq.serve", "--model", str(tmp_path / "nope")], cwd=REPO_ROOT,
                            env=ENV, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 2
    assert "model directory not found" in result.stderr and "Traceback" not in result.stderr


def test_the_package_imports_without_fastapi():
    code = ("import sys; sys.modules['fastapi'] = None; sys.modules['uvicorn'] = None\n"
            "import seq2seq, seq2seq.translator, seq2seq.serving.dynamic_batcher, seq2seq.decoding.search, seq2seq.translate\n"
            "try:\n    import seq2seq.serve\nexcept ImportError as err:\n    print(err)\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=ENV, capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert 'pip install -e ".[serve]"' in result.stdout


# ---------------------------------------------------------------------------- scripts/load_test.py
def test_load_test_percentiles_are_nearest_rank():
    from support.scripts import load_script

    load_test = load_script("load_test")
    values = [5.0, 1.0, 4.0, 2.0, 3.0, 10.0, 9.0, 8.0, 7.0, 6.0]  # 1..10: p50 = 5, p95 = 10, p10 = 1 (by hand)
    assert [load_test.percentile(values, p) for p in (50, 95, 10, 100)] == [5.0, 10.0, 1.0, 10.0]


def test_load_test_refuses_other_machines_and_runs_against_a_real_service(tiny_model_dir, tmp_path):
    pytest.importorskip("uvicorn", reason='the service needs the serve extra: pip install -e ".[serve]"')
    script = [sys.executable, "scripts/load_test.py"]
    refused = subprocess.run([*script, "--url", "http://192.0.2.1:8000"], cwd=REPO_ROOT, env=ENV, capture_output=True,
                             text=True, timeout=120, check=False)
    assert refused.returncode == 2 and "must be on this machine" in refused.stderr
    figures = tmp_path / "load.json"
    process, url = start_server(tiny_model_dir, "--batch-wait-ms", "50")
    try:
        done = subprocess.run([*script, "--url", url, "--clients", "1", "3", "--requests", "6", "--json", str(figures)],
                              cwd=REPO_ROOT, env=ENV, capture_output=True, text=True, timeout=300, check=False)
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(figures.read_text(encoding="utf-8"))
    assert [(r["clients"], r["requests"]) for r in rows] == [(1, 6), (3, 6)]
    assert rows[0]["requests_per_decode"] == 1.0  # one client waits for each answer: nothing to batch with
    assert all(r["p50_ms"] <= r["p95_ms"] for r in rows)
    assert done.stdout.count("\n| running |") == 2
