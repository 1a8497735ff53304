"""Analytic FLOP count of the model (matmul FLOPs per component, from the model config and the token counts),
and torch's own count (``FlopCounterMode``) to check it against: what achieved GFLOP/s and the fraction of
the GEMM peak are computed from."""

from __future__ import annotations

from seq2seq.config import ModelConfig
from seq2seq.model import Seq2Seq


def forward_flops(
    model_cfg: ModelConfig, src_vocab_size: int, tgt_vocab_size: int, src_tokens: int, tgt_tokens: int,
    attention_pairs: int | None = None, sentences: int = 0, key_positions: int | None = None,
) -> dict[str, int]:
    """Matmul FLOPs (2·m·n·k per GEMM) of one teacher-forced forward pass, by component.

    Args:
        src_tokens: source positions the encoder RNN runs over; tgt_tokens: decoder positions.
        attention_pairs: (target position, source position) pairs scored; default ``src_tokens * tgt_tokens``
            (exact for one sentence; for a batch pass the sum over sentences of ``src_len * tgt_len``).
        sentences: sentences (for the bridge, once per sentence); key_positions: positions whose attention
            keys are projected (default ``src_tokens``).
    Embedding lookups, elementwise ops, softmax and the loss are not counted (no GEMMs; vocab size only
    enters through the output projection).
    """
    m = model_cfg
    gates = {"gru": 3, "lstm": 4}[m.rnn_type]
    dirs = 2 if m.bidirectional else 1
    memory = dirs * m.encoder_hidden_size
    hidden = m.decoder_hidden_size
    attn_vector = m.emb_size if m.tie_embeddings else hidden
    pairs = src_tokens * tgt_tokens if attention_pairs is None else attention_pairs
    keys = src_tokens if key_positions is None else key_positions

    def rnn(input_size: int, hidden_size: int, layers: int, directions: int) -> int:
        """Per position: input GEMM + recurrent GEMM for every layer and direction."""
        total = 0
        for layer in range(layers):
            layer_input = input_size if layer == 0 else hidden_size * directions
            total += directions * 2 * gates * hidden_size * (layer_input + hidden_size)
        return total

    decoder_input = m.emb_size + (attn_vector if m.input_feeding else 0)
    if m.attention_layer == "bottom":  # the bottom layer, then the layers above it reading [bottom; context]
        decoder_rnn = rnn(decoder_input, hidden, 1, 1) + rnn(hidden + memory, hidden, m.decoder_layers - 1, 1)
    else:
        decoder_rnn = rnn(decoder_input, hidden, m.decoder_layers, 1)
    bahdanau = m.attention == "bahdanau"  # Bahdanau's MLP has ``hidden`` units
    return {
        "encoder_rnn": src_tokens * rnn(m.emb_size, m.encoder_hidden_size, m.encoder_layers, dirs),
        "attention_keys": keys * 2 * memory * hidden if m.attention != "luong_dot" else 0,
        "bridge": sentences * m.decoder_layers * 2 * memory * hidden * (2 if m.rnn_type == "lstm" else 1)
        if m.bridge == "bridge" else 0,
        "decoder_rnn": tgt_tokens * decoder_rnn,
        "attention_query": tgt_tokens * 2 * hidden * hidden if bahdanau else 0,
        "attention_scores": pairs * 2 * hidden,  # Bahdanau: energy v^T tanh(.); Luong: q . k
        "attention_context": pairs * 2 * memory,
        "attn_vector_layer": tgt_tokens * 2 * (hidden + memory) * attn_vector,
        "output_layer": tgt_tokens * 2 * attn_vector * tgt_vocab_size,
    }


def training_flops(
    model_cfg: ModelConfig, src_vocab_size: int, tgt_vocab_size: int, src_tokens: int, tgt_tokens: int,
    attention_pairs: int | None = None, sentences: int = 0, key_positions: int | None = None,
) -> int:
    """Matmul FLOPs of one training step: forward + backward (≈ 2 × forward: grads of inputs and weights)."""
    parts = forward_flops(model_cfg, src_vocab_size, tgt_vocab_size, src_tokens, tgt_tokens, attention_pairs,
                          sentences, key_positions)
    return 3 * sum(parts.values())


def counted_training_flops(model: Seq2Seq, batch) -> tuple[int, dict[str, int]]:
    """FLOPs of one forward + backward as ``torch.utils.flop_counter.FlopCounterMode`` counts them
    (total, and per module path). Leaves gradients in the model: zero them afterwards."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        _, loss = model(batch.src, batch.src_lengths, batch.tgt_in, batch.tgt_out, label_smoothing=0.1)
        (loss / batch.num_tgt_tokens).backward()
    per_module = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}
    return counter.get_total_flops(), per_module
