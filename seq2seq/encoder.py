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

from seq2seq.dropout import Dropout
from seq2seq.rnn import make_rnn, run_rnn


def drop_words(embedded: Tensor, p: float, training: bool) -> Tensor:
    """Word dropout: each token's whole embedding is zeroed with probability ``p`` in training (the rest scaled by
    ``1 / (1 - p)``, so the expected input is unchanged); identity in eval mode or for ``p = 0``.

    Gal and Ghahramani 2016 (arXiv 1512.05287); Sennrich and Zhang 2019 (arXiv 1905.11901) found 0.3 on source
    and target embeddings one of the large gains for small corpora.

    Args:
        embedded: ``(..., E)`` embeddings, one row per token.
    """
    if not training or p <= 0.0:
        return embedded
    keep = torch.rand(embedded.shape[:-1] + (1,), device=embedded.device) >= p
    return embedded * keep.to(embedded.dtype) / (1.0 - p)


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
        residual: residual connections between stacked layers, from the second layer up (RNMT+, Chen et al.
            2018): each layer is its own RNN and adds its input to its output.
        word_dropout: probability of dropping a source token's whole embedding in training (:func:`drop_words`).
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
        residual: bool = False,
        word_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.pad_id = pad_id
        self.num_layers = num_layers
        self.num_directions = 2 if bidirectional else 1
        self.output_size = hidden_size * self.num_directions
        self.rnn_type = rnn_type
        self.embedding = nn.Embedding(vocab_size, emb_size, padding_idx=pad_id)
        self.dropout = Dropout(dropout)
        self.word_dropout = word_dropout
        self.residual = residual and num_layers > 1
        if self.residual:  # one RNN per layer, so that each can add its input to its output
            self.layers = nn.ModuleList(
                make_rnn(rnn_type, rnn_impl, emb_size if layer == 0 else self.output_size, hidden_size, 1, bidirectional)
                for layer in range(num_layers)
            )
        else:
            self.rnn = make_rnn(rnn_type, rnn_impl, emb_size, hidden_size, num_layers, bidirectional, dropout)

    def forward(self, src: Tensor, src_lengths: Tensor) -> EncoderOutput:
        """Encode a padded batch.

        Args:
            src: (B, S) source ids, padded with ``pad_id``.
            src_lengths: (B,) real lengths (>= 1).
        """
        embedded = self.dropout(drop_words(self.embedding(src), self.word_dropout, self.training))  # (B, S, E)
        if self.residual:
            outputs, final = self._run_residual(embedded, src_lengths)
        else:
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

    def _run_residual(self, embedded: Tensor, src_lengths: Tensor):
        """The residual stack: ``x_{l+1} = RNN_l(dropout(x_l)) + dropout(x_l)`` from the second layer up.

        Returns outputs ``(B, S, dirs * H)`` and the final state in torch's layout ``(layers * dirs, B, H)``
        (a pair for an LSTM), as one multi-layer RNN returns them.
        """
        layer_input, finals = embedded, []
        for layer, rnn in enumerate(self.layers):
            if layer > 0:
                layer_input = self.dropout(layer_input)  # the one rate the encoder drops with
            outputs, final = run_rnn(rnn, layer_input, src_lengths, None)
            layer_input = outputs + layer_input if layer > 0 else outputs
            finals.append(final)
        if self.rnn_type == "lstm":
            return layer_input, (torch.cat([h for h, _ in finals]), torch.cat([c for _, c in finals]))
        return layer_input, torch.cat(finals)
