"""Subword regularization: every training epoch segments each training pair anew, by sampling (SentencePiece unigram
sampling, Kudo 2018, arXiv 1804.10959, or BPE-dropout, Provilkov et al. 2020, arXiv 1910.13267), and cuts its
batches from the sampled lengths.

Set by ``tokenizer.sample_alpha`` (unigram) or ``tokenizer.bpe_dropout`` (BPE); with both at 0 none of this runs and
training reads the best segmentation from the Arrow cache (:mod:`seq2seq.token_batches`). Validation, test and
translation always use the best segmentation.

How an epoch is segmented (:meth:`SampledSegmentation.sample`):

- side ``s`` (0 source, 1 target) of training pair ``i`` (its row in the corpus) is sampled with the seed
  ``pair_seeds(seed, epoch, s)[i]``: a pure function of (``train.seed``, epoch, pair), so two runs with one seed
  segment alike and ``--resume`` re-samples the interrupted epoch exactly;
- a side whose sample has more than ``data.max_length`` pieces keeps its best segmentation (which is within
  ``data.max_length``: longer pairs were dropped from the corpus), and a pair whose sampled source + target
  positions exceed ``train.max_tokens`` keeps its best segmentation on both sides (which fits);
- the batches are then cut from the sampled lengths exactly as :class:`TokenBatchSampler` cuts them from the best
  ones, so no batch holds more than ``train.max_tokens`` padded positions. A sampled segmentation is usually
  longer than the best one, so an epoch has more batches than without sampling.

The whole epoch is sampled when the epoch starts (29,000 Multi30k pairs take about 2 s on one core) and held as
flat int32 arrays (about 8 bytes per piece).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

import datasets
import numpy as np

from seq2seq.token_batches import Batch, TokenBatchSampler, collate_flat, numpy_column
from seq2seq.tokenizer import EOS_ID, Tokenizer

logger = logging.getLogger(__name__)

#: pairs whose texts are read from the corpus and sampled at a time
CHUNK = 4096


def pair_seeds(seed: int, epoch: int, num_rows: int, side: int) -> np.ndarray:
    """(num_rows,) uint32: the SentencePiece seed of side ``side`` (0 source, 1 target) of every corpus row in
    ``epoch``. Entry i is draw i of a generator seeded with (seed, epoch, side), so it does not depend on
    ``num_rows``; never 2**32 - 1 (SentencePiece's "unseeded")."""
    rng = np.random.default_rng((seed, epoch, side))
    return rng.integers(0, 2**32 - 1, size=num_rows, dtype=np.uint32)


@dataclass
class SampledEpoch:
    """One epoch's segmentation of the training pairs (pair j = row j of the tokenized training set).

    src_flat:    (sum src_lengths,) int32, every pair's source pieces + [EOS], one pair after another
    src_offsets: (N + 1,) int64, pair j's source is ``src_flat[src_offsets[j]:src_offsets[j + 1]]``
    tgt_flat:    (sum tgt_lengths - N,) int32, target pieces only (no BOS/EOS)
    tgt_offsets: (N + 1,) int64
    src_lengths: (N,) int64, source positions (pieces + EOS), as the ``src_len`` column counts them
    tgt_lengths: (N,) int64, target positions (pieces + 1), as the ``tgt_len`` column counts them
    """

    epoch: int
    src_flat: np.ndarray
    src_offsets: np.ndarray
    tgt_flat: np.ndarray
    tgt_offsets: np.ndarray
    src_lengths: np.ndarray
    tgt_lengths: np.ndarray

    def batch(self, indices: list[int]) -> Batch:
        """The :class:`Batch` of pairs ``indices`` in this epoch's segmentation."""
        rows = np.asarray(indices, dtype=np.int64)
        src = np.concatenate([self.src_flat[self.src_offsets[j]:self.src_offsets[j + 1]] for j in rows])
        tgt = np.concatenate([self.tgt_flat[self.tgt_offsets[j]:self.tgt_offsets[j + 1]] for j in rows])
        return collate_flat(src.astype(np.int64), self.src_lengths[rows], tgt.astype(np.int64),
                            self.tgt_lengths[rows] - 1)


class SampledSegmentation:
    """Samples the segmentation of the training pairs, an epoch at a time (see the module docstring).

    ``raw`` is the training split as read (columns ``src``, ``tgt``), ``train`` the tokenized (and length-filtered)
    dataset :func:`seq2seq.tokenized_corpus.tokenize_split` made of it, ``alpha`` the SentencePiece sampling parameter
    (``tokenizer.sampling``).
    """

    def __init__(self, raw: datasets.Dataset, train: datasets.Dataset, src_tok: Tokenizer, tgt_tok: Tokenizer,
                 alpha: float, max_length: int | None, max_tokens: int, seed: int) -> None:
        if alpha <= 0:
            raise ValueError(f"SampledSegmentation needs a sampling alpha > 0, got {alpha}")
        self.raw, self.src_tok, self.tgt_tok = raw, src_tok, tgt_tok
        self.alpha, self.max_length, self.max_tokens, self.seed = alpha, max_length, max_tokens, seed
        indices = getattr(train, "_indices", None)  # the length filter's mapping onto the corpus rows
        self.rows = (np.arange(len(train), dtype=np.int64) if indices is None
                     else indices.column(0).to_numpy().astype(np.int64))
        self.best_src_lengths = numpy_column(train, "src_len").astype(np.int64)
        self.best_tgt_lengths = numpy_column(train, "tgt_len").astype(np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    def sample(self, epoch: int) -> SampledEpoch:
        """The segmentation of every training pair in ``epoch`` (a pure function of (seed, epoch))."""
        started = time.perf_counter()
        seeds = [pair_seeds(self.seed, epoch, len(self.raw), side)[self.rows] for side in (0, 1)]
        sources: list[list[int]] = []
        targets: list[list[int]] = []
        kept_best_sides = kept_best_pairs = 0
        limit = self.max_length if self.max_length is not None else float("inf")
        for start in range(0, len(self.rows), CHUNK):
            chunk = slice(start, start + CHUNK)
            texts = self.raw[self.rows[chunk].tolist()]
            src = self.src_tok.sample(texts["src"], self.alpha, seeds[0][chunk])
            tgt = self.tgt_tok.sample(texts["tgt"], self.alpha, seeds[1][chunk])
            for k in range(len(src)):
                src_best = tgt_best = False
                if len(src[k]) > limit:
                    src[k], src_best = self.src_tok.encode([texts["src"][k]])[0], True
                if len(tgt[k]) > limit:
                    tgt[k], tgt_best = self.tgt_tok.encode([texts["tgt"][k]])[0], True
                kept_best_sides += src_best + tgt_best
                if len(src[k]) + 1 + len(tgt[k]) + 1 > self.max_tokens:
                    src[k] = self.src_tok.encode([texts["src"][k]])[0]
                    tgt[k] = self.tgt_tok.encode([texts["tgt"][k]])[0]
                    kept_best_pairs += 1
                src[k].append(EOS_ID)
            sources.extend(src)
            targets.extend(tgt)
        sampled = SampledEpoch(epoch, *_flatten(sources), *_flatten(targets), np.zeros(0), np.zeros(0))
        sampled.src_lengths = np.diff(sampled.src_offsets)
        sampled.tgt_lengths = np.diff(sampled.tgt_offsets) + 1
        n = max(len(self.rows), 1)
        logger.info(
            "epoch %d: segmentations sampled in %.1f s (alpha %g): %.1f source / %.1f target positions per pair "
            "(best: %.1f / %.1f); %d sides kept their best segmentation (data.max_length), %d pairs "
            "(train.max_tokens)", epoch, time.perf_counter() - started, self.alpha, sampled.src_lengths.sum() / n,
            sampled.tgt_lengths.sum() / n, self.best_src_lengths.sum() / n, self.best_tgt_lengths.sum() / n,
            kept_best_sides, kept_best_pairs)
        return sampled


def _flatten(rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(all ids one row after another as int32, the (len(rows) + 1,) offsets of the rows)."""
    lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int32, count=int(offsets[-1]))
    return flat, offsets


class SampledBatchSampler(TokenBatchSampler):
    """A :class:`TokenBatchSampler` over the current epoch's sampled segmentation: :meth:`set_epoch` samples the
    epoch (once; resuming it re-samples the same), and the batches, :meth:`count_tokens`, ``len()`` and
    :meth:`read` then follow the sampled lengths. Epoch 0 is sampled on construction."""

    def __init__(self, segmentation: SampledSegmentation, max_tokens: int, seed: int, shuffle: bool = True) -> None:
        # checks with the best lengths that every pair fits train.max_tokens (a sampled pair that would not keeps them)
        super().__init__(segmentation.best_src_lengths, segmentation.best_tgt_lengths, max_tokens, seed, shuffle)
        self.segmentation = segmentation
        self.sampled: SampledEpoch | None = None
        self._epoch_batches: list[np.ndarray] = []
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        if self.sampled is None or self.sampled.epoch != epoch:
            self.sampled = self.segmentation.sample(epoch)
            self.src_lengths, self.tgt_lengths = self.sampled.src_lengths, self.sampled.tgt_lengths
            self._epoch_batches = self._batches(epoch)
            self._num_batches = len(self._epoch_batches)

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self._epoch_batches:
            yield batch.tolist()

    def __len__(self) -> int:
        """Batches of the current epoch (it varies from epoch to epoch with the sampled lengths)."""
        return self._num_batches

    def read(self, indices: list[int]) -> Batch:
        """The batch of pairs ``indices`` as the current epoch segments them."""
        return self.sampled.batch(indices)
