"""The attention decoder: state select and memory repeat commute with a step, memory shared by beams steps as a
copy per beam, the bridges (linear, last, zero) from the encoder state, and the parallel (teacher-forced) decoder
equal to the step loop, also under bf16."""

from __future__ import annotations

import pytest
import torch
from support.model_inputs import (
    summed_loss,
    ATOL,
    ATTENTIONS,
    DEC_HIDDEN,
    EMB,
    RNN_DIRS,
    RNN_DIRS_IDS,
    SRC_LENGTHS,
    TGT_LENGTHS,
    TGT_VOCAB,
    make_model,
    random_batch,
    randomize,
    state_tensors,
    stepped_logits,
    summed_nll,
)

from seq2seq.config import Config, ConfigError, ModelConfig
from seq2seq.decoder import AttnDecoder


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


@pytest.mark.parametrize("attention,heads", [("bahdanau", 1), ("bahdanau", 2), ("luong_general", 1), ("luong_dot", 2)])
def test_memory_shared_by_beams_steps_as_a_copy_per_beam(attention, heads):
    """A beam step reads each sentence's memory row once (``Memory.for_beams``): the same logits, attention and
    state as with a copy per hypothesis (``repeat_interleave``), also after search drops a finished sentence."""
    model = make_model("gru", attention=attention, attention_heads=heads)
    src, src_lengths, tgt_in, _ = random_batch(SRC_LENGTHS, TGT_LENGTHS)
    beams = 3
    state, memory = model.decoder.start(model.encode(src, src_lengths))
    rows = torch.arange(len(SRC_LENGTHS)).repeat_interleave(beams)
    state = state.select(rows)
    tokens = torch.randint(4, TGT_VOCAB, (rows.numel(),))
    shared, copied = memory.for_beams(beams), memory.repeat_interleave(beams)
    assert shared.keys.size(0) == len(SRC_LENGTHS) and copied.keys.size(0) == rows.numel()
    live = torch.cat([torch.arange(0, beams), torch.arange(2 * beams, rows.numel())])  # sentence 1 is done
    for kept in (None, live):
        step_state = state if kept is None else state.select(kept)
        step_tokens = tokens if kept is None else tokens[kept]
        mem_shared = shared if kept is None else shared.select(kept)
        mem_copied = copied if kept is None else copied.select(kept)
        logits, next_state, attn = model.decoder.step(step_tokens, step_state, mem_shared)
        want_logits, want_state, want_attn = model.decoder.step(step_tokens, step_state, mem_copied)
        torch.testing.assert_close(logits, want_logits, atol=ATOL, rtol=0)
        torch.testing.assert_close(attn, want_attn, atol=ATOL, rtol=0)
        for got, want in zip(state_tensors(next_state), state_tensors(want_state)):
            torch.testing.assert_close(got, want, atol=ATOL, rtol=0)


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
    loss, _ = summed_loss(model, src, src_lengths, tgt_in, tgt_out)  # the model uses the parallel path
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


# ---------------------------------------------------------------------------- attention from the bottom layer
def bottom_attention_reference(model, src, src_lengths, tgt_in, residual: bool = False) -> torch.Tensor:
    """GNMT / RNMT+ decoding written out with torch's own ``GRUCell`` / ``LSTMCell`` (weights copied from the
    decoder's RNNs), one position and one layer at a time: the bottom layer's output queries the attention, the
    first layer above it reads ``[bottom; context]``, residual connections from the third layer up."""
    decoder = model.decoder
    lstm = decoder.rnn_type == "lstm"
    cell_class = torch.nn.LSTMCell if lstm else torch.nn.GRUCell
    layers = [(decoder.rnn, 0)] + [(decoder.upper_rnn, k) for k in range(decoder.num_layers - 1)]
    cells = []
    for rnn, k in layers:
        weight_ih = getattr(rnn, f"weight_ih_l{k}")
        cell = cell_class(weight_ih.size(1), DEC_HIDDEN)
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, name).data.copy_(getattr(rnn, f"{name}_l{k}"))
        cells.append(cell)
    state, memory = decoder.start(model.encode(src, src_lengths))
    hidden = list(state.hidden.unbind(0))
    cell_state = list(state.cell.unbind(0)) if lstm else None
    attn_vector, logits = state.attn_vector, []
    for t in range(tgt_in.size(1)):
        below = decoder.embedding(tgt_in[:, t])
        if decoder.input_feeding:
            below = torch.cat([below, attn_vector], dim=-1)
        for layer, cell in enumerate(cells):
            if lstm:
                hidden[layer], cell_state[layer] = cell(below, (hidden[layer], cell_state[layer]))
            else:
                hidden[layer] = cell(below, hidden[layer])
            if layer == 0:
                context, _ = decoder.attention(hidden[0], memory.keys, memory.values, memory.pad_mask)
                below = torch.cat([hidden[0], context], dim=-1)
            else:
                below = hidden[layer] + below if residual and layer >= 2 else hidden[layer]
        attn_vector = torch.tanh(decoder.attn_vector_layer(torch.cat([below, context], dim=-1)))
        logits.append(decoder.output_layer(attn_vector))
    return torch.stack(logits, dim=1)


@pytest.mark.parametrize("rnn_type,input_feeding,decoder_layers,residual", [
    ("gru", False, 2, False), ("lstm", False, 2, False), ("gru", True, 2, False), ("lstm", False, 3, True),
])
def test_attention_from_the_bottom_layer_matches_the_cells_written_out(rnn_type, input_feeding, decoder_layers,
                                                                        residual):
    """Teacher forcing (the one-call path where it applies), stepping and the written-out reference agree."""
    model = make_model(rnn_type, attention_layer="bottom", input_feeding=input_feeding,
                       decoder_layers=decoder_layers, residual=residual)
    randomize(model, seed=5)
    assert model.decoder.can_run_parallel == (not input_feeding and not (residual and decoder_layers > 2))
    src, src_lengths, tgt_in, _ = random_batch(SRC_LENGTHS, TGT_LENGTHS)
    with torch.no_grad():
        expected = bottom_attention_reference(model, src, src_lengths, tgt_in, residual)
        forward_logits, _ = model(src, src_lengths, tgt_in)
        stepped = stepped_logits(model, src, src_lengths, tgt_in)
    torch.testing.assert_close(forward_logits, expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(stepped, expected, atol=1e-4, rtol=0)


def test_attention_from_the_bottom_layer_needs_two_decoder_layers():
    cfg = Config(model=ModelConfig(attention_layer="bottom", decoder_layers=1))
    with pytest.raises(ConfigError, match="model.attention_layer"):
        cfg.validate()
    cfg.model.decoder_layers = 2
    cfg.validate()


# ---------------------------------------------------------------------------- every lever against the textbook decoder
LEVERS = [  # rnn_type, decoder_layers, layer_norm, residual, heads, attention, attention_layer, input_feeding
    ("gru", 1, True, False, 1, "bahdanau", "top", True),
    ("lstm", 1, True, False, 1, "luong_general", "top", True),
    ("gru", 3, True, True, 2, "bahdanau", "top", True),
    ("lstm", 3, True, True, 2, "bahdanau", "top", False),
    ("lstm", 2, False, True, 2, "luong_dot", "top", True),
    ("gru", 3, True, True, 2, "luong_general", "bottom", True),
    ("lstm", 3, True, True, 1, "bahdanau", "bottom", False),
]


@pytest.mark.parametrize("rnn_type,layers,layer_norm,residual,heads,attention,attention_layer,input_feeding", LEVERS)
def test_every_lever_through_step_and_forward_equals_the_textbook_decoder(
        rnn_type, layers, layer_norm, residual, heads, attention, attention_layer, input_feeding):
    """Random gains, biases and weights (far from a fresh layer norm's 1 and 0) through ``AttnDecoder.step`` and
    ``forward``, against the decoder written out with the textbook (LN) cells and attention summed by hand: a lever
    switched off inside the model (no norms, no cell norm, no residual, one head, attention from the top) fails."""
    from support.textbook_decoder import textbook_logits

    model = make_model(rnn_type, attention=attention, decoder_layers=layers, layer_norm=layer_norm,
                       residual=residual, attention_heads=heads, attention_layer=attention_layer,
                       input_feeding=input_feeding)
    randomize(model, seed=11)
    assert (model.decoder.gate_norms is not None) == layer_norm
    src, src_lengths, tgt_in, _ = random_batch(SRC_LENGTHS, TGT_LENGTHS)
    with torch.no_grad():
        expected = textbook_logits(model, src, src_lengths, tgt_in, attention_layer == "bottom", residual, heads)
        forward_logits, _ = model(src, src_lengths, tgt_in)
        stepped = stepped_logits(model, src, src_lengths, tgt_in)
    torch.testing.assert_close(stepped, expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(forward_logits, expected, atol=1e-4, rtol=1e-4)


def test_word_dropout_reaches_the_one_call_teacher_forced_path():
    """Without input feeding teacher forcing embeds every position in one call (``_forward_parallel``): word dropout
    must act there too (training differs from eval), and p = 0 in training is eval (dropout 0)."""
    src, src_lengths, tgt_in, _ = random_batch(SRC_LENGTHS, TGT_LENGTHS)
    for p in (0.0, 0.5):
        model = make_model("gru", input_feeding=False, word_dropout=p)
        assert model.decoder.can_run_parallel
        enc = model.encode(src, src_lengths)
        reference, _ = model.decoder(tgt_in, enc)
        model.decoder.train()
        torch.manual_seed(3)
        trained, _ = model.decoder(tgt_in, enc)
        assert torch.allclose(trained, reference) == (p == 0.0), p
