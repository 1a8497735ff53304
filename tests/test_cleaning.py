"""Cleaning the training split (seq2seq/cleaning.py): each filter removes exactly the pairs picked by hand and
counts them, each key turns its filter off, scripts are judged letter by letter, the counts reach the log and
OUT/cleaning.json, validation is never filtered, and on Multi30k the defaults remove a handful of pairs (counted
here independently, with plain Python over the files)."""

from __future__ import annotations

import dataclasses
import gzip
import json
import logging

import datasets
import pytest
from support.corpus import config, write

from seq2seq.cleaning import clean_pairs, script_share
from seq2seq.config import load_config
from seq2seq.data import read_split_counted

GOOD = [("A dog runs.", "Ein Hund rennt."), ("Two cats sleep.", "Zwei Katzen schlafen."),
        ("A man rides a red bike.", "Ein Mann fährt ein rotes Fahrrad."), ("Children play.", "Kinder spielen.")]
#: (source, target, the filter that removes it)
JUNK = [
    ("Hello  World.", "hello world.", "copies"),                                   # copied, case and spacing aside
    ("Front stroke swimming race roped off lap areas.", "@@", "length_ratio"),     # (48 + 1) / (2 + 1) > 3
    ("A woman sings.", "Женщина поёт.", "wrong_script"),                           # Cyrillic for German
    ("A dog runs.", "Ein Hund rennt.", "duplicates"),                              # GOOD[0] again
]


def dataset(pairs) -> datasets.Dataset:
    return datasets.Dataset.from_dict({"src": [p[0] for p in pairs], "tgt": [p[1] for p in pairs]})


def test_each_filter_removes_its_pairs_and_counts_them(tmp_path):
    raw = dataset(GOOD + [(s, t) for s, t, _ in JUNK])
    kept, report = clean_pairs(raw, config(tmp_path, tmp_path), empty=2)
    assert list(zip(kept["src"], kept["tgt"])) == GOOD
    assert report["removed"] == {"empty": 2, "copies": 1, "length_ratio": 1, "wrong_script": 1, "duplicates": 1}
    assert report["pairs_read"] == 10 and report["pairs_kept"] == 4


@pytest.mark.parametrize("key, off, name", [("clean_copies", False, "copies"), ("clean_max_ratio", 0.0, "length_ratio"),
                                            ("clean_min_script", 0.0, "wrong_script"),
                                            ("clean_duplicates", False, "duplicates")])
def test_each_key_turns_its_filter_off(tmp_path, key, off, name):
    raw = dataset(GOOD + [(s, t) for s, t, _ in JUNK])
    cfg = dataclasses.replace(config(tmp_path, tmp_path), **{key: off})
    kept, report = clean_pairs(raw, cfg)
    assert report["removed"][name] == 0
    assert [(s, t, n) for s, t, n in JUNK if n == name][0][:2] in list(zip(kept["src"], kept["tgt"]))
    assert len(kept) == len(GOOD) + 1


def test_the_length_ratio_is_in_characters_plus_one(tmp_path):
    """(longer + 1) / (shorter + 1) > data.clean_max_ratio: 'ab'/'abcdefgh' is 9/3 = 3.0 (kept at 3, removed at
    2.9); 'a'/'' cannot occur (the reader drops empty sides)."""
    raw = dataset([("ab", "abcdefgh"), ("abc", "abcdefgh")])
    cfg = dataclasses.replace(config(tmp_path, tmp_path), clean_copies=False)
    assert clean_pairs(raw, dataclasses.replace(cfg, clean_max_ratio=3.0))[1]["removed"]["length_ratio"] == 0
    assert clean_pairs(raw, dataclasses.replace(cfg, clean_max_ratio=2.9))[1]["removed"]["length_ratio"] == 1


@pytest.mark.parametrize("text, scripts, share", [
    ("Ein Hund rennt.", ("LATIN",), 1.0),
    ("Женщина поёт.", ("LATIN",), 0.0),
    ("Hello Мир", ("LATIN",), 5 / 8),
    ("Hello Мир", ("CYRILLIC",), 3 / 8),
    ("東京タワーです", ("CJK", "HIRAGANA", "KATAKANA"), 1.0),
    ("東京 Tower", ("CJK",), 2 / 7),
    ("123 -- !", ("GREEK",), 1.0),  # no letters: nothing to judge
    ("Çà et là, Øre", ("LATIN",), 1.0),
])
def test_script_share_letter_by_letter(text, scripts, share):
    assert script_share(text, scripts) == pytest.approx(share)


def test_a_language_of_unknown_script_is_not_checked(tmp_path):
    raw = dataset([("A dog.", "Женщина поёт.")])
    cfg = dataclasses.replace(config(tmp_path, tmp_path), tgt_lang="xx")
    assert len(clean_pairs(raw, cfg)[0]) == 1
    cfg = dataclasses.replace(cfg, tgt_lang="ru-RU")  # a region tag: the language's script
    assert len(clean_pairs(raw, cfg)[0]) == 1 and len(clean_pairs(dataset([("A dog.", "A dog runs fast")]), cfg)[0]) == 0


def test_a_run_cleans_the_training_split_only_and_saves_the_counts(tmp_path, caplog):
    from seq2seq.training.prepare import prepare_data

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    pairs = GOOD * 30 + [(s, t) for s, t, _ in JUNK] + [("", "leer"), ("   ", "auch leer")]
    for split in ("train", "val"):
        write(corpus / f"{split}.en", [p[0] for p in pairs])
        write(corpus / f"{split}.de", [p[1] for p in pairs])
    cfg = load_config(overrides=[f"data.path={corpus}", f"data.cache_dir={tmp_path / 'cache'}",
                                 "tokenizer.vocab_size=31", "tokenizer.byte_fallback=false"])
    out = tmp_path / "run"
    out.mkdir()
    with caplog.at_level(logging.INFO, logger="seq2seq"):
        data = prepare_data(cfg, out)
    report = json.loads((out / "cleaning.json").read_text(encoding="utf-8"))
    # GOOD * 30: 4 kept, 116 duplicates; JUNK: one each (its duplicate is of GOOD[0])
    assert report["removed"] == {"empty": 2, "copies": 1, "length_ratio": 1, "wrong_script": 1, "duplicates": 117}
    assert report["pairs_read"] == 126 and report["pairs_kept"] == 4 == len(data.train)
    assert len(data.valid.references) == 124  # only the reader's empty pairs left validation
    assert "cleaning the training pairs: 126 read, 4 kept; removed: empty 2, copies 1" in caplog.text


def count_by_hand(src_lines: list[str], tgt_lines: list[str]) -> dict[str, int]:
    """The default filters written out for Latin-script pairs, without seq2seq.cleaning."""
    counts = {"copies": 0, "length_ratio": 0, "wrong_script": 0, "duplicates": 0}
    seen = set()
    for src, tgt in zip(src_lines, tgt_lines):
        if " ".join(src.lower().split()) == " ".join(tgt.lower().split()):
            counts["copies"] += 1
        elif (max(len(src), len(tgt)) + 1) / (min(len(src), len(tgt)) + 1) > 3.0:
            counts["length_ratio"] += 1
        elif any(sum("LATIN" in __import__("unicodedata").name(c) for c in text if c.isalpha())
                 < 0.5 * sum(c.isalpha() for c in text) for text in (src, tgt)):
            counts["wrong_script"] += 1
        elif (src, tgt) in seen:
            counts["duplicates"] += 1
        else:
            seen.add((src, tgt))
    return counts


@pytest.mark.parametrize("tgt", ["de", "fr", "cs"])
def test_the_defaults_remove_a_handful_of_multi30k_training_pairs(multi30k_dir, tmp_path, tgt):
    """en-de: 2 targets '@@' (length ratio) and 3 duplicates; en-fr: 5 duplicates; en-cs: 1 length ratio and 3
    duplicates, of 29,000 pairs each."""
    def lines(lang):
        with gzip.open(multi30k_dir / f"train.{lang}.gz", "rt", encoding="utf-8") as handle:
            return [line.strip() for line in handle]

    cfg = load_config(overrides=[f"data.path={multi30k_dir}", f"data.tgt_lang={tgt}",
                                 f"data.cache_dir={tmp_path / 'cache'}"]).data
    raw, empty = read_split_counted(cfg, "train")
    _, report = clean_pairs(raw, cfg, empty)
    expected = count_by_hand(lines("en"), lines(tgt))
    assert report["removed"] == {"empty": 0, **expected}
    assert sum(expected.values()) <= 5 and report["pairs_read"] == 29_000
