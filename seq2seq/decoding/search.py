"""Greedy and beam search, both driven only by ``Ensemble.start`` / ``Ensemble.step`` / ``state.select``.

Both take a forced target ``prefix``; greedy search with another ``pick`` rule is sampling
(seq2seq/decoding/sampling.py). Every search reads its settings from one :class:`DecodeOptions` and decodes with an
:class:`~seq2seq.decoding.ensemble.Ensemble` (wrapped once per decode, by the caller).

Beam search is one loop for plain and lexically constrained search (as fairseq's ``SequenceGenerator`` with its
``search`` strategies): it keeps a fixed ``[batch, beam]`` layout flattened to ``B * K`` rows, steps the model,
applies the logit constraints, lets a *selection strategy* record the hypotheses that end and pick the ``K`` that
continue (:class:`~seq2seq.decoding.topk.TopKSelection`, or
:class:`~seq2seq.decoding.constrained.ConstrainedSelection` when there are constraints), and reorders the state,
the history and the attention by the rows chosen. It stops once the strategy says every sentence is done, or at
the longest length limit.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from seq2seq.decoding.constrained import ConstrainedSelection, constraint_room
from seq2seq.decoding.ensemble import Ensemble, as_ensemble
from seq2seq.decoding.hypothesis import Hypothesis, TraceStep, strip_ids
from seq2seq.decoding.live_rows import LiveRows
from seq2seq.decoding.logits import (  # re-exported: the search API in one place
    ban_eos_before_min_length,
    ban_repeated_ngrams,
    force_eos_at_max_length,
    force_prefix,
    length_penalty,
    max_output_lengths,
    next_log_probs,
)
from seq2seq.decoding.options import DecodeOptions, check_nbest
from seq2seq.decoding.selection import SelectionStrategy
from seq2seq.decoding.topk import TopKSelection
from seq2seq.dtype_auto import TimedWork, random_ids
from seq2seq.tokenizer import BOS_ID, EOS_ID, PAD_ID

__all__ = ["DecodeOptions", "Hypothesis", "beam_search", "greedy_search", "start_beams", "limits_with_prefix",
           "argmax_tokens", "decoding_work", "ban_eos_before_min_length", "ban_repeated_ngrams",
           "force_eos_at_max_length", "force_prefix", "length_penalty", "max_output_lengths", "next_log_probs"]


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
    model: Ensemble,
    src: Tensor,
    src_lengths: Tensor,
    options: DecodeOptions,
    *,
    prefix: Tensor | None = None,
    pick: Callable[[Tensor], Tensor] = argmax_tokens,
    trace: list | None = None,
    copies: int = 1,
) -> list[Hypothesis]:
    """Batched left-to-right decoding, one token per sentence and step; each stops at EOS or its maximum length.

    Args:
        model: the :class:`~seq2seq.decoding.ensemble.Ensemble` to decode with (``as_ensemble(model)``).
        src: (B, S) source ids; src_lengths: (B,).
        options: the length limits, ``min_length``, ``no_repeat_ngram``, ``length_penalty`` (for the reported
            score only) and ``return_attention``; ``beam_size`` and ``nbest`` are not read.
        prefix: (B, P) target ids every output must start with (PAD past each row's prefix), or None.
        pick: (B, V) constrained log-probabilities -> (B,) next tokens; the argmax (greedy) by default,
            a :class:`~seq2seq.decoding.sampling.Sampler` for sampling.
        trace: if a list, receives one :class:`~seq2seq.decoding.hypothesis.TraceStep` per step with a beam of
            one (K = 1, and one candidate: the piece chosen).
        copies: decode each sentence this many times (rows b*copies .. b*copies + copies - 1), encoding it once;
            :func:`~seq2seq.decoding.sampling.sample_search` draws several samples this way.
    Returns:
        one Hypothesis per sentence and copy (B * copies), in input order; its score is the model's log-probability of the output
        (EOS included) divided by the length penalty.
    """
    return_attention, alpha = options.return_attention, options.length_penalty
    state, memory, prefix = start_beams(model, src, src_lengths, copies, prefix)
    src_lengths = src_lengths.repeat_interleave(copies) if copies > 1 else src_lengths
    batch_size = src_lengths.size(0)
    device = src.device
    max_lengths = limits_with_prefix(src_lengths, options.max_len_a, options.max_len_b, prefix).to(device)
    shortest_limit, longest_limit = int(max_lengths.min()), int(max_lengths.max())
    history = torch.empty(batch_size, 0, dtype=torch.long, device=device)
    prev_tokens = torch.full((batch_size,), BOS_ID, dtype=torch.long, device=device)
    scores = torch.zeros(batch_size, device=device)
    finished = torch.zeros(batch_size, dtype=torch.bool, device=device)
    attention = []
    live = LiveRows(batch_size, 1)  # the model steps only the rows not yet finished
    for step in range(longest_limit + 1):
        log_probs, state, attn_weights = next_log_probs(
            model, live.take(prev_tokens), state, memory, options, history=live.take(history),
            max_lengths=live.take(max_lengths), shortest_limit=shortest_limit, prefix=live.take(prefix))
        # finished rows get a uniform row (a sampler draws for every row, as its random streams expect)
        log_probs, attn_weights = live.spread(log_probs, 0.0), live.spread(attn_weights, 0.0)
        next_tokens = pick(log_probs)
        token_log_probs = log_probs.gather(1, next_tokens.unsqueeze(1)).squeeze(1)
        next_tokens = next_tokens.masked_fill(finished, PAD_ID)
        scores += token_log_probs.masked_fill(finished, 0.0)
        history = torch.cat([history, next_tokens.unsqueeze(1)], dim=1)
        if return_attention:
            attention.append(attn_weights)
        if trace is not None:  # a row that ends here is a finished candidate, no longer kept (score -inf)
            ends_here = next_tokens.eq(EOS_ID)
            normalized = scores / length_penalty(float(step + 1), alpha)
            kept_scores = scores.masked_fill(finished | ends_here, float("-inf"))
            trace.append(TraceStep(tokens=history.unsqueeze(1).cpu(), scores=kept_scores.unsqueeze(1).cpu(),
                                   candidate_tokens=history.unsqueeze(1).cpu(), finishing=ends_here.unsqueeze(1).cpu(),
                                   candidate_scores=normalized.unsqueeze(1).cpu(), done=(finished | ends_here).cpu()))
        finished |= next_tokens.eq(EOS_ID)
        prev_tokens = next_tokens
        state, memory = live.follow(None, finished, state, memory)
        if live.all_done:
            break
    lengths = history.ne(PAD_ID).sum(dim=1)  # pieces + EOS
    scores = scores / length_penalty(lengths.float(), alpha)
    attention_tensor = torch.stack(attention, dim=1) if return_attention else None  # (B, T, S)
    hypotheses = []
    for i, (tokens, score) in enumerate(zip(history.tolist(), scores.tolist())):
        tokens = strip_ids(tokens)
        attn = None
        if attention_tensor is not None:
            attn = attention_tensor[i, : len(tokens) + 1, : int(src_lengths[i])].cpu()
        hypotheses.append(Hypothesis(tokens=tokens, score=score, attention=attn))
    return hypotheses


def start_beams(model, src: Tensor, src_lengths: Tensor, beams: int, prefix: Tensor | None, share: bool = False):
    """Encode the batch once and give each sentence ``beams`` rows (sentence b: rows b*K .. b*K + K - 1).

    Args:
        share: the K rows of a sentence end together (beam search), so they may share its memory row
            (:meth:`~seq2seq.decoding.ensemble.Ensemble.memory_for_beams`); else each row gets a copy (greedy
            copies end one by one).
    Returns:
        the decoder state for B*K rows, the memory for them, and the (B*K, P) forced prefix (or None).
    """
    state, memory = model.start(src, src_lengths)
    if beams == 1:
        return state, memory, prefix
    flat_index = torch.arange(src.size(0), device=src.device).repeat_interleave(beams)  # (B*K,)
    row_prefix = prefix.repeat_interleave(beams, dim=0) if prefix is not None else None
    memory = model.memory_for_beams(memory, beams) if share else memory.repeat_interleave(beams)
    return state.select(flat_index), memory, row_prefix


@torch.inference_mode()
def beam_search(
    model: Ensemble,
    src: Tensor,
    src_lengths: Tensor,
    options: DecodeOptions,
    *,
    prefix: Tensor | None = None,
    constraints: list[list[list[int]]] | None = None,
    trace: list | None = None,
) -> list[list[Hypothesis]]:
    """Batched beam search, plain or lexically constrained.

    Args:
        model: the :class:`~seq2seq.decoding.ensemble.Ensemble` to decode with (``as_ensemble(model)``).
        src: (B, S) source ids; src_lengths: (B,).
        options: ``beam_size`` K hypotheses kept per sentence; ``nbest`` how many finished ones to return (<= K);
            ``length_penalty`` the GNMT alpha: hypotheses are ranked by ``log_prob / ((5 + len) / 6) ** alpha``
            where len counts the pieces and EOS; the length limits, ``min_length``, ``no_repeat_ngram``.
        prefix: (B, P) target ids every output must start with (PAD past each row's prefix), or None.
        constraints: per sentence, phrases (non-empty lists of target ids) its outputs must contain
            (:mod:`~seq2seq.decoding.constrained`; each sentence's length limit grows by its phrases' length), or None.
        trace: if a list, receives one :class:`~seq2seq.decoding.hypothesis.TraceStep` per step (the beam as it
            went: the kept hypotheses and their summed log-probs; the candidates ending there, the top 2K, or with
            constraints the hypotheses that ended; which joined the finished ones; their normalized scores; done).
    Returns:
        per sentence (input order), its ``nbest`` hypotheses, best first (with constraints: those meeting every
        constraint first).
    """
    beams = options.beam_size
    check_nbest(options.nbest, beams)  # the n-best rule (also where the settings enter: it guards direct calls)
    device = src.device
    state, memory, row_prefix = start_beams(model, src, src_lengths, beams, prefix, share=True)
    max_lengths = limits_with_prefix(src_lengths, options.max_len_a, options.max_len_b, prefix).to(device)  # (B,)
    selection: SelectionStrategy
    if constraints is not None:
        max_lengths = max_lengths + constraint_room(constraints, device)  # room for the phrases
        selection = ConstrainedSelection(constraints, options, max_lengths, src_lengths, tracing=trace is not None)
    else:
        selection = TopKSelection(options, max_lengths, src_lengths, src.size(1), tracing=trace is not None)
    shortest_limit = int(max_lengths.min())  # once: no device sync per step
    row_max_lengths = max_lengths.repeat_interleave(beams)  # (B*K,)
    rows = src.size(0) * beams
    history = torch.empty(rows, 0, dtype=torch.long, device=device)
    attn_history = torch.empty(rows, 0, src.size(1), device=device)
    prev_tokens = torch.full((rows,), BOS_ID, dtype=torch.long, device=device)

    live = LiveRows(rows, beams)  # the model steps only the rows of sentences not yet done
    for step in range(int(max_lengths.max()) + 1):
        log_probs, state, attn_weights = next_log_probs(
            model, live.take(prev_tokens), state, memory, options, history=live.take(history),
            max_lengths=live.take(row_max_lengths), shortest_limit=shortest_limit, prefix=live.take(row_prefix))
        log_probs, attn_weights = live.spread(log_probs, float("-inf")), live.spread(attn_weights, 0.0)
        attention = torch.cat([attn_history, attn_weights.unsqueeze(1)], dim=1) if options.return_attention else None
        chosen_rows, prev_tokens = selection.choose(step, log_probs, history, attention)
        history = torch.cat([history.index_select(0, chosen_rows), prev_tokens.unsqueeze(1)], dim=1)
        if attention is not None:
            attn_history = attention.index_select(0, chosen_rows)
        if trace is not None:
            trace.append(selection.trace_record(history))
        state, memory = live.follow(chosen_rows, selection.done_sentences(), state, memory)
        if live.all_done:
            break
    return selection.hypotheses()


def decoding_work(sentences: int, beams: int) -> TimedWork:
    """What ``dtype: auto`` (:mod:`seq2seq.dtype_auto`) times for decoding: encoding ``sentences`` sentences of 20
    pieces and 25 decoder steps for ``sentences * beams`` hypotheses, started and stepped as beam search does
    (:func:`start_beams`, :meth:`~seq2seq.decoding.ensemble.Ensemble.step`); its probe on a few sentences."""
    length, steps = 20, 25

    def prepare(model: torch.nn.Module, device: torch.device, amp: torch.dtype | None,
                rows: int) -> Callable[[], None]:
        src = random_ids(rows, length, model.encoder.embedding.num_embeddings, device)
        src_lengths = torch.full((rows,), length, dtype=torch.long, device=device)
        ensemble = as_ensemble(model.eval())

        @torch.no_grad()
        def decode() -> None:
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                state, memory, _ = start_beams(ensemble, src, src_lengths, beams, None, share=True)
                tokens = torch.full((rows * beams,), BOS_ID, dtype=torch.long, device=device)
                for _ in range(steps):
                    log_probs, state, _ = ensemble.step(tokens, state, memory)
                    tokens = log_probs.argmax(dim=-1)

        return decode

    return TimedWork("decode", f"{sentences} beam {beams}", "batch", sentences, prepare,
                     what=f"decoding {sentences} sentences x {beams} hypotheses (decode.batch_size x beam_size)",
                     skip="set decode.dtype (--set decode.dtype=fp32, or bf16; translate and evaluate: --dtype fp32)",
                     budget=5.0)
