#!/usr/bin/env python3
"""Bounded load test of the translation service, on the loopback interface only.

N clients each send one sentence per ``POST /translate`` request, one request after another, until M requests
are answered in all; prints throughput (sentences/s) and p50/p95 latency per setting as a Markdown table.

    # start the service per batching setting itself (one process at a time), then load it:
    python scripts/load_test.py --model runs/multi30k_en_de --clients 1 8 32 --requests 96 --batching on off
    # or load a service that is already running on this machine:
    python scripts/load_test.py --url http://127.0.0.1:8000 --clients 8 --requests 200

Sentences come from ``--input`` (one per line, .gz allowed; default: Multi30k test_2016_flickr English when
``../shared/data/multi30k`` is there). Only 127.0.0.1 / localhost / ::1 are accepted: this is not a tool for
loading other people's machines.
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import json
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_INPUT = REPO_ROOT.parent / "shared" / "data" / "multi30k" / "test_2016_flickr.en.gz"
FALLBACK = ["A man is riding a bike.", "Two dogs play in the snow.", "A girl in a red dress is walking down the street.",
            "People are sitting on a bench in the park.", "A little boy is eating an ice cream cone."]
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
MAX_CLIENTS, MAX_REQUESTS = 256, 20_000


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def read_sentences(path: Path | None) -> list[str]:
    if path is None:
        path = DEFAULT_INPUT if DEFAULT_INPUT.is_file() else None
    if path is None:
        return FALLBACK
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return [line.strip() for line in handle if line.strip()]


def request_json(host: str, port: int, method: str, path: str, body: dict | None = None,
                 connection: http.client.HTTPConnection | None = None) -> dict:
    conn = connection or http.client.HTTPConnection(host, port, timeout=120)
    payload = None if body is None else json.dumps(body).encode()
    conn.request(method, path, body=payload, headers={"content-type": "application/json"})
    response = conn.getresponse()
    data = json.loads(response.read())
    if response.status != 200:
        raise RuntimeError(f"{method} {path} answered {response.status}: {data}")
    if connection is None:
        conn.close()
    return data


def run_load(host: str, port: int, sentences: list[str], clients: int, requests: int,
             beam_size: int | None) -> dict:
    """``clients`` threads share ``requests`` requests (one keep-alive connection each); returns the figures."""
    latencies: list[float] = []
    lock = threading.Lock()
    counter = iter(range(requests))
    errors: list[str] = []

    def client() -> None:
        conn = http.client.HTTPConnection(host, port, timeout=120)
        try:
            while True:
                with lock:
                    index = next(counter, None)
                if index is None:
                    return
                body = {"text": sentences[index % len(sentences)]}
                if beam_size is not None:
                    body["beam_size"] = beam_size
                start = time.perf_counter()
                request_json(host, port, "POST", "/translate", body, conn)
                with lock:
                    latencies.append(time.perf_counter() - start)
        except (OSError, RuntimeError, ValueError, http.client.HTTPException) as err:  # reported after the run
            errors.append(repr(err))
        finally:
            conn.close()

    before = request_json(host, port, "GET", "/health")["stats"]
    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - start
    after = request_json(host, port, "GET", "/health")["stats"]
    if errors:
        raise RuntimeError(f"{len(errors)} clients failed, e.g. {errors[0]}")
    decodes = after["decodes"] - before["decodes"]
    return {"clients": clients, "requests": len(latencies), "seconds": round(seconds, 2),
            "sentences_per_second": round(len(latencies) / seconds, 1),
            "p50_ms": round(1000 * percentile(latencies, 50), 1), "p95_ms": round(1000 * percentile(latencies, 95), 1),
            "requests_per_decode": round((after["requests"] - before["requests"]) / max(decodes, 1), 2)}


def start_service(model: Path, port: int, batching: bool, threads: int, extra: list[str]) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "seq2seq.serve", "--model", str(model), "--port", str(port),
           "--threads", str(threads), *([] if batching else ["--no-batching"]), *extra]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    process = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the service exited with {process.returncode}: {process.stderr.read()[-2000:]}")
        try:
            request_json("127.0.0.1", port, "GET", "/health")
            return process
        except OSError:
            time.sleep(0.3)
    process.kill()
    raise RuntimeError("the service did not start within 300 s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--model", type=Path, help="start `python -m seq2seq.serve --model DIR` per batching setting")
    target.add_argument("--url", help="a running service on this machine, e.g. http://127.0.0.1:8000")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--requests", type=int, default=96, help="requests per setting (all clients together)")
    parser.add_argument("--batching", nargs="+", choices=["on", "off"], default=["on", "off"],
                        help="with --model: the settings to start the service with")
    parser.add_argument("--beam-size", type=int, default=None, help="beam size per request (default: the model's)")
    parser.add_argument("--threads", type=int, default=1, help="with --model: the service's torch threads")
    parser.add_argument("--port", type=int, default=8765, help="with --model: the loopback port to use")
    parser.add_argument("--input", type=Path, default=None, help="sentences, one per line (.gz allowed)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    args, extra = parser.parse_known_args(argv)
    if not all(1 <= c <= MAX_CLIENTS for c in args.clients) or not 1 <= args.requests <= MAX_REQUESTS:
        parser.error(f"--clients must be 1..{MAX_CLIENTS} and --requests 1..{MAX_REQUESTS}")
    if extra and args.model is None:
        parser.error(f"unknown arguments {extra} (options for the service are passed only with --model)")
    sentences = read_sentences(args.input)

    rows = []
    if args.url:
        parts = urlsplit(args.url)
        if parts.hostname not in LOOPBACK:
            parser.error(f"--url must be on this machine (127.0.0.1, localhost or ::1), got {parts.hostname!r}")
        settings = [("running", parts.hostname, parts.port or 80, None)]
    else:
        settings = [(mode, "127.0.0.1", args.port, mode == "on") for mode in args.batching]
    for label, host, port, batching in settings:
        process = None if batching is None else start_service(args.model, port, batching, args.threads, extra)
        try:
            run_load(host, port, sentences, min(args.clients), min(args.requests, 8), args.beam_size)  # warm-up
            for clients in args.clients:
                row = {"batching": label, **run_load(host, port, sentences, clients, args.requests, args.beam_size)}
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
        finally:
            if process is not None:
                process.terminate()
                process.wait(timeout=60)

    print("| batching | clients | requests | sentences/s | p50 latency (ms) | p95 latency (ms) | requests per decode |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['batching']} | {r['clients']} | {r['requests']} | {r['sentences_per_second']} | {r['p50_ms']} "
              f"| {r['p95_ms']} | {r['requests_per_decode']} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
