"""A read corpus as piece ids: every pair tokenized once, cached as a memory-mapped Arrow file.

:func:`tokenize_split` turns the string dataset :func:`seq2seq.data.read_split` gives into columns ``src_ids``,
``tgt_ids``, ``src_len`` and ``tgt_len``, written by ``data.num_workers`` processes on large corpora and keyed by
the corpus and both tokenizer models, so that a second run with the same inputs reads the cache; training reads
its batches straight from it (:func:`seq2seq.token_batches.read_batch`).
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import datasets
import numpy as np

from seq2seq.tokenizer import EOS_ID, Tokenizer

logger = logging.getLogger(__name__)

TOKENIZED_FEATURES = datasets.Features(
    {
        "src_ids": datasets.Sequence(datasets.Value("int32")),
        "tgt_ids": datasets.Sequence(datasets.Value("int32")),
        "src_len": datasets.Value("int32"),
        "tgt_len": datasets.Value("int32"),
    }
)
#: bump when the tokenized layout changes, so that old cache files are not reused
_TOKENIZED_VERSION = "1"


#: with ``data.num_workers = 0`` (auto), corpora of fewer pairs are tokenized in this process: starting workers
#: (and concatenating their shards) costs more than it saves below this size
PARALLEL_MIN_PAIRS = 100_000


def tokenize_workers(num_workers: int, num_pairs: int) -> int:
    """Processes that tokenize ``num_pairs`` pairs: ``num_workers`` (``data.num_workers``), or for 0 (auto) all
    cores from :data:`PARALLEL_MIN_PAIRS` pairs on and this process alone below."""
    if num_workers > 0:
        return num_workers
    return (os.cpu_count() or 1) if num_pairs >= PARALLEL_MIN_PAIRS else 1


def tokenize_split(
    raw: datasets.Dataset, src_tok: Tokenizer, tgt_tok: Tokenizer, cache_dir: str, max_length: int | None,
    num_workers: int = 1,
) -> datasets.Dataset:
    """Piece ids of every pair, cached as a memory-mapped Arrow file in ``cache_dir``.

    Columns: ``src_ids`` (pieces + [EOS]), ``tgt_ids`` (pieces only), ``src_len`` (= len(src_ids)) and
    ``tgt_len`` (pieces + 1 = the length of ``tgt_in`` / ``tgt_out``). With ``max_length``, pairs where either
    side has more than ``max_length`` pieces are dropped. The cache file is keyed by the raw dataset's
    fingerprint and both tokenizer models, so a second call with the same inputs does not tokenize again.
    ``num_workers`` (see :func:`tokenize_workers`; 0 = auto) processes tokenize contiguous shards of the corpus
    (one cache file each: ``tokenized-KEY_0000r_of_0000w.arrow``); the cache is reused whatever the number of
    workers of the later call.
    """
    cache = Path(cache_dir).expanduser()
    cache.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256()
    for part in (_TOKENIZED_VERSION.encode(), raw._fingerprint.encode(), src_tok.model_bytes, tgt_tok.model_bytes):
        key.update(hashlib.sha256(part).digest())
    fingerprint = key.hexdigest()[:32]

    def encode(batch: dict[str, list[str]]) -> dict[str, list]:
        src_ids = src_tok.encode(batch["src"])
        tgt_ids = tgt_tok.encode(batch["tgt"])
        for ids in src_ids:
            ids.append(EOS_ID)
        return {
            "src_ids": src_ids,
            "tgt_ids": tgt_ids,
            "src_len": [len(ids) for ids in src_ids],
            "tgt_len": [len(ids) + 1 for ids in tgt_ids],
        }

    workers = min(tokenize_workers(num_workers, len(raw)), len(raw))
    tokenized = raw.map(
        encode,
        batched=True,
        batch_size=2000,
        num_proc=workers if workers > 1 else None,
        remove_columns=raw.column_names,
        features=TOKENIZED_FEATURES,
        cache_file_name=str(cache / f"tokenized-{fingerprint}.arrow"),
        load_from_cache_file=True,
        new_fingerprint=fingerprint,
        desc="tokenizing",
    )
    if max_length is None:
        return tokenized

    def short_enough(src_len: list[int], tgt_len: list[int]) -> list[bool]:
        # both lengths count one special token (EOS / BOS) on top of the pieces
        return ((np.asarray(src_len) <= max_length + 1) & (np.asarray(tgt_len) <= max_length + 1)).tolist()

    kept = tokenized.filter(
        short_enough,
        batched=True,
        batch_size=10_000,
        input_columns=["src_len", "tgt_len"],
        cache_file_name=str(cache / f"tokenized-{fingerprint}-max{max_length}.arrow"),
        load_from_cache_file=True,
        new_fingerprint=f"{fingerprint}-max{max_length}",
        desc=f"dropping pairs longer than {max_length} pieces",
    )
    if len(kept) < len(tokenized):
        logger.info(
            "dropped %d of %d pairs longer than data.max_length = %d pieces", len(tokenized) - len(kept),
            len(tokenized), max_length,
        )
    return kept
