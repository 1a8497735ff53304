"""Run ``python -m seq2seq.serve`` as a process on a free loopback port, for the tests that need a real server."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from conftest import REPO_ROOT, SUBPROCESS_ENV

ENV = {**SUBPROCESS_ENV, "PYTHONPATH": str(REPO_ROOT)}  # one torch thread, no GPU


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_json(url: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def start_server(model_dir: str | Path, *args: str, startup_timeout: float = 120,
                 env: dict | None = None) -> tuple[subprocess.Popen, str]:
    """Start the service (``env``: added to the environment); returns (process, base URL) once /health answers.
    Stop it with SIGTERM."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "seq2seq.serve", "--model", str(model_dir), "--port", str(port),
                                "--threads", "1", *args], cwd=REPO_ROOT, env={**ENV, **(env or {})},
                               stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + startup_timeout  # a bound on waiting for the start, not a measurement
    while True:
        if process.poll() is not None:
            raise AssertionError(f"the server exited with {process.returncode}:\n{process.stdout.read()}")
        try:
            http_json(url + "/health")
            return process, url
        except OSError:
            if time.monotonic() > deadline:
                process.kill()
                raise AssertionError(f"the server did not answer /health within {startup_timeout} s") from None
            time.sleep(0.2)
