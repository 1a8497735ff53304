"""The attention decoder written out by hand, one position, one layer, one head and one source word at a time: the
oracle that every quality lever of the decoder (per-gate layer norm with its cell norm, residual connections, heads,
attention from the bottom layer, input feeding) is checked against through ``AttnDecoder.step`` and ``forward``.

It reads the model's parameters but none of its code paths: the cells are the textbook ones (``seq2seq.cells``'s
``lstm_cell`` / ``gru_cell``, proven equal to torch's in test_cells.py, and ``seq2seq.gate_norm``'s one-gate-at-a-time
LN cells), and the attention is the formula of docs/quality.md summed by hand (no ``additive_scores``, no
``Attention.forward``)."""

from __future__ import annotations

import math

import torch

from seq2seq.cells import gru_cell, lstm_cell
from seq2seq.gate_norm import ln_gru_cell, ln_lstm_cell


def attend_by_hand(attention, heads: int, query: torch.Tensor, values: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
    """One query (Q,) over one sentence's encoder outputs ``values`` (S, M), ``pad`` (S,) bool, ``heads`` heads
    (the claim, not read from the module) -> context (M,)."""
    projected = attention.value_layer.weight @ values.T if heads > 1 else values.T  # (M, S)
    memory_size = values.size(1)
    head_values = memory_size // heads
    context = []
    for h in range(heads):
        scores = []
        for s in range(values.size(0)):
            if pad[s]:
                continue
            if hasattr(attention, "energy_layer") or hasattr(attention, "energy"):  # Bahdanau
                q = attention.query_layer.weight @ query
                k = attention.key_layer.weight @ values[s]
                size = q.numel() // heads
                v = attention.energy_layer.weight[0] if heads == 1 else attention.energy[h]
                part = slice(h * size, (h + 1) * size)
                scores.append(float(v @ torch.tanh(q[part] + k[part])))
            else:  # Luong: dot, or general with W k
                k = attention.key_layer.weight @ values[s] if attention.key_layer is not None else values[s]
                size = query.numel() // heads
                part = slice(h * size, (h + 1) * size)
                scores.append(float(query[part] @ k[part]))
        top = max(scores)
        exps = [math.exp(x - top) for x in scores]
        total = sum(exps)
        weights, kept = [], iter(exps)
        for s in range(values.size(0)):
            weights.append(0.0 if pad[s] else next(kept) / total)
        part = slice(h * head_values, (h + 1) * head_values)
        context.append(sum(w * projected[part, s] for s, w in enumerate(weights)))
    return torch.cat(context)


def textbook_layers(decoder) -> list[tuple[torch.Tensor, ...]]:
    """(weight_ih, weight_hh, bias_ih, bias_hh) of every decoder layer, bottom up."""
    names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    layers = [tuple(getattr(decoder.rnn, f"{n}_l{k}") for n in names) for k in range(decoder.lower_layers)]
    if decoder.upper_rnn is not None:
        layers += [tuple(getattr(decoder.upper_rnn, f"{n}_l{k}") for n in names)
                   for k in range(decoder.num_layers - decoder.lower_layers)]
    return layers


def textbook_cell(decoder, layer: int, x, h, c, weights):
    """One layer's step, the textbook LN cell when the model has layer norm: (output h', new c' or None)."""
    norm = decoder.gate_norms[layer] if decoder.gate_norms is not None else None
    if decoder.rnn_type == "lstm":
        if norm is not None:
            out, (_, c_next) = ln_lstm_cell(x, (h, c), *weights, norm)
        else:
            out, c_next = lstm_cell(x, (h, c), *weights)
        return out, c_next
    out = ln_gru_cell(x, h, *weights, norm) if norm is not None else gru_cell(x, h, *weights)
    return out, None


def textbook_logits(model, src, src_lengths, tgt_in, bottom: bool, residual: bool, heads: int) -> torch.Tensor:
    """(B, T, V) teacher-forced logits, one sentence, position and layer at a time (eval mode, no dropout).

    ``bottom``: the bottom layer queries the attention and the layer above reads ``[b_t; context_t]``;
    ``residual``: each layer's output plus its input, from the second layer of its stack up (with ``bottom``, the
    stack above the bottom layer); ``heads``: attention heads. These are the claims, passed in, not read from the model."""
    decoder = model.decoder
    layers = textbook_layers(decoder)
    encoded = model.encode(src, src_lengths)
    state, _ = decoder.start(encoded)  # the bridge (tested on its own in test_decoder.py)
    out = []
    for b in range(src.size(0)):
        values, pad = encoded.outputs[b], encoded.pad_mask[b]
        hidden = [state.hidden[k, b] for k in range(decoder.num_layers)]
        cells = [state.cell[k, b] for k in range(decoder.num_layers)] if state.cell is not None else [None] * len(layers)
        feed = torch.zeros(decoder.attn_vector_size)
        rows = []
        for t in range(tgt_in.size(1)):
            below = decoder.embedding.weight[tgt_in[b, t]]
            if decoder.input_feeding:
                below = torch.cat([below, feed])
            context = None
            for layer, weights in enumerate(layers):
                stack_layer = layer - 1 if bottom and layer > 0 else layer  # the layer's index inside its stack
                h, cells[layer] = textbook_cell(decoder, layer, below[None], hidden[layer][None],
                                                None if cells[layer] is None else cells[layer][None], weights)
                h = h[0]
                cells[layer] = None if cells[layer] is None else cells[layer][0]
                hidden[layer] = h
                output = h + below if residual and stack_layer > 0 else h
                if bottom and layer == 0:
                    context = attend_by_hand(decoder.attention, heads, h, values, pad)
                    below = torch.cat([h, context])
                else:
                    below = output
            if context is None:
                context = attend_by_hand(decoder.attention, heads, below, values, pad)
            feed = torch.tanh(decoder.attn_vector_layer.weight @ torch.cat([below, context])
                              + decoder.attn_vector_layer.bias)
            rows.append(decoder.output_layer.weight @ feed + decoder.output_layer.bias)
        out.append(torch.stack(rows))
    return torch.stack(out)
