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

from seq2seq.command_line import add_decoding_arguments, check_decoding_arguments


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m seq2seq.score", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True,
                        help="model directory; give it several times for an ensemble")
    parser.add_argument("--src", required=True, help="source sentences, one per line")
    parser.add_argument("--tgt", required=True, help="their translations to score, one per line")
    parser.add_argument("--json", action="store_true", help="one JSON object per pair with every figure")
    add_decoding_arguments(parser, batch_size=True, beam_size=False)
    args = parser.parse_args(argv)
    check_decoding_arguments(parser, args)

    from seq2seq.translator import Translator
    from seq2seq.checkpoint import CheckpointError
    from seq2seq.lines import read_lines

    try:
        sources, targets = read_lines(args.src), read_lines(args.tgt)
        if len(sources) != len(targets):
            raise ValueError(f"{args.src} has {len(sources)} lines but {args.tgt} has {len(targets)}: "
                             "they must pair up line by line")
        translator = Translator.load(args.model, device=args.device, dtype=args.dtype, threads=args.threads)
        # ValueError before any scoring for a target over the length limit (Translator.max_target_pieces)
        results = translator.score(sources, targets, batch_size=args.batch_size) if sources else []
    except (OSError, CheckpointError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
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
