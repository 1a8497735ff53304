"""Corpora (text dirs, file pairs, `datasets` dirs, hub), Arrow caching and tokenizing (seq2seq/data.py). Batches and
the token-budget sampler: test_batches.py."""

from __future__ import annotations

import gzip
import json
import logging
import os
import random
from pathlib import Path

import datasets
import huggingface_hub
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support.corpus import DE, EN, config

from seq2seq.data import (
    PARALLEL_MIN_PAIRS,
    DataError,
    read_split,
    tokenize_split,
    tokenize_workers,
)
from seq2seq.tokenizer import EOS_ID, Tokenizer

def write(path: Path, lines: list[str], gz: bool = False, newline: str = "\n") -> Path:
    data = "".join(line + newline for line in lines).encode("utf-8")
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def pairs(dataset: datasets.Dataset) -> list[tuple[str, str]]:
    return list(zip(dataset["src"], dataset["tgt"]))


# ------------------------------------------------------------------------------------------- reading


@pytest.mark.parametrize("gz", [False, True])
def test_split_directory_plain_and_gzip(tmp_path, gz):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    write(corpus / "train.en", EN, gz)
    write(corpus / "train.de", DE, gz)
    dataset = read_split(config(corpus, tmp_path), "train")
    assert dataset.column_names == ["src", "tgt"]
    assert pairs(dataset) == list(zip(EN, DE))
    reverse = read_split(config(corpus, tmp_path, src_lang="de", tgt_lang="en"), "train")
    assert pairs(reverse) == list(zip(DE, EN))


def test_explicit_file_pairs_override_path(tmp_path):
    src = write(tmp_path / "corpus.src", EN[:2])
    tgt = write(tmp_path / "corpus.tgt", DE[:2], gz=True)
    cfg = config("bentrevett/multi30k", tmp_path, files={"train": [str(src), str(tgt)]})
    assert pairs(read_split(cfg, "train")) == list(zip(EN[:2], DE[:2]))
    cfg.files["train"] = [str(src), str(tmp_path / "missing.tgt")]
    with pytest.raises(DataError, match=f"{tmp_path / 'missing.tgt'} or {tmp_path / 'missing.tgt.gz'}"):
        read_split(cfg, "train")


def test_crlf_bom_and_whitespace_are_stripped(tmp_path):
    write(tmp_path / "train.en", ["\ufeffHello world ", "  second\t"], newline="\r\n")
    write(tmp_path / "train.de", ["Hallo Welt", "zweite"], newline="\r\n")
    expected = [("Hello world", "Hallo Welt"), ("second", "zweite")]
    assert pairs(read_split(config(tmp_path, tmp_path), "train")) == expected


def test_empty_pairs_are_dropped_and_counted(tmp_path, caplog):
    write(tmp_path / "train.en", ["one", "", "three", "four", "   "])
    write(tmp_path / "train.de", ["eins", "zwei", "", "vier", "fünf"])
    with caplog.at_level(logging.INFO, logger="seq2seq.data"):
        dataset = read_split(config(tmp_path, tmp_path), "train")
    assert pairs(dataset) == [("one", "eins"), ("four", "vier")]
    assert "dropped 3 pairs with an empty side" in caplog.text


def test_mismatched_line_counts_name_both_files_and_counts(tmp_path):
    src = write(tmp_path / "train.en", EN)
    tgt = write(tmp_path / "train.de", DE[:3], gz=True)
    with pytest.raises(DataError, match=rf"{src} has 4 lines but {tgt} has 3"):
        read_split(config(tmp_path, tmp_path), "train")


def test_invalid_utf8_names_file_and_line(tmp_path):
    write(tmp_path / "train.en", EN)
    bad = tmp_path / "train.de"
    bad.write_bytes("Ein Hund\nZwei Katzen\n".encode() + "Gr\xfc\xdfe\n".encode("latin-1") + b"Park\n")
    with pytest.raises(DataError, match=rf"{bad}:3: not valid UTF-8"):
        read_split(config(tmp_path, tmp_path), "train")


def test_missing_files_name_the_paths_looked_for(tmp_path):
    write(tmp_path / "train.en", EN)
    with pytest.raises(DataError, match=f"{tmp_path / 'train.de'} or {tmp_path / 'train.de.gz'}"):
        read_split(config(tmp_path, tmp_path), "train")
    with pytest.raises(DataError, match=r"split 'test' not found .*test\.en.gz.*available .*: train"):
        read_split(config(tmp_path, tmp_path), "test")
    with pytest.raises(DataError, match="data directory not found"):
        read_split(config(tmp_path / "nope", tmp_path), "train")


def test_changed_file_is_read_again(tmp_path):
    write(tmp_path / "train.en", EN)
    write(tmp_path / "train.de", DE)
    cfg = config(tmp_path, tmp_path)
    first = read_split(cfg, "train")
    assert read_split(cfg, "train")._fingerprint == first._fingerprint  # cached
    write(tmp_path / "train.en", ["changed"] + EN[1:])
    assert read_split(cfg, "train")["src"][0] == "changed"


def test_very_long_line(tmp_path):
    long_line = "word " * 200_000  # 1 MB
    write(tmp_path / "train.en", [long_line.strip(), "short"])
    write(tmp_path / "train.de", ["kurz", "lang " * 10])
    dataset = read_split(config(tmp_path, tmp_path), "train")
    assert len(dataset["src"][0]) == len(long_line.strip())


def test_split_aliases_in_a_text_directory(tmp_path):
    write(tmp_path / "validation.en", EN)
    write(tmp_path / "validation.de", DE)
    assert len(read_split(config(tmp_path, tmp_path), "val")) == 4


# --------------------------------------------------------------------------- `datasets` directories / hub


def test_local_datasets_directory_with_language_columns(tmp_path):
    corpus = tmp_path / "parquet"
    corpus.mkdir()
    pq.write_table(pa.table({"en": EN, "de": DE, "id": [1, 2, 3, 4]}), corpus / "train.parquet")
    pq.write_table(pa.table({"en": [" hi ", ""], "de": ["hallo", "leer"], "id": [5, 6]}), corpus / "validation.parquet")
    cfg = config(corpus, tmp_path)
    assert pairs(read_split(cfg, "train")) == list(zip(EN, DE))
    assert pairs(read_split(cfg, "val")) == [("hi", "hallo")]  # alias val -> validation, empty pair dropped
    with pytest.raises(DataError, match="no split 'test_2017_flickr'; available splits: train, validation"):
        read_split(cfg, "test_2017_flickr")
    with pytest.raises(DataError, match="columns are en, de, id"):
        read_split(config(corpus, tmp_path, tgt_lang="fr"), "train")


def test_local_datasets_directory_with_translation_column(tmp_path):
    corpus = tmp_path / "json"
    corpus.mkdir()
    with open(corpus / "train.jsonl", "w", encoding="utf-8") as f:
        for en, de in zip(EN, DE):
            f.write(json.dumps({"translation": {"de": de, "en": en}}) + "\n")
    assert pairs(read_split(config(corpus, tmp_path), "train")) == list(zip(EN, DE))
    with pytest.raises(DataError, match="'translation' column has languages"):
        read_split(config(corpus, tmp_path, src_lang="fr"), "train")


def test_unreachable_hub_suggests_a_local_directory(tmp_path, monkeypatch):
    # offline mode makes the hub client fail at once instead of retrying the network
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(DataError, match=r"'bentrevett/multi30k'.*hub could not be reached.*--data"):
        read_split(config("bentrevett/multi30k", tmp_path), "train")


# ----------------------------------------------------------------------------------------- tokenizing


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
