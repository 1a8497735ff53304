"""Right-padding of id lists, written once: a row's ids from the left, then ``PAD_ID`` to the batch's width.

Training's batches (:mod:`seq2seq.token_batches`) pad concatenated ids read from the Arrow cache
(:func:`pad_flat`); decoding pads sources, forced prefixes and the targets it scores (:func:`pad_rows`).
Light to import (numpy; torch only inside :func:`pad_rows`): the decoding path does not load the data libraries,
and the runtime without torch pads with :func:`pad_arrays`.
"""

from __future__ import annotations

import itertools
from typing import Sequence

from typing import TYPE_CHECKING

import numpy as np

from seq2seq.tokenizer import PAD_ID

if TYPE_CHECKING:
    import torch


def pad_flat(flat: np.ndarray, lengths: np.ndarray, width: int, offset: int = 0) -> np.ndarray:
    """(B, width) int64 array of PAD_ID with row i's ids at columns ``offset .. offset + lengths[i] - 1``.

    ``flat`` holds the ids of all rows one after another (sum(lengths) values).
    """
    out = np.full((len(lengths), width), PAD_ID, dtype=np.int64)
    columns = np.arange(width)
    out[(columns >= offset) & (columns < offset + lengths[:, None])] = flat  # fills row by row
    return out


def pad_arrays(rows: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Id lists -> (B, W) int64 ids right-padded with PAD_ID, W the longest row (0 when every row is empty), and
    their (B,) lengths, as numpy arrays."""
    lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
    flat = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int64, count=int(lengths.sum()))
    return pad_flat(flat, lengths, int(lengths.max(initial=0))), lengths


def pad_rows(rows: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`pad_arrays` as torch tensors."""
    import torch

    ids, lengths = pad_arrays(rows)
    return torch.from_numpy(ids), torch.from_numpy(lengths)
