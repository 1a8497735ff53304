"""Preservation probe: names, numbers and rare-character spans injected into real test sentences (source and
reference), and the share of them that comes out of translation verbatim, per kind, with the copy of protected spans
off and on (a benchmark that prints figures; see docs/preservation.md).

    PYTHONPATH=$PWD python scripts/preservation_probe.py --model runs/multi30k_en_de --dtype fp32 --threads 1

Built from Multi30k en-de test_2016_flickr and test_2017_flickr:

- ``name``: a sentence whose source starts with a singular person (``A man``, ``A woman``, ...) and whose reference
  starts with its German counterpart (``Ein Mann``, ``Eine Frau``, ...) gets a name in both places
  (``Zoë is riding ...`` / ``Zoë fährt ...``), names drawn in turn from several scripts and diacritics;
- ``number``: a short phrase with a number before the final full stop (``... in room 12.`` / ``... in Raum 12.``,
  times, decimals, thousands);
- ``rare``: an emoji or a CJK word before the final full stop on both sides (``... park 🐕.``).

Each kind takes at most ``--limit`` sentences (in file order). Per kind and setting: the share of outputs holding
the injected text verbatim, and BLEU against the injected references. Then the issue's six example sentences
before (copy off) and after (on).
"""

from __future__ import annotations

import argparse
import gzip
import re
import sys
import time
from pathlib import Path

NAMES = ["Zoë", "Łukasz", "Дмитрий", "Søren", "José", "Anna", "Siobhán", "François", "Αλέξανδρος", "Müller",
         "Ngozi", "Björk", "Ólafur", "Mehmet", "Zhang Wei", "Kraków"]
NUMBERS = [("in room {}", "in Raum {}", ["12", "305", "7", "1,250", "48"]),
           ("at {}", "um {}", ["10:30", "7:15", "18:45"]),
           ("for {} dollars", "für {} Dollar", ["3.50", "12.99", "250"])]
RARE = ["🐕", "東京", "🎉", "北京", "😀", "ソウル", "🚲", "서울"]
SUBJECTS = [("A man", "Ein Mann"), ("A woman", "Eine Frau"), ("A boy", "Ein Junge"), ("A girl", "Ein Mädchen"),
            ("A young man", "Ein junger Mann"), ("A young woman", "Eine junge Frau"),
            ("A little girl", "Ein kleines Mädchen"),
            ("A little boy", "Ein kleiner Junge"), ("A person", "Eine Person"), ("An older man", "Ein älterer Mann")]
EXAMPLES = ["A man is riding a bike.", "Zoë and Łukasz walk past the café in Kraków.", "A man in a 東京 shirt.",
            "Two dogs 🐕 run.", "hello world", "Hello, how are you?"]


def read(path: Path) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return handle.read().splitlines()


def before_stop(line: str, phrase: str) -> str | None:
    """``line`` with `` phrase`` before its final full stop, or None without one."""
    return line[:-1].rstrip() + " " + phrase + "." if line.endswith(".") else None


def probe_sets(pairs: list[tuple[str, str]], limit: int) -> dict[str, list[tuple[str, str, str]]]:
    """Per kind, (source, reference, injected text) triples."""
    sets: dict[str, list] = {"name": [], "number": [], "rare": []}
    for en, de in pairs:
        for en_subject, de_subject in SUBJECTS:
            if (len(sets["name"]) < limit and re.match(re.escape(en_subject) + r"\b", en)
                    and re.match(re.escape(de_subject) + r"\b", de)):
                name = NAMES[len(sets["name"]) % len(NAMES)]
                sets["name"].append((name + en[len(en_subject):], name + de[len(de_subject):], name))
                break
        if len(sets["number"]) < limit:
            en_phrase, de_phrase, values = NUMBERS[len(sets["number"]) % len(NUMBERS)]
            value = values[(len(sets["number"]) // len(NUMBERS)) % len(values)]
            en2, de2 = before_stop(en, en_phrase.format(value)), before_stop(de, de_phrase.format(value))
            if en2 and de2:
                sets["number"].append((en2, de2, value))
        if len(sets["rare"]) < limit:
            span = RARE[len(sets["rare"]) % len(RARE)]
            en2, de2 = before_stop(en, span), before_stop(de, span)
            if en2 and de2:
                sets["rare"].append((en2, de2, span))
    return sets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", default="../shared/data/multi30k")
    parser.add_argument("--splits", nargs="+", default=["test_2016_flickr", "test_2017_flickr"])
    parser.add_argument("--limit", type=int, default=300, help="sentences per kind")
    parser.add_argument("--beam-sizes", type=int, nargs="+", default=[5, 1])
    parser.add_argument("--constraints", action="store_true",
                        help="also measure beam search with the protected spans as constraints")
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    from seq2seq.metrics import bleu_and_chrf
    from seq2seq.protected_spans import Span, verbatim
    from seq2seq.translator import Translator

    translator = Translator.load(args.model, device="cpu", dtype=args.dtype, threads=args.threads)
    pairs = [pair for split in args.splits
             for pair in zip(read(Path(args.data) / f"{split}.en.gz"), read(Path(args.data) / f"{split}.de.gz"))]
    sets = probe_sets(pairs, args.limit)
    print(f"model {args.model}; {', '.join(f'{k}: {len(v)} sentences' for k, v in sets.items())} "
          f"from {' + '.join(args.splits)}")
    settings = [(b, p, False) for b in args.beam_sizes for p in (False, True)]
    if args.constraints:
        settings += [(b, True, True) for b in args.beam_sizes if b > 1]
    print("| kind | search | copy | kept verbatim | BLEU | seconds |")
    print("|---|---|---|---|---|---|")
    for kind, triples in sets.items():
        sources, references, injected = zip(*triples)
        for beam_size, preserve, constraints in settings:
            translator.spans_as_constraints = constraints
            start = time.perf_counter()
            outputs = translator.translate(list(sources), beam_size=beam_size, preserve=preserve)
            seconds = time.perf_counter() - start
            kept = sum(verbatim(Span(0, 0, text, kind if kind == "number" else "name", text), out)
                       for text, out in zip(injected, outputs))
            bleu = bleu_and_chrf(outputs, list(references))["bleu"]
            search = "greedy" if beam_size == 1 else f"beam {beam_size}"
            copy = ("on (constraints)" if constraints else "on") if preserve else "off"
            print(f"| {kind} | {search} | {copy} | {kept}/{len(outputs)} = {100 * kept / len(outputs):.1f}% "
                  f"| {bleu:.2f} | {seconds:.1f} |", flush=True)
    translator.spans_as_constraints = False
    print("\n| input | search | copy off | copy on |")
    print("|---|---|---|---|")
    for beam_size in args.beam_sizes:
        off = translator.translate(EXAMPLES, beam_size=beam_size, preserve=False)
        on = translator.translate(EXAMPLES, beam_size=beam_size)
        for line, before, after in zip(EXAMPLES, off, on):
            search = "greedy" if beam_size == 1 else f"beam {beam_size}"
            print(f"| `{line}` | {search} | `{before}` | `{after}` |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
