"""Scoring (forced decoding): how probable does the model find a given translation?

The decoder is fed the given target, position by position, with the same :meth:`Ensemble.step` that search uses,
and the log-probability of each target piece and of the final EOS is read off. The sum divided by the GNMT length
penalty of ``pieces + 1`` is exactly the score beam search ranks by, so scoring beam search's own output gives its
score back (the tests check this). Uses: filtering noisy parallel data, reranking n-best lists, comparing models.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from seq2seq.decoding.ensemble import as_ensemble
from seq2seq.decoding.logits import length_penalty
from seq2seq.tokenizer import BOS_ID, EOS_ID, PAD_ID


@dataclass
class TargetScore:
    """The model's scores of one given target.

    Attributes:
        tokens: the target piece ids (no BOS/EOS).
        token_log_probs: log-probability of each piece, then of EOS (len(tokens) + 1 values).
        log_prob: their sum, the log-probability of the whole output.
        score: ``log_prob / ((5 + len(tokens) + 1) / 6) ** alpha``, what beam search ranks by.
        attention: (len(tokens) + 1, S) attention weights, or None.
        pieces: the target pieces' names then ``</s>`` (filled by the text layer, :meth:`Translator.score`).
    """

    tokens: list[int]
    token_log_probs: list[float]
    log_prob: float
    score: float
    attention: Tensor | None = None
    pieces: list[str] = field(default_factory=list)


@torch.inference_mode()
def score_targets(
    model,
    src: Tensor,
    src_lengths: Tensor,
    tgt: Tensor,
    tgt_lengths: Tensor,
    length_penalty_alpha: float = 1.0,
    return_attention: bool = False,
) -> list[TargetScore]:
    """Score B given targets.

    Args:
        model: a Seq2Seq, a list of them, or an Ensemble.
        src: (B, S) source ids (EOS-terminated); src_lengths: (B,).
        tgt: (B, T) target piece ids, no BOS/EOS, right-padded with PAD; tgt_lengths: (B,) pieces per row.
    Returns:
        one :class:`TargetScore` per row, in input order.
    """
    model = as_ensemble(model)
    batch_size, device = src.size(0), src.device
    rows = torch.arange(batch_size, device=device)
    # gold[:, t] is the token the model should emit at step t: the pieces, then EOS at position tgt_lengths
    gold = torch.cat([tgt, torch.full((batch_size, 1), PAD_ID, dtype=torch.long, device=device)], dim=1)
    gold[rows, tgt_lengths] = EOS_ID
    state, memory = model.start(src, src_lengths)
    prev_tokens = torch.full((batch_size,), BOS_ID, dtype=torch.long, device=device)
    token_log_probs, attention = [], []
    for step in range(gold.size(1)):
        log_probs, state, attn_weights = model.step(prev_tokens, state, memory)
        token_log_probs.append(log_probs.gather(1, gold[:, step : step + 1]).squeeze(1))
        if return_attention:
            attention.append(attn_weights)
        prev_tokens = gold[:, step]
    per_token = torch.stack(token_log_probs, dim=1)  # (B, T + 1)
    per_token = per_token.masked_fill(gold.eq(PAD_ID), 0.0)
    log_probs_sum = per_token.sum(dim=1)
    scores = log_probs_sum / length_penalty(tgt_lengths.float() + 1.0, length_penalty_alpha)
    attention_tensor = torch.stack(attention, dim=1) if return_attention else None  # (B, T + 1, S)
    results = []
    for i, (length, values) in enumerate(zip(tgt_lengths.tolist(), per_token.tolist())):
        attn = attention_tensor[i, : length + 1, : int(src_lengths[i])].cpu() if attention_tensor is not None else None
        results.append(TargetScore(
            tokens=tgt[i, :length].tolist(), token_log_probs=values[: length + 1],
            log_prob=float(log_probs_sum[i]), score=float(scores[i]), attention=attn,
        ))
    return results
