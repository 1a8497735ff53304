"""The model levers of issue 19, each against an independent reference: multi-head attention computed head by
head and position by position, residual stacks composed by hand from single-layer RNNs and textbook cells, word
dropout's statistics, and a toy task learned with every lever on."""

from __future__ import annotations

import math
import random

import pytest
import torch
import torch.nn.functional as F

from seq2seq.attention import BahdanauAttention, LuongAttention
from seq2seq.cells import gru_cell, lstm_cell, rnn_step
from seq2seq.config import Config, ConfigError, ModelConfig
from seq2seq.decoding.search import greedy_search
from seq2seq.encoder import RNNEncoder, drop_words
from seq2seq.model import build_model
from seq2seq.tokenizer import BOS_ID, EOS_ID, PAD_ID

from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


def randomize(module: torch.nn.Module, seed: int) -> None:
    torch.manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.randn_like(param) * 0.5)


# ---------------------------------------------------------------------------- multi-head attention
@pytest.mark.parametrize("kind", ["bahdanau", "luong_general", "luong_dot"])
@pytest.mark.parametrize("single_step", [True, False], ids=["step", "all-positions"])
def test_multi_head_attention_matches_a_loop_over_heads_and_positions(kind, single_step):
    heads, query_size, memory_size, batch, steps, length = 4, 8, 8, 2, 3, 5
    if kind == "bahdanau":
        attention = BahdanauAttention(query_size, memory_size, heads=heads)
    else:
        attention = LuongAttention(query_size, memory_size, score=kind.split("_")[1], heads=heads)
    randomize(attention, 0)
    memory = torch.randn(batch, length, memory_size)
    pad_mask = torch.tensor([[False] * length, [False, False, False, True, True]])
    query = torch.randn(batch, query_size) if single_step else torch.randn(batch, steps, query_size)
    values, keys = attention.project_values(memory), attention.precompute_keys(memory)
    context, weights = attention(query, keys, values, pad_mask)
    attention.requires_grad_(False)

    queries = query.unsqueeze(1) if single_step else query
    value_rows = memory @ attention.value_layer.weight.T  # (B, S, M), the values projected by hand
    size, part = memory_size // heads, query_size // heads
    expected_context = torch.zeros(batch, queries.size(1), memory_size)
    expected_weights = torch.zeros(batch, queries.size(1), length)
    for b in range(batch):
        real = [s for s in range(length) if not pad_mask[b, s]]
        for t in range(queries.size(1)):
            q = queries[b, t]
            for h in range(heads):
                scores = []
                for s in real:
                    if kind == "bahdanau":
                        hidden = torch.tanh(attention.query_layer.weight @ q + attention.key_layer.weight @ memory[b, s])
                        a = attention.query_layer.weight.size(0) // heads
                        scores.append(float(attention.energy[h] @ hidden[h * a : (h + 1) * a]))
                    else:
                        key = memory[b, s] if kind == "luong_dot" else attention.key_layer.weight @ memory[b, s]
                        scores.append(float(q[h * part : (h + 1) * part] @ key[h * part : (h + 1) * part]))
                top = max(scores)
                exp = [math.exp(x - top) for x in scores]
                probs = [x / sum(exp) for x in exp]
                for p, s in zip(probs, real):
                    expected_context[b, t, h * size : (h + 1) * size] += p * value_rows[b, s, h * size : (h + 1) * size]
                    expected_weights[b, t, s] += p / heads
    if single_step:
        expected_context, expected_weights = expected_context.squeeze(1), expected_weights.squeeze(1)
    torch.testing.assert_close(context, expected_context, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(weights, expected_weights, atol=1e-6, rtol=1e-4)


def test_one_head_is_the_classic_attention():
    """heads=1 keeps the classic parameters and arithmetic: no value projection, v^T tanh(W_q q + W_k k)."""
    attention = BahdanauAttention(6, 4)
    assert attention.value_layer is None and not hasattr(attention, "energy")
    randomize(attention, 1)
    memory, query = torch.randn(2, 5, 4), torch.randn(2, 6)
    pad_mask = torch.zeros(2, 5, dtype=torch.bool)
    context, weights = attention(query, attention.precompute_keys(memory), attention.project_values(memory), pad_mask)
    scores = attention.energy_layer(torch.tanh(attention.query_layer(query).unsqueeze(1) + attention.key_layer(memory)))
    expected_weights = torch.softmax(scores.squeeze(-1), dim=-1)
    torch.testing.assert_close(weights, expected_weights)
    torch.testing.assert_close(context, torch.einsum("bs,bsm->bm", expected_weights, memory))


def test_attention_heads_must_divide_the_sizes():
    with pytest.raises(ConfigError, match="model.attention_heads"):
        Config(model=ModelConfig(attention_heads=3)).validate()
    with pytest.raises(ValueError, match="attention_heads"):
        BahdanauAttention(6, 8, heads=4)


# ---------------------------------------------------------------------------- residual stacks
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


@pytest.mark.parametrize("mode", ["gru", "lstm"])
def test_residual_decoder_step_matches_the_textbook_cells(mode):
    rnn = torch.nn.GRU(5, 4, num_layers=3) if mode == "gru" else torch.nn.LSTM(5, 4, num_layers=3)
    randomize(rnn, 3)
    x = torch.randn(2, 5)
    h, c = torch.randn(3, 2, 4), torch.randn(3, 2, 4)
    state = (h, c) if mode == "lstm" else h
    output, new_state = rnn_step(mode, rnn, F.linear(x, rnn.weight_ih_l0, rnn.bias_ih_l0), state, 0.0, False,
                                 residual=True)
    layer_input = x
    for layer in range(3):
        weights = [getattr(rnn, f"{n}_l{layer}") for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        if mode == "lstm":
            y, _ = lstm_cell(layer_input, (h[layer], c[layer]), *weights)
        else:
            y = gru_cell(layer_input, h[layer], *weights)
        expected_state = y
        layer_input = y + layer_input if layer > 0 else y
    torch.testing.assert_close(output, layer_input)
    torch.testing.assert_close((new_state[0] if mode == "lstm" else new_state)[-1], expected_state)


# ---------------------------------------------------------------------------- word dropout
def test_word_dropout_drops_whole_tokens_at_its_rate_and_keeps_the_expectation():
    torch.manual_seed(4)
    embedded = torch.rand(200, 50, 8) + 0.5  # no zero entries of its own
    dropped = drop_words(embedded, 0.3, training=True)
    zero_rows = (dropped == 0).all(-1)
    assert ((dropped == 0).any(-1) == zero_rows).all(), "a token is dropped whole or not at all"
    assert abs(float(zero_rows.float().mean()) - 0.3) < 0.01  # 10,000 tokens: 3 standard deviations ~ 0.014
    torch.testing.assert_close(dropped[~zero_rows], embedded[~zero_rows] / 0.7)
    assert torch.equal(drop_words(embedded, 0.3, training=False), embedded)


def test_word_dropout_reaches_both_embeddings_in_training_only():
    model = build_model(ModelConfig(emb_size=8, encoder_hidden_size=4, decoder_hidden_size=8, dropout=0.0,
                                    word_dropout=0.5), 20, 20)
    src, lengths = torch.randint(4, 20, (4, 6)), torch.full((4,), 6)
    tgt = torch.randint(4, 20, (4, 5))
    model.eval()
    reference = model.loss(src, lengths, tgt, tgt)[0]
    assert torch.equal(model.loss(src, lengths, tgt, tgt)[0], reference)
    model.train()
    torch.manual_seed(5)
    encoded = model.encode(src, lengths).outputs
    assert not torch.allclose(encoded, model.eval().encode(src, lengths).outputs)
    model.train()
    gates = model.decoder.input_gates(tgt)  # zeroed embeddings leave only the bias
    only_bias = torch.isclose(gates, model.decoder.rnn.bias_ih_l0.expand_as(gates)).all(-1)
    assert 0.2 < float(only_bias.float().mean()) < 0.8


# ---------------------------------------------------------------------------- a toy task, learned
@pytest.mark.slow
def test_learns_to_reverse_sequences_with_every_lever_on():
    """A two-layer residual LSTM with layer-normalized decoder cells, 4-head attention and word dropout learns to
    reverse 3-8 symbols; greedy decoding is exact on >= 90% of unseen inputs."""
    num_symbols, steps, batch_size = 10, 300, 64
    vocab = 4 + num_symbols
    rng = random.Random(0)

    def sample(n: int) -> list[list[int]]:
        return [[rng.randrange(4, vocab) for _ in range(rng.randint(3, 8))] for _ in range(n)]

    def batch(seqs):
        def pad(rows):
            out = torch.full((len(rows), max(map(len, rows))), PAD_ID)
            for i, row in enumerate(rows):
                out[i, : len(row)] = torch.tensor(row)
            return out
        return pad(seqs), torch.tensor([len(s) for s in seqs]), pad([[BOS_ID] + s[::-1] for s in seqs]), \
            pad([s[::-1] + [EOS_ID] for s in seqs])

    torch.manual_seed(0)
    held_out = sample(200)
    cfg = ModelConfig(rnn_type="lstm", emb_size=32, encoder_hidden_size=32, decoder_hidden_size=64,
                      encoder_layers=2, decoder_layers=2, residual=True, layer_norm=True, attention_heads=4,
                      word_dropout=0.05, dropout=0.0)
    model = build_model(cfg, vocab, vocab)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 - step / steps)
    model.train()
    for _ in range(steps):
        loss, tokens = model.loss(*batch(sample(batch_size)))
        optimizer.zero_grad()
        (loss / tokens).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
    model.eval()
    src, lengths, _, _ = batch(held_out)
    hypotheses = greedy_search(model, src, lengths, max_len_a=1.0, max_len_b=2)
    accuracy = sum(h.tokens == seq[::-1] for h, seq in zip(hypotheses, held_out)) / len(held_out)
    assert accuracy >= 0.9, accuracy
