"""Textbook LSTM and GRU written from their gate equations: a teaching aid and a correctness oracle.

Selected with ``model.rnn_impl: reference``; the default (``fused``) is torch's ``nn.LSTM`` / ``nn.GRU``.
:class:`ReferenceRNN` is a drop-in for those modules built with ``batch_first=True``: it has the same
parameter names, shapes, gate order and initialisation, so ``load_state_dict`` works in both directions,
and with ``lengths`` it gives what torch gives on a ``pack_padded_sequence(..., enforce_sorted=False)``
input. Callers use :func:`seq2seq.rnn.make_rnn` to build either kind and :func:`seq2seq.rnn.run_rnn` to run either
kind.

Shapes: ``B`` batch, ``T`` time steps, ``I`` input size, ``H`` hidden size, ``L`` layers, ``D`` directions
(1 or 2). States use torch's layout ``(L * D, B, H)``, row ``layer * D + direction``.
"""

from __future__ import annotations

import math
from typing import Literal, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: an LSTM state is ``(h, c)``; a GRU state is ``h``; each tensor is ``(L * D, B, H)``
RNNState = Union[Tensor, tuple[Tensor, Tensor]]

#: gates per cell, in torch's order (LSTM: i, f, g, o; GRU: r, z, n)
NUM_GATES = {"lstm": 4, "gru": 3}


def lstm_cell(
    x: Tensor, state: tuple[Tensor, Tensor], weight_ih: Tensor, weight_hh: Tensor, bias_ih: Tensor, bias_hh: Tensor
) -> tuple[Tensor, Tensor]:
    """One LSTM step::

        i  = sigmoid(W_ii x + b_ii + W_hi h + b_hi)      input gate
        f  = sigmoid(W_if x + b_if + W_hf h + b_hf)      forget gate
        g  = tanh   (W_ig x + b_ig + W_hg h + b_hg)      cell candidate
        o  = sigmoid(W_io x + b_io + W_ho h + b_ho)      output gate
        c' = f * c + i * g
        h' = o * tanh(c')

    Args:
        x: ``(B, I)`` input at this step.
        state: ``(h, c)``, each ``(B, H)``.
        weight_ih: ``(4H, I)``, the rows of ``W_i{i,f,g,o}`` stacked in that order.
        weight_hh: ``(4H, H)``, the rows of ``W_h{i,f,g,o}``.
        bias_ih, bias_hh: ``(4H,)`` each.

    Returns:
        ``(h', c')``, each ``(B, H)``.
    """
    h, c = state
    gates = F.linear(x, weight_ih, bias_ih) + F.linear(h, weight_hh, bias_hh)  # (B, 4H)
    return lstm_from_gates(gates, c)


def lstm_from_gates(gates: Tensor, c: Tensor, norm: Optional[nn.Module] = None) -> tuple[Tensor, Tensor]:
    """The LSTM update from summed pre-activations ``gates = W_i x + b_i + W_h h + b_h`` ``(B, 4H)``.

    ``norm``: a :class:`~seq2seq.gate_norm.GateNorm` whose cell normalization is applied before the output tanh.
    """
    i, f, g, o = gates.chunk(4, dim=-1)
    i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
    c_next = f * c + i * g
    h_next = o * torch.tanh(norm.cell(c_next) if norm is not None else c_next)
    return h_next, c_next


def gru_cell(x: Tensor, h: Tensor, weight_ih: Tensor, weight_hh: Tensor, bias_ih: Tensor, bias_hh: Tensor) -> Tensor:
    """One GRU step, in PyTorch's convention (the reset gate multiplies ``W_hn h + b_hn``)::

        r  = sigmoid(W_ir x + b_ir + W_hr h + b_hr)      reset gate
        z  = sigmoid(W_iz x + b_iz + W_hz h + b_hz)      update gate
        n  = tanh   (W_in x + b_in + r * (W_hn h + b_hn)) candidate
        h' = (1 - z) * n + z * h

    Args:
        x: ``(B, I)`` input at this step.
        h: ``(B, H)`` previous hidden state.
        weight_ih: ``(3H, I)``, the rows of ``W_i{r,z,n}`` stacked in that order.
        weight_hh: ``(3H, H)``, the rows of ``W_h{r,z,n}``.
        bias_ih, bias_hh: ``(3H,)`` each.

    Returns:
        ``h'``: ``(B, H)``.
    """
    return gru_from_gates(F.linear(x, weight_ih, bias_ih), F.linear(h, weight_hh, bias_hh), h)


def gru_from_gates(input_gates: Tensor, hidden_gates: Tensor, h: Tensor) -> Tensor:
    """The GRU update from ``input_gates = W_i x + b_i`` and ``hidden_gates = W_h h + b_h``, each ``(B, 3H)``."""
    x_r, x_z, x_n = input_gates.chunk(3, dim=-1)
    h_r, h_z, h_n = hidden_gates.chunk(3, dim=-1)
    r = torch.sigmoid(x_r + h_r)
    z = torch.sigmoid(x_z + h_z)
    n = torch.tanh(x_n + r * h_n)
    return n + z * (h - n)  # = (1 - z) * n + z * h


class _CellBase(nn.Module):
    """Parameters of one cell, named and initialised as torch's ``nn.LSTMCell`` / ``nn.GRUCell``."""

    def __init__(self, num_gates: int, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.weight_ih = nn.Parameter(torch.empty(num_gates * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(num_gates * hidden_size, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(num_gates * hidden_size))
        self.bias_hh = nn.Parameter(torch.empty(num_gates * hidden_size))
        bound = 1.0 / math.sqrt(hidden_size)
        for weight in self.parameters():
            nn.init.uniform_(weight, -bound, bound)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}"


class LSTMCell(_CellBase):
    """A single LSTM cell (see :func:`lstm_cell`); state_dict-compatible with ``nn.LSTMCell``."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__(NUM_GATES["lstm"], input_size, hidden_size)

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        """``x``: ``(B, I)``; ``state``: ``(h, c)`` each ``(B, H)``. Returns ``(h', c')``."""
        return lstm_cell(x, state, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)


class GRUCell(_CellBase):
    """A single GRU cell (see :func:`gru_cell`); state_dict-compatible with ``nn.GRUCell``."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__(NUM_GATES["gru"], input_size, hidden_size)

    def forward(self, x: Tensor, h: Tensor) -> Tensor:
        """``x``: ``(B, I)``; ``h``: ``(B, H)``. Returns ``h'``: ``(B, H)``."""
        return gru_cell(x, h, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)


class ReferenceRNN(nn.Module):
    """Multi-layer, optionally bidirectional LSTM/GRU unrolled step by step from the cell equations.

    A drop-in for ``nn.LSTM`` / ``nn.GRU`` with ``batch_first=True``: parameters are registered on this
    module under torch's names (``weight_ih_l{k}``, ``weight_hh_l{k}``, ``bias_ih_l{k}``, ``bias_hh_l{k}``,
    plus ``_reverse`` for the backward direction), with the same shapes and initialisation.
    """

    batch_first = True

    def __init__(
        self,
        mode: Literal["lstm", "gru"],
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if mode not in NUM_GATES:
            raise ValueError(f"mode must be one of {sorted(NUM_GATES)}, got {mode!r}")
        self.mode = mode
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bidirectional = bidirectional
        self.num_directions = 2 if bidirectional else 1
        self.dropout = dropout
        gate_size = NUM_GATES[mode] * hidden_size
        for layer in range(num_layers):
            layer_input_size = input_size if layer == 0 else hidden_size * self.num_directions
            for direction in range(self.num_directions):
                suffix = param_suffix(layer, direction)
                self.register_parameter(f"weight_ih{suffix}", nn.Parameter(torch.empty(gate_size, layer_input_size)))
                self.register_parameter(f"weight_hh{suffix}", nn.Parameter(torch.empty(gate_size, hidden_size)))
                self.register_parameter(f"bias_ih{suffix}", nn.Parameter(torch.empty(gate_size)))
                self.register_parameter(f"bias_hh{suffix}", nn.Parameter(torch.empty(gate_size)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Every weight and bias ~ U(-1/sqrt(H), 1/sqrt(H)), as torch initialises its RNNs."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            nn.init.uniform_(weight, -bound, bound)

    def flatten_parameters(self) -> None:
        """No-op, so callers can treat this like torch's cuDNN-backed modules."""

    def extra_repr(self) -> str:
        return (
            f"{self.mode}, {self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
            f"bidirectional={self.bidirectional}, dropout={self.dropout}"
        )

    def forward(
        self, inputs: Tensor, lengths: Optional[Tensor] = None, initial_state: Optional[RNNState] = None
    ) -> tuple[Tensor, RNNState]:
        """Run all layers and directions over a padded batch.

        Args:
            inputs: ``(B, T, I)``.
            lengths: ``(B,)`` real lengths (each in ``[1, T]``), or None when every sequence has ``T`` steps.
                Steps past a sequence's length leave its state unchanged and output zeros, so the final
                state is taken at the last real step and the reverse direction starts at the last real token.
            initial_state: ``(L * D, B, H)`` (a pair ``(h, c)`` for LSTM), or None for zeros.

        Returns:
            outputs: ``(B, T, D * H)``, the last layer's hidden states, zero at padded positions.
            final_state: ``(L * D, B, H)`` (a pair ``(h, c)`` for LSTM).
        """
        batch_size, max_len, _ = inputs.shape
        steps = torch.arange(max_len, device=inputs.device)
        if lengths is None:
            real_step = torch.ones(batch_size, max_len, dtype=torch.bool, device=inputs.device)
        else:
            real_step = steps.unsqueeze(0) < lengths.to(inputs.device).unsqueeze(1)  # (B, T), True = real
        initial = self._initial_states(initial_state, inputs)  # per state kind: (L * D, B, H)

        layer_input = inputs
        finals: list[tuple[Tensor, ...]] = []  # one entry per (layer, direction), each (B, H) per state kind
        for layer in range(self.num_layers):
            direction_outputs = []
            for direction in range(self.num_directions):
                row = layer * self.num_directions + direction
                outputs, final = self._run_direction(
                    layer_input, real_step, tuple(s[row] for s in initial), layer, direction
                )
                direction_outputs.append(outputs)
                finals.append(final)
            layer_input = torch.cat(direction_outputs, dim=-1)  # (B, T, D * H)
            if layer < self.num_layers - 1 and self.dropout > 0:
                layer_input = F.dropout(layer_input, self.dropout, self.training)

        final_state = tuple(torch.stack(kind) for kind in zip(*finals))  # per kind: (L * D, B, H)
        return layer_input, (final_state if self.mode == "lstm" else final_state[0])

    def _run_direction(
        self, inputs: Tensor, real_step: Tensor, state: tuple[Tensor, ...], layer: int, direction: int
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        """One direction of one layer. ``inputs``: ``(B, T, I_layer)``; ``real_step``: ``(B, T)`` bool;
        ``state``: ``(h,)`` or ``(h, c)``, each ``(B, H)``. Returns outputs ``(B, T, H)`` and the final state."""
        suffix = param_suffix(layer, direction)
        weights = [getattr(self, f"{name}{suffix}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        max_len = inputs.size(1)
        time_order = range(max_len - 1, -1, -1) if direction == 1 else range(max_len)
        outputs: list[Tensor] = []
        for t in time_order:
            if self.mode == "lstm":
                new_state = lstm_cell(inputs[:, t], state, *weights)
            else:
                new_state = (gru_cell(inputs[:, t], state[0], *weights),)
            is_real = real_step[:, t].unsqueeze(1)  # (B, 1)
            state = tuple(torch.where(is_real, new, old) for new, old in zip(new_state, state))
            outputs.append(new_state[0].masked_fill(~is_real, 0.0))
        if direction == 1:
            outputs.reverse()
        return torch.stack(outputs, dim=1), state

    def _initial_states(self, initial_state: Optional[RNNState], inputs: Tensor) -> tuple[Tensor, ...]:
        """Normalise ``initial_state`` to a tuple ``(h,)`` or ``(h, c)``, each ``(L * D, B, H)``."""
        shape = (self.num_layers * self.num_directions, inputs.size(0), self.hidden_size)
        num_kinds = 2 if self.mode == "lstm" else 1
        if initial_state is None:
            return tuple(inputs.new_zeros(shape) for _ in range(num_kinds))
        states = tuple(initial_state) if self.mode == "lstm" else (initial_state,)
        if len(states) != num_kinds or any(tuple(s.shape) != shape for s in states):
            got = [tuple(s.shape) for s in states]
            raise ValueError(f"{self.mode} initial_state must be {num_kinds} tensor(s) of shape {shape}, got {got}")
        return states


def param_suffix(layer: int, direction: int) -> str:
    """torch's parameter-name suffix: ``_l0``, ``_l0_reverse``, ``_l1``, ..."""
    return f"_l{layer}" + ("_reverse" if direction == 1 else "")
