"""Batches of a tokenized corpus (:func:`seq2seq.tokenized_corpus.tokenize_split`): padded, length-bucketed, read
straight from the memory-mapped Arrow cache.

Batches (:class:`Batch`) are batch-first and padded with ``PAD_ID``::

    src      (B, S)  pieces + [EOS]
    tgt_in   (B, T)  [BOS] + pieces      (decoder input, teacher forcing)
    tgt_out  (B, T)  pieces + [EOS]      (what the decoder must predict)

:class:`TokenBatchSampler` groups pairs of similar length into batches of at most ``train.max_tokens`` padded
source + target positions; its order is a pure function of ``(seed, epoch)``.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from seq2seq.config import ConfigError
from seq2seq.padding import pad_flat
from seq2seq.tokenizer import BOS_ID, EOS_ID


@dataclass
class Batch:
    """A padded batch of sentence pairs, batch-first (padding is ``PAD_ID``).

    src:          (B, S) long, source pieces + [EOS]
    src_lengths:  (B,)   long, real positions of each source row
    tgt_in:       (B, T) long, [BOS] + target pieces (decoder input under teacher forcing)
    tgt_out:      (B, T) long, target pieces + [EOS] (what the decoder predicts)
    tgt_lengths:  (B,)   long, real positions of each tgt_in / tgt_out row
    """

    src: torch.Tensor
    src_lengths: torch.Tensor
    tgt_in: torch.Tensor
    tgt_out: torch.Tensor
    tgt_lengths: torch.Tensor

    def __post_init__(self) -> None:
        self._num_tgt_tokens: int | None = None

    @property
    def size(self) -> int:
        """Number of sentence pairs B."""
        return self.src.size(0)

    @property
    def num_tgt_tokens(self) -> int:
        """Real (non-pad) target positions: the number of tokens the loss is summed over."""
        if self._num_tgt_tokens is None:
            self._num_tgt_tokens = int(self.tgt_lengths.sum())
        return self._num_tgt_tokens

    def to(self, device: torch.device | str) -> "Batch":
        """This batch on ``device`` (``non_blocking`` copies: asynchronous when the tensors are pinned)."""
        tensors = (self.src, self.src_lengths, self.tgt_in, self.tgt_out, self.tgt_lengths)
        moved = Batch(*(t.to(device, non_blocking=True) for t in tensors))
        moved._num_tgt_tokens = self.num_tgt_tokens  # counted on the host: no device sync later
        return moved


def collate_flat(src_flat: np.ndarray, src_lengths: np.ndarray, tgt_flat: np.ndarray, tgt_pieces: np.ndarray) -> Batch:
    """A :class:`Batch` from concatenated ids: source rows end in EOS, target rows are pieces only."""
    src_lengths = src_lengths.astype(np.int64)
    tgt_pieces = tgt_pieces.astype(np.int64)
    src = pad_flat(src_flat, src_lengths, int(src_lengths.max()))
    width = int(tgt_pieces.max()) + 1
    tgt_in = pad_flat(tgt_flat, tgt_pieces, width, offset=1)
    tgt_in[:, 0] = BOS_ID
    tgt_out = pad_flat(tgt_flat, tgt_pieces, width)
    tgt_out[np.arange(len(tgt_pieces)), tgt_pieces] = EOS_ID
    return Batch(
        src=torch.from_numpy(src),
        src_lengths=torch.from_numpy(src_lengths),
        tgt_in=torch.from_numpy(tgt_in),
        tgt_out=torch.from_numpy(tgt_out),
        tgt_lengths=torch.from_numpy(tgt_pieces + 1),
    )


def collate(src_ids: list[list[int]], tgt_ids: list[list[int]]) -> Batch:
    """A :class:`Batch` from source ids (already ending in EOS) and target pieces (no BOS/EOS)."""
    if not src_ids or len(src_ids) != len(tgt_ids):
        raise ValueError(f"collate needs as many source as target rows (>= 1): {len(src_ids)} / {len(tgt_ids)}")
    src_lengths = np.fromiter(map(len, src_ids), dtype=np.int64, count=len(src_ids))
    tgt_pieces = np.fromiter(map(len, tgt_ids), dtype=np.int64, count=len(tgt_ids))
    src_flat = np.fromiter(itertools.chain.from_iterable(src_ids), dtype=np.int64, count=int(src_lengths.sum()))
    tgt_flat = np.fromiter(itertools.chain.from_iterable(tgt_ids), dtype=np.int64, count=int(tgt_pieces.sum()))
    return collate_flat(src_flat, src_lengths, tgt_flat, tgt_pieces)


class TokenBatchSampler:
    """Batches of dataset indices holding at most ``max_tokens`` padded source + target positions.

    Pairs are sorted by (source length, target length), ties broken at random, cut greedily into batches
    whose cost ``num_sentences * (max src_len + max tgt_len)`` stays within ``max_tokens``, and the batch order
    is shuffled. The randomness comes from ``(seed, epoch)`` only, so the batches of an epoch are a pure
    function of ``(seed, epoch)``: to resume training exactly, call ``set_epoch(epoch)`` and skip the batches
    already done. There is no other state to save.
    """

    def __init__(
        self, src_lengths: np.ndarray, tgt_lengths: np.ndarray, max_tokens: int, seed: int, shuffle: bool = True
    ) -> None:
        self.src_lengths = np.asarray(src_lengths, dtype=np.int64)
        self.tgt_lengths = np.asarray(tgt_lengths, dtype=np.int64)
        if self.src_lengths.shape != self.tgt_lengths.shape or self.src_lengths.ndim != 1:
            raise ValueError(f"src_lengths {self.src_lengths.shape} and tgt_lengths {self.tgt_lengths.shape} differ")
        self.max_tokens = max_tokens
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        if len(self.src_lengths):
            longest = int(np.argmax(self.src_lengths + self.tgt_lengths))
            positions = int(self.src_lengths[longest] + self.tgt_lengths[longest])
            if positions > max_tokens:
                raise ConfigError(
                    f"train.max_tokens = {max_tokens} is smaller than the longest pair (index {longest}: "
                    f"{self.src_lengths[longest]} source + {self.tgt_lengths[longest]} target = {positions} "
                    "positions); raise train.max_tokens or lower data.max_length"
                )
        self._num_batches = len(self._batches(0))

    @classmethod
    def from_dataset(
        cls, dataset: datasets.Dataset, max_tokens: int, seed: int, shuffle: bool = True
    ) -> "TokenBatchSampler":
        """A sampler over a :func:`tokenize_split` dataset (reads its ``src_len`` / ``tgt_len`` columns)."""
        src_lengths, tgt_lengths = (numpy_column(dataset, c) for c in ("src_len", "tgt_len"))
        return cls(src_lengths, tgt_lengths, max_tokens, seed, shuffle)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self, epoch: int) -> list[np.ndarray]:
        rng = np.random.default_rng((self.seed, epoch))
        n = len(self.src_lengths)
        tiebreak = rng.permutation(n) if self.shuffle else np.arange(n)
        order = np.lexsort((tiebreak, self.tgt_lengths, self.src_lengths))
        starts = greedy_batch_starts(self.src_lengths[order], self.tgt_lengths[order], self.max_tokens)
        batches = np.split(order, starts[1:]) if n else []
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self._batches(self.epoch):
            yield batch.tolist()

    def count_tokens(self, batches: list) -> tuple[int, int]:
        """(target, source) positions of ``batches`` (lists of indices), without padding: the target count is
        what :attr:`Batch.num_tgt_tokens` gives for them, summed."""
        target = sum(int(self.tgt_lengths[indices].sum()) for indices in batches)
        source = sum(int(self.src_lengths[indices].sum()) for indices in batches)
        return target, source

    def __len__(self) -> int:
        """Batches per epoch (the same for every epoch: ties only swap pairs of equal lengths)."""
        return self._num_batches


def numpy_column(dataset: datasets.Dataset, name: str) -> np.ndarray:
    """A column of a (filtered) dataset as one array. A filter leaves an indices mapping over the unfiltered
    table, which ``datasets`` applies row by row in Python (6 s for 1.5M rows): here it is one numpy take."""
    values = dataset.data.column(name).to_numpy()
    indices = getattr(dataset, "_indices", None)  # the mapping (private in `datasets`); None when unfiltered
    return values if indices is None else values[indices.column(0).to_numpy()]


def greedy_batch_starts(src_lengths: np.ndarray, tgt_lengths: np.ndarray, max_tokens: int) -> np.ndarray:
    """Where each batch starts when pairs, in the given order, are cut greedily into batches of at most
    ``max_tokens`` padded positions: a batch of k pairs costs ``k * (max src_len + max tgt_len)``, and a pair
    that would push its batch over the budget starts the next one (every single pair must fit).

    Vectorized per batch: the cost of every prefix of a window of pairs is computed at once (running maxima),
    and the window doubles until it holds the first pair that does not fit (an epoch of 2M pairs in about a
    second instead of a Python loop over every pair).
    """
    src_lengths, tgt_lengths = np.asarray(src_lengths, np.int64), np.asarray(tgt_lengths, np.int64)
    n = len(src_lengths)
    starts, start, width = [], 0, 64
    while start < n:
        while True:
            end = min(n, start + width)
            widest = np.maximum.accumulate(src_lengths[start:end]) + np.maximum.accumulate(tgt_lengths[start:end])
            over = np.flatnonzero(widest * np.arange(1, end - start + 1) > max_tokens)
            if len(over) or end == n:
                break
            width *= 2
        size = max(int(over[0]), 1) if len(over) else end - start  # a lone pair over the budget still forms a batch
        starts.append(start)
        start += size
        width = max(64, 2 * size)
    return np.asarray(starts, dtype=np.int64)


def batch_view(dataset: datasets.Dataset) -> datasets.Dataset:
    """The id columns of a :func:`tokenize_split` dataset, read as Arrow tables (for :func:`read_batch`).

    Memoized for the datasets of a run (making a view costs about a millisecond).
    """
    return _batch_view(dataset)


@functools.lru_cache(maxsize=4)
def _batch_view(dataset: datasets.Dataset) -> datasets.Dataset:
    return dataset.select_columns(["src_ids", "tgt_ids"]).with_format("arrow")


def read_batch(ids_view: datasets.Dataset, indices: list[int]) -> Batch:
    """The :class:`Batch` of rows ``indices`` of a :func:`batch_view`: the rows are read from the memory-mapped
    Arrow cache and padded straight from their flat id buffers (no Python lists of ids)."""
    rows = ids_view[indices]
    src_flat, src_lengths = _flat_ids(rows.column("src_ids"))
    tgt_flat, tgt_pieces = _flat_ids(rows.column("tgt_ids"))
    return collate_flat(src_flat, src_lengths, tgt_flat, tgt_pieces)


def iterate_batches(dataset: datasets.Dataset, sampler: TokenBatchSampler) -> Iterator[Batch]:
    """Collated batches of a :func:`tokenize_split` dataset in the sampler's order (see :func:`read_batch`)."""
    ids = batch_view(dataset)
    for indices in sampler:
        yield read_batch(ids, indices)


def _flat_ids(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(all ids of a list column one after another, the length of each row)."""
    lists = column.combine_chunks()
    return lists.flatten().to_numpy(), pc.list_value_length(lists).to_numpy()
