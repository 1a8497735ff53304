"""The largest replies the service's limits allow, measured: reply size, decode time and peak memory per request.

    python scripts/reply_bound.py --model runs/multi30k_en_de     # any model directory; default limits

The model's EOS is banned (its logit set to -1e4), so every hypothesis runs to the longest the search allows, as an
untrained model's do: the worst case for a reply. For each kind of request (text only, scores, attention, n-best
with attention, the beam trace) the largest one that passes the limits (``Limits()`` defaults, or the flags) is
found with the service's own checks, then sent through the real app (FastAPI's test client), each in a fresh
process so that its peak memory (``ru_maxrss``, over what loading the model took) is its own.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

SENTENCE = "A man in a blue shirt is standing on a ladder cleaning windows while a woman watches. "


def body_for(kind: str, size: int, limits) -> dict:
    """The request of ``kind`` at ``size`` (texts, or n-best, or characters for the beam trace)."""
    long_text = (SENTENCE * 40)[: limits.max_chars]
    beam = limits.max_beam_size
    if kind == "text":
        return {"text": [long_text] * size, "beam_size": beam}
    if kind == "scores":
        return {"text": [long_text] * size, "beam_size": beam, "return_scores": True}
    if kind == "attention":
        return {"text": [long_text] * size, "beam_size": beam, "return_scores": True, "return_attention": True}
    if kind == "nbest_attention":
        return {"text": long_text, "beam_size": beam, "nbest": size, "return_scores": True, "return_attention": True}
    if kind == "beam_trace":
        return {"text": long_text[:size], "beam_size": beam, "return_scores": True, "return_attention": True,
                "return_beam": True}
    raise ValueError(kind)


def largest_allowed(kind: str, translator, limits) -> int:
    """The largest size whose request passes check_limits and check_reply_size (a bisection)."""
    from seq2seq.serving.schema import LimitExceeded, TranslateRequest, check_limits, check_reply_size

    def allowed(size: int) -> bool:
        request = TranslateRequest(**body_for(kind, size, limits))
        try:
            beam = check_limits(request, limits, translator.cfg.decode.beam_size)
            check_reply_size(request, beam, translator, limits)
        except LimitExceeded:
            return False
        return True

    top = limits.max_chars if kind == "beam_trace" else (limits.max_beam_size if kind == "nbest_attention"
                                                         else limits.max_texts)
    low, high = 0, top
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if allowed(mid) else (low, mid - 1)
    return low


def load(model_dir: str):
    import torch

    from seq2seq.translator import Translator
    from seq2seq.tokenizer import EOS_ID

    torch.set_num_threads(1)
    translator = Translator.load(model_dir, device="cpu", dtype="fp32")
    with torch.no_grad():
        translator.model.decoder.output_layer.bias[EOS_ID] = -1e4
    return translator


def measure(model_dir: str, kind: str, limits) -> dict:
    from fastapi.testclient import TestClient

    from seq2seq.serving.app import create_app

    translator = load(model_dir)
    size = largest_allowed(kind, translator, limits)
    body = body_for(kind, size, limits)
    with TestClient(create_app(translator, None, limits, batch_wait_ms=0)) as client:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start = time.perf_counter()
        response = client.post("/translate", json=body)
        seconds = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert response.status_code == 200, response.text[:500]
    return {"kind": kind, "size": size, "request_bytes": len(json.dumps(body)), "reply_bytes": len(response.content),
            "limit_bytes": limits.max_reply_bytes, "seconds": round(seconds, 2),
            "peak_extra_mb": round((after - before) / 1024, 1), "peak_mb": round(after / 1024, 1)}


def main(argv: list[str] | None = None) -> int:
    from seq2seq.serving.schema import Limits

    defaults = Limits()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--kind", choices=["text", "scores", "attention", "nbest_attention", "beam_trace"], nargs="+",
                        default=["text", "scores", "attention", "nbest_attention", "beam_trace"])
    parser.add_argument("--max-reply-bytes", type=int, default=defaults.max_reply_bytes)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # a child: one kind, JSON out
    args = parser.parse_args(argv)
    limits = Limits(max_reply_bytes=args.max_reply_bytes)
    if args.one:
        print(json.dumps(measure(args.model, args.kind[0], limits)))
        return 0
    print("| request (largest allowed) | size | request bytes | reply bytes | limit | seconds | peak MB (+ request) |")
    print("|---|---|---|---|---|---|---|")
    for kind in args.kind:
        child = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--model", args.model, "--kind", kind,
                                "--max-reply-bytes", str(args.max_reply_bytes), "--one"],
                               capture_output=True, text=True, check=False)
        if child.returncode != 0:
            print(f"{kind}: failed\n{child.stderr[-2000:]}", file=sys.stderr)
            return 1
        r = json.loads(child.stdout.splitlines()[-1])
        print(f"| {r['kind']} | {r['size']} | {r['request_bytes']} | {r['reply_bytes']} | {r['limit_bytes']} | "
              f"{r['seconds']} | {r['peak_mb']} (+{r['peak_extra_mb']}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
