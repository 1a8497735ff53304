"""Attention decoder with input feeding; one step function for teacher forcing, greedy and beam search.

Per target position t (Luong et al. 2015, with Bahdanau or Luong scores), ``attention_layer: top``:

    rnn_input_t   = [embed(y_{t-1}); attn_vector_{t-1}]          (input feeding; embed only when off)
    h_t           = RNN(rnn_input_t, h_{t-1})                      (top layer output is the query)
    context_t     = sum_s softmax(score(h_t, key_s)) * memory_s
    attn_vector_t = dropout(tanh(W_c [h_t; context_t]))
    logits_t      = W_out attn_vector_t

``attention_layer: bottom`` (GNMT, Wu et al. 2016; RNMT+, Chen et al. 2018): the bottom layer's output b_t is the
query, and the context enters the layers above it:

    b_t           = RNN_bottom(rnn_input_t, b_{t-1})
    context_t     = sum_s softmax(score(b_t, key_s)) * memory_s
    h_t           = RNN_upper(dropout([b_t; context_t]), h_{t-1})  (the first upper layer reads the context)
    attn_vector_t = dropout(tanh(W_c [h_t; context_t]))

Without input feeding no position then waits for the one before it outside the RNNs, so teacher forcing runs every
layer over all positions in one fused call each (:meth:`AttnDecoder._forward_parallel`).

:class:`DecoderState` is a value: search reorders it with :meth:`DecoderState.select`, nothing is kept
on the module. :class:`Memory` holds the encoder side (values, keys projected once, padding mask).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seq2seq.attention import build_attention
from seq2seq.cells import NUM_GATES, RNNState
from seq2seq.dropout import Dropout
from seq2seq.encoder import EncoderOutput, drop_words
from seq2seq.gate_norm import GateNorm
from seq2seq.rnn import make_rnn, rnn_step, run_rnn


def autocast_once(weight: Tensor, device_type: str) -> Tensor:
    """``weight`` in the autocast dtype when autocast is on (else as is).

    Autocast caches the casts of parameters, not of slices of them: a slice used at every target position would be
    cast (and its cast differentiated) once per position. Cast once per sequence instead; the values are the same.
    """
    if hasattr(torch, "get_autocast_dtype"):  # torch >= 2.4
        enabled, dtype = torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type)
    elif device_type == "cpu":
        enabled, dtype = torch.is_autocast_cpu_enabled(), torch.get_autocast_cpu_dtype()
    else:
        enabled, dtype = torch.is_autocast_enabled(), torch.get_autocast_gpu_dtype()
    return weight.to(dtype) if enabled and weight.is_floating_point() else weight


@dataclass
class DecoderState:
    """Recurrent state of N decoding hypotheses.

    Attributes:
        hidden: (layers, N, H) RNN hidden state.
        cell: (layers, N, H) LSTM cell state, or None for a GRU.
        attn_vector: (N, A) previous attentional vector (fed back when input feeding is on).
    """

    hidden: Tensor
    cell: Optional[Tensor]
    attn_vector: Tensor

    def select(self, index: Tensor) -> "DecoderState":
        """Keep/reorder hypotheses: ``index`` (N',) long picks rows of the batch dimension."""
        return DecoderState(
            hidden=self.hidden.index_select(1, index),
            cell=self.cell.index_select(1, index) if self.cell is not None else None,
            attn_vector=self.attn_vector.index_select(0, index),
        )

    @property
    def rnn_state(self) -> Tensor | tuple[Tensor, Tensor]:
        return (self.hidden, self.cell) if self.cell is not None else self.hidden


@dataclass
class Memory:
    """The encoder side, fixed while decoding.

    Attributes:
        values: (R, S, M) encoder outputs.
        keys: (R, S, K) attention keys (projected once per batch).
        pad_mask: (R, S) True at padded source positions.
        group: decoder rows per memory row: the N = R * group hypotheses of a step read memory row ``n // group``
            (a sentence's beams share its row, :meth:`for_beams`); 1 = one memory row per hypothesis.
    """

    values: Tensor
    keys: Tensor
    pad_mask: Tensor
    group: int = 1

    def repeat_interleave(self, repeats: int) -> "Memory":
        """(R, ...) -> (R * repeats, ...), each row copied in place (a copy per hypothesis)."""
        return Memory(
            values=self.values.repeat_interleave(repeats, dim=0),
            keys=self.keys.repeat_interleave(repeats, dim=0),
            pad_mask=self.pad_mask.repeat_interleave(repeats, dim=0),
            group=self.group,
        )

    def for_beams(self, beams: int) -> "Memory":
        """The same rows, each read by ``beams`` consecutive hypotheses (no copy: a beam step then reads each
        sentence's keys and values once, not once per beam)."""
        return Memory(values=self.values, keys=self.keys, pad_mask=self.pad_mask, group=self.group * beams)

    def select(self, index: Tensor) -> "Memory":
        """Keep rows: ``index`` (N',) picks decoder rows (search drops the rows of finished sentences); with
        ``group`` > 1 it must keep whole groups, in order, as search does (the first row of each group is read)."""
        if self.group > 1:
            index = index[:: self.group].div(self.group, rounding_mode="floor")
        return Memory(values=self.values.index_select(0, index), keys=self.keys.index_select(0, index),
                      pad_mask=self.pad_mask.index_select(0, index), group=self.group)


class AttnDecoder(nn.Module):
    """Recurrent attention decoder.

    Args:
        vocab_size: target vocabulary size.
        emb_size: target embedding size.
        hidden_size: decoder RNN hidden size.
        memory_size: encoder output size (dirs * encoder hidden).
        encoder_final_size: size of the encoder's final state per layer (dirs * encoder hidden).
        num_layers: decoder RNN layers.
        rnn_type: ``gru`` | ``lstm``.
        rnn_impl: ``fused`` | ``reference``.
        attention: ``bahdanau`` | ``luong_dot`` | ``luong_general``.
        input_feeding: feed the previous attentional vector into the RNN.
        bridge: initial state from the encoder's final state: ``bridge`` (linear + tanh), ``last`` (as is), ``zero``.
        dropout: on embeddings, between RNN layers and on the attentional vector.
        tie_embeddings: share the target embedding matrix with the output projection (the attentional
            vector then has ``emb_size`` units).
        pad_id: target padding id.
        layer_norm: per-gate layer normalization in every RNN layer (:mod:`seq2seq.gate_norm`, RNMT+).
        residual: residual connections between stacked RNN layers, from the second layer up (RNMT+).
        attention_heads: heads of the attention (:mod:`seq2seq.attention`).
        word_dropout: probability of dropping a target token's whole embedding in training (:func:`drop_words`).
        attention_layer: ``top`` (the top layer's output queries the attention) or ``bottom`` (the bottom layer's,
            its context fed to the layers above: GNMT / RNMT+; needs ``num_layers >= 2``).
    """

    #: :meth:`step` reads a :class:`Memory` whose rows serve groups of hypotheses (:meth:`Memory.for_beams`);
    #: part of the interface search steps (:class:`seq2seq.decoding_model.StepDecoder`)
    reads_shared_memory = True

    def __init__(
        self,
        vocab_size: int,
        emb_size: int,
        hidden_size: int,
        memory_size: int,
        encoder_final_size: int,
        num_layers: int = 1,
        rnn_type: str = "gru",
        rnn_impl: str = "fused",
        attention: str = "bahdanau",
        input_feeding: bool = True,
        bridge: str = "bridge",
        dropout: float = 0.0,
        tie_embeddings: bool = False,
        pad_id: int = 0,
        layer_norm: bool = False,
        residual: bool = False,
        attention_heads: int = 1,
        word_dropout: float = 0.0,
        attention_layer: str = "top",
    ) -> None:
        super().__init__()
        if bridge == "last" and encoder_final_size != hidden_size:
            raise ValueError(f"bridge 'last' needs encoder final size {encoder_final_size} == decoder hidden {hidden_size}")
        if attention_layer not in ("top", "bottom") or (attention_layer == "bottom" and num_layers < 2):
            raise ValueError(f"attention_layer must be 'top' or 'bottom' (with num_layers >= 2), got "
                             f"{attention_layer!r} with num_layers {num_layers}")
        self.rnn_type = rnn_type
        self.num_layers = num_layers
        self.hidden_size = hidden_size
        self.input_feeding = input_feeding
        self.bridge = bridge
        self.attn_vector_size = emb_size if tie_embeddings else hidden_size
        self.embedding = nn.Embedding(vocab_size, emb_size, padding_idx=pad_id)
        self.dropout = Dropout(dropout)
        rnn_input_size = emb_size + (self.attn_vector_size if input_feeding else 0)
        # ``rnn`` holds the layers up to the query; with ``bottom``, ``upper_rnn`` the layers above it
        self.lower_layers = 1 if attention_layer == "bottom" else num_layers
        self.rnn = make_rnn(rnn_type, rnn_impl, rnn_input_size, hidden_size, self.lower_layers, False, dropout)
        self.upper_rnn = make_rnn(rnn_type, rnn_impl, hidden_size + memory_size, hidden_size, num_layers - 1, False,
                                  dropout) if attention_layer == "bottom" else None
        self.rnn_dropout = dropout
        self.residual = residual
        self.word_dropout = word_dropout
        self.gate_norms = nn.ModuleList(
            GateNorm(NUM_GATES[rnn_type], hidden_size, cell=rnn_type == "lstm") for _ in range(num_layers)
        ) if layer_norm else None
        self.attention = build_attention(attention, hidden_size, memory_size, attention_heads)
        self.attn_vector_layer = nn.Linear(hidden_size + memory_size, self.attn_vector_size)
        self.output_layer = nn.Linear(self.attn_vector_size, vocab_size)
        if tie_embeddings:
            self.output_layer.weight = self.embedding.weight
        if bridge == "bridge":
            self.bridge_hidden = nn.Linear(encoder_final_size, hidden_size)
            self.bridge_cell = nn.Linear(encoder_final_size, hidden_size) if rnn_type == "lstm" else None

    # ------------------------------------------------------------------ state
    def _bridge(self, final: Optional[Tensor], layer: Optional[nn.Linear], batch_size: int, like: Tensor) -> Tensor:
        """(enc_layers, B, F) encoder final state -> (dec_layers, B, H) initial decoder state."""
        if self.bridge == "zero" or final is None:
            return like.new_zeros(self.num_layers, batch_size, self.hidden_size)
        if final.size(0) != self.num_layers:  # different depths: the top encoder layer starts every layer
            final = final[-1:].expand(self.num_layers, -1, -1)
        if self.bridge == "bridge":
            return torch.tanh(layer(final))
        return final.contiguous()

    def start(self, encoder_output: EncoderOutput) -> tuple[DecoderState, Memory]:
        """Initial state and attention memory for a batch (B sentences)."""
        values = encoder_output.outputs
        batch_size = values.size(0)
        hidden = self._bridge(encoder_output.final_hidden, getattr(self, "bridge_hidden", None), batch_size, values)
        cell = None
        if self.rnn_type == "lstm":
            cell = self._bridge(encoder_output.final_cell, getattr(self, "bridge_cell", None), batch_size, values)
        state = DecoderState(hidden=hidden, cell=cell, attn_vector=values.new_zeros(batch_size, self.attn_vector_size))
        memory = Memory(values=self.attention.project_values(values), keys=self.attention.precompute_keys(values),
                        pad_mask=encoder_output.pad_mask)
        return state, memory

    # ------------------------------------------------------------------ step
    def input_gates(self, tokens: Tensor) -> Tensor:
        """First-layer RNN input pre-activations from the embeddings: ``(...)`` ids -> ``(..., G*H)``.

        Computed for all positions in one GEMM when teacher forcing; the input-feeding part is added
        per step in :meth:`_advance`.
        """
        embedded = self.dropout(drop_words(self.embedding(tokens), self.word_dropout, self.training))
        weight_ih = self.rnn.weight_ih_l0
        return F.linear(embedded, weight_ih[:, : self.embedding.embedding_dim], self.rnn.bias_ih_l0)

    def feed_weight(self) -> Tensor:
        """(G*H, A) the part of the first-layer input weights that reads the fed-back attentional vector."""
        return self.rnn.weight_ih_l0[:, self.embedding.embedding_dim :]

    def _advance(self, input_gates: Tensor, state: DecoderState, memory: Memory,
                 feed_weight: Tensor | None = None) -> tuple[Tensor, DecoderState, Tensor]:
        """One target position up to the attentional vector (the shared core of every decoding mode).

        Args:
            input_gates: (N, G*H) from :meth:`input_gates` for the previous target ids.
            feed_weight: :meth:`feed_weight`, sliced once per sequence by the caller (one slice backward
                instead of one per position); taken here when not given.
        Returns:
            attn_vector: (N, A); new state; attn_weights: (N, S).
        """
        if self.input_feeding:
            feed_weight = self.feed_weight() if feed_weight is None else feed_weight
            input_gates = input_gates + F.linear(state.attn_vector, feed_weight)
        lower_state, upper_state = split_layers(state.rnn_state, self.lower_layers)
        # per layer its GateNorm or None (a plain list: slicing the ModuleList would build a module every step)
        norms = list(self.gate_norms) if self.gate_norms is not None else [None] * self.num_layers
        query, lower_state = rnn_step(self.rnn_type, self.rnn, input_gates, lower_state, self.rnn_dropout,
                                      self.training, norms[: self.lower_layers], self.residual)
        context, attn_weights = self._attend(query, memory)
        top = query
        if self.upper_rnn is not None:
            upper_gates = F.linear(self.dropout(torch.cat([query, context], dim=-1)), self.upper_rnn.weight_ih_l0,
                                   self.upper_rnn.bias_ih_l0)
            top, upper_state = rnn_step(self.rnn_type, self.upper_rnn, upper_gates, upper_state, self.rnn_dropout,
                                        self.training, norms[self.lower_layers :], self.residual)
        attn_vector = self.dropout(torch.tanh(self.attn_vector_layer(torch.cat([top, context], dim=-1))))
        rnn_state = join_layers(lower_state, upper_state)
        hidden, cell = rnn_state if self.rnn_type == "lstm" else (rnn_state, None)
        return attn_vector, DecoderState(hidden=hidden, cell=cell, attn_vector=attn_vector), attn_weights

    def _attend(self, query: Tensor, memory: Memory) -> tuple[Tensor, Tensor]:
        """(N, H) queries of one position -> (N, M) contexts, (N, S) weights; with ``memory.group`` G > 1 the G
        queries of a memory row attend to it together, as the G target positions of a training sequence do."""
        if memory.group == 1:
            return self.attention(query, memory.keys, memory.values, memory.pad_mask)
        rows = query.size(0)
        context, weights = self.attention(query.view(rows // memory.group, memory.group, -1), memory.keys,
                                          memory.values, memory.pad_mask)  # (R, G, M), (R, G, S)
        return context.reshape(rows, -1), weights.reshape(rows, -1)

    def compile_step(self) -> None:
        """Compile :meth:`_advance`, the per-position core of every decoding mode (and of teacher forcing without
        a parallel pass), with ``torch.compile`` (dynamic shapes). Weights are unaffected."""
        self._advance = torch.compile(self._advance, dynamic=True)

    def step(self, prev_tokens: Tensor, state: DecoderState, memory: Memory) -> tuple[Tensor, DecoderState, Tensor]:
        """Decode one position for N hypotheses.

        Args:
            prev_tokens: (N,) previous target ids (BOS at the first step).
            state: the N hypotheses' state.
            memory: the matching encoder memory (N rows, or N / group rows each shared by a group).
        Returns:
            logits: (N, V); the new state; attn_weights: (N, S).
        """
        attn_vector, state, attn_weights = self._advance(self.input_gates(prev_tokens), state, memory)
        return self.output_layer(attn_vector), state, attn_weights

    # ------------------------------------------------------------------ training
    @property
    def can_run_parallel(self) -> bool:
        """Without input feeding, positions depend on each other only through the RNNs: one call per RNN covers
        all (torch's fused RNN, so not with layer norm, nor with residual connections inside a stack of two or
        more layers, which it does not have)."""
        stacked = self.lower_layers > 1 or (self.upper_rnn is not None and self.num_layers - self.lower_layers > 1)
        return not self.input_feeding and self.gate_norms is None and not (self.residual and stacked)

    def forward(
        self, tgt_in: Tensor, encoder_output: EncoderOutput, teacher_forcing_ratio: float = 1.0, parallel: bool = True
    ) -> tuple[Tensor, Tensor]:
        """Teacher-forced decoding of whole target sequences.

        Args:
            tgt_in: (B, T) target inputs (BOS + pieces, padded).
            encoder_output: the encoder's output for the batch.
            teacher_forcing_ratio: probability of feeding the gold previous token; below 1, each sentence
                feeds back the model's own argmax prediction with probability ``1 - ratio`` at every step.
            parallel: use the one-call RNN path when the architecture allows it (same result as stepping).
        Returns:
            logits: (B, T, V); attn_weights: (B, T, S).
        """
        state, memory = self.start(encoder_output)
        if parallel and self.can_run_parallel and teacher_forcing_ratio >= 1.0:
            return self._forward_parallel(tgt_in, state, memory)
        attn_vectors, attn_weights = [], []
        gold_gates = self.input_gates(tgt_in).unbind(1)  # T x (B, G*H): one GEMM for every position
        feed_weight = autocast_once(self.feed_weight(), tgt_in.device.type) if self.input_feeding else None
        step_gates = gold_gates[0]
        for t in range(tgt_in.size(1)):
            attn_vector, state, weights = self._advance(step_gates, state, memory, feed_weight)
            attn_vectors.append(attn_vector)
            attn_weights.append(weights)
            if t + 1 < tgt_in.size(1):
                step_gates = gold_gates[t + 1]
                if teacher_forcing_ratio < 1.0:  # scheduled sampling: some sentences feed their own prediction
                    with torch.no_grad():
                        predicted = self.output_layer(attn_vector).argmax(dim=-1)
                    use_own = torch.rand(predicted.shape, device=predicted.device) >= teacher_forcing_ratio
                    step_gates = torch.where(use_own.unsqueeze(1), self.input_gates(predicted), step_gates)
        logits = self.output_layer(torch.stack(attn_vectors, dim=1))  # one projection for all positions
        return logits, torch.stack(attn_weights, dim=1)

    def _forward_parallel(self, tgt_in: Tensor, state: DecoderState, memory: Memory) -> tuple[Tensor, Tensor]:
        """All positions at once (no input feeding): one call per RNN, one attention call, one projection."""
        embedded = self.dropout(drop_words(self.embedding(tgt_in), self.word_dropout, self.training))  # (B, T, E)
        lower_state, upper_state = split_layers(state.rnn_state, self.lower_layers)
        queries, _ = run_rnn(self.rnn, embedded, None, lower_state)  # (B, T, H)
        context, attn_weights = self.attention(queries, memory.keys, memory.values, memory.pad_mask)  # (B, T, M)
        top = queries
        if self.upper_rnn is not None:
            top, _ = run_rnn(self.upper_rnn, self.dropout(torch.cat([queries, context], dim=-1)), None, upper_state)
        attn_vectors = self.dropout(torch.tanh(self.attn_vector_layer(torch.cat([top, context], dim=-1))))
        return self.output_layer(attn_vectors), attn_weights


def split_layers(rnn_state: RNNState, lower: int) -> tuple[RNNState, Optional[RNNState]]:
    """``(L, N, H)`` state (a pair for LSTM) -> layers ``[:lower]`` and ``[lower:]`` (None when empty)."""
    pair = isinstance(rnn_state, tuple)
    hidden = rnn_state[0] if pair else rnn_state
    if hidden.size(0) == lower:
        return rnn_state, None
    if pair:
        return (rnn_state[0][:lower], rnn_state[1][:lower]), (rnn_state[0][lower:], rnn_state[1][lower:])
    return rnn_state[:lower], rnn_state[lower:]


def join_layers(lower: RNNState, upper: Optional[RNNState]) -> RNNState:
    """The inverse of :func:`split_layers`."""
    if upper is None:
        return lower
    if isinstance(lower, tuple):
        return torch.cat([lower[0], upper[0]]), torch.cat([lower[1], upper[1]])
    return torch.cat([lower, upper])
