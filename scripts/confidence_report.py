"""How good the confidence is, and what it costs: figures for docs/confidence.md (printed, never asserted).

    PYTHONPATH=$PWD python scripts/confidence_report.py --model runs/multi30k_en_de --data ../shared/data/multi30k

1. Ranking: Spearman of the confidence with sentence chrF on test_2016_flickr + test_2017_flickr (and each).
2. Out-of-domain detection: AUROC of the confidence between Multi30k test sources (in domain) and English
   sentences from another domain gathered here at run time: the first sentences of docstrings in the Python
   standard library's source files (parsed with ``ast``, nothing imported), kept when they are plain prose of 5-30
   words. Also per feature, to show which signals carry it.
3. Cost: decoding time with and without the confidence pass (greedy and beam 5, batch 64, test_2016_flickr), in
   the same process, batch by batch (the search, then the pass on its outputs), best of ``--repeats``.
4. Examples: a few sentences with their confidence.
5. The choice of fit: out-of-fold Spearman (5 folds of the validation split) of the ridge fit on every feature,
   on the glass-box features alone, and of the mean log-probability alone (no fit).

``--sections`` picks some of: ranking, ood, examples, speed, choice (default: all).
"""

from __future__ import annotations

import argparse
import ast
import re
import sysconfig
import time
from pathlib import Path

import numpy as np

from seq2seq.calibrate import confidence_table
from seq2seq.calibration import UNCALIBRATED_LOW_THRESHOLD, fit_calibration
from seq2seq.decoding.confidence import FEATURE_NAMES
from seq2seq.lines import read_lines
from seq2seq.rank_metrics import auroc, spearman
from seq2seq.sentence_confidence import add_confidence
from seq2seq.translator import Translator

EXAMPLES = ["A man is riding a bike.", "Two dogs play in the snow.", "hello world", "Hello, how are you?",
            "Zoë and Łukasz walk past the café in Kraków.", "A man in a 東京 shirt.", "Two dogs 🐕 run.",
            "Return the number of items in a container."]
PROSE = re.compile(r"^[A-Z][A-Za-z ,;'\-]*[a-z][.]$")


def docstring_sentences(limit: int, root: Path | None = None) -> list[str]:
    """``limit`` distinct first sentences of function and class docstrings in the standard library's ``.py`` files
    (outside its tests; installed packages left out), plain prose of 5 to 30 words, spread evenly over the
    sorted files (the same on every run of one Python)."""
    root = Path(root or sysconfig.get_paths()["stdlib"])
    found: dict[str, None] = {}
    for path in sorted(root.rglob("*.py")):
        if {"test", "tests", "idlelib", "site-packages", "dist-packages"} & set(path.parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError, ValueError):
            continue
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue
            doc = ast.get_docstring(node)
            if not doc:
                continue
            first = " ".join(doc.strip().split("\n\n")[0].split())
            first = first.split(". ")[0].rstrip(".") + "."
            if PROSE.match(first) and 5 <= len(first.split()) <= 30:
                found.setdefault(first, None)
    sentences = list(found)
    step = max(len(sentences) / max(limit, 1), 1.0)  # evenly spread over the library, not its first modules
    return [sentences[int(i * step)] for i in range(min(limit, len(sentences)))]


def speed(translator: Translator, sources: list[str], repeats: int) -> None:
    """Per batch of 64 sentences, the search and then the confidence's pass on its outputs, timed one after the
    other (so that the load of a shared machine falls on both alike); summed over the split, best of ``repeats``."""
    print(f"\n## Cost of the confidence (test_2016_flickr, batch 64, best of {repeats}; per batch: the search, then "
          "the confidence pass on its outputs)")
    ids, words = translator.encode_sources(sources), [max(len(s.split()), 1) for s in sources]
    for name, beam in (("greedy", 1), ("beam 5", 5)):
        best = None
        for _ in range(repeats):
            search = extra = 0.0
            for start in range(0, len(sources), 64):
                chunk = slice(start, start + 64)
                begin = time.perf_counter()
                entries = translator.generate(sources[chunk], beam_size=beam, batch_size=64, confidence=False)
                middle = time.perf_counter()
                add_confidence(entries, ids[chunk], sources[chunk], translator.models, translator.source_piece_stats,
                               translator.calibration, 64, translator.device, translator.autocast_dtype)
                search, extra = search + middle - begin, extra + time.perf_counter() - middle
            best = (search, extra) if best is None or search + extra < sum(best) else best
        search, extra = best
        print(f"{name}: search {search:.1f} s ({len(sources) / search:.1f} sentences/s), "
              f"confidence pass {extra:.1f} s: "
              f"{100 * extra / search:.0f}% more time ({len(sources) / (search + extra):.1f} sentences/s with it)")


def choice(translator: Translator, data: Path, src: str, tgt: str, split: str) -> None:
    sources, references = read_lines(data / f"{split}.{src}.gz"), read_lines(data / f"{split}.{tgt}.gz")
    features, chrf, _ = confidence_table(translator, sources, references)
    folds = np.arange(len(chrf)) % 5
    glass_box = [FEATURE_NAMES.index(n) for n in ("mean_log_prob", "min_log_prob", "low_prob_share",
                                                   "unattended_share", "length_ratio")]
    print(f"\n## Choosing the fit: out-of-fold Spearman with sentence chrF, 5 folds of {split} ({len(chrf)} sentences)")
    fits = (("ridge, all features", list(range(len(FEATURE_NAMES)))), ("ridge, glass-box only", glass_box))
    for name, columns in fits:
        predicted = np.zeros(len(chrf))
        for fold in range(5):
            train, held = folds != fold, folds == fold
            names = [FEATURE_NAMES[c] for c in columns]
            fitted = fit_calibration(features[train][:, columns], chrf[train], names, "cv")
            predicted[held] = fitted.predict(features[held][:, columns])
        print(f"{name}: {spearman(predicted, chrf):.3f}")
    print(f"mean_log_prob alone (no fit): {spearman(features[:, 0], chrf):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True, help="the Multi30k directory ({split}.{lang}.gz)")
    parser.add_argument("--ood", type=int, default=500, help="out-of-domain sentences to gather")
    parser.add_argument("--repeats", type=int, default=2, help="timing repeats (0: no timing)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument("--sections", default="ranking,ood,examples,speed,choice")
    args = parser.parse_args()
    sections = set(args.sections.split(","))
    translator = Translator.load(args.model, device="cpu", dtype=args.dtype, threads=args.threads)
    calibration = translator.calibration
    print(f"model {args.model}; calibration: " + (f"{calibration.split}, {calibration.sentences} sentences, "
          f"Spearman {calibration.spearman}" if calibration else "none (uncalibrated fallback)"))
    data = Path(args.data)
    src, tgt = translator.cfg.data.src_lang, translator.cfg.data.tgt_lang

    if "choice" in sections:
        choice(translator, data, src, tgt, translator.cfg.data.valid_split)
    if sections == {"speed"} or sections == {"speed", "choice"}:
        sources = read_lines(data / f"test_2016_flickr.{src}.gz")
        return speed(translator, sources, args.repeats)
    if not sections & {"ranking", "ood", "speed"}:
        return
    print("\n## Ranking: Spearman of confidence with sentence chrF (beam search, the model's decode settings)")
    tests = {}
    for split in ("test_2016_flickr", "test_2017_flickr"):
        sources, references = read_lines(data / f"{split}.{src}.gz"), read_lines(data / f"{split}.{tgt}.gz")
        features, chrf, best = confidence_table(translator, sources, references)
        tests[split] = (sources, features, chrf, np.array([t.confidence for t in best]))
        print(f"{split}: {spearman(tests[split][3], chrf):.3f} ({len(chrf)} sentences, mean confidence "
              f"{tests[split][3].mean():.3f}, mean sentence chrF {chrf.mean():.1f})")
    confidence = np.concatenate([t[3] for t in tests.values()])
    chrf = np.concatenate([t[2] for t in tests.values()])
    features = np.concatenate([t[1] for t in tests.values()])
    print(f"both: {spearman(confidence, chrf):.3f} ({len(chrf)} sentences)")
    for index, name in enumerate(FEATURE_NAMES):
        print(f"  feature {name}: Spearman {spearman(features[:, index], chrf):+.3f}")

    if "ood" not in sections:
        return speed(translator, tests["test_2016_flickr"][0], args.repeats) if "speed" in sections else None
    ood = docstring_sentences(args.ood)
    print(f"\n## Out-of-domain detection: {len(ood)} first sentences of docstrings in "
          f"{sysconfig.get_paths()['stdlib']} (e.g. {ood[0]!r}, {ood[len(ood) // 2]!r}) against the "
          f"{len(confidence)} Multi30k test sources")
    ood_features, _, ood_best = confidence_table(translator, ood, ood)
    ood_confidence = np.array([t.confidence for t in ood_best])
    print(f"AUROC of the confidence (in domain = higher): {auroc(confidence, ood_confidence):.3f} "
          f"(mean confidence {ood_confidence.mean():.3f} out of domain, {confidence.mean():.3f} in domain)")
    for index, name in enumerate(FEATURE_NAMES):
        value = auroc(features[:, index], ood_features[:, index])
        side = "higher" if value >= 0.5 else "lower"
        print(f"  feature {name}: AUROC {max(value, 1 - value):.3f} ({side} in domain)")
    threshold = calibration.low_threshold if calibration else UNCALIBRATED_LOW_THRESHOLD
    print(f"flagged low confidence (below {threshold}): {100 * (ood_confidence < threshold).mean():.1f}% out of "
          f"domain, {100 * (confidence < threshold).mean():.1f}% in domain")

    if "examples" in sections:
        print("\n## Examples (beam search)")
        for source, entry in zip(EXAMPLES, translator.generate(EXAMPLES)):
            t = entry[0]
            print(f"{t.confidence:.2f}{' LOW' if t.low_confidence else ''}\t{source} -> {t.text}")
    if args.repeats and "speed" in sections:
        speed(translator, tests["test_2016_flickr"][0], args.repeats)


if __name__ == "__main__":
    main()
