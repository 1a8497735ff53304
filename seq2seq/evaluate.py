"""Scoring with sacreBLEU (BLEU and chrF with their signatures) on detokenized output.

    python -m seq2seq.evaluate --model runs/multi30k_en_de --src test.en --ref test.de [--beam-size 5]
    python -m seq2seq.evaluate --hyp output.de --ref test.de
    python -m seq2seq.evaluate --model A --model B --src test.en --ref test.de   # an ensemble
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Sequence

from sacrebleu.metrics import BLEU, CHRF

from seq2seq.config import MAX_BEAM_SIZE, MAX_DECODE_BATCH_SIZE


def score(hypotheses: Sequence[str], references: Sequence[str]) -> dict:
    """Corpus BLEU and chrF of detokenized hypotheses against one reference each.

    Returns a dict with ``bleu``, ``chrf`` (floats), ``bleu_signature``, ``chrf_signature`` and ``sentences``.
    """
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references: they must pair up line by line")
    bleu, chrf = BLEU(), CHRF()
    bleu_score = bleu.corpus_score(list(hypotheses), [list(references)])
    chrf_score = chrf.corpus_score(list(hypotheses), [list(references)])
    return {
        "bleu": round(bleu_score.score, 2),
        "chrf": round(chrf_score.score, 2),
        "bleu_signature": str(bleu.get_signature()),
        "chrf_signature": str(chrf.get_signature()),
        "bleu_detail": str(bleu_score),
        "sentences": len(hypotheses),
    }


def read_lines(path: str | Path) -> list[str]:
    """Lines of a UTF-8 text file (``.gz`` allowed), without line endings."""
    import gzip

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"file not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8", newline=None) as handle:
            return [line.rstrip("\n").rstrip("\r") for line in handle]
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not valid UTF-8 ({err.reason} at byte {err.start})") from None


def translate_and_score(translator, sources: Sequence[str], references: Sequence[str], beam_size: int,
                        batch_size: int | None = None, show_progress: bool = False) -> tuple[list[str], dict]:
    """Translate ``sources`` and score against ``references``; adds decoding time and speed to the result.
    ``show_progress``: a progress bar on stderr while translating."""
    progress = None
    if show_progress:
        from tqdm import tqdm

        progress = tqdm(total=len(sources), unit="sentence", file=sys.stderr, dynamic_ncols=True, leave=False)
    start = time.perf_counter()
    try:
        hypotheses = translator.translate(list(sources), beam_size=beam_size, batch_size=batch_size,
                                          progress=progress.update if progress is not None else None)
    finally:
        if progress is not None:
            progress.close()
    seconds = time.perf_counter() - start
    result = score(hypotheses, references)
    result.update(
        beam_size=beam_size,
        decode_seconds=round(seconds, 2),
        sentences_per_second=round(len(sources) / max(seconds, 1e-9), 1),
    )
    return hypotheses, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m seq2seq.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", help="model directory (config.yaml, tokenizers, "
                        "model.safetensors); give it several times to evaluate an ensemble")
    parser.add_argument("--src", help="source file to translate (one sentence per line)")
    parser.add_argument("--hyp", help="score this existing output instead of translating")
    parser.add_argument("--ref", required=True, help="reference translations, one per line")
    parser.add_argument("--beam-size", type=int, default=None, help="beam size (1 = greedy; default: the model's config)")
    parser.add_argument("--batch-size", type=int, default=None, help="sentences per batch")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--quantize", choices=["none", "int8"], default="none",
                        help="dynamic int8 quantization of the linear layers (CPU inference)")
    parser.add_argument("--dtype", choices=["auto", "fp32", "tf32", "bf16", "fp16"], default=None,
                        help="compute dtype (default: the model's decode.dtype; auto = the faster on this machine, measured once and cached)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's, all cores)")
    parser.add_argument("--out", help="write the translations here")
    parser.add_argument("--json", action="store_true", help="print the scores as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr while translating")
    args = parser.parse_args(argv)
    if args.beam_size is not None and not 1 <= args.beam_size <= MAX_BEAM_SIZE:
        parser.error(f"--beam-size must be >= 1 and <= {MAX_BEAM_SIZE}, got {args.beam_size}")
    if args.batch_size is not None and not 1 <= args.batch_size <= MAX_DECODE_BATCH_SIZE:
        parser.error(f"--batch-size must be >= 1 and <= {MAX_DECODE_BATCH_SIZE}, got {args.batch_size}")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")

    try:
        references = read_lines(args.ref)
        if args.hyp:
            if args.src or args.model:
                parser.error("use either --hyp, or --model with --src")
            hypotheses = read_lines(args.hyp)
            if len(hypotheses) != len(references):
                raise ValueError(f"{args.hyp} has {len(hypotheses)} lines but {args.ref} has {len(references)}")
            result = score(hypotheses, references)
        else:
            if not (args.model and args.src):
                parser.error("give --model DIR and --src FILE to translate, or --hyp FILE to score existing output")
            from seq2seq.api import Translator

            sources = read_lines(args.src)
            if len(sources) != len(references):
                raise ValueError(f"{args.src} has {len(sources)} lines but {args.ref} has {len(references)}")
            translator = Translator.load(args.model, device=args.device, quantize=args.quantize, dtype=args.dtype,
                                         threads=args.threads)
            beam_size = args.beam_size or translator.cfg.decode.beam_size
            hypotheses, result = translate_and_score(translator, sources, references, beam_size, args.batch_size,
                                                     show_progress=not args.no_progress)
            if args.out:
                Path(args.out).write_text("".join(h + "\n" for h in hypotheses), encoding="utf-8")
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
    else:
        print(f"BLEU = {result['bleu']:.2f}  chrF = {result['chrf']:.2f}  ({result['sentences']} sentences)")
        print(f"  {result['bleu_detail']}")
        print(f"  BLEU signature: {result['bleu_signature']}")
        print(f"  chrF signature: {result['chrf_signature']}")
        if "sentences_per_second" in result:
            print(f"  decoding: beam {result['beam_size']}, {result['decode_seconds']} s, "
                  f"{result['sentences_per_second']} sentences/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
