"""The encoder: its final state is the last real step of each direction, and the layout of merged directions."""

from __future__ import annotations

import pytest
import torch
from support.model_inputs import (
    ATOL,
    RNN_DIRS,
    RNN_DIRS_IDS,
    SRC_LENGTHS,
    TGT_LENGTHS,
    make_model,
    random_batch,
    randomize,
)
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from seq2seq.encoder import RNNEncoder, drop_words, merge_directions
from seq2seq.tokenizer import PAD_ID


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


# ---------------------------------------------------------------------------- residual stacks (model.residual) and word dropout (model.word_dropout)
@pytest.mark.parametrize("rnn_type", ["gru", "lstm"])
def test_residual_encoder_adds_each_layers_input_from_the_second_layer_up(rnn_type):
    encoder = RNNEncoder(20, 6, 4, num_layers=3, bidirectional=True, rnn_type=rnn_type, residual=True).eval()
    randomize(encoder, 2)
    src = torch.tensor([[5, 6, 7, 8, 9], [10, 11, 12, PAD_ID, PAD_ID]])
    lengths = torch.tensor([5, 3])
    out = encoder(src, lengths)

    x, finals = encoder.embedding(src), []
    for layer, rnn in enumerate(encoder.layers):  # torch's own single-layer RNN on the packed batch, by hand
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        y, final = rnn(packed)
        y, _ = pad_packed_sequence(y, batch_first=True, total_length=src.size(1))
        x = y + x if layer > 0 else y
        finals.append(final[0] if rnn_type == "lstm" else final)
    torch.testing.assert_close(out.outputs, x * (~out.pad_mask).unsqueeze(-1))
    last = finals[-1]  # (2 directions, B, H) -> (B, 2H), forward then backward
    torch.testing.assert_close(out.final_hidden[-1], torch.cat([last[0], last[1]], dim=-1))


def test_word_dropout_drops_whole_tokens_at_its_rate_and_keeps_the_expectation():
    torch.manual_seed(4)
    embedded = torch.rand(200, 50, 8) + 0.5  # no zero entries of its own
    dropped = drop_words(embedded, 0.3, training=True)
    zero_rows = (dropped == 0).all(-1)
    assert ((dropped == 0).any(-1) == zero_rows).all(), "a token is dropped whole or not at all"
    assert abs(float(zero_rows.float().mean()) - 0.3) < 0.014  # 10,000 tokens: sd 0.0046, so 3 sd
    torch.testing.assert_close(dropped[~zero_rows], embedded[~zero_rows] / 0.7)
    assert torch.equal(drop_words(embedded, 0.3, training=False), embedded)
