"""Small random real models and an independent scorer, shared by the search, scoring, sampling, ensemble and
constrained-search tests."""

from __future__ import annotations

import torch

from seq2seq.config import ModelConfig
from seq2seq.model import Seq2Seq, build_model
from seq2seq.tokenizer import BOS_ID, EOS_ID, PAD_ID


def random_model(rnn_type: str = "gru", vocab: int = 12, **overrides) -> Seq2Seq:
    cfg = ModelConfig(  # with input feeding (the default before issue 36) unless an override says otherwise
        rnn_type=rnn_type, emb_size=8, encoder_hidden_size=6, decoder_hidden_size=10, dropout=0.0,
        **{"input_feeding": True, **overrides}
    )
    return build_model(cfg, vocab, vocab).eval()


def random_src(lengths: list[int], vocab: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    src = torch.full((len(lengths), max(lengths)), PAD_ID)
    for i, n in enumerate(lengths):
        src[i, :n] = torch.randint(4, vocab, (n,))
    return src, torch.tensor(lengths)


def teacher_forced_scores(model: Seq2Seq, src, src_length, candidates: list[list[int]]) -> torch.Tensor:
    """log P(candidate + EOS | src) for each candidate, from one teacher-forced forward pass."""
    n = len(candidates)
    width = max(len(c) for c in candidates) + 1
    tgt_in = torch.full((n, width), PAD_ID)
    tgt_out = torch.full((n, width), PAD_ID)
    for i, cand in enumerate(candidates):
        tgt_in[i, : len(cand) + 1] = torch.tensor([BOS_ID] + cand)
        tgt_out[i, : len(cand) + 1] = torch.tensor(cand + [EOS_ID])
    with torch.no_grad():
        logits, _ = model(src.expand(n, -1), src_length.expand(n), tgt_in)
    log_probs = torch.log_softmax(logits.float(), dim=-1).gather(-1, tgt_out.unsqueeze(-1)).squeeze(-1)
    return log_probs.masked_fill(tgt_out.eq(PAD_ID), 0.0).sum(dim=1)


def sharp_model(rnn_type: str = "gru", vocab: int = 6, scale: float = 4.0, **overrides) -> Seq2Seq:
    """A random model whose output distributions are far from uniform (output weights scaled up)."""
    model = random_model(rnn_type, vocab=vocab, **overrides)
    with torch.no_grad():
        model.decoder.output_layer.weight.mul_(scale)
    return model


def all_outputs(pieces: list[int], max_pieces: int) -> list[list[int]]:
    """Every output of at most ``max_pieces`` pieces drawn from ``pieces`` (EOS not included)."""
    import itertools

    return [list(seq) for n in range(max_pieces + 1) for seq in itertools.product(pieces, repeat=n)]


def gnmt_penalty(length: int, alpha: float) -> float:
    """The GNMT length penalty, written out: ((5 + length) / 6) ** alpha."""
    return ((5 + length) / 6) ** alpha
