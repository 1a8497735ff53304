"""Right-padding of id lists, the one rule training's batches and decoding share: values written out by hand."""

from __future__ import annotations

import numpy as np
import torch

from seq2seq.decoding.driver import pad_batch, pad_prefixes
from seq2seq.padding import pad_flat, pad_rows
from seq2seq.tokenizer import PAD_ID

P = PAD_ID


def test_pad_rows_puts_each_row_left_then_pad():
    ids, lengths = pad_rows([[7, 8, 9], [5], [], (4, 6)])
    assert ids.dtype == torch.int64 and lengths.dtype == torch.int64
    assert ids.tolist() == [[7, 8, 9], [5, P, P], [P, P, P], [4, 6, P]]
    assert lengths.tolist() == [3, 1, 0, 2]


def test_rows_that_are_all_empty_pad_to_width_zero():
    ids, lengths = pad_rows([[], []])
    assert tuple(ids.shape) == (2, 0) and lengths.tolist() == [0, 0]


def test_pad_flat_with_an_offset_leaves_the_first_columns_for_bos():
    flat = np.array([7, 8, 9, 5], dtype=np.int64)
    out = pad_flat(flat, np.array([3, 1]), width=4, offset=1)
    assert out.tolist() == [[P, 7, 8, 9], [P, 5, P, P]]


def test_decodings_padders_use_the_rule():
    ids, lengths = pad_batch([[4, 3], [5, 6, 3]], torch.device("cpu"))
    assert ids.tolist() == [[4, 3, P], [5, 6, 3]] and lengths.tolist() == [2, 3]
    assert pad_prefixes([[], []], torch.device("cpu")) is None
    assert pad_prefixes([[9], []], torch.device("cpu")).tolist() == [[9], [P]]
