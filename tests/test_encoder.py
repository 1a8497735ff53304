"""The encoder: its final state is the last real step of each direction, and the layout of merged directions."""

from __future__ import annotations

import pytest
import torch
from support.model_inputs import ATOL, RNN_DIRS, RNN_DIRS_IDS, SRC_LENGTHS, TGT_LENGTHS, make_model, random_batch

from seq2seq.encoder import merge_directions


@pytest.mark.parametrize("rnn_type,bidirectional", RNN_DIRS, ids=RNN_DIRS_IDS)
def test_encoder_final_state_is_last_real_step_of_each_direction(rnn_type, bidirectional):
    model = make_model(rnn_type, bidirectional, encoder_layers=2)
    src, src_lengths, _, _ = random_batch(SRC_LENGTHS, TGT_LENGTHS)
    enc = model.encode(src, src_lengths)
    hidden = model.encoder.output_size // model.encoder.num_directions
    top = enc.final_hidden[-1]  # (B, dirs * H)
    for i, length in enumerate(SRC_LENGTHS):
        torch.testing.assert_close(top[i, :hidden], enc.outputs[i, length - 1, :hidden], atol=ATOL, rtol=0)
        if bidirectional:  # the backward direction ends at the first token
            torch.testing.assert_close(top[i, hidden:], enc.outputs[i, 0, hidden:], atol=ATOL, rtol=0)


@pytest.mark.parametrize("num_layers,num_directions", [(1, 1), (1, 2), (3, 1), (3, 2)])
def test_merge_directions_layout(num_layers, num_directions):
    state = torch.randn(num_layers * num_directions, 4, 5)  # torch layout: row layer * dirs + direction
    merged = merge_directions(state, num_layers, num_directions)
    assert merged.shape == (num_layers, 4, num_directions * 5)
    for layer in range(num_layers):
        expected = torch.cat([state[layer * num_directions + d] for d in range(num_directions)], dim=-1)
        assert torch.equal(merged[layer], expected)
