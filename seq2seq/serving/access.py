"""Who may use the service, and how often: an optional shared-secret token and a per-client rate limit, as one ASGI
middleware (:class:`AccessControl`) in front of everything but ``GET /health``.

Token: a client sends ``Authorization: Bearer TOKEN``; any other request gets 401. The token is read once at start
from the environment variable ``SEQ2SEQ_SERVE_TOKEN`` or from a file (``--token-file``), never from the command line
(other users of the machine can read a process's arguments), is compared in constant time (:func:`hmac.compare_digest`
on SHA-256 digests, so neither its bytes nor its length show in the timing), and is never logged or echoed.

Rate limit: each client address (the TCP peer: behind a reverse proxy that is the proxy, so limit there instead) has
a token bucket of ``per_minute`` requests, refilled at ``per_minute / 60`` per second; a request finding it empty
gets 429 with ``Retry-After``. It applies before the token check (guessing tokens is rate limited too). At most
:data:`MAX_CLIENTS` addresses are remembered (the least recently seen is forgotten first), so the table is bounded.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import time
from collections import OrderedDict
from pathlib import Path
from typing import Callable

TOKEN_ENV = "SEQ2SEQ_SERVE_TOKEN"
#: shortest token accepted (a shared secret guessable in a few tries protects nothing)
MIN_TOKEN_CHARS = 16
MAX_CLIENTS = 10_000
#: paths open to anyone, at any rate (a load balancer's health check)
OPEN_PATHS = ("/health",)


def read_token(token_file: str | None, environ: dict | None = None) -> str | None:
    """The shared secret from ``token_file`` or ``$SEQ2SEQ_SERVE_TOKEN`` (None when neither is set); ValueError
    for both at once, an unreadable file, or a token shorter than :data:`MIN_TOKEN_CHARS` (it never appears in the
    message)."""
    environ = os.environ if environ is None else environ
    from_env = environ.get(TOKEN_ENV)
    if token_file is not None and from_env is not None:
        raise ValueError(f"--token-file and ${TOKEN_ENV} are both set: give the token one way")
    if token_file is not None:
        try:
            token = Path(token_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as err:
            raise ValueError(f"--token-file {token_file}: cannot read it ({type(err).__name__})") from None
        where = f"--token-file {token_file}"
    elif from_env is not None:
        token, where = from_env.strip(), f"${TOKEN_ENV}"
    else:
        return None
    if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
        raise ValueError(f"the token in {where} must be at least {MIN_TOKEN_CHARS} characters without spaces; make "
                         "one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'")
    return token


class RateLimiter:
    """Token buckets per client: ``per_minute`` requests at once, refilled continuously (``clock`` in seconds)."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        if per_minute < 1:
            raise ValueError(f"--rate-limit must be >= 1 request per minute, got {per_minute}")
        self.capacity, self.refill, self.clock = float(per_minute), per_minute / 60.0, clock
        self.buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client -> (tokens, when)

    def allow(self, client: str) -> float:
        """0 if ``client`` may make a request now (and count it), else the seconds until it may."""
        now = self.clock()
        tokens, then = self.buckets.pop(client, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - then) * self.refill)
        wait = 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.refill
        self.buckets[client] = (tokens - 1.0 if wait == 0.0 else tokens, now)
        while len(self.buckets) > MAX_CLIENTS:
            self.buckets.popitem(last=False)
        return wait


class AccessControl:
    """ASGI middleware: the rate limit (``rate_limiter``), then the token (``token``), for every HTTP request but
    :data:`OPEN_PATHS`; either may be None (off)."""

    def __init__(self, app, token: str | None = None, rate_limiter: RateLimiter | None = None) -> None:
        self.app, self.rate_limiter = app, rate_limiter
        self.token_digest = None if token is None else hashlib.sha256(token.encode("utf-8")).digest()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope.get("path") in OPEN_PATHS:
            return await self.app(scope, receive, send)
        if self.rate_limiter is not None:
            client = (scope.get("client") or ("unknown", 0))[0]
            wait = self.rate_limiter.allow(str(client))
            if wait > 0:
                return await _reply(send, 429, "too many requests from this address; retry later (--rate-limit)",
                                    [(b"retry-after", str(math.ceil(wait)).encode())])
        if self.token_digest is not None and not self._authorized(scope):
            return await _reply(send, 401, "missing or wrong token: send the header Authorization: Bearer TOKEN",
                                [(b"www-authenticate", b"Bearer")])
        return await self.app(scope, receive, send)

    def _authorized(self, scope) -> bool:
        header = b""
        for name, value in scope.get("headers", ()):
            if name.lower() == b"authorization":
                header = value
                break
        scheme, _, given = header.partition(b" ")
        given_digest = hashlib.sha256(given.strip()).digest()
        return hmac.compare_digest(given_digest, self.token_digest) and scheme.lower() == b"bearer"


async def _reply(send, status: int, message: str, headers: list[tuple[bytes, bytes]]) -> None:
    body = json.dumps({"error": message}).encode("utf-8")
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})
