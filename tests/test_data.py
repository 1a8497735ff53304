"""Corpora (text dirs, file pairs, `datasets` dirs, hub) and their Arrow cache (seq2seq/data.py). Tokenizing:
test_tokenized_corpus.py; batches and the token-budget sampler: test_token_batches.py."""

from __future__ import annotations

import json
import logging

import datasets
import huggingface_hub
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support.corpus import DE, EN, config, write

from seq2seq.data import DataError, read_split

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


# --------------------------------------------------------------------------- a user's own corpus


def test_a_tsv_file_is_the_training_split(tmp_path):
    """--data my.tsv: one pair a line (a header naming the languages skipped, or swapping the columns when it names
    them the other way round); empty lines counted; no other split (SplitNotFound says how to add one)."""
    from seq2seq.data import SplitNotFound, read_split_counted

    tsv = write(tmp_path / "my.tsv", ["en\tde", *[f"{en}\t{de}" for en, de in zip(EN, DE)], "", " \t "])
    dataset, empty = read_split_counted(config(tsv, tmp_path), "train")
    assert pairs(dataset) == list(zip(EN, DE)) and empty == 2
    swapped = write(tmp_path / "swapped.tsv", ["de\ten", *[f"{de}\t{en}" for en, de in zip(EN, DE)]], gz=True)
    assert pairs(read_split(config(swapped, tmp_path), "train")) == list(zip(EN, DE))
    with pytest.raises(SplitNotFound, match=r"my.tsv is one TSV file.*no split 'val'.*data.files.val"):
        read_split(config(tsv, tmp_path), "val")


def test_a_bad_tsv_line_names_the_file_line_and_the_fix(tmp_path):
    tsv = write(tmp_path / "bad.tsv", ["A dog.\tEin Hund.", "only one field", "x\ty"])
    with pytest.raises(DataError, match=r"bad.tsv:2: 1 tab-separated field\(s\); a TSV corpus has two per line"):
        read_split(config(tsv, tmp_path), "train")
    with pytest.raises(DataError, match=r"TSV file not found: .*missing.tsv"):
        read_split(config(tmp_path / "missing.tsv", tmp_path), "train")


def test_data_files_are_the_whole_corpus_and_may_be_tsv(tmp_path):
    from seq2seq.data import SplitNotFound, corpus_name, test_split_names

    src, tgt = write(tmp_path / "europarl.en", EN), write(tmp_path / "europarl.de", DE)
    dev = write(tmp_path / "dev.tsv", [f"{en}\t{de}" for en, de in zip(EN[:2], DE[:2])])
    cfg = config("bentrevett/multi30k", tmp_path, files={"train": [str(src), str(tgt)], "dev": [str(dev)],
                                                         "news": [str(dev)]})
    assert pairs(read_split(cfg, "val")) == list(zip(EN[:2], DE[:2]))  # val -> dev
    with pytest.raises(SplitNotFound, match="split 'test' is not in data.files, which lists train, dev, news"):
        read_split(cfg, "test")  # never data.path's hub dataset
    assert test_split_names(cfg) == ["news"] and corpus_name(cfg) == "europarl"


def test_a_users_test_split_keeps_its_name(tmp_path):
    """The corpus's own test splits are every split besides training and validation; a Multi30k name is never
    found in a user's directory through its `test` split (the hub copy of Multi30k alone has that alias)."""
    from seq2seq.data import SplitNotFound, corpus_name, test_split_names

    for split in ("train", "dev", "test", "test_news"):
        write(tmp_path / f"{split}.en", EN)
        write(tmp_path / f"{split}.fr", DE)
    write(tmp_path / "extra.en", EN)  # no French side: not a split of en-fr
    cfg = config(tmp_path, tmp_path, tgt_lang="fr")
    assert test_split_names(cfg) == ["test", "test_news"]
    with pytest.raises(SplitNotFound):
        read_split(cfg, "test_2016_flickr")
    assert corpus_name(cfg) == tmp_path.name and corpus_name(config(tmp_path / "my.tsv.gz", tmp_path)) == "my"
