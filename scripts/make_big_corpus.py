"""A large parallel corpus from Multi30k, for measuring the data pipeline at WMT size (never commit its output).

    python scripts/make_big_corpus.py --pairs 2000000 --out runs/big
    python -m seq2seq.train --data runs/big ...

Each line of ``OUT/train.{src}`` / ``OUT/train.{tgt}`` joins 1 to ``--max-join`` randomly drawn Multi30k training
pairs (source with source, target with target, in the same order), so line N of the target file is still a
translation of line N of the source file; sentences average about two Multi30k sentences (~26 English words,
close to WMT's average). The files are written in chunks (the corpus is never held in memory; only Multi30k's
29,000 pairs are), and the output is a pure function of ``--seed``. The validation and test splits of the
source directory are copied beside them, so that ``--data OUT`` trains and evaluates as on Multi30k.
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import sys
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPO_ROOT.parent / "shared" / "data" / "multi30k"
#: splits copied unchanged from the source directory
COPIED_SPLITS = ("val", "test_2016_flickr", "test_2017_flickr")
CHUNK = 50_000


def read_lines(directory: Path, split: str, lang: str) -> list[str]:
    """Stripped lines of ``directory/{split}.{lang}[.gz]``."""
    for name in (f"{split}.{lang}", f"{split}.{lang}.gz"):
        path = directory / name
        if path.is_file():
            opener = gzip.open if name.endswith(".gz") else open
            with opener(path, "rt", encoding="utf-8") as handle:
                return [line.strip() for line in handle]
    raise FileNotFoundError(f"{directory / f'{split}.{lang}'}[.gz] not found (--source must hold Multi30k)")


def write_corpus(source: Path, out: Path, pairs: int, seed: int, langs: tuple[str, str], max_join: int) -> None:
    """Write ``out/train.{lang}`` for both languages and copy the validation / test splits of ``source``."""
    src_lines, tgt_lines = (np.array(read_lines(source, "train", lang), dtype=object) for lang in langs)
    if len(src_lines) != len(tgt_lines):
        raise ValueError(f"{source}: train.{langs[0]} and train.{langs[1]} differ in length")
    keep = np.flatnonzero([bool(s) and bool(t) for s, t in zip(src_lines, tgt_lines)])
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / f"train.{langs[0]}", "w", encoding="utf-8") as src_out, \
            open(out / f"train.{langs[1]}", "w", encoding="utf-8") as tgt_out:
        for start in range(0, pairs, CHUNK):
            count = min(CHUNK, pairs - start)
            joins = rng.integers(1, max_join + 1, size=count)
            drawn = keep[rng.integers(0, len(keep), size=(count, max_join))]
            for lines, handle in ((src_lines, src_out), (tgt_lines, tgt_out)):
                handle.write("".join(" ".join(lines[row[:k]]) + "\n" for row, k in zip(drawn, joins)))
    for split in COPIED_SPLITS:
        for lang in langs:
            for name in (f"{split}.{lang}", f"{split}.{lang}.gz"):
                if (source / name).is_file():
                    shutil.copyfile(source / name, out / name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=2_000_000, help="training pairs to write (default 2,000,000)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (the output is a function of it)")
    parser.add_argument("--out", required=True, help="output directory (e.g. runs/big; git-ignored under runs/)")
    parser.add_argument("--source", default=str(DEFAULT_SOURCE), help=f"Multi30k directory (default {DEFAULT_SOURCE})")
    parser.add_argument("--src-lang", default="en")
    parser.add_argument("--tgt-lang", default="de")
    parser.add_argument("--max-join", type=int, default=3, help="each line joins 1..N Multi30k pairs (default 3)")
    args = parser.parse_args(argv)
    if args.pairs < 1 or args.max_join < 1:
        print("error: --pairs and --max-join must be >= 1", file=sys.stderr)
        return 2
    try:
        write_corpus(Path(args.source), Path(args.out), args.pairs, args.seed, (args.src_lang, args.tgt_lang),
                     args.max_join)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.pairs} pairs to {args.out}/train.{args.src_lang} / train.{args.tgt_lang}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
