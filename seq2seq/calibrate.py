"""Calibrate a model's confidence on the validation split: ``confidence.json`` in the model directory.

    python -m seq2seq.calibrate --model runs/multi30k_en_de                       # the config's data.valid_split
    python -m seq2seq.calibrate --model runs/multi30k_en_de --src val.en --ref val.de
    python -m seq2seq.calibrate --model DIR --out /tmp/confidence.json            # write elsewhere

The model translates the split (beam search with its ``decode`` settings), each translation's sentence chrF
against its reference is the target, and a linear fit of the confidence features predicts it
(:mod:`seq2seq.calibration`; docs/confidence.md). Training runs this at its end; this command does it for models
trained before.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from seq2seq.calibration import CALIBRATION_FILE, Calibration, fit_calibration
from seq2seq.command_line import add_decoding_arguments, check_decoding_arguments
from seq2seq.decoding.confidence import FEATURE_NAMES
from seq2seq.metrics import sentence_chrf

logger = logging.getLogger("seq2seq.train")


def confidence_table(translator, sources: Sequence[str], references: Sequence[str], beam_size: int | None = None,
                     batch_size: int | None = None, progress=None) -> tuple[np.ndarray, np.ndarray, list]:
    """Translate ``sources``: (features (N, F) in :data:`FEATURE_NAMES` order, sentence chrF (N,), the best
    translations). Empty sources are left out (nothing to be sure of)."""
    if len(sources) != len(references):
        raise ValueError(f"{len(sources)} sources but {len(references)} references: they must pair up line by line")
    kept = [i for i, source in enumerate(sources) if source.strip()]
    results = translator.generate([sources[i] for i in kept], beam_size=beam_size, batch_size=batch_size,
                                  progress=progress)
    best = [entry[0] for entry in results]
    features = np.array([[t.confidence_features[name] for name in FEATURE_NAMES] for t in best], dtype=np.float64)
    chrf = np.array(sentence_chrf([t.text for t in best], [references[i] for i in kept]), dtype=np.float64)
    return features.reshape(len(best), len(FEATURE_NAMES)), chrf, best


def calibrate_translator(translator, sources: Sequence[str], references: Sequence[str], split: str,
                         beam_size: int | None = None, batch_size: int | None = None, progress=None) -> Calibration:
    """Fit the confidence of ``translator`` to sentence chrF on these sentences (named ``split`` in the file)."""
    features, chrf, _ = confidence_table(translator, sources, references, beam_size, batch_size, progress)
    return fit_calibration(features, chrf, FEATURE_NAMES, split)


def calibrate_after_training(cfg, out_dir: Path, device) -> Calibration | None:
    """Training's last step: calibrate the saved model on ``data.valid_split`` -> ``out_dir/confidence.json``."""
    from seq2seq.data import read_split
    from seq2seq.translator import Translator

    raw = read_split(cfg.data, cfg.data.valid_split)
    translator = Translator.load(out_dir, device=str(device))
    calibration = calibrate_translator(translator, list(raw["src"]), list(raw["tgt"]), cfg.data.valid_split)
    calibration.save(out_dir / CALIBRATION_FILE)
    logger.info("confidence calibrated on %s (%d sentences): Spearman %s with sentence chrF; %.1f%% flagged low "
                "(below %.2f) -> %s", calibration.split, calibration.sentences, calibration.spearman,
                100 * calibration.low_share, calibration.low_threshold, out_dir / CALIBRATION_FILE)
    return calibration


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m seq2seq.calibrate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="model directory (config.yaml, tokenizers, model.safetensors)")
    parser.add_argument("--src", help="source sentences, one per line (default: the config's data.valid_split)")
    parser.add_argument("--ref", help="their reference translations, one per line (with --src)")
    parser.add_argument("--split-name", help="what to call these sentences in confidence.json (default: the --src "
                        "file's name, or the split's)")
    parser.add_argument("--data", help="the corpus directory of the config's splits (default: its data.path)")
    parser.add_argument("--out", help=f"where to write the calibration (default: MODEL/{CALIBRATION_FILE})")
    add_decoding_arguments(parser, batch_size=True, beam_size=True)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    args = parser.parse_args(argv)
    check_decoding_arguments(parser, args)
    if bool(args.src) != bool(args.ref):
        parser.error("give --src and --ref together (or neither, for the config's validation split)")
    if args.model.startswith("hf:") and not args.out:
        parser.error(f"--model {args.model} is a Hub snapshot, not a directory to write into: add --out FILE")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from seq2seq.checkpoint import CheckpointError
    from seq2seq.data import read_split
    from seq2seq.lines import read_lines
    from seq2seq.translator import Translator

    try:
        translator = Translator.load(args.model, device=args.device, dtype=args.dtype, threads=args.threads)
        if args.src:
            for flag, path in (("--src", args.src), ("--ref", args.ref)):
                if not Path(path).is_file():
                    raise ValueError(f"{flag} {path}: file not found")
            sources, references = read_lines(args.src), read_lines(args.ref)
            split = args.split_name or Path(args.src).name
        else:
            data = translator.cfg.data
            if args.data:
                data.path = args.data
            split = args.split_name or data.valid_split
            try:
                raw = read_split(data, data.valid_split)
            except ValueError as err:
                raise ValueError(f"cannot read the validation split '{data.valid_split}' of {args.model}/config.yaml "
                                 f"({err}); pass --data DIR, or --src FILE --ref FILE") from None
            sources, references = list(raw["src"]), list(raw["tgt"])
        progress = None
        if not args.no_progress:
            from tqdm import tqdm

            progress = tqdm(total=len(sources), unit="sentence", file=sys.stderr, dynamic_ncols=True, leave=False)
        calibration = calibrate_translator(translator, sources, references, split, args.beam_size, args.batch_size,
                                           progress.update if progress is not None else None)
        if progress is not None:
            progress.close()
        out = Path(args.out) if args.out else Path(args.model) / CALIBRATION_FILE
        calibration.save(out)
    except (CheckpointError, OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"confidence calibrated on {split} ({calibration.sentences} sentences): Spearman {calibration.spearman} "
          f"with sentence chrF; {100 * calibration.low_share:.1f}% flagged low (below {calibration.low_threshold}); "
          f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
