"""Encoder, attention, decoder and Seq2Seq: shapes, bridges, padding invariance, the parallel and reference
paths against the stepped/fused ones, tied embeddings, scheduled sampling, the loss, and a toy task learned."""

from __future__ import annotations

import itertools
import random
import time

import pytest
import torch
import torch.nn.functional as F
from search_calls import run_greedy

from seq2seq.attention import build_attention
from seq2seq.config import Config, ConfigError, ModelConfig
from seq2seq.decoder import AttnDecoder
from seq2seq.encoder import merge_directions
from seq2seq.model import Seq2Seq, build_model
from seq2seq.tokenizer import BOS_ID, EOS_ID, PAD_ID

SRC_VOCAB, TGT_VOCAB = 11, 13
EMB, DEC_HIDDEN = 8, 10
FIRST_REAL_ID = 4  # ids below are <pad> <unk> <s> </s>
ATOL = 1e-5
ATTENTIONS = ["bahdanau", "luong_dot", "luong_general"]

RNN_DIRS = list(itertools.product(["gru", "lstm"], [False, True]))
RNN_DIRS_IDS = [f"{rnn}-{'bi' if bi else 'uni'}" for rnn, bi in RNN_DIRS]


def make_model(
    rnn_type: str = "gru", bidirectional: bool = True, encoder_hidden_size: int | None = None, **overrides
) -> Seq2Seq:
    """A small model in eval mode (dropout 0). By default the encoder output size equals the decoder hidden
    size, so ``luong_dot`` and bridge ``last`` are possible."""
    if encoder_hidden_size is None:
        encoder_hidden_size = DEC_HIDDEN // (2 if bidirectional else 1)
    cfg = ModelConfig(
        rnn_type=rnn_type,
        emb_size=EMB,
        encoder_hidden_size=encoder_hidden_size,
        bidirectional=bidirectional,
        decoder_hidden_size=DEC_HIDDEN,
        dropout=0.0,
        **overrides,
    )
    return build_model(cfg, SRC_VOCAB, TGT_VOCAB).eval()


def pad_rows(rows: list[list[int]], length: int | None = None) -> torch.Tensor:
    length = length or max(len(row) for row in rows)
    out = torch.full((len(rows), length), PAD_ID, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return out


def random_batch(src_lengths: list[int], tgt_lengths: list[int]) -> tuple[torch.Tensor, ...]:
    """(src, src_lengths, tgt_in, tgt_out): random real ids, padded with PAD; tgt_in = BOS + y, tgt_out = y + EOS."""
    src = [torch.randint(FIRST_REAL_ID, SRC_VOCAB, (n,)).tolist() for n in src_lengths]
    tgt = [torch.randint(FIRST_REAL_ID, TGT_VOCAB, (n,)).tolist() for n in tgt_lengths]
    return (
        pad_rows(src),
        torch.tensor(src_lengths),
        pad_rows([[BOS_ID] + y for y in tgt]),
        pad_rows([y + [EOS_ID] for y in tgt]),
    )


SRC_LENGTHS, TGT_LENGTHS = [5, 2, 7, 1], [3, 6, 1, 4]  # unsorted; include 1 and the full length


def state_tensors(state) -> list[torch.Tensor]:
    return [state.hidden] + ([state.cell] if state.cell is not None else [])


# ---------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("rnn_type,bidirectional", RNN_DIRS, ids=RNN_DIRS_IDS)
@pytest.mark.parametrize("encoder_layers,decoder_layers", [(1, 1), (2, 1), (1, 2), (2, 2)])
def test_shapes(rnn_type, bidirectional, encoder_layers, decoder_layers):
    model = make_model(rnn_type, bidirectional, encoder_layers=encoder_layers, decoder_layers=decoder_layers)
    src, src_lengths, tgt_in, tgt_out = random_batch(SRC_LENGTHS, TGT_LENGTHS)
    batch, src_len, tgt_len = src.size(0), src.size(1), tgt_in.size(1)
    memory_size = model.encoder.output_size
    assert memory_size == DEC_HIDDEN

    enc = model.encode(src, src_lengths)
    assert enc.outputs.shape == (batch, src_len, memory_size)
    assert torch.equal(enc.pad_mask, src.eq(PAD_ID))
    assert enc.final_hidden.shape == (encoder_layers, batch, memory_size)
    if rnn_type == "lstm":
        assert enc.final_cell.shape == (encoder_layers, batch, memory_size)
    else:
        assert enc.final_cell is None
    assert enc.outputs[enc.pad_mask].abs().max() == 0

    state, memory = model.decoder.start(enc)
    for tensor in state_tensors(state):
        assert tensor.shape == (decoder_layers, batch, DEC_HIDDEN)
    assert (state.cell is not None) == (rnn_type == "lstm")
    assert state.attn_vector.shape == (batch, model.decoder.attn_vector_size)
    assert memory.values.shape == (batch, src_len, memory_size)

    logits, new_state, attn = model.decoder.step(tgt_in[:, 0], state, memory)
    assert logits.shape == (batch, TGT_VOCAB)
    assert attn.shape == (batch, src_len)
    for old, new in zip(state_tensors(state), state_tensors(new_state)):
        assert new.shape == old.shape

    logits, attn = model.decoder(tgt_in, enc)
    assert logits.shape == (batch, tgt_len, TGT_VOCAB)
    assert attn.shape == (batch, tgt_len, src_len)
    logits, attn = model(src, src_lengths, tgt_in)
    assert logits.shape == (batch, tgt_len, TGT_VOCAB)
    loss, num_tokens = model.loss(src, src_lengths, tgt_in, tgt_out)
    assert loss.shape == () and loss.dtype == torch.float32 and torch.isfinite(loss)
    assert num_tokens == sum(TGT_LENGTHS) + len(TGT_LENGTHS)


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


# ---------------------------------------------------------------------------- state values
@pytest.mark.parametrize("rnn_type", ["gru", "lstm"])
def test_state_select_and_memory_repeat_commute_with_step(rnn_type):
    """Expanding to beams (select + repeat_interleave) then stepping == stepping then expanding."""
    model = make_model(rnn_type, decoder_layers=2)
    src, src_lengths, tgt_in, _ = random_batch(SRC_LENGTHS, TGT_LENGTHS)
    enc = model.encode(src, src_lengths)
    state, memory = model.decoder.start(enc)
    logits, next_state, attn = model.decoder.step(tgt_in[:, 0], state, memory)

    index = torch.arange(len(SRC_LENGTHS)).repeat_interleave(3)
    state_k, memory_k = model.decoder.start(enc.repeat_interleave(3))
    logits_k, next_state_k, attn_k = model.decoder.step(tgt_in[:, 0][index], state_k, memory_k)
    torch.testing.assert_close(logits_k, logits[index], atol=ATOL, rtol=0)
    torch.testing.assert_close(attn_k, attn[index], atol=ATOL, rtol=0)
    for expanded, plain in zip(state_tensors(next_state_k), state_tensors(next_state.select(index))):
        torch.testing.assert_close(expanded, plain, atol=ATOL, rtol=0)

    reorder = torch.tensor([2, 0, 0, 3])
    selected = next_state.select(reorder)
    for new, old in zip(state_tensors(selected), state_tensors(next_state)):
        assert torch.equal(new, old[:, reorder])
    assert torch.equal(selected.attn_vector, next_state.attn_vector[reorder])


# ---------------------------------------------------------------------------- bridge
LAYER_PAIRS = [(1, 1), (2, 1), (1, 2), (2, 2)]


def source_layer(decoder_layer: int, encoder_layers: int, decoder_layers: int) -> int:
    """Equal depths map layer to layer; otherwise the top encoder layer starts every decoder layer."""
    return decoder_layer if encoder_layers == decoder_layers else encoder_layers - 1


@pytest.mark.parametrize("rnn_type,bidirectional", RNN_DIRS, ids=RNN_DIRS_IDS)
@pytest.mark.parametrize("encoder_layers,decoder_layers", LAYER_PAIRS)
def test_bridge_linear(rnn_type, bidirectional, encoder_layers, decoder_layers):
    # encoder output 2*7 or 7 differs from the decoder hidden 10: a linear bridge maps any size
    model = make_model(
        rnn_type, bidirectional, encoder_hidden_size=7, encoder_layers=encoder_layers, decoder_layers=decoder_layers
    )
    src, src_lengths, _, _ = random_batch(SRC_LENGTHS, TGT_LENGTHS)
    enc = model.encode(src, src_lengths)
    state, _ = model.decoder.start(enc)
    finals = [(state.hidden, enc.final_hidden, model.decoder.bridge_hidden)]
    if rnn_type == "lstm":
        finals.append((state.cell, enc.final_cell, model.decoder.bridge_cell))
    else:
        assert state.cell is None and model.decoder.bridge_cell is None
    for initial, final, layer in finals:
        assert initial.shape == (decoder_layers, len(SRC_LENGTHS), DEC_HIDDEN)
        for d in range(decoder_layers):
            expected = torch.tanh(layer(final[source_layer(d, encoder_layers, decoder_layers)]))
            torch.testing.assert_close(initial[d], expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("rnn_type,bidirectional", RNN_DIRS, ids=RNN_DIRS_IDS)
@pytest.mark.parametrize("encoder_layers,decoder_layers", LAYER_PAIRS)
def test_bridge_last(rnn_type, bidirectional, encoder_layers, decoder_layers):
    model = make_model(
        rnn_type, bidirectional, bridge="last", encoder_layers=encoder_layers, decoder_layers=decoder_layers
    )
    assert not hasattr(model.decoder, "bridge_hidden")
    src, src_lengths, _, _ = random_batch(SRC_LENGTHS, TGT_LENGTHS)
    enc = model.encode(src, src_lengths)
    state, _ = model.decoder.start(enc)
    pairs = [(state.hidden, enc.final_hidden)] + ([(state.cell, enc.final_cell)] if rnn_type == "lstm" else [])
    for initial, final in pairs:
        assert initial.shape == (decoder_layers, len(SRC_LENGTHS), DEC_HIDDEN)
        for d in range(decoder_layers):
            assert torch.equal(initial[d], final[source_layer(d, encoder_layers, decoder_layers)])
    logits, _ = model(src, src_lengths, random_batch(SRC_LENGTHS, TGT_LENGTHS)[2])
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("rnn_type,bidirectional", RNN_DIRS, ids=RNN_DIRS_IDS)
@pytest.mark.parametrize("encoder_layers,decoder_layers", [(2, 1), (1, 2)])
def test_bridge_zero(rnn_type, bidirectional, encoder_layers, decoder_layers):
    model = make_model(
        rnn_type, bidirectional, encoder_hidden_size=7, bridge="zero", encoder_layers=encoder_layers,
        decoder_layers=decoder_layers,
    )
    src, src_lengths, _, _ = random_batch(SRC_LENGTHS, TGT_LENGTHS)
    state, _ = model.decoder.start(model.encode(src, src_lengths))
    for tensor in state_tensors(state) + [state.attn_vector]:
        assert torch.count_nonzero(tensor) == 0
    assert len(state_tensors(state)) == (2 if rnn_type == "lstm" else 1)
    assert state.hidden.shape == (decoder_layers, len(SRC_LENGTHS), DEC_HIDDEN)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_bridge_last_needs_matching_sizes(bidirectional):
    memory_size = 6 * (2 if bidirectional else 1)
    with pytest.raises(ValueError, match="bridge 'last'"):
        AttnDecoder(
            vocab_size=TGT_VOCAB, emb_size=EMB, hidden_size=DEC_HIDDEN, memory_size=memory_size,
            encoder_final_size=memory_size, bridge="last",
        )
    sizes = dict(encoder_hidden_size=6, bidirectional=bidirectional, decoder_hidden_size=10)
    cfg = Config(model=ModelConfig(bridge="last", **sizes))
    with pytest.raises(ConfigError, match="model.bridge"):
        cfg.validate()
    cfg.model.bridge = "bridge"
    cfg.validate()  # the same sizes are fine with a linear bridge


# ---------------------------------------------------------------------------- padding invariance
@pytest.mark.parametrize("rnn_type,bidirectional", RNN_DIRS, ids=RNN_DIRS_IDS)
@pytest.mark.parametrize("input_feeding", [True, False], ids=["feed", "nofeed"])
def test_padding_invariance(rnn_type, bidirectional, input_feeding):
    model = make_model(rnn_type, bidirectional, encoder_layers=2, decoder_layers=2, input_feeding=input_feeding)
    src, src_lengths, tgt_in, tgt_out = random_batch(SRC_LENGTHS, TGT_LENGTHS)
    enc = model.encode(src, src_lengths)
    logits, attn = model(src, src_lengths, tgt_in)
    losses = []
    for i, (n, m) in enumerate(zip(SRC_LENGTHS, TGT_LENGTHS)):
        alone_src, alone_tgt = src[i : i + 1, :n], tgt_in[i : i + 1, : m + 1]
        alone = model.encode(alone_src, src_lengths[i : i + 1])
        torch.testing.assert_close(alone.outputs[0], enc.outputs[i, :n], atol=ATOL, rtol=0)
        torch.testing.assert_close(alone.final_hidden[:, 0], enc.final_hidden[:, i], atol=ATOL, rtol=0)
        if rnn_type == "lstm":
            torch.testing.assert_close(alone.final_cell[:, 0], enc.final_cell[:, i], atol=ATOL, rtol=0)
        alone_logits, alone_attn = model(alone_src, src_lengths[i : i + 1], alone_tgt)
        torch.testing.assert_close(alone_logits[0], logits[i, : m + 1], atol=ATOL, rtol=0)
        torch.testing.assert_close(alone_attn[0], attn[i, : m + 1, :n], atol=ATOL, rtol=0)
        assert torch.count_nonzero(attn[i, :, n:]) == 0
        losses.append(model.loss(alone_src, src_lengths[i : i + 1], alone_tgt, tgt_out[i : i + 1, : m + 1])[0])
    loss, _ = model.loss(src, src_lengths, tgt_in, tgt_out)
    torch.testing.assert_close(loss, torch.stack(losses).sum(), atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_loss_ignores_padding(label_smoothing):
    model = make_model("lstm")
    src, src_lengths, tgt_in, tgt_out = random_batch(SRC_LENGTHS, TGT_LENGTHS)
    loss, num_tokens = model.loss(src, src_lengths, tgt_in, tgt_out, label_smoothing=label_smoothing)
    total, count = torch.tensor(0.0), 0
    for i, m in enumerate(TGT_LENGTHS):
        one, n = model.loss(
            src[i : i + 1, : SRC_LENGTHS[i]], src_lengths[i : i + 1], tgt_in[i : i + 1, : m + 1],
            tgt_out[i : i + 1, : m + 1], label_smoothing=label_smoothing,
        )
        total, count = total + one, count + n
    assert num_tokens == count == sum(TGT_LENGTHS) + len(TGT_LENGTHS)
    torch.testing.assert_close(loss, total, atol=1e-4, rtol=1e-5)
    if label_smoothing == 0.0:  # the summed negative log-likelihood of the real target tokens
        log_probs = torch.log_softmax(model(src, src_lengths, tgt_in)[0], dim=-1)
        real = tgt_out.ne(PAD_ID)
        nll = -log_probs.gather(-1, tgt_out.unsqueeze(-1)).squeeze(-1)[real].sum()
        torch.testing.assert_close(loss, nll, atol=1e-4, rtol=1e-5)


# ---------------------------------------------------------------------------- equivalent paths
def stepped_logits(model: Seq2Seq, src, src_lengths, tgt_in) -> torch.Tensor:
    """Logits from calling decoder.step once per gold target position (the search's code path)."""
    state, memory = model.decoder.start(model.encode(src, src_lengths))
    logits = []
    for t in range(tgt_in.size(1)):
        step_logits, state, _ = model.decoder.step(tgt_in[:, t], state, memory)
        logits.append(step_logits)
    return torch.stack(logits, dim=1)


def summed_nll(logits: torch.Tensor, tgt_out: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.flatten(0, 1), tgt_out.flatten(), ignore_index=PAD_ID, reduction="sum")


@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("rnn_type", ["gru", "lstm"])
@pytest.mark.parametrize("decoder_layers", [1, 2])
def test_parallel_decoder_equals_stepped(attention, rnn_type, decoder_layers):
    model = make_model(rnn_type, attention=attention, input_feeding=False, decoder_layers=decoder_layers)
    assert model.decoder.can_run_parallel
    src, src_lengths, tgt_in, tgt_out = random_batch(SRC_LENGTHS, TGT_LENGTHS)
    enc = model.encode(src, src_lengths)
    parallel_logits, parallel_attn = model.decoder(tgt_in, enc, parallel=True)
    loop_logits, loop_attn = model.decoder(tgt_in, enc, parallel=False)
    torch.testing.assert_close(parallel_logits, loop_logits, atol=ATOL, rtol=0)
    torch.testing.assert_close(parallel_attn, loop_attn, atol=ATOL, rtol=0)
    torch.testing.assert_close(stepped_logits(model, src, src_lengths, tgt_in), loop_logits, atol=ATOL, rtol=0)
    loss, _ = model.loss(src, src_lengths, tgt_in, tgt_out)  # the model uses the parallel path
    torch.testing.assert_close(loss, summed_nll(loop_logits, tgt_out), atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("rnn_type", ["gru", "lstm"])
def test_forward_equals_step_loop_with_input_feeding(rnn_type):
    model = make_model(rnn_type, input_feeding=True, decoder_layers=2)
    assert not model.decoder.can_run_parallel
    src, src_lengths, tgt_in, _ = random_batch(SRC_LENGTHS, TGT_LENGTHS)
    logits, _ = model(src, src_lengths, tgt_in)
    torch.testing.assert_close(stepped_logits(model, src, src_lengths, tgt_in), logits, atol=ATOL, rtol=0)


def test_bf16_forward_equals_the_step_loop_and_casts_the_feed_weight_once(monkeypatch):
    """Under bf16 autocast the teacher-forced forward (feed weight cast once per sequence) gives the logits of
    stepping position by position (where autocast casts the slice at every step): the same bf16 values."""
    import seq2seq.decoder as decoder_module

    model = make_model("gru", input_feeding=True, decoder_layers=1)
    src, src_lengths, tgt_in, _ = random_batch(SRC_LENGTHS, TGT_LENGTHS)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        weight = decoder_module.autocast_once(model.decoder.feed_weight(), "cpu")
        logits, _ = model(src, src_lengths, tgt_in)
        stepped = stepped_logits(model, src, src_lengths, tgt_in)
    assert weight.dtype == torch.bfloat16
    assert decoder_module.autocast_once(model.decoder.feed_weight(), "cpu").dtype == torch.float32  # autocast off
    torch.testing.assert_close(logits.float(), stepped.float(), atol=0, rtol=0)


@pytest.mark.parametrize("rnn_type,bidirectional", RNN_DIRS, ids=RNN_DIRS_IDS)
@pytest.mark.parametrize("input_feeding", [True, False], ids=["feed", "nofeed"])
def test_reference_rnn_model_matches_fused(rnn_type, bidirectional, input_feeding):
    kwargs = dict(encoder_layers=2, decoder_layers=2, input_feeding=input_feeding)
    fused = make_model(rnn_type, bidirectional, rnn_impl="fused", **kwargs)
    reference = make_model(rnn_type, bidirectional, rnn_impl="reference", **kwargs)
    reference.load_state_dict(fused.state_dict())
    src, src_lengths, tgt_in, tgt_out = random_batch(SRC_LENGTHS, TGT_LENGTHS)
    logits_f, attn_f = fused(src, src_lengths, tgt_in)
    logits_r, attn_r = reference(src, src_lengths, tgt_in)
    torch.testing.assert_close(logits_r, logits_f, atol=ATOL, rtol=0)
    torch.testing.assert_close(attn_r, attn_f, atol=ATOL, rtol=0)
    loss_f, _ = fused.loss(src, src_lengths, tgt_in, tgt_out, label_smoothing=0.1)
    loss_r, _ = reference.loss(src, src_lengths, tgt_in, tgt_out, label_smoothing=0.1)
    torch.testing.assert_close(loss_r, loss_f, atol=ATOL, rtol=1e-6)


# ---------------------------------------------------------------------------- tied embeddings
def test_tie_embeddings_shares_the_parameter():
    model = make_model("gru", tie_embeddings=True).train()
    decoder = model.decoder
    assert decoder.output_layer.weight is decoder.embedding.weight
    assert decoder.attn_vector_size == EMB
    untied = make_model("gru", tie_embeddings=False)
    assert model.num_parameters() < untied.num_parameters()
    assert sum(p is decoder.embedding.weight for p in model.parameters()) == 1

    src, src_lengths, tgt_in, tgt_out = random_batch(SRC_LENGTHS, TGT_LENGTHS)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    before = decoder.embedding.weight.detach().clone()
    first, count = model.loss(src, src_lengths, tgt_in, tgt_out)
    (first / count).backward()
    assert torch.isfinite(decoder.embedding.weight.grad).all()
    optimizer.step()
    assert decoder.output_layer.weight is decoder.embedding.weight  # still one tensor after the update
    assert not torch.equal(decoder.embedding.weight, before)
    for _ in range(20):
        optimizer.zero_grad()
        loss, count = model.loss(src, src_lengths, tgt_in, tgt_out)
        (loss / count).backward()
        optimizer.step()
    assert loss < first


# ---------------------------------------------------------------------------- scheduled sampling
@pytest.mark.parametrize("input_feeding", [True, False], ids=["feed", "nofeed"])
def test_teacher_forcing_ratio_one_is_the_standard_path(input_feeding):
    model = make_model("lstm", input_feeding=input_feeding)
    src, src_lengths, tgt_in, tgt_out = random_batch(SRC_LENGTHS, TGT_LENGTHS)
    logits, _ = model(src, src_lengths, tgt_in, teacher_forcing_ratio=1.0)
    torch.testing.assert_close(logits, stepped_logits(model, src, src_lengths, tgt_in), atol=ATOL, rtol=0)
    loss, _ = model.loss(src, src_lengths, tgt_in, tgt_out, teacher_forcing_ratio=1.0)
    torch.testing.assert_close(loss, summed_nll(logits, tgt_out), atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("input_feeding", [True, False], ids=["feed", "nofeed"])
def test_teacher_forcing_ratio_below_one(input_feeding):
    model = make_model("gru", input_feeding=input_feeding).train()
    src, src_lengths, tgt_in, tgt_out = random_batch(SRC_LENGTHS, TGT_LENGTHS)
    loss, count = model.loss(src, src_lengths, tgt_in, tgt_out, teacher_forcing_ratio=0.5)
    assert torch.isfinite(loss) and count == sum(TGT_LENGTHS) + len(TGT_LENGTHS)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)

    # ratio 0: every input after BOS is the model's own previous argmax (free running)
    model.eval()
    logits, _ = model(src, src_lengths, tgt_in, teacher_forcing_ratio=0.0)
    state, memory = model.decoder.start(model.encode(src, src_lengths))
    prev, expected = tgt_in[:, 0], []
    for _ in range(tgt_in.size(1)):
        step_logits, state, _ = model.decoder.step(prev, state, memory)
        expected.append(step_logits)
        prev = step_logits.argmax(-1)
    torch.testing.assert_close(logits, torch.stack(expected, dim=1), atol=ATOL, rtol=0)


# ---------------------------------------------------------------------------- a toy task, learned
def reversal_batch(sequences: list[list[int]]) -> tuple[torch.Tensor, ...]:
    targets = [seq[::-1] for seq in sequences]
    return (
        pad_rows(sequences),
        torch.tensor([len(seq) for seq in sequences]),
        pad_rows([[BOS_ID] + y for y in targets]),
        pad_rows([y + [EOS_ID] for y in targets]),
    )


@pytest.mark.slow
def test_learns_to_reverse_sequences():
    """A small GRU (default decoder: Bahdanau attention, input feeding, linear bridge) learns to reverse 3-10
    symbols; greedy decoding is exact on >= 95% of unseen inputs (100% in practice, ~6 CPU seconds)."""
    num_symbols, steps, batch_size = 10, 300, 64
    vocab = FIRST_REAL_ID + num_symbols
    rng = random.Random(0)

    def sample(n: int) -> list[list[int]]:
        return [[rng.randrange(FIRST_REAL_ID, vocab) for _ in range(rng.randint(3, 10))] for _ in range(n)]

    held_out = sample(200)
    held_out_set = {tuple(seq) for seq in held_out}
    cfg = ModelConfig(
        rnn_type="gru", emb_size=32, encoder_hidden_size=32, bidirectional=True, decoder_hidden_size=64,
        attention="bahdanau", input_feeding=True, bridge="bridge", dropout=0.0,
    )
    model = build_model(cfg, vocab, vocab)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 - step / steps)
    start, cpu_start = time.perf_counter(), time.process_time()
    model.train()
    for _ in range(steps):
        batch = reversal_batch([seq for seq in sample(batch_size) if tuple(seq) not in held_out_set])
        loss, num_tokens = model.loss(*batch)
        optimizer.zero_grad()
        (loss / num_tokens).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
    model.eval()
    src, src_lengths, _, _ = reversal_batch(held_out)
    hypotheses = run_greedy(model, src, src_lengths, max_len_a=1.0, max_len_b=2)
    accuracy = sum(h.tokens == seq[::-1] for h, seq in zip(hypotheses, held_out)) / len(held_out)
    print(
        f"reversal: {accuracy:.1%} exact after {steps} steps, {time.perf_counter() - start:.1f} s wall, "
        f"{time.process_time() - cpu_start:.1f} s CPU"
    )
    assert accuracy >= 0.95
