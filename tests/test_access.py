"""Who may use the service (seq2seq/serving/access.py): the shared-secret token and the per-client rate limit, over
real HTTP on 127.0.0.1 against ``python -m seq2seq.serve`` as a process (every loop bounded); the token's sources
and the bucket arithmetic by hand."""

from __future__ import annotations

import http.client
import json
import signal

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from support.serving import start_server  # noqa: E402

from seq2seq.serving.access import MIN_TOKEN_CHARS, TOKEN_ENV, RateLimiter, read_token  # noqa: E402

TOKEN = "s3cret-token-for-the-tests-0123456789"
RATE = 4  # requests per minute per client: a burst of 4, then one every 15 s


def request(url: str, method: str, path: str, token: str | None = None, body: dict | None = None,
            source: str = "127.0.0.1") -> tuple[int, dict, dict]:
    """(status, headers, JSON body) of one request from the address ``source`` (any 127.x.y.z is this machine)."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=60, source_address=(source, 0))
    headers = {"content-type": "application/json"}
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    try:
        connection.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
        response = connection.getresponse()
        data = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, json.loads(data) if data else {}
    finally:
        connection.close()


@pytest.fixture(scope="module")
def guarded_server(tiny_model_dir, tmp_path_factory):
    """The service with a token file and --rate-limit 4; its output (the log) is read after it stops."""
    token_file = tmp_path_factory.mktemp("token") / "token"
    token_file.write_text(TOKEN + "\n")
    process, url = start_server(tiny_model_dir, "--token-file", str(token_file), "--rate-limit", str(RATE))
    state = {"url": url, "process": process, "log": None}
    yield state
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


def stop(state) -> str:
    process = state["process"]
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=60)
    return output


def test_token_and_rate_limit_over_http_with_health_open(guarded_server):
    """/health answers anyone at any rate; without the token, or with a wrong one of the same length, 401; with it,
    the translation; past the burst, 429 with Retry-After, for that client only; the token is in no log line."""
    url = guarded_server["url"]
    for _ in range(2 * RATE):  # open, and not counted
        status, _, body = request(url, "GET", "/health")
        assert status == 200 and body["status"] == "ok"
    status, headers, body = request(url, "POST", "/translate", body={"text": "a dog"})
    assert status == 401 and headers.get("www-authenticate") == "Bearer" and TOKEN not in json.dumps(body)
    wrong = TOKEN[:-1] + ("x" if TOKEN[-1] != "x" else "y")
    assert request(url, "POST", "/translate", token=wrong, body={"text": "a dog"})[0] == 401
    assert request(url, "GET", "/info", token=TOKEN.upper())[0] == 401
    status, _, body = request(url, "POST", "/translate", token=TOKEN, body={"text": "a dog"})
    assert status == 200 and isinstance(body["translations"][0]["text"], str)
    # four requests so far from 127.0.0.1 (the 401s count: guessing tokens is rate limited too); the bucket is empty
    statuses = []
    for _ in range(3):  # bounded: one 429 is enough, and refilling one request takes 15 s
        status, headers, body = request(url, "GET", "/info", token=TOKEN)
        statuses.append(status)
        if status == 429:
            break
    assert statuses[-1] == 429, statuses
    assert int(headers["retry-after"]) >= 1 and "--rate-limit" in body["error"]
    status, _, body = request(url, "GET", "/info", token=TOKEN, source="127.0.0.2")  # another client
    assert status == 200 and body["tgt_lang"]
    assert request(url, "GET", "/health")[0] == 200  # still open to the limited client
    log = stop(guarded_server)
    assert "token required" in log and "rate limit 4/min per client" in log
    assert TOKEN not in log and TOKEN[:8] not in log, log[-2000:]


def test_the_token_comes_from_a_file_or_the_environment_never_both(tmp_path):
    path = tmp_path / "token"
    path.write_text(f"  {TOKEN}\n")
    assert read_token(str(path), environ={}) == TOKEN
    assert read_token(None, environ={TOKEN_ENV: TOKEN}) == TOKEN
    assert read_token(None, environ={}) is None
    with pytest.raises(ValueError, match="both set"):
        read_token(str(path), environ={TOKEN_ENV: TOKEN})
    short = "x" * (MIN_TOKEN_CHARS - 1)
    with pytest.raises(ValueError, match=f"at least {MIN_TOKEN_CHARS} characters") as err:
        read_token(None, environ={TOKEN_ENV: short})
    assert short not in str(err.value)
    with pytest.raises(ValueError, match="cannot read it"):
        read_token(str(tmp_path / "absent"), environ={})


def test_each_client_has_a_bucket_refilled_at_the_rate():
    """Against the token-bucket arithmetic by hand: 6/min is a burst of 6, then one every 10 s."""
    now = [0.0]
    limiter = RateLimiter(6, clock=lambda: now[0])
    assert [limiter.allow("a") for _ in range(6)] == [0.0] * 6
    assert limiter.allow("a") == pytest.approx(10.0)
    assert limiter.allow("b") == 0.0  # another client is not affected
    now[0] = 5.0
    assert limiter.allow("a") == pytest.approx(5.0)  # half a request refilled; refused requests take nothing
    now[0] = 10.0
    assert limiter.allow("a") == 0.0 and limiter.allow("a") == pytest.approx(10.0)
    now[0] = 1000.0
    assert [limiter.allow("a") for _ in range(7)] == [0.0] * 6 + [pytest.approx(10.0)]  # capped at the burst


@pytest.mark.parametrize(("args", "env", "words"), [
    (["--rate-limit", "0"], {}, ["--rate-limit", ">= 1"]),
    ([], {TOKEN_ENV: "short"}, [f"at least {MIN_TOKEN_CHARS} characters"]),
    (["--token-file", "TOKEN_FILE"], {TOKEN_ENV: TOKEN}, ["--token-file", "both set"]),
])
def test_serve_refuses_a_bad_token_or_rate_at_start_up(tmp_path, capsys, monkeypatch, args, env, words):
    from seq2seq.serve import main

    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exit_info:  # before any model is loaded (this one does not exist)
        main(["--model", str(tmp_path / "no_model"), *[str(token_file) if a == "TOKEN_FILE" else a for a in args]])
    assert exit_info.value.code == 2
    message = capsys.readouterr().err
    assert all(word in message for word in words), message
    assert TOKEN not in message
