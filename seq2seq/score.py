"""Score given translations with a model (forced decoding): one line out per sentence pair.

    python -m seq2seq.score --model runs/multi30k_en_de --src test.en --tgt test.de          # score per line
    python -m seq2seq.score --model runs/multi30k_en_de --src test.en --tgt test.de --json   # all the numbers
    python -m seq2seq.score --model A --model B --src test.en --tgt test.de                  # an ensemble

The score is the log-probability of the target (its pieces and EOS) divided by the GNMT length penalty of the
model's ``decode.length_penalty``: the number beam search ranks hypotheses by, so a beam's own output scores
what the beam reported. ``--json`` adds the sum (``log_prob``), each piece's log-probability and the pieces.
Files may be gzipped; they must have the same number of lines.
"""

from __future__ import annotations

import argparse
import json
import sys

from seq2seq.config import MAX_DECODE_BATCH_SIZE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m seq2seq.score", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True,
                        help="model directory; give it several times for an ensemble")
    parser.add_argument("--src", required=True, help="source sentences, one per line")
    parser.add_argument("--tgt", required=True, help="their translations to score, one per line")
    parser.add_argument("--json", action="store_true", help="one JSON object per pair with every figure")
    parser.add_argument("--batch-size", type=int, default=None, help="sentence pairs per batch")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--dtype", choices=["auto", "fp32", "tf32", "bf16", "fp16"], default=None,
                        help="compute dtype (default: the model's decode.dtype)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's, all cores)")
    args = parser.parse_args(argv)
    if args.batch_size is not None and not 1 <= args.batch_size <= MAX_DECODE_BATCH_SIZE:
        parser.error(f"--batch-size must be >= 1 and <= {MAX_DECODE_BATCH_SIZE}, got {args.batch_size}")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")

    from seq2seq.api import Translator
    from seq2seq.checkpoint import CheckpointError
    from seq2seq.lines import read_lines

    try:
        sources, targets = read_lines(args.src), read_lines(args.tgt)
        if len(sources) != len(targets):
            raise ValueError(f"{args.src} has {len(sources)} lines but {args.tgt} has {len(targets)}: "
                             "they must pair up line by line")
        translator = Translator.load(args.model, device=args.device, dtype=args.dtype, threads=args.threads)
    except (OSError, CheckpointError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    results = translator.score(sources, targets, batch_size=args.batch_size) if sources else []
    out = sys.stdout
    for result in results:
        if args.json:
            out.write(json.dumps({
                "score": round(result.score, 6), "log_prob": round(result.log_prob, 6),
                "token_log_probs": [round(v, 6) for v in result.token_log_probs], "pieces": result.pieces,
            }, ensure_ascii=False) + "\n")
        else:
            out.write(f"{result.score:.6f}\n")
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
