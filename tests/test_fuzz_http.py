"""The HTTP service fuzzed over a real socket: ``python -m seq2seq.serve`` on the fuzz model, sent requests written
byte by byte: fuzzed JSON requests (any Unicode, lone surrogates as escapes, every field of the wrong type),
arbitrary and malformed JSON, deeply nested JSON, huge bodies (over the limits, declared or chunked), wrong or
missing content types, methods and paths, Content-Length that lies, and slow clients (a request sent in small
pieces, or stalled mid-body and then finished or abandoned while another client is served).

Every request gets, within 30 s, a valid reply (200, one translation per text) or a 4xx whose body is a JSON
``{"error": ...}`` (uvicorn's own plain 400 for a request that is not HTTP/1.1 at all); never a 5xx, never a hang;
the server process stays up, answers /health, and its log holds no traceback. The budget: :mod:`support.fuzzing`
(CI: 80 requests; a campaign: the whole HTTP surface's).
"""

from __future__ import annotations

import http.client
import json
import random
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import event, given
from hypothesis import strategies as st
from support.fuzzing import budget, make_fuzz_model, texts
from support.serving import ENV, free_port, http_json

pytest.importorskip("fastapi", reason='the service needs the serve extra: pip install -e ".[serve]"')
from conftest import REPO_ROOT  # noqa: E402

MAX_BODY = 200_000
LIMITS = ["--max-chars", "400", "--max-texts", "8", "--max-body-bytes", str(MAX_BODY), "--max-hypotheses", "16"]
TIMEOUT = 30.0  # a reply later than this is a hang


@dataclass
class Exchange:
    """One request as bytes on the wire, and how to send it."""

    body: bytes
    method: str = "POST"
    path: str = "/translate"
    headers: list[tuple[str, str]] = field(default_factory=lambda: [("Content-Type", "application/json")])
    length: str = "exact"  # exact | chunked | none | short | long (a Content-Length that lies) | junk
    pace: str = "whole"  # whole | pieces (small writes) | stall (a pause mid-body, then the rest) | abandon
    http_ok: bool = True  # a well-formed HTTP request (else uvicorn's own plain-text 400 is allowed)

    def texts_sent(self) -> int | None:
        """How many texts a 200 must answer (None: not a translate request that parses)."""
        try:
            request = json.loads(self.body)
        except ValueError:
            return None
        if not isinstance(request, dict) or self.path.split("?")[0] != "/translate":
            return None
        text = request.get("text")
        return 1 if isinstance(text, str) else len(text) if isinstance(text, list) else None


JSON_TEXT = texts(long=False) | st.text(max_size=30)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-10**20, 10**20) | JSON_TEXT | st.floats(),  # NaN and inf too
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(JSON_TEXT, inner, max_size=4), max_leaves=12)
FIELD_VALUES = {
    "beam_size": st.integers(-2, 20) | st.none() | JSON_VALUES, "nbest": st.integers(-1, 20) | JSON_VALUES,
    "return_scores": st.booleans() | JSON_VALUES, "return_attention": st.booleans() | JSON_VALUES,
    "return_beam": st.booleans() | JSON_VALUES, "preserve": st.booleans() | JSON_VALUES,
    "glossary": st.dictionaries(JSON_TEXT, JSON_TEXT, max_size=3) | st.lists(st.lists(JSON_TEXT, max_size=3),
                                                                             max_size=3) | JSON_VALUES,
    "do_not_translate": st.lists(JSON_TEXT, max_size=3) | JSON_VALUES, "extra": JSON_VALUES,
}
REQUESTS = st.fixed_dictionaries(
    {"text": texts(long=False) | st.lists(texts(long=False), max_size=9) | JSON_VALUES},
    optional=FIELD_VALUES)


def as_json(value, ensure_ascii: bool) -> bytes:
    return json.dumps(value, ensure_ascii=ensure_ascii).encode("utf-8", "surrogatepass")


@st.composite
def bodies(draw) -> bytes:
    kind = draw(st.sampled_from(["request"] * 6 + ["value", "malformed", "nested", "huge", "raw"]))
    if kind == "request":
        return as_json(draw(REQUESTS), draw(st.booleans()))
    if kind == "value":
        return as_json(draw(JSON_VALUES), draw(st.booleans()))
    if kind == "malformed":  # a request cut, or with bytes replaced or inserted
        data = bytearray(as_json(draw(REQUESTS), draw(st.booleans())))
        for _ in range(draw(st.integers(1, 3))):
            where = draw(st.integers(0, len(data)))
            op = draw(st.sampled_from(["cut", "insert", "replace"]))
            if op == "cut":
                data = data[:where]
            elif op == "insert":
                data[where:where] = draw(st.binary(min_size=1, max_size=3) | st.sampled_from([b"{", b"]", b'"', b"\\"]))
            elif where < len(data):
                data[where] = draw(st.integers(0, 255))
        return bytes(data)
    if kind == "nested":  # deep nesting at the top, in text, or in an extra field
        depth = draw(st.integers(1, 90_000) | st.integers(900, 1100))
        opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}"), ('{"text":[', "]}")]))
        inner = opener * depth + "1" + closer * depth
        where = draw(st.sampled_from(["top", "text", "extra", "glossary"]))
        body = inner if where == "top" else f'{{"text": "a", "{where}": {inner}}}' if where != "text" \
            else f'{{"text": {inner}}}'
        return body.encode()
    if kind == "huge":  # over the body limit, or many or long texts under it
        size = draw(st.sampled_from([MAX_BODY - 100, MAX_BODY + 1, 2 * MAX_BODY, 3000]))
        unit = draw(st.sampled_from(["a", "A man ", "\u00e4", "\U0001f600", "\\ud800"]))
        if draw(st.booleans()):
            return ('{"text": "' + unit * (size // len(unit.encode())) + '"}').encode()
        return as_json({"text": [unit * 50] * (size // (50 * len(unit.encode()) + 4))}, False)
    return draw(st.binary(max_size=300))


CONTENT_TYPES = ["application/json", "application/json", "application/json; charset=utf-8", "text/plain", "",
                 "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/json; charset=latin-1",
                 "APPLICATION/JSON", "application/jsonx"]


@st.composite
def exchanges(draw) -> Exchange:
    exchange = Exchange(body=draw(bodies()))
    content_type = draw(st.sampled_from(CONTENT_TYPES))
    exchange.headers = [("Content-Type", content_type)] if content_type else []
    if draw(st.integers(0, 9)) == 0:  # another method or path
        exchange.method = draw(st.sampled_from(["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]))
    if draw(st.integers(0, 9)) == 0:
        exchange.path = draw(st.sampled_from(["/health", "/info", "/", "/translate/", "/nowhere", "/translate?x=1",
                                              "/%ff", "/" + "a" * 5000]))
    exchange.length = draw(st.sampled_from(["exact"] * 12 + ["chunked", "chunked", "none", "short", "long", "junk"]))
    exchange.pace = draw(st.sampled_from(["whole"] * 12 + ["pieces", "pieces", "stall", "abandon"]))
    exchange.http_ok = exchange.length not in ("junk", "none", "short") and len(exchange.path) < 4000
    return exchange


def chunked(body: bytes, rng: random.Random) -> bytes:
    out, i = [], 0
    while i < len(body):
        n = rng.randint(1, 4096)
        out.append(b"%x\r\n" % len(body[i:i + n]) + body[i:i + n] + b"\r\n")
        i += n
    return b"".join(out) + b"0\r\n\r\n"


def wire(exchange: Exchange, rng: random.Random) -> tuple[bytes, bytes]:
    """(head, body) as sent."""
    headers = list(exchange.headers) + [("Host", "127.0.0.1"), ("Connection", "close")]
    body = exchange.body
    if exchange.length == "exact":
        headers.append(("Content-Length", str(len(body))))
    elif exchange.length == "chunked":
        headers.append(("Transfer-Encoding", "chunked"))
        body = chunked(body, rng)
    elif exchange.length == "short":
        headers.append(("Content-Length", str(max(0, len(body) - 1 - rng.randrange(10)))))
    elif exchange.length == "long":
        headers.append(("Content-Length", str(len(body) + 1 + rng.randrange(10))))
    elif exchange.length == "junk":
        headers.append(("Content-Length", rng.choice(["abc", "-1", "1e3", "", "99999999999999999999999"])))
    head = f"{exchange.method} {exchange.path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
    return head.encode("latin-1"), body


def send(sock: socket.socket, data: bytes, exchange: Exchange, rng: random.Random, base: str) -> None:
    """Send the request at the exchange's pace (a stall: checks another client is served meanwhile)."""
    if exchange.pace == "whole":
        sock.sendall(data)
        return
    if exchange.pace == "pieces":  # small writes with tiny pauses (at most ~30 writes: a byte at a time, then bigger)
        i = 0
        for _ in range(30):
            if i >= len(data):
                return
            n = 1 if i < 10 else max(1, len(data) // 20)
            sock.sendall(data[i:i + n])
            i += n
            time.sleep(0.001)
        sock.sendall(data[i:])
        return
    cut = rng.randrange(len(data) + 1)
    sock.sendall(data[:cut])
    time.sleep(0.05)
    assert http_json(base + "/health")["status"] == "ok"  # served while this client stalls
    if exchange.pace == "abandon":
        return
    sock.sendall(data[cut:])


def exchange_once(exchange: Exchange, base: str, port: int, rng: random.Random) -> http.client.HTTPResponse | None:
    """The reply (read whole), or None when the client abandoned its request or sent a Content-Length too long."""
    head, body = wire(exchange, rng)
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            send(sock, head + body, exchange, rng, base)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered (413) and closed before the whole body was sent: read its answer
        if exchange.pace == "abandon" or exchange.length == "long":
            try:
                sock.shutdown(socket.SHUT_WR)  # the client goes: the server must let go of the connection
            except OSError:
                pass  # the server has already answered and closed the connection
        reply = http.client.HTTPResponse(sock, method=exchange.method)
        try:
            reply.begin()
            reply.body = reply.read()
        except (http.client.RemoteDisconnected, ConnectionResetError):
            assert exchange.pace == "abandon" or exchange.length in ("long", "short") or not exchange.http_ok, \
                "the server closed the connection without a reply"
            return None
        return reply


def check_reply(exchange: Exchange, reply: http.client.HTTPResponse) -> None:
    status = reply.status
    assert status < 500, (status, reply.body[:500])
    if exchange.method == "HEAD":
        return
    content_type = reply.getheader("content-type", "")
    if status == 200 and exchange.method == "POST" and exchange.path.split("?")[0] == "/translate":
        answer = json.loads(reply.body)
        expected = exchange.texts_sent()
        assert expected is not None and len(answer["translations"]) == expected, (expected, answer)
        assert all(isinstance(entry["text"], str) for entry in answer["translations"])
    elif 400 <= status < 500:
        if not exchange.http_ok and "application/json" not in content_type:
            return  # uvicorn's own "Invalid HTTP request received." for what is not HTTP
        answer = json.loads(reply.body)
        assert isinstance(answer, dict) and isinstance(answer.get("error"), str) and answer["error"], answer


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    """(process, base URL, port, log file) of ``python -m seq2seq.serve`` on the fuzz model, its log in a file."""
    tmp = tmp_path_factory.mktemp("fuzz_http")
    model_dir = make_fuzz_model(tiny_model_dir, tmp)
    port = free_port()
    log_path = tmp / "serve.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "seq2seq.serve", "--model", str(model_dir), "--port",
                                    str(port), "--threads", "1", "--batch-wait-ms", "1", *LIMITS], cwd=REPO_ROOT,
                                   env=ENV, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        assert process.poll() is None, log_path.read_text()
        try:
            http_json(base + "/health")
            break
        except OSError:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.2)
    yield process, base, port, log_path
    process.terminate()
    process.wait(timeout=60)


@budget(ci=80, share=1.0)
@given(exchange=exchanges(), seed=st.integers(0, 2**32 - 1))
def test_http_any_request_gets_a_reply_or_a_json_4xx_never_a_5xx_or_a_hang(server, exchange, seed):
    process, base, port, _ = server
    reply = exchange_once(exchange, base, port, random.Random(seed))
    event("reply", "none (the client left)" if reply is None else str(reply.status))  # counted by the campaign
    if reply is not None:
        check_reply(exchange, reply)
    assert process.poll() is None, "the server died"


@pytest.mark.parametrize("body", [
    b'{"text": ":\\udced\\udca0\\udc80"}',
    b'{"text": ["Berlin \\ud800 42", "a bike"], "glossary": {"bike": "Fahr\\udcffrad"}, "return_attention": true}',
    b'{"text": "AB-1234 x", "do_not_translate": ["AB-\\udc80"], "nbest": 2, "beam_size": 2}',
])
def test_http_lone_surrogates_in_json_are_answered(server, body):
    """Found by the campaign: lone surrogates sent as JSON escapes reached the reply through a protected span or a
    glossary term, and the reply could not be encoded (500)."""
    process, base, port, _ = server
    reply = exchange_once(Exchange(body=body), base, port, random.Random(0))
    assert reply.status == 200, reply.body
    check_reply(Exchange(body=body), reply)


def test_http_the_server_is_healthy_after_the_fuzzing(server):
    process, base, _, log_path = server
    health = http_json(base + "/health")
    assert health["status"] == "ok" and health["pending"] == 0
    answer = http_json(base + "/translate", {"text": ["A man.", ""]})
    assert len(answer["translations"]) == 2 and answer["translations"][1]["text"] == ""
    log = log_path.read_text(encoding="utf-8", errors="replace")
    assert "Traceback" not in log and "ERROR" not in log, log[-3000:]
