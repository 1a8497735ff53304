"""Per-gate layer normalization (seq2seq/gate_norm.py): the decoder's batched path against the textbook cells
written one gate at a time, the statistics by hand; and what the normalization does to the cell's biases."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from seq2seq.cells import NUM_GATES
from seq2seq.rnn import make_rnn, rnn_step
from seq2seq.gate_norm import GateNorm, layer_norm_by_hand, ln_gru_cell, ln_lstm_cell

BATCH, INPUT, HIDDEN = 3, 5, 4


def random_norm(mode: str, seed: int) -> GateNorm:
    """A GateNorm with gains and biases away from 1 and 0, so a mix-up of gates or parts shows."""
    torch.manual_seed(seed)
    norm = GateNorm(NUM_GATES[mode], HIDDEN, cell=mode == "lstm")
    with torch.no_grad():
        for param in norm.parameters():
            param.copy_(torch.randn_like(param))
    return norm


def test_layer_norm_by_hand_is_layer_norm():
    torch.manual_seed(0)
    v, gain, bias = torch.randn(6, 7), torch.randn(7), torch.randn(7)
    torch.testing.assert_close(layer_norm_by_hand(v, gain, bias), F.layer_norm(v, (7,), gain, bias, eps=1e-5))


@pytest.mark.parametrize("mode", ["gru", "lstm"])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("residual", [False, True], ids=["plain", "residual"])
def test_rnn_step_with_gate_norms_matches_the_textbook_cells(mode, num_layers, residual):
    torch.manual_seed(1)
    rnn = make_rnn(mode, "fused", INPUT, HIDDEN, num_layers)
    norms = [random_norm(mode, seed) for seed in range(num_layers)]
    x = torch.randn(BATCH, INPUT)
    h = torch.randn(num_layers, BATCH, HIDDEN)
    c = torch.randn(num_layers, BATCH, HIDDEN)
    state = (h, c) if mode == "lstm" else h
    input_gates = F.linear(x, rnn.weight_ih_l0, rnn.bias_ih_l0)
    output, new_state = rnn_step(mode, rnn, input_gates, state, 0.0, False, norms, residual)

    layer_input, expected_h, expected_c = x, [], []
    for layer in range(num_layers):
        weights = [getattr(rnn, f"{name}_l{layer}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        if mode == "lstm":
            out, (h_next, c_next) = ln_lstm_cell(layer_input, (h[layer], c[layer]), *weights, norms[layer])
            expected_c.append(c_next)
        else:
            out = h_next = ln_gru_cell(layer_input, h[layer], *weights, norms[layer])
        expected_h.append(h_next)
        layer_input = out + layer_input if residual and layer > 0 else out
    torch.testing.assert_close(output, layer_input, atol=1e-5, rtol=1e-5)
    got_h = new_state[0] if mode == "lstm" else new_state
    torch.testing.assert_close(got_h, torch.stack(expected_h), atol=1e-5, rtol=1e-5)
    if mode == "lstm":
        torch.testing.assert_close(new_state[1], torch.stack(expected_c), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", ["gru", "lstm"])
def test_each_gate_is_normalized_on_its_own(mode):
    """Adding one constant to a whole gate's pre-activations (a different constant per gate) changes nothing
    under the normalization, and does without it: normalizing all gates together would fail this."""
    torch.manual_seed(2)
    rnn = make_rnn(mode, "fused", INPUT, HIDDEN, 1)
    norm = random_norm(mode, 3)
    x, h = torch.randn(BATCH, INPUT), torch.randn(1, BATCH, HIDDEN)
    state = (h, torch.randn(1, BATCH, HIDDEN)) if mode == "lstm" else h
    gates = F.linear(x, rnn.weight_ih_l0, rnn.bias_ih_l0)
    expected, _ = rnn_step(mode, rnn, gates, state, 0.0, False, [norm])
    shift = torch.arange(NUM_GATES[mode], dtype=torch.float).repeat_interleave(HIDDEN) * 3.0  # one constant per gate
    with torch.no_grad():
        rnn.bias_hh_l0.add_(shift)
    shifted, _ = rnn_step(mode, rnn, gates + shift, state, 0.0, False, [norm])
    torch.testing.assert_close(shifted, expected, atol=1e-5, rtol=1e-5)
    without, _ = rnn_step(mode, rnn, gates + shift, state, 0.0, False, None)
    assert not torch.allclose(without, expected, atol=1e-3)


def test_a_fresh_gate_norm_only_normalizes():
    norm = GateNorm(3, HIDDEN)
    gates = torch.randn(BATCH, 3 * HIDDEN)
    out = norm.input(gates).view(BATCH, 3, HIDDEN)
    torch.testing.assert_close(out.mean(-1), torch.zeros(BATCH, 3), atol=1e-6, rtol=0)
    torch.testing.assert_close(out.var(-1, unbiased=False), torch.ones(BATCH, 3), atol=1e-3, rtol=0)
