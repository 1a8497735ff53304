"""Translate text: a thin command line over :class:`seq2seq.api.Translator`.

    python -m seq2seq.translate "a man is riding a bike"          # one line out per argument
    python -m seq2seq.translate < input.en > output.de            # one line out per line in (progress on stderr)
    python -m seq2seq.translate                                   # interactive: each line is answered at once
    python -m seq2seq.translate --nbest 3 --beam-size 5 "a dog"   # score<TAB>text per hypothesis
    python -m seq2seq.translate --model A --model B "a dog"       # an ensemble of two models
    python -m seq2seq.translate --prefix "Ein Hund" "a dog runs"  # the translation starts with the prefix
    python -m seq2seq.translate --constraints Hund "a dog runs"   # the translation contains "Hund"
    python -m seq2seq.translate --sampling --top-p 0.9 --nbest 5 --seed 1 "a dog"   # 5 samples

Lines on stdin are translated as they arrive: a batch is whatever input is already there (up to 4 batches of
``decode.batch_size``), and each output line is flushed, so a program can write one line and wait for its answer.
Input on stdin must be UTF-8 (a leading byte-order mark is dropped; LF, CRLF and CR end lines); undecodable
bytes are replaced with U+FFFD (and one warning is printed), so every input line still gets exactly one output
line. Output is UTF-8 with LF line ends.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Iterable

from seq2seq.config import MAX_BEAM_SIZE, MAX_DECODE_BATCH_SIZE

DEFAULT_RUNS_DIR = Path("runs")


def latest_model_dir(runs_dir: Path = DEFAULT_RUNS_DIR) -> Path | None:
    """The most recently written model directory under ``runs_dir`` (one holding model.safetensors)."""
    candidates = [p.parent for p in runs_dir.glob("*/model.safetensors")] if runs_dir.is_dir() else []
    return max(candidates, key=lambda p: (p / "model.safetensors").stat().st_mtime, default=None)


def format_output(entry, args: argparse.Namespace, alignments: list[dict] | None = None) -> list[str]:
    """Output lines for one input: the text, or ``score<TAB>text`` per n-best hypothesis, or JSON (with each
    hypothesis's ``alignment`` when ``alignments`` are given)."""
    hypotheses = entry if isinstance(entry, list) else [entry]
    if args.json:
        objects = [{"text": h.text, "score": round(h.score, 4)} for h in hypotheses]
        for obj, alignment in zip(objects, alignments or []):
            obj["alignment"] = alignment
        return [json.dumps({"translations": objects}, ensure_ascii=False)]
    if args.nbest > 1:
        return [f"{h.score:.4f}\t{h.text}" for h in hypotheses]
    return [hypotheses[0].text]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m seq2seq.translate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("text", nargs="*", help="sentences to translate (none: read stdin line by line)")
    parser.add_argument("--model", action="append", help="model directory or hf:ORG/NAME[@REVISION] (default: the most recently trained under "
                        "runs/); give it several times for an ensemble (models sharing their tokenizers)")
    parser.add_argument("--beam-size", type=int, default=None, help="beam size (1 = greedy; default: the model's config)")
    parser.add_argument("--nbest", type=int, default=1, help="print this many hypotheses per input: score<TAB>text")
    parser.add_argument("--batch-size", type=int, default=None, help="sentences per batch")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--quantize", choices=["none", "int8"], default="none", help="dynamic int8 quantization (CPU)")
    parser.add_argument("--dtype", choices=["auto", "fp32", "tf32", "bf16", "fp16"], default=None,
                        help="compute dtype (default: the model's decode.dtype; auto = the faster on this machine, measured once and cached)")
    parser.add_argument("--json", action="store_true", help="one JSON object per input line")
    parser.add_argument("--prefix", help="target text every translation must start with (e.g. for post-editing)")
    parser.add_argument("--constraints", action="append", metavar="WORDS", default=[],
                        help="a word or phrase every translation must contain (repeat the flag for more)")
    sampling = parser.add_argument_group("sampling (instead of search; --nbest samples per input)")
    sampling.add_argument("--sampling", action="store_true", help="draw translations at random from the model")
    sampling.add_argument("--temperature", type=float, default=1.0, help="< 1 sharper, > 1 flatter (default 1)")
    sampling.add_argument("--top-k", type=int, default=0, help="sample among the k most probable pieces (0 = all)")
    sampling.add_argument("--top-p", type=float, default=1.0, help="nucleus: the fewest pieces reaching p (1 = all)")
    sampling.add_argument("--seed", type=int, default=0, help="random seed (same seed, same samples)")
    parser.add_argument("--alignments", action="store_true",
                        help="with --json: hard alignments (per target piece, the most attended source piece and word)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's, all cores)")
    parser.add_argument("--backend", choices=["torch", "onnx"], default="torch",
                        help="onnx: run MODEL/onnx/ (written by python -m seq2seq.onnx_export) in onnxruntime, CPU fp32")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bar on stderr (shown when stdin is a file: `< input.en`)")
    parser.add_argument("--plot-attention", metavar="FILE.png", help="save attention heatmaps of the inputs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="warning: %(message)s")

    if args.beam_size is not None and not 1 <= args.beam_size <= MAX_BEAM_SIZE:
        parser.error(f"--beam-size must be >= 1 and <= {MAX_BEAM_SIZE}, got {args.beam_size}")
    if args.nbest < 1 or (not args.sampling and args.beam_size is not None and args.nbest > args.beam_size):
        parser.error(f"--nbest must be between 1 and the beam size, got {args.nbest}")
    if args.sampling and args.constraints:
        parser.error("--constraints work with beam search, not with --sampling")
    if args.batch_size is not None and not 1 <= args.batch_size <= MAX_DECODE_BATCH_SIZE:
        parser.error(f"--batch-size must be >= 1 and <= {MAX_DECODE_BATCH_SIZE}, got {args.batch_size}")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    if args.alignments and not args.json:
        parser.error("--alignments adds alignments to the JSON output: add --json")
    if args.plot_attention:
        from seq2seq.plots import cannot_write

        problem = cannot_write(args.plot_attention)
        if problem:
            print(f"error: cannot write --plot-attention {args.plot_attention}: {problem}", file=sys.stderr)
            return 2
    model_dirs = [Path(m) for m in args.model] if args.model else [latest_model_dir()]
    if model_dirs[0] is None:
        print("error: no trained model found under runs/. Train one with\n"
              "  scripts/train_translator.sh --data ../shared/data/multi30k --max-minutes 20\n"
              "or pass --model DIR.", file=sys.stderr)
        return 2

    from seq2seq.api import Translator
    from seq2seq.checkpoint import CheckpointError
    from seq2seq.decoding.sampling import Sampling

    try:
        translator = Translator.load(model_dirs, device=args.device, quantize=args.quantize, dtype=args.dtype,
                                     threads=args.threads, backend=args.backend)
        sampling = Sampling(args.temperature, args.top_k, args.top_p, args.seed) if args.sampling else None
        if sampling is not None:
            sampling.sampler()  # checks the settings: one clear error before any input is read
    except (CheckpointError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    beam_size = args.beam_size or translator.cfg.decode.beam_size
    if args.nbest > beam_size and not args.sampling:
        parser.error(f"--nbest {args.nbest} is larger than the beam size {beam_size}")
    rich = args.json or args.nbest > 1 or args.plot_attention

    from seq2seq.lines import count_lines, line_batches

    progress_total = None
    if args.text:
        batches: Iterable[list[str]] = [args.text]
    else:
        batches = line_batches(sys.stdin.buffer, translator.cfg.decode.batch_size * 4)
        if not args.no_progress:
            progress_total = count_lines(sys.stdin.buffer)  # None unless stdin is a file
    progress = None
    if progress_total is not None:
        from tqdm import tqdm

        progress = tqdm(total=progress_total, unit="line", file=sys.stderr, dynamic_ncols=True, leave=True)
    attention = bool(args.plot_attention or args.alignments)

    attention_plots = []
    out = sys.stdout
    if hasattr(out, "reconfigure"):
        out.reconfigure(encoding="utf-8")  # whatever the locale says, like the input
    for chunk in batches:
        results = translator.translate(chunk, beam_size=beam_size, nbest=args.nbest, batch_size=args.batch_size,
                                       return_scores=bool(rich), return_attention=attention,
                                       prefix=args.prefix, constraints=args.constraints or None, sampling=sampling)
        for source, entry in zip(chunk, results):
            if rich:
                alignments = None
                if args.alignments:
                    from seq2seq.decoding.alignment import hard_alignment

                    alignments = [hard_alignment(h, source, translator.src_tokenizer)
                                  for h in (entry if isinstance(entry, list) else [entry])]
                out.write("".join(line + "\n" for line in format_output(entry, args, alignments)))
                if args.plot_attention:
                    best = entry[0] if isinstance(entry, list) else entry
                    if best.attention is not None:
                        attention_plots.append(best)
            else:
                out.write(entry.replace("\n", " ") + "\n")
        out.flush()
        if progress is not None:
            progress.update(len(chunk))
    if progress is not None:
        progress.close()

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
