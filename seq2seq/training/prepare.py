"""A training run's data: the corpus read, the tokenizers (found in the run directory, or in the cache, or trained
and cached), the tokenized corpus (cached as Arrow) with its batch sampler, and the validation set."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from seq2seq.decoding.driver import source_ids
from seq2seq.token_batches import Batch, TokenBatchSampler, batch_view, read_batch
from seq2seq.checkpoint import atomic_write, atomic_write_text
from seq2seq.config import Config
from seq2seq.cleaning import clean_pairs
from seq2seq.data import DataError, SplitNotFound, read_split, read_split_counted
from seq2seq.tokenized_corpus import tokenize_split
from seq2seq.segmentation import SampledBatchSampler, SampledSegmentation
from seq2seq.tokenizer import SRC_TOKENIZER_FILE, TGT_TOKENIZER_FILE, Tokenizer, load_tokenizers, train_tokenizers
from seq2seq.training.validation import ValidationSet

logger = logging.getLogger("seq2seq.train")

#: what cleaning removed from the training split (and the held-out validation split, if one was made)
CLEANING_FILE = "cleaning.json"


@dataclass
class TrainingData:
    """Tokenizers, tokenized training pairs with their batch sampler, and the validation set."""

    src_tok: Tokenizer
    tgt_tok: Tokenizer
    train: Any  # datasets.Dataset with src_ids / tgt_ids / src_len / tgt_len
    sampler: TokenBatchSampler  # a SampledBatchSampler under subword regularization (seq2seq/segmentation.py)
    valid: ValidationSet

    def batch(self, indices: list[int]) -> Batch:
        """The training batch of pairs ``indices`` of the current epoch: padded straight from the memory-mapped
        Arrow cache (the best segmentation), or from the epoch's sampled segmentation."""
        if isinstance(self.sampler, SampledBatchSampler):
            return self.sampler.read(indices)
        return read_batch(batch_view(self.train), indices)


def iterate_rows(dataset, column: str, chunk: int = 4096) -> Iterator[str]:
    """Stream one column of a (memory-mapped) dataset without loading it whole."""
    for start in range(0, len(dataset), chunk):
        yield from dataset[start : start + chunk][column]


def cached_tokenizers(cfg: Config, raw_train) -> Path:
    """The directory under ``data.cache_dir`` holding tokenizers trained on ``raw_train`` with ``cfg.tokenizer``:
    trained there the first time (into a fresh directory moved into place, so a killed or concurrent run never
    leaves half a pair), found there by every later run on the same corpus files with the same settings."""
    key = hashlib.sha256(json.dumps([raw_train._fingerprint, cfg.tokenizer.training_settings()], sort_keys=True).encode())
    directory = Path(cfg.data.cache_dir).expanduser() / "tokenizers" / key.hexdigest()[:32]
    if (directory / SRC_TOKENIZER_FILE).is_file() and (directory / TGT_TOKENIZER_FILE).is_file():
        logger.info("tokenizers trained earlier on this corpus with these tokenizer.* settings: %s", directory)
        return directory
    directory.parent.mkdir(parents=True, exist_ok=True)
    fresh = Path(tempfile.mkdtemp(prefix=".training-", dir=directory.parent))
    try:
        started = time.perf_counter()
        src_tok, tgt_tok = train_tokenizers(cfg.tokenizer, iterate_rows(raw_train, "src"),
                                            iterate_rows(raw_train, "tgt"), fresh)
        logger.info("tokenizers trained in %.1f s (vocab %d / %d), cached in %s", time.perf_counter() - started,
                    src_tok.vocab_size, tgt_tok.vocab_size, directory)
        fresh.rename(directory)
    except OSError:
        if not (directory / SRC_TOKENIZER_FILE).is_file():  # not another run's pair moved in meanwhile
            raise
    finally:
        shutil.rmtree(fresh, ignore_errors=True)
    return directory


def hold_out(raw_train, cfg: Config, out_dir: Path, why: str):
    """(training pairs, validation pairs, their description) for a corpus without a validation split: up to
    ``data.held_out_pairs`` pairs (at most a tenth) drawn with ``train.seed``, before cleaning (validation is
    never filtered), and saved as ``OUT/held_out.{lang}``."""
    count = min(cfg.data.held_out_pairs, len(raw_train) // 10)
    if count < 1:
        raise DataError(f"{why}; and with {len(raw_train)} training pairs there are too few to hold out a tenth for "
                        "validation: add a validation split (e.g. val.{lang} files beside the training files, or "
                        "data.files.val)")
    order = np.random.default_rng(cfg.train.seed).permutation(len(raw_train))
    valid_rows, train_rows = np.sort(order[:count]), np.sort(order[count:])
    raw_valid = raw_train.select(valid_rows)
    names = []
    for column, lang in (("src", cfg.data.src_lang), ("tgt", cfg.data.tgt_lang)):
        names.append(f"held_out.{lang}")
        atomic_write_text(out_dir / names[-1], "".join(line + "\n" for line in raw_valid[column]))
    logger.info("no validation split (%s): held out %d of the %d training pairs for validation, drawn with "
                "train.seed = %d (data.held_out_pairs = %d, at most a tenth), saved as %s", why, count, len(raw_train),
                cfg.train.seed, cfg.data.held_out_pairs, " / ".join(str(out_dir / name) for name in names))
    description = {"pairs": count, "of": len(raw_train), "seed": cfg.train.seed, "files": names, "why": why}
    return raw_train.select(train_rows), raw_valid, description


def prepare_data(cfg: Config, out_dir: Path) -> TrainingData:
    """Read the corpus, get the tokenizers (those in ``out_dir``, else trained, or found in the cache, and copied
    there), tokenize (or find the tokenized corpus in the cache), build the batch sampler."""
    where = f"data.files {cfg.data.files}" if cfg.data.files else cfg.data.path
    logger.info("reading corpus %s (%s -> %s)", where, cfg.data.src_lang, cfg.data.tgt_lang)
    raw_train, empty = read_split_counted(cfg.data, cfg.data.train_split)
    try:
        raw_valid, held_out = read_split(cfg.data, cfg.data.valid_split), None
    except SplitNotFound as err:
        raw_train, raw_valid, held_out = hold_out(raw_train, cfg, out_dir, str(err))
    raw_train, report = clean_pairs(raw_train, cfg.data, empty)
    if held_out is not None:
        report["held_out"] = held_out
    atomic_write_text(out_dir / CLEANING_FILE, json.dumps(report, indent=2, ensure_ascii=False))
    if len(raw_train) == 0:
        raise DataError(f"cleaning removed every training pair ({out_dir / CLEANING_FILE} says which filter): check "
                        "data.src_lang / data.tgt_lang, or loosen the data.clean_* keys")
    if (out_dir / SRC_TOKENIZER_FILE).is_file() and (out_dir / TGT_TOKENIZER_FILE).is_file():
        logger.info("tokenizers loaded from %s", out_dir)
    else:
        cached = cached_tokenizers(cfg, raw_train)
        for name in (SRC_TOKENIZER_FILE, TGT_TOKENIZER_FILE):
            atomic_write(out_dir / name, lambda path, name=name: shutil.copyfile(cached / name, path))
    src_tok, tgt_tok = load_tokenizers(out_dir)
    train_data = tokenize_split(raw_train, src_tok, tgt_tok, cfg.data.cache_dir, cfg.data.max_length,
                                cfg.data.num_workers)
    valid_data = tokenize_split(raw_valid, src_tok, tgt_tok, cfg.data.cache_dir, None)
    # truncated as the Translator does (src_ids end in EOS): a 1 MB validation line must not stall
    valid_src_ids = [source_ids(ids[:-1], cfg.decode.max_src_length) for ids in valid_data["src_ids"]]
    valid_references = list(valid_data["tgt"]) if "tgt" in valid_data.column_names else list(raw_valid["tgt"])
    if cfg.train.valid_bleu_sentences:
        valid_src_ids = valid_src_ids[: cfg.train.valid_bleu_sentences]
        valid_references = valid_references[: cfg.train.valid_bleu_sentences]
    if cfg.tokenizer.sampling > 0:  # subword regularization: each epoch's segmentation sampled as it starts
        segmentation = SampledSegmentation(raw_train, train_data, src_tok, tgt_tok, cfg.tokenizer.sampling,
                                           cfg.data.max_length, cfg.train.max_tokens, cfg.train.seed)
        sampler = SampledBatchSampler(segmentation, cfg.train.max_tokens, cfg.train.seed)
    else:
        sampler = TokenBatchSampler.from_dataset(train_data, cfg.train.max_tokens, cfg.train.seed)
    logger.info("train %d pairs (%d batches/epoch), valid %d pairs", len(train_data), len(sampler), len(valid_data))
    return TrainingData(src_tok, tgt_tok, train_data, sampler, ValidationSet(valid_data, valid_src_ids, valid_references))
