"""Per-gate layer normalization for recurrent cells (Ba et al. 2016, arXiv 1607.06450; RNMT+, Chen et al. 2018,
arXiv 1804.09849, where it made deep stacks train stably).

Each gate's pre-activation is normalized on its own, separately for the input and the recurrent contribution,
and then given a learned gain and bias. The cell keeps its own biases inside the normalization (so the RNN's
parameters stay those of torch's modules); the learned bias after it is the one that shifts a gate as a whole.
The LSTM also normalizes its cell state before the output ``tanh``. Written out:

LSTM::

    i, f, g, o = LN_x(W_i x + b_i) + LN_h(W_h h + b_h)     each of the four gates normalized separately
    c' = sigmoid(f) * c + sigmoid(i) * tanh(g)
    h' = sigmoid(o) * tanh(LN_c(c'))

GRU (torch's convention, the reset gate multiplying the normalized recurrent candidate)::

    x_r, x_z, x_n = LN_x(W_i x + b_i)        h_r, h_z, h_n = LN_h(W_h h + b_h)
    r = sigmoid(x_r + h_r)     z = sigmoid(x_z + h_z)     n = tanh(x_n + r * h_n)
    h' = (1 - z) * n + z * h

``LN(v) = gain * (v - mean(v)) / sqrt(var(v) + eps) + bias`` over the H units of one gate. :class:`GateNorm`
holds the gains and biases of one layer; :func:`ln_lstm_cell` and :func:`ln_gru_cell` are the textbook steps
(one gate at a time, the statistics computed by hand), the oracle the decoder's batched path is tested against.

Shapes: ``B`` batch, ``I`` input size, ``H`` hidden size, ``G`` gates (4 for an LSTM, 3 for a GRU).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

EPS = 1e-5


class GateNorm(nn.Module):
    """Gains and biases of one layer's per-gate layer normalization.

    Args:
        num_gates: 4 (LSTM) or 3 (GRU).
        hidden_size: H, the units of one gate.
        cell: also normalize the LSTM cell state (``cell_gain``, ``cell_bias``).

    Parameters: ``input_gain``, ``input_bias``, ``hidden_gain``, ``hidden_bias``, each ``(G, H)``; gains start at
    1 and biases at 0, so a fresh layer normalizes without rescaling.
    """

    def __init__(self, num_gates: int, hidden_size: int, cell: bool = False) -> None:
        super().__init__()
        self.num_gates = num_gates
        self.hidden_size = hidden_size
        self.input_gain = nn.Parameter(torch.ones(num_gates, hidden_size))
        self.input_bias = nn.Parameter(torch.zeros(num_gates, hidden_size))
        self.hidden_gain = nn.Parameter(torch.ones(num_gates, hidden_size))
        self.hidden_bias = nn.Parameter(torch.zeros(num_gates, hidden_size))
        if cell:
            self.cell_gain = nn.Parameter(torch.ones(hidden_size))
            self.cell_bias = nn.Parameter(torch.zeros(hidden_size))
        else:
            self.cell_gain = self.cell_bias = None

    def reset_parameters(self) -> None:
        """Gains 1, biases 0."""
        for name, param in self.named_parameters():
            nn.init.ones_(param) if name.endswith("gain") else nn.init.zeros_(param)

    def _gates(self, gates: Tensor, gain: Tensor, bias: Tensor) -> Tensor:
        """``(B, G*H)`` -> each gate's H units normalized, scaled and shifted, ``(B, G*H)``."""
        shape = gates.shape
        grouped = gates.reshape(*shape[:-1], self.num_gates, self.hidden_size)
        normalized = F.layer_norm(grouped, (self.hidden_size,), eps=EPS)
        return (normalized * gain + bias).reshape(shape)

    def input(self, gates: Tensor) -> Tensor:
        """``LN_x``: the input contribution ``W_i x`` ``(B, G*H)``, each gate normalized."""
        return self._gates(gates, self.input_gain, self.input_bias)

    def hidden(self, gates: Tensor) -> Tensor:
        """``LN_h``: the recurrent contribution ``W_h h`` ``(B, G*H)``, each gate normalized."""
        return self._gates(gates, self.hidden_gain, self.hidden_bias)

    def cell(self, c: Tensor) -> Tensor:
        """``LN_c``: the LSTM cell state ``(B, H)`` (identity when the layer has no cell norm)."""
        if self.cell_gain is None:
            return c
        return F.layer_norm(c, (self.hidden_size,), self.cell_gain, self.cell_bias, eps=EPS)

    def extra_repr(self) -> str:
        return f"gates={self.num_gates}, hidden={self.hidden_size}, cell={self.cell_gain is not None}"


def layer_norm_by_hand(v: Tensor, gain: Tensor, bias: Tensor) -> Tensor:
    """``gain * (v - mean) / sqrt(var + eps) + bias`` over the last dimension (biased variance), written out."""
    mean = v.sum(-1, keepdim=True) / v.size(-1)
    var = ((v - mean) ** 2).sum(-1, keepdim=True) / v.size(-1)
    return gain * (v - mean) / torch.sqrt(var + EPS) + bias


def ln_lstm_cell(x: Tensor, state: tuple[Tensor, Tensor], weight_ih: Tensor, weight_hh: Tensor, bias_ih: Tensor,
                 bias_hh: Tensor, norm: GateNorm) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """One layer-normalized LSTM step, one gate at a time (the module docstring's equations).

    Args:
        x: ``(B, I)``; state: ``(h, c)`` each ``(B, H)``; weight_ih ``(4H, I)``, weight_hh ``(4H, H)`` in torch's
        gate order (i, f, g, o); bias_ih, bias_hh ``(4H,)``; norm: the layer's :class:`GateNorm` (with a cell norm).
    Returns:
        ``h'`` and ``(h', c')``, each ``(B, H)``.
    """
    h, c = state
    pre = []
    weights = zip(weight_ih.chunk(4), weight_hh.chunk(4), bias_ih.chunk(4), bias_hh.chunk(4))
    for gate, (w_i, w_h, b_i, b_h) in enumerate(weights):
        from_input = layer_norm_by_hand(x @ w_i.T + b_i, norm.input_gain[gate], norm.input_bias[gate])
        from_hidden = layer_norm_by_hand(h @ w_h.T + b_h, norm.hidden_gain[gate], norm.hidden_bias[gate])
        pre.append(from_input + from_hidden)
    i, f, g, o = pre
    c_next = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h_next = torch.sigmoid(o) * torch.tanh(layer_norm_by_hand(c_next, norm.cell_gain, norm.cell_bias))
    return h_next, (h_next, c_next)


def ln_gru_cell(x: Tensor, h: Tensor, weight_ih: Tensor, weight_hh: Tensor, bias_ih: Tensor, bias_hh: Tensor,
                norm: GateNorm) -> Tensor:
    """One layer-normalized GRU step, one gate at a time (the module docstring's equations).

    Args:
        x: ``(B, I)``; h: ``(B, H)``; weight_ih ``(3H, I)``, weight_hh ``(3H, H)`` in torch's gate order (r, z, n);
        bias_ih, bias_hh ``(3H,)``; norm: the layer's :class:`GateNorm`.
    Returns:
        ``h'``: ``(B, H)``.
    """
    parts = []
    weights = zip(weight_ih.chunk(3), weight_hh.chunk(3), bias_ih.chunk(3), bias_hh.chunk(3))
    for gate, (w_i, w_h, b_i, b_h) in enumerate(weights):
        from_input = layer_norm_by_hand(x @ w_i.T + b_i, norm.input_gain[gate], norm.input_bias[gate])
        from_hidden = layer_norm_by_hand(h @ w_h.T + b_h, norm.hidden_gain[gate], norm.hidden_bias[gate])
        parts.append((from_input, from_hidden))
    (x_r, h_r), (x_z, h_z), (x_n, h_n) = parts
    r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
    n = torch.tanh(x_n + r * h_n)
    return (1 - z) * n + z * h
