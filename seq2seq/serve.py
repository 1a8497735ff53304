"""Serve a model over HTTP (FastAPI + uvicorn; ``pip install -e ".[serve]"``), with dynamic batching and a web page.

    python -m seq2seq.serve --model runs/multi30k_en_de            # http://127.0.0.1:8000/ (page), /docs (OpenAPI)
    curl -s 127.0.0.1:8000/translate -H 'content-type: application/json' -d '{"text": "A man is riding a bike."}'

Endpoints: ``POST /translate``, ``GET /health``, ``GET /info``, ``GET /`` (the page), ``/docs`` and ``/openapi.json``.
Concurrent requests are gathered for ``--batch-wait-ms`` into one decode (:mod:`seq2seq.serving.dynamic_batcher`). Errors are JSON
``{"error": "..."}``: 413 over a size limit (texts, characters, body, hypotheses, reply), 422 for bad input, 503
when too many requests wait or the service is stopping, 500 (a generic message; the log has the details) for
anything unexpected, 401 without the token and 429 over the rate limit when those are on
(:mod:`seq2seq.serving.access`; ``/health`` stays open). SIGTERM or Ctrl-C stop the service after the requests in
flight are answered.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys

from seq2seq.command_line import add_decoding_arguments, add_preservation_arguments, check_decoding_arguments
from seq2seq.command_line import load_glossary_argument
from seq2seq.serving.app import create_app, dtype_name  # raises ImportError naming the serve extra
from seq2seq.config import MAX_BEAM_SIZE
from seq2seq.serving.schema import Limits

logger = logging.getLogger("seq2seq.serve")
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m seq2seq.serve", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="model directory (config.yaml, tokenizers, model.safetensors)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    parser.add_argument("--port", type=int, default=8000)
    add_decoding_arguments(parser, batch_size=False, beam_size=True, backend=True)  # --beam-size: a request's default
    parser.add_argument("--batch-wait-ms", type=float, default=5.0, help="how long a request waits for others to join its batch")
    parser.add_argument("--no-batching", action="store_true", help="decode each request on its own")
    parser.add_argument("--max-pending", type=int, default=256, help="requests waiting at once; more get 503")
    defaults = Limits()
    parser.add_argument("--max-chars", type=int, default=defaults.max_chars, help="characters per text")
    parser.add_argument("--max-texts", type=int, default=defaults.max_texts, help="texts per request")
    parser.add_argument("--max-body-bytes", type=int, default=defaults.max_body_bytes, help="request body size")
    parser.add_argument("--max-beam-size", type=int, default=defaults.max_beam_size,
                        help=f"largest beam a request may ask for (at most {MAX_BEAM_SIZE})")
    parser.add_argument("--max-hypotheses", type=int, default=defaults.max_hypotheses,
                        help="hypotheses in one reply (texts x nbest)")
    parser.add_argument("--max-reply-bytes", type=int, default=defaults.max_reply_bytes,
                        help="reply size; a request whose worst-case reply is larger gets 413 before decoding")
    parser.add_argument("--token-file", metavar="FILE",
                        help="require 'Authorization: Bearer TOKEN' (the token in FILE; or set $SEQ2SEQ_SERVE_TOKEN) "
                             "on every request but /health")
    parser.add_argument("--rate-limit", type=int, metavar="N",
                        help="requests per minute per client address (a burst of N, then N/60 a second); more get "
                             "429 (default: no limit); /health is not counted")
    parser.add_argument("--max-glossary-terms", type=int, default=defaults.max_glossary_terms,
                        help="glossary and do-not-translate terms in one request")
    add_preservation_arguments(parser, preserve=False)
    args = parser.parse_args(argv)
    check_decoding_arguments(parser, args)
    from seq2seq.serving.access import read_token

    try:
        token = read_token(args.token_file)
    except ValueError as err:
        parser.error(str(err))
    if args.rate_limit is not None and args.rate_limit < 1:
        parser.error(f"--rate-limit must be >= 1 request per minute, got {args.rate_limit}")
    for name in ("port", "max_pending"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    limits = Limits(args.max_chars, args.max_texts, args.max_body_bytes, args.max_beam_size, args.max_hypotheses,
                    args.max_reply_bytes, args.max_glossary_terms)
    try:
        limits.check()
    except ValueError as err:
        parser.error(str(err))
    if args.batch_wait_ms < 0:
        parser.error(f"--batch-wait-ms must be >= 0, got {args.batch_wait_ms}")
    if args.beam_size is not None and not 1 <= args.beam_size <= args.max_beam_size:
        parser.error(f"--beam-size must be between 1 and --max-beam-size {args.max_beam_size}, got {args.beam_size}")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    if args.host not in LOOPBACK and (token is None or args.rate_limit is None):
        logger.warning("binding %s: the service is reachable from other machines%s%s", args.host,
                       "" if token is not None else "; anyone may use it (set $SEQ2SEQ_SERVE_TOKEN or --token-file)",
                       "" if args.rate_limit is not None else "; no --rate-limit per client")
    import uvicorn

    from seq2seq.translator import Translator
    from seq2seq.checkpoint import CheckpointError

    try:
        translator = Translator.load(args.model, device=args.device, dtype=args.dtype, threads=args.threads,
                                     backend=args.backend)
        translator.glossary = load_glossary_argument(args)
    except (CheckpointError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.beam_size is not None:
        translator.cfg.decode.beam_size = args.beam_size
    if translator.calibration is None:
        logger.warning("%s has no confidence.json: replies carry uncalibrated confidences; calibrate once with "
                       "`python -m seq2seq.calibrate --model %s`", args.model, args.model)
    app = create_app(translator, args.model, limits, args.batch_wait_ms, not args.no_batching, args.max_pending,
                     token=token, rate_limit=args.rate_limit)
    logger.info("serving %s on http://%s:%d/ (device %s, dtype %s, batching %s, token %s, rate limit %s)", args.model,
                args.host, args.port, translator.device, dtype_name(translator),
                "off" if args.no_batching else f"{args.batch_wait_ms} ms", "required" if token else "off",
                f"{args.rate_limit}/min per client" if args.rate_limit else "off")
    # uvicorn shuts down gracefully on SIGTERM / Ctrl-C, then raises the signal again under the handlers it found:
    # a no-op for SIGTERM makes a finished shutdown exit 0; Ctrl-C ends as KeyboardInterrupt (exit 130).
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="info", timeout_graceful_shutdown=30)
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
