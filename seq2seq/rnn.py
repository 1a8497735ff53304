"""Building and running either kind of RNN: torch's fused ``nn.LSTM`` / ``nn.GRU`` or the textbook
:class:`~seq2seq.cells.ReferenceRNN`, over padded batch-first sequences (:func:`make_rnn`, :func:`run_rnn`), and one
step of a stacked unidirectional RNN (:func:`rnn_step`), which the decoder calls at every target position (with
per-gate layer norms and residual connections when the model has them).

Shapes: ``B`` batch, ``T`` time steps, ``I`` input size, ``H`` hidden size, ``L`` layers, ``D`` directions; states
``(L * D, B, H)`` (a pair ``(h, c)`` for an LSTM).
"""

from __future__ import annotations

from typing import Literal, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from seq2seq.cells import NUM_GATES, ReferenceRNN, RNNState, gru_from_gates, lstm_from_gates, param_suffix
from seq2seq.dropout import dropout as drop


def make_rnn(
    mode: Literal["lstm", "gru"],
    impl: Literal["fused", "reference"],
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    bidirectional: bool = False,
    dropout: float = 0.0,
) -> nn.Module:
    """Build a batch-first LSTM/GRU: torch's fused ``nn.LSTM`` / ``nn.GRU`` or a :class:`ReferenceRNN`.

    ``dropout`` applies between layers only, so it is dropped for a one-layer fused RNN (torch warns).
    """
    if impl == "reference":
        return ReferenceRNN(mode, input_size, hidden_size, num_layers, bidirectional, dropout)
    if impl != "fused":
        raise ValueError(f"impl must be 'fused' or 'reference', got {impl!r}")
    rnn_class = {"lstm": nn.LSTM, "gru": nn.GRU}.get(mode)
    if rnn_class is None:
        raise ValueError(f"mode must be one of {sorted(NUM_GATES)}, got {mode!r}")
    return rnn_class(
        input_size,
        hidden_size,
        num_layers=num_layers,
        bidirectional=bidirectional,
        dropout=dropout if num_layers > 1 else 0.0,
        batch_first=True,
    )


def run_rnn(
    rnn: nn.Module, inputs: Tensor, lengths: Optional[Tensor] = None, initial_state: Optional[RNNState] = None
) -> tuple[Tensor, RNNState]:
    """Run a batch-first ``nn.LSTM`` / ``nn.GRU`` or a :class:`ReferenceRNN` the same way.

    Args:
        rnn: built by :func:`make_rnn` (torch modules must have ``batch_first=True``).
        inputs: ``(B, T, I)``.
        lengths: ``(B,)`` real lengths (any device, any order), or None for full-length sequences.
        initial_state: ``(L * D, B, H)`` (a pair ``(h, c)`` for LSTM), or None for zeros.

    Returns:
        outputs ``(B, T, D * H)`` (zero at padded positions) and the final state ``(L * D, B, H)``
        (a pair for LSTM), taken at each sequence's last real step.
    """
    if isinstance(rnn, ReferenceRNN):
        return rnn(inputs, lengths, initial_state)
    if not getattr(rnn, "batch_first", False):
        raise ValueError("run_rnn needs a batch_first=True RNN")
    if lengths is None:
        return rnn(inputs, initial_state)
    packed = pack_padded_sequence(inputs, lengths.cpu(), batch_first=True, enforce_sorted=False)
    packed_outputs, final_state = rnn(packed, initial_state)
    outputs, _ = pad_packed_sequence(packed_outputs, batch_first=True, total_length=inputs.size(1))
    return outputs, final_state


def layer_weights(rnn: nn.Module, layer: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(weight_ih, weight_hh, bias_ih, bias_hh)`` of a forward layer of an nn.LSTM/nn.GRU or ReferenceRNN."""
    suffix = param_suffix(layer, 0)
    return tuple(getattr(rnn, f"{name}{suffix}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))


def rnn_step(
    mode: Literal["lstm", "gru"], rnn: nn.Module, input_gates: Tensor, state: RNNState, dropout: float, training: bool,
    norms: Optional[Sequence[nn.Module]] = None, residual: bool = False,
) -> tuple[Tensor, RNNState]:
    """One time step of a unidirectional multi-layer RNN whose first-layer input projection is given.

    Letting the caller compute ``input_gates = W_ih_l0 x + b_ih_l0`` allows it to batch that GEMM over
    all time steps (teacher forcing) or split the input (input feeding). Same weights and results as
    running ``rnn`` for one step.

    Args:
        mode: ``lstm`` | ``gru``; rnn: the module holding the weights (torch's or ReferenceRNN).
        input_gates: ``(B, G*H)`` first-layer input pre-activations, bias included.
        state: ``(L, B, H)`` (a pair for LSTM).
        dropout: between layers, as torch applies it (training only).
        norms: per layer a :class:`~seq2seq.gate_norm.GateNorm`: per-gate layer normalization of the input and
            recurrent pre-activations (and of the LSTM cell), which then replaces the cell's biases; None = off.
        residual: from the second layer up, each layer's output is its input plus its RNN output (RNMT+); the
            recurrent state keeps the RNN output alone.
    Returns:
        top-layer output ``(B, H)`` and the new state (same layout).
    """
    hidden, cell = state if mode == "lstm" else (state, None)
    new_hidden, new_cell = [], []
    layer_input = None
    for layer in range(hidden.size(0)):
        weight_ih, weight_hh, bias_ih, bias_hh = layer_weights(rnn, layer)
        if layer > 0:
            layer_input = drop(layer_input, dropout, training)
            input_gates = F.linear(layer_input, weight_ih, bias_ih)
        hidden_gates = F.linear(hidden[layer], weight_hh, bias_hh)
        # Under autocast the GEMMs run in bf16/fp16; the gate arithmetic and the state carried from step
        # to step stay fp32 (no-ops in fp32), so rounding does not accumulate over time.
        input_gates, hidden_gates = input_gates.float(), hidden_gates.float()
        norm = norms[layer] if norms is not None else None
        if norm is not None:
            input_gates, hidden_gates = norm.input(input_gates), norm.hidden(hidden_gates)
        if mode == "lstm":
            h, c = lstm_from_gates(input_gates + hidden_gates, cell[layer], norm)
            new_cell.append(c)
        else:
            h = gru_from_gates(input_gates, hidden_gates, hidden[layer])
        new_hidden.append(h)
        layer_input = h + layer_input if residual and layer > 0 else h
    hidden = torch.stack(new_hidden)
    return layer_input, ((hidden, torch.stack(new_cell)) if mode == "lstm" else hidden)
