"""The encoder-decoder model, its loss, and ``build_model``: the only reader of ModelConfig."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seq2seq.config import ModelConfig
from seq2seq.decoder import AttnDecoder
from seq2seq.encoder import EncoderOutput, RNNEncoder
from seq2seq.gate_norm import GateNorm


class Seq2Seq(nn.Module):
    """RNN encoder + attention decoder.

    ``forward`` is the teacher-forced pass and always returns ``(logits, loss)``, as nanoGPT's does: the loss (the
    label-smoothed cross entropy summed over the real target tokens, in fp32 whatever the autocast dtype) when the
    targets are given, else None. Search steps the decoder instead (``encode``, ``decoder.start`` / ``step``).
    """

    def __init__(self, encoder: RNNEncoder, decoder: AttnDecoder, pad_id: int = 0) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.pad_id = pad_id

    def encode(self, src: Tensor, src_lengths: Tensor) -> EncoderOutput:
        """(B, S) ids and (B,) lengths -> EncoderOutput."""
        return self.encoder(src, src_lengths)

    def forward(
        self,
        src: Tensor,
        src_lengths: Tensor,
        tgt_in: Tensor,
        tgt_out: Tensor | None = None,
        *,
        label_smoothing: float = 0.0,
        teacher_forcing_ratio: float = 1.0,
    ) -> tuple[Tensor, Tensor | None]:
        """Teacher-forced decoding of ``tgt_in``, and with the targets their loss, so that one module call is a
        training step's forward pass (and what DistributedDataParallel wraps).

        Args:
            src: (B, S) ids; src_lengths: (B,); tgt_in: (B, T) BOS + pieces; tgt_out: (B, T) pieces + EOS, or None.
        Returns:
            logits (B, T, V), and the label-smoothed cross entropy summed over the real (non-pad) target tokens (a
            scalar computed in fp32 whatever the autocast dtype; divide by their count, ``Batch.num_tgt_tokens``,
            for the mean), or None without ``tgt_out``. The attention weights: ``decoder(tgt_in, encode(...))``.
        """
        logits, _ = self.decoder(tgt_in, self.encode(src, src_lengths), teacher_forcing_ratio)
        if tgt_out is None:
            return logits, None
        loss = F.cross_entropy(
            logits.float().flatten(0, 1),
            tgt_out.flatten(),
            ignore_index=self.pad_id,
            label_smoothing=label_smoothing,
            reduction="sum",
        )
        return logits, loss

    def compile_decoder_step(self) -> None:
        """Compile the decoder's per-position core with ``torch.compile`` (dynamic shapes).

        Fuses the many small elementwise ops of the recurrent cell and Bahdanau attention; the first
        batches pay a one-off compile time (about a minute on a 2-core CPU). Weights are unaffected.
        """
        import torch._dynamo

        torch._dynamo.config.suppress_errors = True  # no working compiler toolchain: fall back to eager
        self.decoder.compile_step()

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def build_model(cfg: ModelConfig, src_vocab_size: int, tgt_vocab_size: int, pad_id: int = 0) -> Seq2Seq:
    """Build a Seq2Seq from its config; modules below take plain keyword arguments."""
    encoder = RNNEncoder(
        vocab_size=src_vocab_size,
        emb_size=cfg.emb_size,
        hidden_size=cfg.encoder_hidden_size,
        num_layers=cfg.encoder_layers,
        bidirectional=cfg.bidirectional,
        rnn_type=cfg.rnn_type,
        rnn_impl=cfg.rnn_impl,
        dropout=cfg.dropout,
        pad_id=pad_id,
        residual=cfg.residual,
        word_dropout=cfg.word_dropout,
    )
    decoder = AttnDecoder(
        vocab_size=tgt_vocab_size,
        emb_size=cfg.emb_size,
        hidden_size=cfg.decoder_hidden_size,
        memory_size=encoder.output_size,
        encoder_final_size=encoder.output_size,
        num_layers=cfg.decoder_layers,
        rnn_type=cfg.rnn_type,
        rnn_impl=cfg.rnn_impl,
        attention=cfg.attention,
        input_feeding=cfg.input_feeding,
        bridge=cfg.bridge,
        dropout=cfg.dropout,
        tie_embeddings=cfg.tie_embeddings,
        pad_id=pad_id,
        layer_norm=cfg.layer_norm,
        residual=cfg.residual,
        attention_heads=cfg.attention_heads,
        word_dropout=cfg.word_dropout,
        attention_layer=cfg.attention_layer,
    )
    model = Seq2Seq(encoder, decoder, pad_id=pad_id)
    _init_weights(model)
    return model


def _init_weights(model: Seq2Seq) -> None:
    """Xavier-uniform for matrices (RNN recurrent weights orthogonal), zero biases, zero pad embeddings; layer-norm
    gains 1 and biases 0."""
    for name, param in model.named_parameters():
        if param.dim() == 1:
            nn.init.zeros_(param)
        elif "weight_hh" in name:
            for gate in param.data.chunk(param.size(0) // param.size(1), dim=0):
                nn.init.orthogonal_(gate)
        else:
            nn.init.xavier_uniform_(param)
    for module in model.modules():
        if isinstance(module, GateNorm):
            module.reset_parameters()
    with torch.no_grad():
        model.encoder.embedding.weight[model.pad_id].zero_()
        model.decoder.embedding.weight[model.pad_id].zero_()
