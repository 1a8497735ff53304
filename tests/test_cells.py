"""The textbook cells and ReferenceRNN against torch's fused nn.LSTM / nn.GRU (float32, seeded)."""

from __future__ import annotations

import itertools
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from support.model_inputs import randomize
from torch import nn

from seq2seq.cells import GRUCell, LSTMCell, ReferenceRNN, gru_cell, lstm_cell
from seq2seq.rnn import make_rnn, rnn_step, run_rnn

INPUT_SIZE, HIDDEN_SIZE, MAX_LEN = 6, 8, 7
LENGTHS = [7, 2, 5, 1, 6]  # unsorted, includes 1 and the full length
ATOL = 1e-5

CONFIGS = list(itertools.product(["lstm", "gru"], [1, 2], [False, True]))
CONFIG_IDS = [f"{mode}-{layers}layer-{'bi' if bi else 'uni'}" for mode, layers, bi in CONFIGS]


def fused_and_reference(mode: str, num_layers: int, bidirectional: bool, dropout: float = 0.0):
    """A fused torch RNN and a ReferenceRNN holding the same weights (copied fused -> reference)."""
    fused = make_rnn(mode, "fused", INPUT_SIZE, HIDDEN_SIZE, num_layers, bidirectional, dropout)
    reference = make_rnn(mode, "reference", INPUT_SIZE, HIDDEN_SIZE, num_layers, bidirectional, dropout)
    reference.load_state_dict(fused.state_dict())
    return fused, reference


def padded_batch(lengths: list[int] = LENGTHS, max_len: int = MAX_LEN) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, T, I)`` random inputs (garbage, not zeros, past each length) and their ``(B,)`` lengths."""
    return torch.randn(len(lengths), max_len, INPUT_SIZE), torch.tensor(lengths)


def random_state(mode: str, num_layers: int, bidirectional: bool, batch_size: int):
    shape = (num_layers * (2 if bidirectional else 1), batch_size, HIDDEN_SIZE)
    if mode == "lstm":
        return torch.randn(shape), torch.randn(shape)
    return torch.randn(shape)


def state_tensors(state) -> tuple[torch.Tensor, ...]:
    return tuple(state) if isinstance(state, tuple) else (state,)


def assert_same_result(expected, actual, atol: float = ATOL) -> None:
    (out_e, state_e), (out_a, state_a) = expected, actual
    assert out_a.shape == out_e.shape
    torch.testing.assert_close(out_a, out_e, atol=atol, rtol=0)
    assert len(state_tensors(state_a)) == len(state_tensors(state_e))
    for s_a, s_e in zip(state_tensors(state_a), state_tensors(state_e)):
        assert s_a.shape == s_e.shape
        torch.testing.assert_close(s_a, s_e, atol=atol, rtol=0)


@pytest.mark.parametrize("mode,num_layers,bidirectional", CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("with_initial_state", [False, True], ids=["zero-init", "given-init"])
def test_reference_matches_fused_packed(mode, num_layers, bidirectional, with_initial_state):
    fused, reference = fused_and_reference(mode, num_layers, bidirectional)
    inputs, lengths = padded_batch()
    initial = random_state(mode, num_layers, bidirectional, len(LENGTHS)) if with_initial_state else None
    with torch.no_grad():
        expected = run_rnn(fused, inputs, lengths, initial)
        actual = run_rnn(reference, inputs, lengths, initial)
    assert_same_result(expected, actual)

    outputs = actual[0]
    directions = 2 if bidirectional else 1
    assert outputs.shape == (len(LENGTHS), MAX_LEN, directions * HIDDEN_SIZE)
    pad_mask = torch.arange(MAX_LEN)[None, :] >= lengths[:, None]  # (B, T), True = pad
    assert torch.all(outputs[pad_mask] == 0)
    assert torch.all(outputs[~pad_mask].abs().sum(-1) > 0)


@pytest.mark.parametrize("mode,num_layers,bidirectional", CONFIGS, ids=CONFIG_IDS)
def test_reference_matches_fused_unpacked(mode, num_layers, bidirectional):
    fused, reference = fused_and_reference(mode, num_layers, bidirectional)
    inputs, _ = padded_batch()
    initial = random_state(mode, num_layers, bidirectional, len(LENGTHS))
    with torch.no_grad():
        assert_same_result(run_rnn(fused, inputs, None, None), run_rnn(reference, inputs, None, None))
        assert_same_result(run_rnn(fused, inputs, None, initial), run_rnn(reference, inputs, None, initial))


def test_reverse_direction_ignores_padding():
    """A padded sequence gives the same result as the same sequence run alone without padding."""
    _, reference = fused_and_reference("gru", 2, True)
    inputs, lengths = padded_batch()
    with torch.no_grad():
        outputs, final = reference(inputs, lengths)
        for b, length in enumerate(LENGTHS):
            alone_outputs, alone_final = reference(inputs[b : b + 1, :length])
            torch.testing.assert_close(outputs[b : b + 1, :length], alone_outputs, atol=ATOL, rtol=0)
            torch.testing.assert_close(final[:, b : b + 1], alone_final, atol=ATOL, rtol=0)


def test_state_dict_keys_and_shapes_match_torch_both_ways():
    for mode, num_layers, bidirectional in CONFIGS:
        fused = make_rnn(mode, "fused", INPUT_SIZE, HIDDEN_SIZE, num_layers, bidirectional)
        reference = make_rnn(mode, "reference", INPUT_SIZE, HIDDEN_SIZE, num_layers, bidirectional)
        fused_state, reference_state = fused.state_dict(), reference.state_dict()
        assert list(reference_state) == list(fused_state)
        assert {k: v.shape for k, v in reference_state.items()} == {k: v.shape for k, v in fused_state.items()}

    # reference -> fused: the fused module then computes what the reference computes
    reference = ReferenceRNN("lstm", INPUT_SIZE, HIDDEN_SIZE, num_layers=2, bidirectional=True)
    fused = nn.LSTM(INPUT_SIZE, HIDDEN_SIZE, num_layers=2, bidirectional=True, batch_first=True)
    fused.load_state_dict(reference.state_dict())
    inputs, lengths = padded_batch()
    with torch.no_grad():
        assert_same_result(run_rnn(reference, inputs, lengths, None), run_rnn(fused, inputs, lengths, None))


def test_init_is_uniform_like_torch():
    reference = ReferenceRNN("gru", INPUT_SIZE, 64, num_layers=2, bidirectional=True)
    bound = 1 / math.sqrt(64)
    values = torch.cat([p.detach().flatten() for p in reference.parameters()])
    assert values.abs().max() <= bound
    assert values.abs().max() > 0.9 * bound and values.std() > 0.5 * bound / math.sqrt(3)


@pytest.mark.parametrize("mode", ["lstm", "gru"])
def test_gradients_match_fused(mode):
    fused, reference = fused_and_reference(mode, 2, True)
    inputs, lengths = padded_batch()
    initial = state_tensors(random_state(mode, 2, True, len(LENGTHS)))
    out_weights = torch.randn(len(LENGTHS), MAX_LEN, 2 * HIDDEN_SIZE)

    def gradients(rnn):
        rnn.zero_grad()
        x = inputs.clone().requires_grad_(True)
        state = tuple(s.clone().requires_grad_(True) for s in initial)
        outputs, final = run_rnn(rnn, x, lengths, state if mode == "lstm" else state[0])
        loss = (outputs * out_weights).sum() + sum(s.sin().sum() for s in state_tensors(final))
        loss.backward()
        grads = {name: p.grad.clone() for name, p in rnn.named_parameters()}
        return grads, [x.grad] + [s.grad for s in state]

    fused_grads, fused_rest = gradients(fused)
    reference_grads, reference_rest = gradients(reference)
    assert fused_grads.keys() == reference_grads.keys()
    for name in fused_grads:
        torch.testing.assert_close(reference_grads[name], fused_grads[name], atol=1e-4, rtol=0, msg=name)
    for got, want in zip(reference_rest, fused_rest):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
    pad_mask = torch.arange(MAX_LEN)[None, :] >= lengths[:, None]
    assert torch.all(reference_rest[0][pad_mask] == 0)  # padded inputs get no gradient


@pytest.mark.parametrize("mode", ["lstm", "gru"])
def test_single_step_with_initial_state(mode):
    """The decoder runs one step at a time from a given state, without lengths."""
    fused, reference = fused_and_reference(mode, 2, False)
    inputs = torch.randn(4, 1, INPUT_SIZE)
    state_fused = state_reference = random_state(mode, 2, False, 4)
    with torch.no_grad():
        for _ in range(3):  # feed the state back, as a decoder does
            out_f, state_fused = run_rnn(fused, inputs, None, state_fused)
            out_r, state_reference = run_rnn(reference, inputs, None, state_reference)
            assert_same_result((out_f, state_fused), (out_r, state_reference))
            inputs = torch.randn(4, 1, INPUT_SIZE)


@pytest.mark.parametrize("mode", ["lstm", "gru"])
def test_dropout_in_eval_mode_is_identity(mode):
    fused, reference = fused_and_reference(mode, 3, True, dropout=0.5)
    assert fused.dropout == 0.5 and reference.dropout == 0.5
    fused.eval()
    reference.eval()
    inputs, lengths = padded_batch()
    with torch.no_grad():
        assert_same_result(run_rnn(fused, inputs, lengths, None), run_rnn(reference, inputs, lengths, None))


def test_dropout_in_training_mode_between_layers_only():
    inputs, lengths = padded_batch()
    one_layer = ReferenceRNN("gru", INPUT_SIZE, HIDDEN_SIZE, num_layers=1, dropout=0.5).train()
    with torch.no_grad():
        train_out, _ = one_layer(inputs, lengths)
        eval_out, _ = one_layer.eval()(inputs, lengths)
    torch.testing.assert_close(train_out, eval_out)  # no dropout after the last layer

    two_layers = ReferenceRNN("gru", INPUT_SIZE, HIDDEN_SIZE, num_layers=2, dropout=0.5).train()
    with torch.no_grad():
        train_out, _ = two_layers(inputs, lengths)
        eval_out, _ = two_layers.eval()(inputs, lengths)
    assert not torch.allclose(train_out, eval_out)
    pad_mask = torch.arange(MAX_LEN)[None, :] >= lengths[:, None]
    assert torch.all(train_out[pad_mask] == 0)


@pytest.mark.parametrize("mode", ["lstm", "gru"])
def test_single_cells_match_torch_cells(mode):
    ours = LSTMCell(INPUT_SIZE, HIDDEN_SIZE) if mode == "lstm" else GRUCell(INPUT_SIZE, HIDDEN_SIZE)
    theirs = nn.LSTMCell(INPUT_SIZE, HIDDEN_SIZE) if mode == "lstm" else nn.GRUCell(INPUT_SIZE, HIDDEN_SIZE)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(3, INPUT_SIZE)
    h = torch.randn(3, HIDDEN_SIZE)
    with torch.no_grad():
        if mode == "lstm":
            c = torch.randn(3, HIDDEN_SIZE)
            for got, want in zip(ours(x, (h, c)), theirs(x, (h, c))):
                torch.testing.assert_close(got, want, atol=ATOL, rtol=0)
        else:
            torch.testing.assert_close(ours(x, h), theirs(x, h), atol=ATOL, rtol=0)


def test_make_rnn_builds_each_kind():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a one-layer fused RNN must not get dropout (torch warns)
        gru = make_rnn("gru", "fused", 4, 5, num_layers=1, bidirectional=True, dropout=0.3)
    assert isinstance(gru, nn.GRU) and gru.batch_first and gru.dropout == 0.0 and gru.bidirectional
    lstm = make_rnn("lstm", "fused", 4, 5, num_layers=2, dropout=0.3)
    assert isinstance(lstm, nn.LSTM) and lstm.batch_first and lstm.dropout == 0.3 and lstm.num_layers == 2
    reference = make_rnn("lstm", "reference", 4, 5, num_layers=2, bidirectional=True, dropout=0.3)
    assert isinstance(reference, ReferenceRNN)
    assert (reference.mode, reference.num_layers, reference.bidirectional, reference.dropout) == ("lstm", 2, True, 0.3)
    reference.flatten_parameters()  # callers may call it on either kind
    with pytest.raises(ValueError, match="impl"):
        make_rnn("gru", "cudnn", 4, 5)
    with pytest.raises(ValueError, match="mode"):
        make_rnn("rnn", "reference", 4, 5)


def test_wrong_initial_state_shape_is_a_clear_error():
    reference = ReferenceRNN("lstm", INPUT_SIZE, HIDDEN_SIZE, num_layers=2)
    inputs, lengths = padded_batch()
    with pytest.raises(ValueError, match="initial_state"):
        reference(inputs, lengths, torch.zeros(2, len(LENGTHS), HIDDEN_SIZE))


# ---------------------------------------------------------------------------- residual stacks in the decoder's step (model.residual)
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
