"""What decoding does to source id sequences before any model runs, with no tensors: the encoder's input of a
line's pieces, and the length-sorted batches. Shared by the torch driver (:mod:`seq2seq.decoding.driver`) and the
runtime without torch (:mod:`seq2seq.decoding.numpy_search`)."""

from __future__ import annotations

from typing import Sequence

from seq2seq.tokenizer import EOS_ID


def sentence_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices sorted by length (longest first) in chunks of ``batch_size``, for decoding.

    Every index appears exactly once; results go back to input order by index.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])  # stable: ties keep input order
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def source_ids(pieces: Sequence[int], max_src_length: int) -> list[int]:
    """Piece ids (no EOS) -> the encoder's input: at most ``max_src_length`` pieces, then EOS."""
    return list(pieces[:max_src_length]) + [EOS_ID]
