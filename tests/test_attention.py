"""Attention (Bahdanau, Luong dot and general): shapes, weights that sum to one over real memory steps, the
scores against their formulas written out, and the errors for bad arguments."""

from __future__ import annotations

import math

import pytest
import torch
from support.model_inputs import ATOL, ATTENTIONS, randomize

from seq2seq.attention import BahdanauAttention, LuongAttention, build_attention
from seq2seq.config import Config, ConfigError, ModelConfig


@pytest.mark.parametrize("kind", ATTENTIONS)
def test_attention_shapes_and_weights(kind):
    batch, src_len, steps, size = 4, 6, 3, 10
    attention = build_attention(kind, query_size=size, memory_size=size)
    lengths = torch.tensor([6, 1, 4, 3])
    pad_mask = torch.arange(src_len).unsqueeze(0) >= lengths.unsqueeze(1)
    memory = torch.randn(batch, src_len, size)
    keys = attention.precompute_keys(memory)
    queries = torch.randn(batch, steps, size)

    context, weights = attention(queries, keys, memory, pad_mask)  # multi-step
    assert context.shape == (batch, steps, size) and weights.shape == (batch, steps, src_len)
    torch.testing.assert_close(weights.sum(-1), torch.ones(batch, steps), atol=ATOL, rtol=0)
    assert torch.all(weights.masked_select(pad_mask.unsqueeze(1).expand_as(weights)) == 0)
    assert torch.all(weights.masked_select(~pad_mask.unsqueeze(1).expand_as(weights)) > 0)
    torch.testing.assert_close(context, torch.bmm(weights, memory), atol=ATOL, rtol=0)

    for t in range(steps):  # single-step queries give the rows of the multi-step call
        context_t, weights_t = attention(queries[:, t], keys, memory, pad_mask)
        assert context_t.shape == (batch, size) and weights_t.shape == (batch, src_len)
        torch.testing.assert_close(context_t, context[:, t], atol=ATOL, rtol=0)
        torch.testing.assert_close(weights_t, weights[:, t], atol=ATOL, rtol=0)

    garbage = memory.masked_fill(pad_mask.unsqueeze(-1), 1e3)  # padded memory must not leak in
    context_g, weights_g = attention(queries, attention.precompute_keys(garbage), garbage, pad_mask)
    torch.testing.assert_close(context_g, context, atol=ATOL, rtol=0)
    torch.testing.assert_close(weights_g, weights, atol=ATOL, rtol=0)


def test_attention_scores_match_their_formulas():
    """``score`` gives (B, heads, T, S); one head here, so the formulas are compared on ``[:, 0]``."""
    query, memory = torch.randn(2, 1, 10), torch.randn(2, 5, 10)
    dot = build_attention("luong_dot", 10, 10)
    torch.testing.assert_close(dot.score(query, dot.precompute_keys(memory))[:, 0], query @ memory.transpose(1, 2))
    general = build_attention("luong_general", 10, 8)
    memory8 = torch.randn(2, 5, 8)
    expected = query @ (memory8 @ general.key_layer.weight.T).transpose(1, 2)
    torch.testing.assert_close(general.score(query, general.precompute_keys(memory8))[:, 0], expected)
    additive = build_attention("bahdanau", 10, 8)
    hidden = torch.tanh(additive.query_layer(query).unsqueeze(2) + additive.key_layer(memory8).unsqueeze(1))
    expected = (hidden @ additive.energy_layer.weight.T).squeeze(-1)
    torch.testing.assert_close(additive.score(query, additive.precompute_keys(memory8))[:, 0], expected)


def test_attention_rejects_bad_arguments():
    with pytest.raises(ValueError, match="query_size == memory_size"):
        build_attention("luong_dot", 10, 12)
    with pytest.raises(ValueError, match="unknown attention"):
        build_attention("luong_concat", 10, 10)


# ---------------------------------------------------------------------------- multi-head attention (model.attention_heads)
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
