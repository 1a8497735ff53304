"""The benchmarked workload: tokenizers, the tokenized training split and the test sources, loaded once per
data + tokenizer config and shared by the variants that agree on them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seq2seq.config import Config
from seq2seq.data import read_split
from seq2seq.tokenized_corpus import tokenize_split
from seq2seq.training.prepare import cached_tokenizers
from seq2seq.tokenizer import Tokenizer, load_tokenizers


@dataclass
class Workload:
    """Tokenizers, the tokenized training split and the test sources and references for one data + tokenizer
    config."""

    src_tok: Tokenizer
    tgt_tok: Tokenizer
    train_data: Any
    test_split: str
    test_sources: list[str]
    test_references: list[str]


def load_workload(cfg: Config, model_dir: Path | None) -> Workload:
    raw_train = read_split(cfg.data, cfg.data.train_split)
    src_tok, tgt_tok = load_tokenizers(model_dir or cached_tokenizers(cfg, raw_train))
    train_data = tokenize_split(raw_train, src_tok, tgt_tok, cfg.data.cache_dir, cfg.data.max_length)
    test_split = cfg.data.test_splits[0] if cfg.data.test_splits else cfg.data.valid_split
    test = read_split(cfg.data, test_split)
    return Workload(src_tok, tgt_tok, train_data, test_split, list(test["src"]), list(test["tgt"]))
