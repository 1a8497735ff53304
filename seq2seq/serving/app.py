"""The FastAPI application: ``POST /translate``, ``GET /health``, ``GET /info``, ``GET /`` (the page), ``/docs``.

Concurrent requests are gathered for ``batch_wait_ms`` into one decode (:mod:`seq2seq.serving.dynamic_batcher`). Errors are
JSON ``{"error": "..."}``: 413 over a size limit, 422 for bad input, 503 when too many requests wait. The command
line that starts it is :mod:`seq2seq.serve`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from contextlib import asynccontextmanager
from dataclasses import asdict
from importlib.resources import files
from pathlib import Path
from typing import Any

try:
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse, Response
    from fastapi.staticfiles import StaticFiles
    from starlette.exceptions import HTTPException
except ImportError as _err:  # the package itself must work without the serve extra
    raise ImportError('seq2seq.serving needs FastAPI and uvicorn: pip install -e ".[serve]"') from _err

from seq2seq.translator import Translator
from seq2seq.serving.access import AccessControl, RateLimiter
from seq2seq.serving.dynamic_batcher import BatcherBusy, BatcherStopped, DynamicBatcher
from seq2seq.serving.schema import (
    LimitExceeded,
    Limits,
    TranslateRequest,
    check_limits,
    check_reply_size,
    translate_batch,
)

logger = logging.getLogger("seq2seq.serve")
#: what a client sees of an unexpected error (a bug, an out-of-memory): the server's log has the traceback
INTERNAL_ERROR = "internal error; the server log has the details"
#: the decode settings a client may want to know (the others describe training or local files)
DECODE_INFO = ("beam_size", "max_len_a", "max_len_b", "length_penalty", "min_length", "no_repeat_ngram",
               "max_src_length")
STATIC_DIR = Path(str(files("seq2seq.serving") / "static"))


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` gets 413 before the app parses it (declared
    Content-Length or counted while reading); the body read here is handed on to the app unchanged."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_large = error(413, f"request body over {self.max_bytes} bytes (--max-body-bytes)")
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            return await too_large(scope, receive, send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None  # the client left before sending its body
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                return await too_large(scope, receive, send)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()  # after the body: waits for the client to disconnect

        return await self.app(scope, replay, send)


def validation_message(err: RequestValidationError, content_type: str) -> str:
    """pydantic's errors as one line: ``body.beam_size: Input should be greater than or equal to 1; ...``."""
    parts = []
    for item in err.errors():
        loc = [str(x) for x in item.get("loc", ())]
        if item.get("type") == "json_invalid":
            reason = (item.get("ctx") or {}).get("error", "")
            parts.append(f"the body is not valid JSON ({reason}, at character {loc[-1]})")
            continue
        location = ".".join(x for x in loc if not x.startswith(("function-", "union")))
        parts.append(f"{location}: {item.get('msg', 'invalid')}" if location else str(item.get("msg", "invalid")))
    if "json" not in content_type:
        parts.append(f"send the body as JSON with the header Content-Type: application/json (got {content_type!r})")
    return "; ".join(parts) or "invalid request"


def reply_json(reply: dict[str, Any]) -> bytes:
    """The reply as FastAPI's ``JSONResponse`` writes it (UTF-8, compact, no NaN)."""
    return json.dumps(reply, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")


def scores_json(results: Any) -> dict[str, Any] | None:
    """The sacreBLEU scores of ``results.json`` (split -> search -> bleu, chrf, their signatures, sentences), nothing
    else (a model directory's results.json is the model author's file)."""
    if not isinstance(results, dict):
        return None
    keep = ("bleu", "chrf", "bleu_signature", "chrf_signature", "sentences")
    return {split: {search: {k: v for k, v in result.items() if k in keep}
                    for search, result in searches.items() if isinstance(result, dict)}
            for split, searches in results.items() if isinstance(searches, dict)}


def dtype_name(translator: Translator) -> str:
    if translator.runtime:  # onnxruntime, fp32 on the CPU: no torch to ask
        return "fp32"
    import torch

    names = {torch.bfloat16: "bf16", torch.float16: "fp16"}
    if translator.autocast_dtype in names:
        return names[translator.autocast_dtype]
    return "tf32" if translator.device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32 else "fp32"


async def wait_for_disconnect(request: Request) -> None:
    """Returns once the client has gone (the body is already read, so only ``http.disconnect`` can come)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def create_app(translator: Translator, model_dir: str | Path | None = None, limits: Limits | None = None,
               batch_wait_ms: float = 5.0, batching: bool = True, max_pending: int = 256,
               max_batch_texts: int | None = None, token: str | None = None,
               rate_limit: int | None = None) -> FastAPI:
    """The service for a loaded :class:`Translator` (the batcher starts and stops with the app's lifespan).

    ``max_batch_texts``: a batch closes early with this many texts (default: the larger of ``decode.batch_size``
    and ``limits.max_texts``). ``token`` (a shared secret) and ``rate_limit`` (requests per minute per client):
    :mod:`seq2seq.serving.access`, for everything but ``/health``; None = off.
    """
    limits = Limits() if limits is None else limits
    default_beam = translator.cfg.decode.beam_size
    max_batch_texts = max(translator.cfg.decode.batch_size, limits.max_texts) if max_batch_texts is None else max_batch_texts
    batcher = DynamicBatcher(lambda key, texts: translate_batch(translator, key, texts), max_wait_ms=batch_wait_ms,
                             max_batch_texts=max_batch_texts,
                             max_requests=None if batching else 1, max_pending=max_pending)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop()

    app = FastAPI(title="seq2seq translation service", lifespan=lifespan,
                  description="Translate text with a trained seq2seq model; the page at / shows how it translates.")
    app.state.batcher = batcher
    app.state.translator = translator
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    if token is not None or rate_limit is not None:  # added last: runs first, before a body is read
        app.add_middleware(AccessControl, token=token,
                           rate_limiter=RateLimiter(rate_limit) if rate_limit is not None else None)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        return error(422, validation_message(err, request.headers.get("content-type", "")))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException) -> JSONResponse:
        if err.status_code == 400 and request.url.path == "/translate":  # FastAPI could not decode the body
            return error(422, f"the body could not be read ({err.detail}); send UTF-8 JSON")
        return error(err.status_code, str(err.detail))

    @app.exception_handler(LimitExceeded)
    async def over_limit(request: Request, err: LimitExceeded) -> JSONResponse:
        return error(err.status, str(err))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, err: Exception) -> JSONResponse:  # logged here, never sent as a traceback
        logger.error("error while answering %s %s", request.method, request.url.path, exc_info=err)
        return error(500, INTERNAL_ERROR)

    @app.post("/translate")
    async def translate(body: TranslateRequest, request: Request) -> Any:
        """Translate ``text`` (one string or a list); ``translations`` holds one entry per text, in order."""
        beam_size = check_limits(body, limits, default_beam)
        check_reply_size(body, beam_size, translator, limits)
        key = (beam_size, body.nbest, body.return_scores, body.return_attention, body.return_beam, body.preserve,
               body.glossary_entries())
        job = asyncio.ensure_future(batcher.submit(body.texts(), key))
        gone = asyncio.ensure_future(wait_for_disconnect(request))
        await asyncio.wait({job, gone}, return_when=asyncio.FIRST_COMPLETED)
        gone.cancel()
        if not job.done():  # the client left: free its place in the queue; nobody reads an answer
            job.cancel()
            await asyncio.gather(job, return_exceptions=True)
            return Response(status_code=499)
        try:
            translations = job.result()
        except BatcherBusy as err:  # overload, or stopping: the only errors a client should retry
            return error(503, f"server busy: {err}; retry later")
        except BatcherStopped:
            return error(503, "the server is shutting down; retry later")
        except Exception as err:  # a bug or an out-of-memory: in full in the log (the batcher logged the decode's)
            logger.error("POST /translate of %d texts answered 500: %s: %s", len(body.texts()), type(err).__name__, err)
            return error(500, INTERNAL_ERROR)
        content = reply_json({"translations": translations, "beam_size": beam_size})
        if len(content) > limits.max_reply_bytes:  # not reached while worst_case_reply_bytes is an upper bound
            logger.error("a reply of %d bytes exceeded the worst-case bound", len(content))
            return error(413, f"the reply has {len(content)} bytes; the limit is {limits.max_reply_bytes} bytes "
                              f"(--max-reply-bytes)")
        return Response(content, media_type="application/json")

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Model loaded, where it runs, and the queue."""
        return {"status": "ok", "model": None if model_dir is None else Path(model_dir).name,  # the name, not where
                "device": str(translator.device), "dtype": dtype_name(translator),
                "pending": batcher.pending, "stats": {k: v for k, v in asdict(batcher.stats).items()
                                                       if k != "batch_sizes"}}

    results_path = Path(model_dir) / "results.json" if model_dir is not None else None

    @app.get("/info")
    async def info() -> dict[str, Any]:
        """What a client needs: languages, vocabulary sizes, the model's settings, the decode settings, its
        sacreBLEU scores (from results.json), where it runs, the limits and batching; no local paths."""
        results = None
        if results_path is not None and results_path.is_file():
            try:
                results = scores_json(json.loads(results_path.read_text(encoding="utf-8")))
            except (OSError, ValueError):
                results = None
        cfg = translator.cfg
        return {"src_lang": cfg.data.src_lang, "tgt_lang": cfg.data.tgt_lang,
                "src_vocab_size": translator.src_tokenizer.vocab_size, "tgt_vocab_size": translator.tgt_tokenizer.vocab_size,
                "model": asdict(cfg.model), "decode": {name: getattr(cfg.decode, name) for name in DECODE_INFO},
                "default_beam_size": default_beam, "device": str(translator.device), "dtype": dtype_name(translator),
                "limits": asdict(limits), "batching": {"enabled": batching, "wait_ms": batch_wait_ms},
                "results": results}

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
