"""Translate text: a thin command line over :class:`seq2seq.api.Translator`.

    python -m seq2seq.translate "a man is riding a bike"          # one line out per argument
    python -m seq2seq.translate < input.en > output.de            # streams stdin, one line out per line in
    python -m seq2seq.translate --nbest 3 --beam-size 5 "a dog"   # score<TAB>text per hypothesis

Input on stdin must be UTF-8 (a leading byte-order mark is dropped; LF, CRLF and CR end lines); undecodable
bytes are replaced with U+FFFD (and one warning is printed), so every input line still gets exactly one output
line. Output is UTF-8 with LF line ends.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import logging
import os
import sys
from pathlib import Path
from typing import Iterable, Iterator

from seq2seq.config import MAX_BEAM_SIZE, MAX_DECODE_BATCH_SIZE

DEFAULT_RUNS_DIR = Path("runs")


def latest_model_dir(runs_dir: Path = DEFAULT_RUNS_DIR) -> Path | None:
    """The most recently written model directory under ``runs_dir`` (one holding model.safetensors)."""
    candidates = [p.parent for p in runs_dir.glob("*/model.safetensors")] if runs_dir.is_dir() else []
    return max(candidates, key=lambda p: (p / "model.safetensors").stat().st_mtime, default=None)


def stdin_lines(buffer) -> Iterator[str]:
    """Lines of a binary stream read as UTF-8, without line ends; undecodable bytes become U+FFFD (one warning)."""
    warned = False
    text = io.TextIOWrapper(buffer, encoding="utf-8-sig", errors="surrogateescape", newline=None)
    for number, line in enumerate(text, start=1):
        line = line.rstrip("\n")
        try:
            line.encode("utf-8")
        except UnicodeEncodeError:  # escaped undecodable bytes: decode those bytes again, replacing them
            line = line.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            if not warned:
                logging.warning("stdin line %d is not valid UTF-8; undecodable bytes were replaced with U+FFFD "
                                "(warned once)", number)
                warned = True
        yield line


def chunks(lines: Iterable[str], size: int) -> Iterator[list[str]]:
    iterator = iter(lines)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def format_output(entry, args: argparse.Namespace) -> list[str]:
    """Output lines for one input: the text, or ``score<TAB>text`` per n-best hypothesis, or JSON."""
    hypotheses = entry if isinstance(entry, list) else [entry]
    if args.json:
        return [json.dumps({"translations": [{"text": h.text, "score": round(h.score, 4)} for h in hypotheses]},
                           ensure_ascii=False)]
    if args.nbest > 1:
        return [f"{h.score:.4f}\t{h.text}" for h in hypotheses]
    return [hypotheses[0].text]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m seq2seq.translate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("text", nargs="*", help="sentences to translate (none: read stdin line by line)")
    parser.add_argument("--model", help="model directory (default: the most recently trained under runs/)")
    parser.add_argument("--beam-size", type=int, default=None, help="beam size (1 = greedy; default: the model's config)")
    parser.add_argument("--nbest", type=int, default=1, help="print this many hypotheses per input: score<TAB>text")
    parser.add_argument("--batch-size", type=int, default=None, help="sentences per batch")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--quantize", choices=["none", "int8"], default="none", help="dynamic int8 quantization (CPU)")
    parser.add_argument("--dtype", choices=["auto", "fp32", "tf32", "bf16", "fp16"], default=None,
                        help="compute dtype (default: the model's decode.dtype; auto = the faster on this machine, measured once and cached)")
    parser.add_argument("--json", action="store_true", help="one JSON object per input line")
    parser.add_argument("--plot-attention", metavar="FILE.png", help="save attention heatmaps of the inputs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="warning: %(message)s")

    if args.beam_size is not None and not 1 <= args.beam_size <= MAX_BEAM_SIZE:
        parser.error(f"--beam-size must be >= 1 and <= {MAX_BEAM_SIZE}, got {args.beam_size}")
    if args.nbest < 1 or (args.beam_size is not None and args.nbest > args.beam_size):
        parser.error(f"--nbest must be between 1 and the beam size, got {args.nbest}")
    if args.batch_size is not None and not 1 <= args.batch_size <= MAX_DECODE_BATCH_SIZE:
        parser.error(f"--batch-size must be >= 1 and <= {MAX_DECODE_BATCH_SIZE}, got {args.batch_size}")
    if args.plot_attention:
        from seq2seq.plots import cannot_write

        problem = cannot_write(args.plot_attention)
        if problem:
            print(f"error: cannot write --plot-attention {args.plot_attention}: {problem}", file=sys.stderr)
            return 2
    model_dir = Path(args.model) if args.model else latest_model_dir()
    if model_dir is None:
        print("error: no trained model found under runs/. Train one with\n"
              "  scripts/train_translator.sh --data ../shared/data/multi30k --max-minutes 20\n"
              "or pass --model DIR.", file=sys.stderr)
        return 2

    from seq2seq.api import Translator
    from seq2seq.checkpoint import CheckpointError

    try:
        translator = Translator.load(model_dir, device=args.device, quantize=args.quantize, dtype=args.dtype)
    except (CheckpointError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    beam_size = args.beam_size or translator.cfg.decode.beam_size
    if args.nbest > beam_size:
        parser.error(f"--nbest {args.nbest} is larger than the beam size {beam_size}")
    rich = args.json or args.nbest > 1 or args.plot_attention

    if args.text:
        inputs: Iterable[str] = args.text
        chunk_size = len(args.text)
    else:
        inputs = stdin_lines(sys.stdin.buffer)
        chunk_size = translator.cfg.decode.batch_size * 4

    attention_plots = []
    out = sys.stdout
    if hasattr(out, "reconfigure"):
        out.reconfigure(encoding="utf-8")  # whatever the locale says, like the input
    for chunk in chunks(inputs, chunk_size):
        results = translator.translate(chunk, beam_size=beam_size, nbest=args.nbest, batch_size=args.batch_size,
                                       return_scores=bool(rich), return_attention=bool(args.plot_attention))
        for entry in results:
            if rich:
                out.write("".join(line + "\n" for line in format_output(entry, args)))
                if args.plot_attention:
                    best = entry[0] if isinstance(entry, list) else entry
                    if best.attention is not None:
                        attention_plots.append(best)
            else:
                out.write(entry.replace("\n", " ") + "\n")
        out.flush()

    if args.plot_attention and attention_plots:
        from seq2seq.plots import plot_attention

        plot_attention([t.attention for t in attention_plots], [t.src_pieces for t in attention_plots],
                       [t.tgt_pieces for t in attention_plots], args.plot_attention)
        print(f"attention heatmap written to {args.plot_attention}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    try:
        status = main()
        sys.stdout.flush()
    except BrokenPipeError:  # the reader went away (`... | head`): stop quietly, like other filters
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        status = 1
    except KeyboardInterrupt:
        status = 130
    sys.exit(status)
