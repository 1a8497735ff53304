"""Scoring with sacreBLEU (BLEU and chrF with their signatures) on detokenized output, and beside it lowercased,
Moses-tokenized BLEU (the legacy metric of older papers, with its own signature; seq2seq/metrics.py).

    python -m seq2seq.evaluate --model runs/multi30k_en_de --src test.en --ref test.de [--beam-size 5]
    python -m seq2seq.evaluate --hyp output.de --ref test.de
    python -m seq2seq.evaluate --model A --model B --src test.en --ref test.de   # an ensemble
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from seq2seq.command_line import add_decoding_arguments, add_preservation_arguments, check_decoding_arguments
from seq2seq.command_line import load_glossary_argument
from seq2seq.lines import read_lines
from seq2seq.metrics import bleu_and_chrf, translate_and_score


def _language_of(path: str) -> str | None:
    """The language code a file name ends in (``test.de``, ``test.de.gz`` -> ``de``), or None."""
    parts = Path(path).name.split(".")
    if parts[-1] == "gz":
        parts = parts[:-1]
    code = parts[-1] if len(parts) > 1 else ""
    return code.lower() if len(code) == 2 and code.isalpha() else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m seq2seq.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", help="model directory (config.yaml, tokenizers, "
                        "model.safetensors); give it several times to evaluate an ensemble")
    parser.add_argument("--src", help="source file to translate (one sentence per line)")
    parser.add_argument("--hyp", help="score this existing output instead of translating")
    parser.add_argument("--ref", required=True, help="reference translations, one per line")
    add_decoding_arguments(parser, batch_size=True, beam_size=True, quantize=True)
    add_preservation_arguments(parser)
    parser.add_argument("--lang", help="target language of the Moses tokenizer for the lowercased, Moses-tokenized "
                        "BLEU (default: the model's data.tgt_lang; with --hyp, the --ref file's extension, e.g. .de)")
    parser.add_argument("--out", help="write the translations here")
    parser.add_argument("--json", action="store_true", help="print the scores as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr while translating")
    parser.add_argument("--no-confidence", action="store_true", help="skip the confidence (its pass is timed with "
                        "the decoding; without it, how well the confidence ranks sentences is not reported)")
    args = parser.parse_args(argv)
    check_decoding_arguments(parser, args)

    try:
        references = read_lines(args.ref)
        if not references:
            raise ValueError(f"--ref {args.ref} is empty: give one reference translation per line")
        if args.hyp:
            if args.src or args.model:
                parser.error("use either --hyp, or --model with --src")
            hypotheses = read_lines(args.hyp)
            if not hypotheses:
                raise ValueError(f"--hyp {args.hyp} is empty: give one translation per line of --ref {args.ref}")
            if len(hypotheses) != len(references):
                raise ValueError(f"{args.hyp} has {len(hypotheses)} lines but {args.ref} has {len(references)}")
            result = bleu_and_chrf(hypotheses, references, args.lang or _language_of(args.ref))
        else:
            if not (args.model and args.src):
                parser.error("give --model DIR and --src FILE to translate, or --hyp FILE to score existing output")
            from seq2seq.translator import Translator

            sources = read_lines(args.src)
            if not sources:
                raise ValueError(f"--src {args.src} is empty: give one source sentence per line of --ref {args.ref}")
            if len(sources) != len(references):
                raise ValueError(f"{args.src} has {len(sources)} lines but {args.ref} has {len(references)}")
            translator = Translator.load(args.model, device=args.device, quantize=args.quantize, dtype=args.dtype,
                                         threads=args.threads)
            translator.glossary = load_glossary_argument(args)
            beam_size = args.beam_size or translator.cfg.decode.beam_size
            hypotheses, result = translate_and_score(translator, sources, references, beam_size, args.batch_size,
                                                     show_progress=not args.no_progress,
                                                     legacy_lang=args.lang or translator.cfg.data.tgt_lang,
                                                     confidence=not args.no_confidence, preserve=args.preserve)
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
        if "bleu_lc_moses" in result:
            print(f"lowercased, Moses-tokenized BLEU = {result['bleu_lc_moses']:.2f}  (the legacy metric of older "
                  "papers; not comparable with the sacreBLEU score above)")
            print(f"  {result['bleu_lc_moses_detail']}")
            print(f"  lowercased Moses-tokenized BLEU signature: {result['bleu_lc_moses_signature']}")
        else:
            print("  (no lowercased, Moses-tokenized BLEU: give the target language with --lang)")
        if "sentences_per_second" in result:
            print(f"  decoding: beam {result['beam_size']}, {result['decode_seconds']} s, "
                  f"{result['sentences_per_second']} sentences/s")
        if result.get("confidence_spearman") is not None:
            how = "calibrated" if result["confidence_calibrated"] else \
                "uncalibrated: run python -m seq2seq.calibrate --model DIR"
            print(f"confidence: Spearman {result['confidence_spearman']:.3f} with sentence chrF, mean "
                  f"{result['confidence_mean']:.3f}, {100 * result['low_confidence_share']:.1f}% flagged low ({how})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
