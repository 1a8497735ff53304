"""The corpus as piece ids (seq2seq/tokenized_corpus.py): columns, the length limit, the cache keyed by corpus and
tokenizers, parallel tokenizing equal to one process."""

from __future__ import annotations

import os
import random
from pathlib import Path

import datasets
import numpy as np
from support.corpus import DE, EN, config, write

from seq2seq.data import read_split
from seq2seq.tokenized_corpus import PARALLEL_MIN_PAIRS, tokenize_split, tokenize_workers
from seq2seq.tokenizer import EOS_ID, Tokenizer


class CountingTokenizer(Tokenizer):
    calls = 0

    def encode(self, texts: list[str]) -> list[list[int]]:
        CountingTokenizer.calls += 1
        return super().encode(texts)


def test_tokenize_split_columns_and_max_length(small_tokenizers, tmp_path):
    src_tok, tgt_tok = small_tokenizers
    raw = datasets.Dataset.from_dict({"src": EN, "tgt": DE})
    full = tokenize_split(raw, src_tok, tgt_tok, str(tmp_path), max_length=None)
    assert full.column_names == ["src_ids", "tgt_ids", "src_len", "tgt_len"]
    assert full.features["src_ids"].feature.dtype == "int32"
    for row, en, de in zip(full, EN, DE):
        assert row["src_ids"] == src_tok.encode([en])[0] + [EOS_ID]
        assert row["tgt_ids"] == tgt_tok.encode([de])[0]
        assert row["src_len"] == len(row["src_ids"]) and row["tgt_len"] == len(row["tgt_ids"]) + 1
    limit = int(np.median([max(r["src_len"] - 1, r["tgt_len"] - 1) for r in full]))
    short = tokenize_split(raw, src_tok, tgt_tok, str(tmp_path), max_length=limit)
    expected = [r for r in full if r["src_len"] - 1 <= limit and r["tgt_len"] - 1 <= limit]
    assert 0 < len(short) < len(full) and list(short) == expected


def test_tokenize_split_is_cached(small_tokenizers, tmp_path):
    src_tok, tgt_tok = small_tokenizers
    counting_src = CountingTokenizer.from_bytes(src_tok.model_bytes)
    write(tmp_path / "train.en", EN)
    write(tmp_path / "train.de", DE)
    raw = read_split(config(tmp_path, tmp_path), "train")
    cache = tmp_path / "tok_cache"
    CountingTokenizer.calls = 0
    first = tokenize_split(raw, counting_src, tgt_tok, str(cache), max_length=50)
    assert CountingTokenizer.calls == 1 and list(cache.glob("tokenized-*.arrow"))
    raw_again = read_split(config(tmp_path, tmp_path), "train")
    second = tokenize_split(raw_again, counting_src, tgt_tok, str(cache), max_length=50)
    assert CountingTokenizer.calls == 1  # read from the cache file
    assert list(second) == list(first)
    tokenize_split(raw, counting_src, src_tok, str(cache), max_length=50)  # another target model
    assert CountingTokenizer.calls == 2


class MarkingTokenizer(Tokenizer):
    """Appends a line to ``marker`` at every encode call, from whichever process makes it."""

    marker: Path

    def encode(self, texts: list[str]) -> list[list[int]]:
        with open(self.marker, "a") as f:
            f.write(f"{len(texts)}\n")
        return super().encode(texts)


def cache_files(cache: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}


def test_parallel_tokenization_matches_one_process_and_its_cache_is_reused(small_tokenizers, tmp_path):
    src_tok, tgt_tok = small_tokenizers
    rng = random.Random(1)
    index = [rng.randrange(len(EN)) for _ in range(400)]
    write(tmp_path / "train.en", [" ".join([EN[i]] * rng.randint(1, 12)) for i in index])
    write(tmp_path / "train.de", [DE[i] for i in index])
    raw = read_split(config(tmp_path, tmp_path), "train")
    one = tokenize_split(raw, src_tok, tgt_tok, str(tmp_path / "one"), max_length=20, num_workers=1)
    cache = tmp_path / "two"
    two = tokenize_split(raw, src_tok, tgt_tok, str(cache), max_length=20, num_workers=2)
    assert 0 < len(two) < len(raw) and list(two) == list(one)  # the same rows, the same order, the same filter
    assert sorted(p.name for p in cache.glob("tokenized-*_of_00002.arrow"))[-1].endswith("_00001_of_00002.arrow")
    before = cache_files(cache)
    marking = MarkingTokenizer.from_bytes(src_tok.model_bytes)
    marking.marker = tmp_path / "encode_calls"
    for workers in (2, 1, 3):  # another number of workers reads the same shards
        again = tokenize_split(read_split(config(tmp_path, tmp_path), "train"), marking, tgt_tok, str(cache),
                               max_length=20, num_workers=workers)
        assert list(again) == list(one)
    assert not marking.marker.exists()  # no process tokenized again
    assert cache_files(cache) == before  # nor wrote a cache file again (the max_length filter included)
    tokenize_split(raw, marking, tgt_tok, str(cache), max_length=10, num_workers=2)  # another limit: filter only
    assert not marking.marker.exists()


def test_tokenize_workers_auto_uses_every_core_only_for_large_corpora():
    assert tokenize_workers(3, 10) == 3
    assert tokenize_workers(0, PARALLEL_MIN_PAIRS - 1) == 1
    assert tokenize_workers(0, PARALLEL_MIN_PAIRS) == (os.cpu_count() or 1)


def test_very_long_line_tokenizes(small_tokenizers, tmp_path):
    write(tmp_path / "train.en", [("A dog runs " * 100_000).strip(), "A dog"])
    write(tmp_path / "train.de", ["Ein Hund", "Ein Hund"])
    raw = read_split(config(tmp_path, tmp_path), "train")
    kept = tokenize_split(raw, *small_tokenizers, str(tmp_path / "tok"), max_length=50)
    assert len(kept) == 1
