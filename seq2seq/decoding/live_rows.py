"""Step the model only for sentences still being searched (as fairseq's ``SequenceGenerator`` drops finished
sentences from its batch).

A search keeps its bookkeeping (history, scores, finished hypotheses) in the full layout of ``N = B * K`` rows,
``K`` rows per sentence. Once a sentence is done its rows still sit in that layout, but nothing it computes can
change any output, so :class:`LiveRows` keeps the model's state and memory for the rows of the sentences still
live only: the decoder step, the attention and the output projection then run on ``L <= N`` rows. It hands the
model the live part of a full tensor (:meth:`take`) and puts the model's answers back in the full layout
(:meth:`spread`), and after each step maps the search's row choice onto the compact state (:meth:`follow`).

Each row's computation depends on that row alone, so outputs and scores are those of the full batch (up to the
last bits of floating point that a GEMM of another height may round differently).
"""

from __future__ import annotations

import torch
from torch import Tensor


class LiveRows:
    """The rows of the sentences still searched, out of ``rows`` = B sentences x ``group`` rows each.

    Args:
        rows: N, the full layout's rows; group: K, consecutive rows per sentence.
    """

    def __init__(self, rows: int, group: int) -> None:
        self.rows, self.group = rows, group
        self.index: Tensor | None = None  # (L,) live rows of the full layout, ascending; None while all are live
        self.position: Tensor | None = None  # (N,) each live row's place among the live rows (-1 elsewhere)
        self.done_count = 0
        self.all_done = False  # set by :meth:`follow`: every sentence is done, the search ends

    def take(self, full: Tensor | None) -> Tensor | None:
        """(N, ...) -> (L, ...) the live rows (the tensor itself while all are live; None stays None)."""
        if full is None or self.index is None:
            return full
        return full.index_select(0, self.index)

    def spread(self, live: Tensor, fill: float) -> Tensor:
        """(L, ...) -> (N, ...): the live rows in place, ``fill`` in the rows of finished sentences."""
        if self.index is None:
            return live
        full = live.new_full((self.rows, *live.shape[1:]), fill)
        full[self.index] = live
        return full

    def follow(self, chosen_rows: Tensor | None, done: Tensor, state, memory):
        """After a search step: the live state for the next one.

        Args:
            chosen_rows: (N,) for each row of the next step, the full-layout row it extends (within its sentence),
                or None where each row extends itself (greedy search).
            done: (B,) bool, the sentences finished so far (a sentence never comes back).
            state: the model state of the current live rows; memory: their encoder memory.
        Returns:
            the state reordered by ``chosen_rows`` for the rows still live, and the memory for them (selected
            anew only when a sentence has just finished); both as they were once :attr:`all_done`.
        """
        done_count = int(done.sum())  # the search step's one read of the device
        self.all_done = done_count == done.numel()
        if self.all_done:
            return state, memory
        if done_count == self.done_count:  # the same live rows: at most one reorder, as without this class
            return (state if chosen_rows is None else state.select(self._place(self.take(chosen_rows)))), memory
        new_index = (~done).repeat_interleave(self.group).nonzero().squeeze(1)  # (L',)
        state = state.select(self._place(new_index if chosen_rows is None else chosen_rows.index_select(0, new_index)))
        memory = memory.select(self._place(new_index))
        position = torch.full((self.rows,), -1, dtype=torch.long, device=new_index.device)
        position[new_index] = torch.arange(new_index.numel(), device=new_index.device)
        self.index, self.position, self.done_count = new_index, position, done_count
        return state, memory

    def _place(self, full_rows: Tensor) -> Tensor:
        """(L',) full-layout rows of live sentences -> their places among the current live rows."""
        return full_rows if self.position is None else self.position.index_select(0, full_rows)
