"""Translate text: a thin command line over :class:`seq2seq.translator.Translator`.

    python -m seq2seq.translate "a man is riding a bike"          # one line out per argument
    python -m seq2seq.translate < input.en > output.de            # one line out per line in (progress on stderr)
    python -m seq2seq.translate                                   # interactive: each line is answered at once
    python -m seq2seq.translate --nbest 3 --beam-size 5 "a dog"   # score<TAB>text per hypothesis
    python -m seq2seq.translate --model A --model B "a dog"       # an ensemble of two models
    python -m seq2seq.translate --prefix "Ein Hund" "a dog runs"  # the translation starts with the prefix
    python -m seq2seq.translate --constraints Hund "a dog runs"   # the translation contains "Hund"
    python -m seq2seq.translate --sampling --top-p 0.9 --nbest 5 --seed 1 "a dog"   # 5 samples
    python -m seq2seq.translate --glossary terms.tsv "a dog runs" # glossary terms honoured or reported on stderr

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

from seq2seq.command_line import (
    add_decoding_arguments,
    add_preservation_arguments,
    check_decoding_arguments,
    check_nbest_for_model,
    load_glossary_argument,
)

DEFAULT_RUNS_DIR = Path("runs")


def latest_model_dir(runs_dir: Path = DEFAULT_RUNS_DIR) -> Path | None:
    """The most recently written model directory under ``runs_dir`` (one holding model.safetensors)."""
    candidates = [p.parent for p in runs_dir.glob("*/model.safetensors")] if runs_dir.is_dir() else []
    return max(candidates, key=lambda p: (p / "model.safetensors").stat().st_mtime, default=None)


def format_output(hypotheses: list, args: argparse.Namespace, alignments: list[dict] | None = None,
                  id_to_piece=None) -> list[str]:
    """Output lines for one input's n-best list of Translation: the text, or ``score<TAB>text`` per hypothesis,
    or JSON (with each hypothesis's ``alignment`` when ``alignments`` are given, and its confidence when
    ``id_to_piece`` names the target pieces)."""
    if args.json:
        objects = [{"text": h.text, "score": round(h.score, 4)} for h in hypotheses]
        for obj, h in zip(objects, hypotheses):
            if h.kept or h.missing:  # the input's protected spans and glossary terms: in the text, or not
                obj.update(kept=[s.as_json() for s in h.kept], missing=[s.as_json() for s in h.missing])
        for obj, alignment in zip(objects, alignments or []):
            obj["alignment"] = alignment
        if id_to_piece is not None:
            from seq2seq.sentence_confidence import confidence_json

            for obj, hypothesis in zip(objects, hypotheses):
                obj.update(confidence_json(hypothesis, id_to_piece))
        return [json.dumps({"translations": objects}, ensure_ascii=False)]
    if args.nbest > 1:
        return [f"{h.score:.4f}\t{h.text}" for h in hypotheses]
    return [hypotheses[0].text.replace("\n", " ")]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m seq2seq.translate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("text", nargs="*", help="sentences to translate (none: read stdin line by line)")
    parser.add_argument("--model", action="append", help="model directory or hf:ORG/NAME[@REVISION] (default: the most recently trained under "
                        "runs/); give it several times for an ensemble (models sharing their tokenizers)")
    add_decoding_arguments(parser, batch_size=True, beam_size=True, nbest=True, quantize=True, backend=True)
    parser.add_argument("--json", action="store_true", help="one JSON object per input line, each translation with "
                        "its confidence and piece probabilities (docs/confidence.md)")
    parser.add_argument("--prefix", help="target text every translation must start with (e.g. for post-editing)")
    parser.add_argument("--constraints", action="append", metavar="WORDS", default=[],
                        help="a word or phrase every translation must contain (repeat the flag for more)")
    sampling = parser.add_argument_group("sampling (instead of search; --nbest samples per input)")
    sampling.add_argument("--sampling", action="store_true", help="draw translations at random from the model")
    sampling.add_argument("--temperature", type=float, default=1.0, help="< 1 sharper, > 1 flatter (default 1)")
    sampling.add_argument("--top-k", type=int, default=0, help="sample among the k most probable pieces (0 = all)")
    sampling.add_argument("--top-p", type=float, default=1.0, help="nucleus: the fewest pieces reaching p (1 = all)")
    sampling.add_argument("--seed", type=int, default=0, help="random seed (same seed, same samples)")
    add_preservation_arguments(parser)
    parser.add_argument("--alignments", action="store_true",
                        help="with --json: hard alignments (per target piece, the most attended source piece and word)")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bar on stderr (shown when stdin is a file: `< input.en`)")
    parser.add_argument("--plot-attention", metavar="FILE.png", help="save attention heatmaps of the inputs")
    return parser


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[Path] | int:
    """The model directories to load, or exit status 2 after saying why not (a bad flag exits via parser.error)."""
    check_decoding_arguments(parser, args)
    if args.sampling and args.constraints:
        parser.error("--constraints work with beam search, not with --sampling")
    if any(not words.strip() for words in args.constraints):
        parser.error("--constraints: an empty word or phrase cannot be placed in a translation; drop it")
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
    if not args.model:  # say which: runs/ may hold several
        print(f"using the most recently trained model, {model_dirs[0]} (choose another with --model DIR)",
              file=sys.stderr)
    return model_dirs


def load_translator(args: argparse.Namespace, model_dirs: list[Path]):
    """(translator, sampling settings or None), or exit status 2 after printing the error."""
    from seq2seq.translator import Translator
    from seq2seq.checkpoint import CheckpointError

    try:
        translator = Translator.load(model_dirs, device=args.device, quantize=args.quantize, dtype=args.dtype,
                                     threads=args.threads, backend=args.backend)
        sampling = None
        if args.sampling:  # the sampler is torch's: imported only when sampling
            from seq2seq.decoding.sampling import Sampling

            sampling = Sampling(args.temperature, args.top_k, args.top_p, args.seed)
            sampling.sampler()  # checks the settings: one clear error before any input is read
        translator.check_constraints(args.constraints)
        translator.check_prefix(args.prefix)
        translator.glossary = load_glossary_argument(args)
    except (CheckpointError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return translator, sampling


def input_batches(args: argparse.Namespace, batch_size: int):
    """(batches of input lines, a progress bar or None): the arguments, or stdin as lines arrive."""
    from seq2seq.lines import count_lines, line_batches

    if args.text:
        return [args.text], None
    batches: Iterable[list[str]] = line_batches(sys.stdin.buffer, batch_size * 4)
    total = None if args.no_progress else count_lines(sys.stdin.buffer)  # None unless stdin is a file
    if total is None:
        return batches, None
    from tqdm import tqdm

    return batches, tqdm(total=total, unit="line", file=sys.stderr, dynamic_ncols=True, leave=True)


def output_lines(translator, source: str, hypotheses: list, args: argparse.Namespace) -> list[str]:
    """One input's lines on stdout (with its hard alignments under ``--alignments``)."""
    alignments = None
    if args.alignments:
        from seq2seq.decoding.alignment import hard_alignment

        alignments = [hard_alignment(h, source, translator.src_tokenizer) for h in hypotheses]
    return format_output(hypotheses, args, alignments, translator.tgt_tokenizer.id_to_piece)


def warn_missing_terms(source: str, best) -> None:
    """A warning on stderr for each glossary term the best translation of ``source`` does not hold."""
    for span in best.missing:
        if span.kind == "glossary":
            print(f"warning: glossary term {span.text!r} -> {span.target!r} is not in the translation of "
                  f"{source[:60]!r}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="warning: %(message)s")
    model_dirs = check_arguments(parser, args)
    if isinstance(model_dirs, int):
        return model_dirs
    loaded = load_translator(args, model_dirs)
    if isinstance(loaded, int):
        return loaded
    translator, sampling = loaded
    beam_size = args.beam_size or translator.cfg.decode.beam_size
    if not args.sampling:
        check_nbest_for_model(parser, args, beam_size)

    if args.json and translator.calibration is None:
        print(f"note: {model_dirs[0]} has no confidence.json, so confidences are uncalibrated (the geometric mean of "
              f"the piece probabilities); calibrate once with `python -m seq2seq.calibrate --model {model_dirs[0]}`",
              file=sys.stderr)
    batches, progress = input_batches(args, translator.cfg.decode.batch_size)
    attention_plots = []
    out = sys.stdout
    if hasattr(out, "reconfigure"):
        out.reconfigure(encoding="utf-8")  # whatever the locale says, like the input
    for chunk in batches:
        results = translator.generate(chunk, beam_size=beam_size, nbest=args.nbest, batch_size=args.batch_size,
                                      return_attention=bool(args.plot_attention or args.alignments),
                                      prefix=args.prefix, constraints=args.constraints or None, sampling=sampling,
                                      confidence=args.json, preserve=args.preserve)
        for source, hypotheses in zip(chunk, results):
            warn_missing_terms(source, hypotheses[0])
            out.write("".join(line + "\n" for line in output_lines(translator, source, hypotheses, args)))
            if args.plot_attention and hypotheses[0].attention is not None:
                attention_plots.append(hypotheses[0])
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
    # every line is written and flushed: end without the interpreter's teardown, which after a torch translation
    # took 0.4-0.7 s of a one-sentence run (scripts/cold_start.py); nothing is left to run at exit
    sys.stderr.flush()
    logging.shutdown()
    os._exit(status if isinstance(status, int) else 1)
