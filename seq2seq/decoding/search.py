"""Greedy and beam search, both driven only by ``Ensemble.start`` / ``Ensemble.step`` / ``state.select``.

Both take a forced target ``prefix``; greedy search with another ``pick`` rule is sampling (seq2seq/decoding/sampling.py).

Beam search keeps a fixed ``[batch, beam]`` layout flattened to ``B * K`` rows: each step scores
``beam x vocab`` candidates per sentence with one ``topk``, reorders the state by index, and moves
hypotheses that end in EOS into a per-sentence finished buffer (also tensors). A sentence is done
once its n-best finished hypotheses cannot be beaten by any unfinished one (an upper bound on the
length-normalized score an active beam can still reach), or its maximum length is reached. There is
no Python loop over sentences or beams inside a step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import Tensor

from seq2seq.decoding.ensemble import as_ensemble
from seq2seq.decoding.logits import (  # noqa: F401  (re-exported: the search API in one place)
    ban_eos_before_min_length,
    ban_repeated_ngrams,
    force_eos_at_max_length,
    force_prefix,
    length_penalty,
    max_output_lengths,
    next_log_probs,
)
from seq2seq.tokenizer import BOS_ID, EOS_ID, PAD_ID


@dataclass
class Hypothesis:
    """One decoded hypothesis.

    Attributes:
        tokens: target ids without BOS/EOS.
        score: length-normalized log-probability (GNMT penalty; raw sum when alpha = 0).
        attention: (len(tokens) + 1, S) attention weights per generated position (EOS included) or None.
    """

    tokens: list[int]
    score: float
    attention: Optional[Tensor] = field(default=None, repr=False)


def _strip(tokens: list[int]) -> list[int]:
    """Ids up to (not including) the first EOS, without padding."""
    out = []
    for token in tokens:
        if token == EOS_ID:
            break
        if token != PAD_ID:
            out.append(token)
    return out


def limits_with_prefix(src_lengths: Tensor, max_len_a: float, max_len_b: int, prefix: Tensor | None) -> Tensor:
    """(B,) maximum output pieces: ``a * src_len + b``, but never shorter than the row's forced prefix."""
    max_lengths = max_output_lengths(src_lengths, max_len_a, max_len_b)
    if prefix is not None:
        max_lengths = torch.maximum(max_lengths, prefix.ne(PAD_ID).sum(dim=1).to(max_lengths.device))
    return max_lengths


def argmax_tokens(log_probs: Tensor) -> Tensor:
    """(N, V) -> (N,) the best token of each row (greedy search)."""
    return log_probs.argmax(dim=-1)


# ---------------------------------------------------------------------------- greedy
@torch.inference_mode()
def greedy_search(
    model,
    src: Tensor,
    src_lengths: Tensor,
    max_len_a: float = 1.5,
    max_len_b: int = 10,
    min_length: int = 0,
    no_repeat_ngram: int = 0,
    length_penalty_alpha: float = 0.0,
    return_attention: bool = False,
    prefix: Tensor | None = None,
    pick: Callable[[Tensor], Tensor] = argmax_tokens,
    trace: list | None = None,
    copies: int = 1,
) -> list[Hypothesis]:
    """Batched left-to-right decoding, one token per sentence and step; each stops at EOS or its maximum length.

    Args:
        model: a Seq2Seq, a list of them, or an :class:`~seq2seq.decoding.ensemble.Ensemble`.
        src: (B, S) source ids; src_lengths: (B,).
        prefix: (B, P) target ids every output must start with (PAD past each row's prefix), or None.
        pick: (B, V) constrained log-probabilities -> (B,) next tokens; the argmax (greedy) by default,
            a :class:`~seq2seq.decoding.sampling.Sampler` for sampling.
        trace: if a list, receives one dict per step in :func:`beam_search`'s format with a beam of one
            (K = 1, and one candidate: the piece chosen).
        copies: decode each sentence this many times (rows b*copies .. b*copies + copies - 1), encoding it once;
            :func:`~seq2seq.decoding.sampling.sample_search` draws several samples this way.
    Returns:
        one Hypothesis per sentence and copy (B * copies), in input order; its score is the model's log-probability of the output
        (EOS included) divided by the length penalty.
    """
    model = as_ensemble(model)
    state, memory, prefix = start_beams(model, src, src_lengths, copies, prefix)
    src_lengths = src_lengths.repeat_interleave(copies) if copies > 1 else src_lengths
    batch_size = src_lengths.size(0)
    device = src.device
    max_lengths = limits_with_prefix(src_lengths, max_len_a, max_len_b, prefix).to(device)
    shortest_limit, longest_limit = int(max_lengths.min()), int(max_lengths.max())
    history = torch.empty(batch_size, 0, dtype=torch.long, device=device)
    prev_tokens = torch.full((batch_size,), BOS_ID, dtype=torch.long, device=device)
    scores = torch.zeros(batch_size, device=device)
    finished = torch.zeros(batch_size, dtype=torch.bool, device=device)
    attention = []
    for step in range(longest_limit + 1):
        log_probs, state, attn_weights = next_log_probs(
            model, prev_tokens, state, memory, history, max_lengths, min_length, no_repeat_ngram, shortest_limit,
            prefix,
        )
        next_tokens = pick(log_probs)
        token_log_probs = log_probs.gather(1, next_tokens.unsqueeze(1)).squeeze(1)
        next_tokens = next_tokens.masked_fill(finished, PAD_ID)
        scores += token_log_probs.masked_fill(finished, 0.0)
        history = torch.cat([history, next_tokens.unsqueeze(1)], dim=1)
        if return_attention:
            attention.append(attn_weights)
        if trace is not None:  # a row that ends here is a finished candidate, no longer kept (score -inf)
            ends_here = next_tokens.eq(EOS_ID)
            normalized = scores / length_penalty(float(step + 1), length_penalty_alpha)
            kept_scores = scores.masked_fill(finished | ends_here, float("-inf"))
            trace.append({"tokens": history.unsqueeze(1).cpu(), "scores": kept_scores.unsqueeze(1).cpu(),
                          "candidate_tokens": history.unsqueeze(1).cpu(), "finishing": ends_here.unsqueeze(1).cpu(),
                          "candidate_scores": normalized.unsqueeze(1).cpu(), "done": (finished | ends_here).cpu()})
        finished |= next_tokens.eq(EOS_ID)
        prev_tokens = next_tokens
        if bool(finished.all()):
            break
    lengths = history.ne(PAD_ID).sum(dim=1)  # pieces + EOS
    scores = scores / length_penalty(lengths.float(), length_penalty_alpha)
    attention_tensor = torch.stack(attention, dim=1) if return_attention else None  # (B, T, S)
    hypotheses = []
    for i, (tokens, score) in enumerate(zip(history.tolist(), scores.tolist())):
        tokens = _strip(tokens)
        attn = None
        if attention_tensor is not None:
            attn = attention_tensor[i, : len(tokens) + 1, : int(src_lengths[i])].cpu()
        hypotheses.append(Hypothesis(tokens=tokens, score=score, attention=attn))
    return hypotheses


# ---------------------------------------------------------------------------- beam
def start_beams(model, src: Tensor, src_lengths: Tensor, beams: int, prefix: Tensor | None):
    """Encode the batch once and give each sentence ``beams`` rows (sentence b: rows b*K .. b*K + K - 1).

    Returns:
        the decoder state and memory for B*K rows, and the (B*K, P) forced prefix (or None).
    """
    state, memory = model.start(src, src_lengths)
    if beams == 1:
        return state, memory, prefix
    flat_index = torch.arange(src.size(0), device=src.device).repeat_interleave(beams)  # (B*K,)
    row_prefix = prefix.repeat_interleave(beams, dim=0) if prefix is not None else None
    return state.select(flat_index), memory.repeat_interleave(beams), row_prefix


@torch.inference_mode()
def beam_search(
    model,
    src: Tensor,
    src_lengths: Tensor,
    beam_size: int = 5,
    max_len_a: float = 1.5,
    max_len_b: int = 10,
    length_penalty_alpha: float = 1.0,
    min_length: int = 0,
    no_repeat_ngram: int = 0,
    nbest: int = 1,
    return_attention: bool = False,
    prefix: Tensor | None = None,
    trace: list | None = None,
) -> list[list[Hypothesis]]:
    """Batched beam search.

    Args:
        model: a Seq2Seq, a list of them, or an :class:`~seq2seq.decoding.ensemble.Ensemble`.
        src: (B, S) source ids; src_lengths: (B,).
        prefix: (B, P) target ids every output must start with (PAD past each row's prefix), or None.
        beam_size: K hypotheses kept per sentence; nbest: how many finished ones to return (<= K).
        length_penalty_alpha: GNMT alpha; hypotheses are ranked by ``log_prob / ((5 + len) / 6) ** alpha``
            where len counts the pieces and EOS.
        trace: if a list, receives one dict of CPU tensors per step (the beam as it went): ``tokens``
            (B, K, t + 1) the kept hypotheses, ``scores`` (B, K) their summed log-probs, ``candidate_tokens``
            (B, 2K, t + 1) the top 2K candidates ending there, ``finishing`` (B, 2K) which of them joined the
            finished buffer, ``candidate_scores`` (B, 2K) their length-normalized scores, ``done`` (B,).
    Returns:
        per sentence (input order), its ``nbest`` hypotheses, best first.
    """
    if not 1 <= nbest <= beam_size:
        raise ValueError(f"nbest must be in [1, beam_size={beam_size}], got {nbest}")
    batch_size, beams = src.size(0), beam_size
    device = src.device
    neg_inf = float("-inf")
    model = as_ensemble(model)
    state, memory, row_prefix = start_beams(model, src, src_lengths, beams, prefix)
    max_lengths = limits_with_prefix(src_lengths, max_len_a, max_len_b, prefix).to(device)  # (B,)
    max_steps = int(max_lengths.max()) + 1
    shortest_limit = int(max_lengths.min())
    row_max_lengths = max_lengths.repeat_interleave(beams)  # (B*K,)
    bound_penalty = length_penalty(max_lengths.float() + 1.0, length_penalty_alpha)  # (B,) largest possible penalty
    src_len = src.size(1)

    beam_scores = torch.full((batch_size, beams), neg_inf, device=device)
    beam_scores[:, 0] = 0.0  # all beams start identical: only the first one may expand
    history = torch.empty(batch_size * beams, 0, dtype=torch.long, device=device)
    attn_history = torch.empty(batch_size * beams, 0, src_len, device=device)
    prev_tokens = torch.full((batch_size * beams,), BOS_ID, dtype=torch.long, device=device)
    finished_scores = torch.full((batch_size, beams), neg_inf, device=device)  # sorted, best first
    finished_tokens = torch.full((batch_size, beams, max_steps), PAD_ID, dtype=torch.long, device=device)
    finished_attn = torch.zeros(batch_size, beams, max_steps, src_len, device=device) if return_attention else None
    done = torch.zeros(batch_size, dtype=torch.bool, device=device)
    rank = torch.arange(2 * beams, device=device).unsqueeze(0)  # (1, 2K)
    batch_offsets = (torch.arange(batch_size, device=device) * beams).unsqueeze(1)  # (B, 1)

    for step in range(max_steps):
        log_probs, state, attn_weights = next_log_probs(
            model, prev_tokens, state, memory, history, row_max_lengths, min_length, no_repeat_ngram, shortest_limit,
            row_prefix,
        )
        vocab_size = log_probs.size(1)
        candidates = (beam_scores.view(-1, 1) + log_probs).view(batch_size, beams * vocab_size)
        top_scores, top_ids = candidates.topk(2 * beams, dim=1)  # (B, 2K)
        top_origin = top_ids // vocab_size  # beam each candidate extends
        top_tokens = top_ids % vocab_size
        origin_rows = (batch_offsets + top_origin).view(-1)  # (B*2K,) rows of the flat layout
        if return_attention:
            attn_history_ext = torch.cat([attn_history, attn_weights.unsqueeze(1)], dim=1)

        # 1. Candidates ending in EOS among the top K join the finished buffer (best ``beams`` kept).
        is_eos = top_tokens.eq(EOS_ID)
        finishing = is_eos & (rank < beams) & top_scores.isfinite() & ~done.unsqueeze(1)
        if bool(finishing.any()):
            normalized = top_scores / length_penalty(float(step + 1), length_penalty_alpha)
            new_scores = normalized.masked_fill(~finishing, neg_inf)
            new_tokens = torch.cat([history.index_select(0, origin_rows), top_tokens.view(-1, 1)], dim=1)
            new_tokens = torch.nn.functional.pad(new_tokens, (0, max_steps - step - 1), value=PAD_ID)
            all_scores = torch.cat([finished_scores, new_scores], dim=1)  # (B, 3K)
            finished_scores, keep = all_scores.topk(beams, dim=1)
            all_tokens = torch.cat([finished_tokens, new_tokens.view(batch_size, 2 * beams, -1)], dim=1)
            finished_tokens = all_tokens.gather(1, keep.unsqueeze(-1).expand(-1, -1, max_steps))
            if return_attention:
                new_attn = attn_history_ext.index_select(0, origin_rows)
                new_attn = torch.nn.functional.pad(new_attn, (0, 0, 0, max_steps - step - 1))
                all_attn = torch.cat([finished_attn, new_attn.view(batch_size, 2 * beams, max_steps, src_len)], dim=1)
                finished_attn = all_attn.gather(1, keep.view(batch_size, beams, 1, 1).expand(-1, -1, max_steps, src_len))

        if trace is not None:  # the candidates as they stand before the beam moves on
            candidates_tokens = torch.cat([history.index_select(0, origin_rows), top_tokens.view(-1, 1)], dim=1)
            step_trace = {"candidate_tokens": candidates_tokens.view(batch_size, 2 * beams, -1).cpu(),
                          "finishing": finishing.cpu(),
                          "candidate_scores": (top_scores / length_penalty(float(step + 1), length_penalty_alpha)).cpu()}

        # 2. The K best candidates that do not end in EOS continue.
        beam_scores, chosen = top_scores.masked_fill(is_eos, neg_inf).topk(beams, dim=1)  # (B, K)
        chosen_rows = (batch_offsets + top_origin.gather(1, chosen)).view(-1)  # (B*K,)
        prev_tokens = top_tokens.gather(1, chosen).view(-1)
        state = state.select(chosen_rows)
        history = torch.cat([history.index_select(0, chosen_rows), prev_tokens.unsqueeze(1)], dim=1)
        if return_attention:
            attn_history = attn_history_ext.index_select(0, chosen_rows)

        # 3. Done when no active beam can still beat the n-th best finished one.
        best_possible = beam_scores.max(dim=1).values / bound_penalty  # scores are <= 0 and only fall
        done |= finished_scores[:, nbest - 1] >= best_possible
        if trace is not None:
            trace.append({**step_trace, "tokens": history.view(batch_size, beams, -1).cpu(),
                          "scores": beam_scores.cpu(), "done": done.cpu().clone()})  # done changes in place
        if bool(done.all()):
            break

    results = []
    scores_list = finished_scores.tolist()
    tokens_list = finished_tokens.tolist()
    for b in range(batch_size):
        sentence = []
        for k in range(nbest):
            if scores_list[b][k] == neg_inf:
                break
            tokens = _strip(tokens_list[b][k])
            attn = None
            if finished_attn is not None:
                attn = finished_attn[b, k, : len(tokens) + 1, : int(src_lengths[b])].cpu()
            sentence.append(Hypothesis(tokens=tokens, score=scores_list[b][k], attention=attn))
        results.append(sentence)
    return results
