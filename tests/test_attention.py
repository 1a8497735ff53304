"""Attention (Bahdanau, Luong dot and general): shapes, weights that sum to one over real memory steps, the
scores against their formulas written out, and the errors for bad arguments."""

from __future__ import annotations

import pytest
import torch
from support.model_inputs import ATOL, ATTENTIONS

from seq2seq.attention import build_attention


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
    query, memory = torch.randn(2, 1, 10), torch.randn(2, 5, 10)
    dot = build_attention("luong_dot", 10, 10)
    torch.testing.assert_close(dot.score(query, dot.precompute_keys(memory)), query @ memory.transpose(1, 2))
    general = build_attention("luong_general", 10, 8)
    memory8 = torch.randn(2, 5, 8)
    expected = query @ (memory8 @ general.key_layer.weight.T).transpose(1, 2)
    torch.testing.assert_close(general.score(query, general.precompute_keys(memory8)), expected)
    additive = build_attention("bahdanau", 10, 8)
    hidden = torch.tanh(additive.query_layer(query).unsqueeze(2) + additive.key_layer(memory8).unsqueeze(1))
    expected = (hidden @ additive.energy_layer.weight.T).squeeze(-1)
    torch.testing.assert_close(additive.score(query, additive.precompute_keys(memory8)), expected)


def test_attention_rejects_bad_arguments():
    with pytest.raises(ValueError, match="query_size == memory_size"):
        build_attention("luong_dot", 10, 12)
    with pytest.raises(ValueError, match="unknown attention"):
        build_attention("luong_concat", 10, 10)
