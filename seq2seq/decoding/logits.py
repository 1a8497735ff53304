"""The logit constraints every search mode applies after a decoder step, and the length rules.

Each works on (N, V) log-probabilities of N rows (hypotheses) and their (N, t) generated history, in place
where it says so; :func:`next_log_probs` is one ensemble step followed by all of them.
"""

from __future__ import annotations

import torch
from torch import Tensor

from seq2seq.decoding.options import DecodeOptions, length_penalty  # noqa: F401 (re-exported: the length rules)
from seq2seq.tokenizer import BOS_ID, EOS_ID, PAD_ID


def max_output_lengths(src_lengths: Tensor, max_len_a: float, max_len_b: int) -> Tensor:
    """(B,) largest number of output pieces (EOS excluded) per sentence: ``a * src_len + b``."""
    return (src_lengths.float() * max_len_a + max_len_b).long().clamp(min=1)


def ban_eos_before_min_length(log_probs: Tensor, history: Tensor, min_length: int, max_lengths: Tensor | None = None) -> Tensor:
    """(N, V) log-probs, (N, t) generated ids: EOS is impossible while ``t < min_length``.

    ``max_lengths`` (N,) wins over ``min_length``: a hypothesis at its length limit may always end.
    """
    t = history.size(1)
    if t >= min_length:
        return log_probs
    if max_lengths is None:
        log_probs[:, EOS_ID] = float("-inf")
    else:
        log_probs[:, EOS_ID] = log_probs[:, EOS_ID].masked_fill(max_lengths > t, float("-inf"))
    return log_probs


def ban_repeated_ngrams(log_probs: Tensor, history: Tensor, ngram_size: int) -> Tensor:
    """Forbid any token that would complete an n-gram already present in the hypothesis.

    Args:
        log_probs: (N, V); history: (N, t) generated ids (no BOS); ngram_size: n (0 = off).
    """
    t = history.size(1)
    if ngram_size <= 0 or t < ngram_size:  # no complete n-gram yet, so nothing can repeat
        return log_probs
    if ngram_size == 1:
        banned = torch.zeros_like(log_probs, dtype=torch.bool).scatter_(1, history, True)
        return log_probs.masked_fill(banned, float("-inf"))
    ngrams = history.unfold(1, ngram_size, 1)  # (N, t - n + 1, n)
    current_prefix = history[:, t - ngram_size + 1 :]  # (N, n - 1)
    matches = (ngrams[:, :, :-1] == current_prefix.unsqueeze(1)).all(dim=-1)  # (N, t - n + 1)
    banned_counts = torch.zeros_like(log_probs, dtype=torch.int32).scatter_add_(
        1, ngrams[:, :, -1], matches.to(torch.int32)
    )
    return log_probs.masked_fill(banned_counts > 0, float("-inf"))


def force_eos_at_max_length(log_probs: Tensor, step: int, max_lengths: Tensor, shortest_limit: int = 0) -> Tensor:
    """Rows whose hypothesis already has ``max_lengths`` pieces may only emit EOS (in place).

    Args:
        log_probs: (N, V); step: pieces generated so far; max_lengths: (N,).
        shortest_limit: ``int(max_lengths.min())`` if known: before it no row is at its limit (skip the work).
    """
    if step >= shortest_limit:
        at_limit = max_lengths <= step  # (N,)
        eos = log_probs[:, EOS_ID].clone()
        log_probs.masked_fill_(at_limit.unsqueeze(1), float("-inf"))
        log_probs[:, EOS_ID] = eos
    return log_probs


def force_prefix(log_probs: Tensor, raw_log_probs: Tensor, step: int, prefix: Tensor | None) -> Tensor:
    """Rows with a forced token at this step may emit only it, scored by the model (in place).

    Args:
        log_probs: (N, V) after the other constraints; raw_log_probs: (N, V) the model's own scores.
        prefix: (N, P) forced target ids per row, PAD past each row's prefix; None = nothing forced.
    """
    if prefix is None or step >= prefix.size(1):
        return log_probs
    forced = prefix[:, step]  # (N,)
    is_forced = forced.ne(PAD_ID)
    forced_ids = forced.clamp(min=0).unsqueeze(1)
    forced_values = raw_log_probs.gather(1, forced_ids)
    log_probs.masked_fill_(is_forced.unsqueeze(1), float("-inf"))
    kept = log_probs.gather(1, forced_ids)
    log_probs.scatter_(1, forced_ids, torch.where(is_forced.unsqueeze(1), forced_values, kept))
    return log_probs


def next_log_probs(
    model, prev_tokens: Tensor, state, memory, options: DecodeOptions, *, history: Tensor, max_lengths: Tensor,
    shortest_limit: int = 0, prefix: Tensor | None = None,
):
    """One ensemble step followed by the constraints. Returns (log_probs (N, V) fp32, state, attn (N, S)).

    Args:
        model: an :class:`~seq2seq.decoding.ensemble.Ensemble`; prev_tokens: (N,); state / memory: N rows.
        options: the decode's settings; ``min_length`` and ``no_repeat_ngram`` are read.
        history: (N, t) ids generated so far.
        max_lengths: (N,) per row; shortest_limit: its minimum as a Python int (no device sync per step).
        prefix: (N, P) forced ids (PAD = free), see :func:`force_prefix`.
    """
    raw_log_probs, state, attn_weights = model.step(prev_tokens, state, memory)
    log_probs = raw_log_probs.clone() if prefix is not None else raw_log_probs
    log_probs[:, PAD_ID] = float("-inf")
    log_probs[:, BOS_ID] = float("-inf")
    log_probs = ban_eos_before_min_length(log_probs, history, options.min_length, max_lengths)
    log_probs = ban_repeated_ngrams(log_probs, history, options.no_repeat_ngram)
    log_probs = force_eos_at_max_length(log_probs, history.size(1), max_lengths, shortest_limit)
    log_probs = force_prefix(log_probs, raw_log_probs, history.size(1), prefix)
    return log_probs, state, attn_weights
