"""A domain shift built from Multi30k, for measuring what fine-tuning gives (docs/data.md, "What fine-tuning gives").

    PYTHONPATH=$PWD python scripts/domain_split.py --source ../shared/data/multi30k --out runs/domains

Domain B is the captions about animals: a pair belongs to B when its English side has one of :data:`ANIMALS` as a
whole word (lowercased, letters only: ``Dogs,`` counts, ``hotdog`` does not); domain A is every other pair. A
seeded shuffle of B's training pairs gives B's held-out test and validation pairs and the small training part
fine-tuning starts from; the rest of B is left out, so that A never sees an animal caption. Written, as plain
``{split}.{lang}`` files any ``--data`` reads:

- ``OUT/a/``: ``train`` (A's training pairs), ``val`` (A's pairs of Multi30k's ``val``), ``test`` (A's pairs of
  ``test_2016_flickr``: what the base model knows, to measure how much fine-tuning forgets);
- ``OUT/b/``: ``train`` (``--b-train`` of B's training pairs), ``val`` and ``test`` (``--b-val`` and ``--b-test``
  more of them);
- ``OUT/counts.json``: how many pairs each part has, the word list and the seed.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import re
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPO_ROOT.parent / "shared" / "data" / "multi30k"
#: the English words that make a caption one about animals (domain B)
ANIMALS = frozenset(
    "dog dogs puppy puppies cat cats kitten kittens horse horses pony ponies animal animals bird birds cow cows "
    "sheep goat goats camel camels bull bulls duck ducks pig pigs elephant elephants fish donkey donkeys chicken "
    "chickens calf lamb lambs deer".split())
WORD = re.compile(r"[a-z]+")

Pair = tuple[str, str]


def is_domain_b(english: str, words: frozenset[str] = ANIMALS) -> bool:
    """Whether the English sentence has one of ``words`` as a whole word (case-insensitive, letters only)."""
    return not words.isdisjoint(WORD.findall(english.lower()))


def split_domains(pairs: list[Pair], words: frozenset[str] = ANIMALS) -> tuple[list[Pair], list[Pair]]:
    """(domain A, domain B) in corpus order: B holds the pairs whose source (English) side names one of ``words``."""
    a, b = [], []
    for pair in pairs:
        (b if is_domain_b(pair[0], words) else a).append(pair)
    return a, b


def carve(b_pairs: list[Pair], train: int, val: int, test: int, seed: int) -> dict[str, list[Pair]]:
    """B's pairs shuffled with ``seed`` and cut into ``test``, ``val`` and ``train`` parts (in that order, so that a
    larger ``train`` leaves the held-out parts as they are); the rest is left out."""
    if train + val + test > len(b_pairs):
        raise ValueError(f"domain B has {len(b_pairs)} pairs, fewer than --b-train + --b-val + --b-test = "
                         f"{train + val + test}")
    order = list(range(len(b_pairs)))
    random.Random(seed).shuffle(order)
    picked = [b_pairs[i] for i in order]
    return {"test": picked[:test], "val": picked[test:test + val], "train": picked[test + val:test + val + train]}


def read_pairs(directory: Path, split: str, src: str, tgt: str) -> list[Pair]:
    """The stripped line pairs of ``directory/{split}.{src,tgt}[.gz]``."""
    sides = []
    for lang in (src, tgt):
        plain, packed = directory / f"{split}.{lang}", directory / f"{split}.{lang}.gz"
        path = plain if plain.is_file() else packed
        if not path.is_file():
            raise FileNotFoundError(f"{plain}[.gz] not found (--source must hold Multi30k's {split} split)")
        with (gzip.open if path.suffix == ".gz" else open)(path, "rt", encoding="utf-8") as handle:
            sides.append([line.strip() for line in handle])
    return list(zip(*sides))


def write_pairs(directory: Path, split: str, pairs: list[Pair], src: str, tgt: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for side, lang in enumerate((src, tgt)):
        (directory / f"{split}.{lang}").write_text("".join(p[side] + "\n" for p in pairs), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="Multi30k's directory")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--src-lang", default="en", help="must be en: the word list is English")
    parser.add_argument("--tgt-lang", default="de")
    parser.add_argument("--b-train", type=int, default=1000, help="B's small training part")
    parser.add_argument("--b-val", type=int, default=200)
    parser.add_argument("--b-test", type=int, default=500)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if args.src_lang != "en":
        print("error: --src-lang must be en (the domain is found from English words)", file=sys.stderr)
        return 2
    src, tgt = args.src_lang, args.tgt_lang
    try:
        train_a, train_b = split_domains(read_pairs(args.source, "train", src, tgt))
        val_a, _ = split_domains(read_pairs(args.source, "val", src, tgt))
        test_a, _ = split_domains(read_pairs(args.source, "test_2016_flickr", src, tgt))
        parts_b = carve(train_b, args.b_train, args.b_val, args.b_test, args.seed)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    parts = {"a": {"train": train_a, "val": val_a, "test": test_a}, "b": parts_b}
    for domain, splits in parts.items():
        for split, pairs in splits.items():
            write_pairs(args.out / domain, split, pairs, src, tgt)
    counts = {domain: {split: len(pairs) for split, pairs in splits.items()} for domain, splits in parts.items()}
    counts.update(b_training_pairs_in_all=len(train_b), words=sorted(ANIMALS), seed=args.seed)
    (args.out / "counts.json").write_text(json.dumps(counts, indent=1) + "\n", encoding="utf-8")
    print(json.dumps({k: counts[k] for k in ("a", "b", "b_training_pairs_in_all")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
