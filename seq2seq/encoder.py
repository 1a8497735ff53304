"""Recurrent encoder: embeddings -> (bi)directional LSTM/GRU over packed sequences.

The encoder returns everything the decoder needs in one value, :class:`EncoderOutput`: the per-token
outputs (attention memory), the padding mask (True = pad, built once here and passed along), and the
final state of every layer (the context vector that starts the decoder through the bridge).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn

from seq2seq.cells import make_rnn, run_rnn


@dataclass
class EncoderOutput:
    """What the encoder hands to the decoder.

    Attributes:
        outputs: (B, S, dirs * H) per-token outputs (zeros at padded positions).
        pad_mask: (B, S) bool, True at padded source positions.
        final_hidden: (layers, B, dirs * H) last hidden state of each layer, directions concatenated.
        final_cell: (layers, B, dirs * H) last LSTM cell state, or None for a GRU.
    """

    outputs: Tensor
    pad_mask: Tensor
    final_hidden: Tensor
    final_cell: Optional[Tensor] = None

    def repeat_interleave(self, repeats: int) -> "EncoderOutput":
        """Repeat every sentence ``repeats`` times along the batch: B -> B * repeats (beam layout)."""
        cell = self.final_cell.repeat_interleave(repeats, dim=1) if self.final_cell is not None else None
        return EncoderOutput(
            outputs=self.outputs.repeat_interleave(repeats, dim=0),
            pad_mask=self.pad_mask.repeat_interleave(repeats, dim=0),
            final_hidden=self.final_hidden.repeat_interleave(repeats, dim=1),
            final_cell=cell,
        )


def merge_directions(state: Tensor, num_layers: int, num_directions: int) -> Tensor:
    """(layers * dirs, B, H) in torch's layer-major layout -> (layers, B, dirs * H).

    Works for one and two directions alike: direction d of layer l sits at index ``l * dirs + d``.
    """
    _, batch_size, hidden_size = state.shape
    state = state.view(num_layers, num_directions, batch_size, hidden_size)
    return state.permute(0, 2, 1, 3).reshape(num_layers, batch_size, num_directions * hidden_size)


class RNNEncoder(nn.Module):
    """Embedding -> dropout -> multi-layer (bi)directional LSTM/GRU -> dropout.

    Args:
        vocab_size: source vocabulary size.
        emb_size: embedding size.
        hidden_size: RNN hidden size per direction.
        num_layers: stacked RNN layers.
        bidirectional: run a backward RNN too and concatenate (output size ``2 * hidden_size``).
        rnn_type: ``"gru"`` or ``"lstm"``.
        rnn_impl: ``"fused"`` (torch kernels) or ``"reference"`` (textbook cells).
        dropout: on embeddings, between layers and on outputs.
        pad_id: padding id of the source vocabulary.
    """

    def __init__(
        self,
        vocab_size: int,
        emb_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bidirectional: bool = True,
        rnn_type: str = "gru",
        rnn_impl: str = "fused",
        dropout: float = 0.0,
        pad_id: int = 0,
    ) -> None:
        super().__init__()
        self.pad_id = pad_id
        self.num_layers = num_layers
        self.num_directions = 2 if bidirectional else 1
        self.output_size = hidden_size * self.num_directions
        self.rnn_type = rnn_type
        self.embedding = nn.Embedding(vocab_size, emb_size, padding_idx=pad_id)
        self.dropout = nn.Dropout(dropout)
        self.rnn = make_rnn(rnn_type, rnn_impl, emb_size, hidden_size, num_layers, bidirectional, dropout)

    def forward(self, src: Tensor, src_lengths: Tensor) -> EncoderOutput:
        """Encode a padded batch.

        Args:
            src: (B, S) source ids, padded with ``pad_id``.
            src_lengths: (B,) real lengths (>= 1).
        """
        embedded = self.dropout(self.embedding(src))  # (B, S, E)
        outputs, final = run_rnn(self.rnn, embedded, src_lengths, None)  # (B, S, dirs*H)
        hidden, cell = (final if self.rnn_type == "lstm" else (final, None))
        positions = torch.arange(src.size(1), device=src.device)
        pad_mask = positions.unsqueeze(0) >= src_lengths.to(src.device).unsqueeze(1)  # (B, S)
        return EncoderOutput(
            outputs=self.dropout(outputs),
            pad_mask=pad_mask,
            final_hidden=merge_directions(hidden, self.num_layers, self.num_directions),
            final_cell=merge_directions(cell, self.num_layers, self.num_directions) if cell is not None else None,
        )
