"""Greedy and beam search in numpy over the onnxruntime graphs: decoding with neither torch nor anything that
imports it (``--backend onnx``; onnxruntime, sentencepiece and numpy only).

The same searches as :mod:`seq2seq.decoding.search`, step for step, on :class:`~seq2seq.onnx_graphs.OnnxGraphs`:
an ensemble's score of a token is the mean of its members' log-probabilities, the logit rules are
:mod:`~seq2seq.decoding.numpy_rules`, plain beam search's bookkeeping is :class:`~seq2seq.decoding.numpy_beams.NumpyBeams`,
and only the rows of sentences not yet done are stepped. Forced prefixes, ``min_length``, ``no_repeat_ngram``,
n-best lists and attention (for protected spans and ``--alignments``) are served; sampling, constrained search,
forced scoring and traces are not: :func:`serves` says which, and the caller runs those with the torch searches
over the same graphs (:mod:`seq2seq.onnx_runtime`), importing torch then.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from seq2seq.decoding.batching import sentence_batches
from seq2seq.decoding.hypothesis import Hypothesis, strip_ids
from seq2seq.decoding.numpy_beams import NumpyBeams
from seq2seq.decoding.numpy_rules import constrain, limits_with_prefix, log_softmax
from seq2seq.decoding.options import DecodeOptions, check_nbest, length_penalty
from seq2seq.padding import pad_arrays
from seq2seq.tokenizer import BOS_ID, EOS_ID, PAD_ID


def serves(*, sampling=None, constraints=None, trace=None) -> bool:
    """Whether these searches serve a decode: greedy or beam search, without sampling, constraints or a trace."""
    return sampling is None and not (constraints is not None and any(constraints)) and trace is None


def select_rows(arrays: dict, index: np.ndarray) -> dict:
    """Keep/reorder rows of a state or memory: ``hidden``/``cell`` hold rows on axis 1 (layers first), the rest
    on axis 0."""
    return {name: value[:, index] if name in ("hidden", "cell") else value[index] for name, value in arrays.items()}


class NumpyEnsemble:
    """One or more :class:`~seq2seq.onnx_graphs.OnnxGraphs` decoding as one (each with its own state and memory)."""

    def __init__(self, members: Sequence) -> None:
        self.members = list(members)

    def start(self, src: np.ndarray, src_lengths: np.ndarray) -> tuple[list, list]:
        started = [member.encode(src, src_lengths) for member in self.members]
        return [state for state, _ in started], [memory for _, memory in started]

    def step(self, prev_tokens: np.ndarray, states: list, memories: list) -> tuple[np.ndarray, list, np.ndarray]:
        """(N,) ids -> the members' mean log-probabilities (N, V) float32, their new states, mean attention (N, S)."""
        log_probs, new_states, attentions = [], [], []
        for member, state, memory in zip(self.members, states, memories):
            logits, new_state, attn = member.step(prev_tokens, state, memory)
            log_probs.append(log_softmax(logits))
            new_states.append(new_state)
            attentions.append(attn.astype(np.float32, copy=False))
        if len(self.members) == 1:
            return log_probs[0], new_states, attentions[0]
        return np.stack(log_probs).mean(axis=0), new_states, np.stack(attentions).mean(axis=0)


def select(states_or_memories: list, index: np.ndarray) -> list:
    return [select_rows(member, index) for member in states_or_memories]


def greedy_search(model: NumpyEnsemble, src: np.ndarray, src_lengths: np.ndarray, options: DecodeOptions,
                  prefix: np.ndarray | None = None) -> list[Hypothesis]:
    """:func:`seq2seq.decoding.search.greedy_search` (argmax): one Hypothesis per sentence, in input order."""
    states, memories = model.start(src, src_lengths)
    batch_size = len(src_lengths)
    max_lengths = limits_with_prefix(src_lengths, options, prefix)
    shortest_limit = int(max_lengths.min())
    history = np.empty((batch_size, 0), dtype=np.int64)
    prev_tokens = np.full(batch_size, BOS_ID, dtype=np.int64)
    scores = np.zeros(batch_size, dtype=np.float32)
    finished = np.zeros(batch_size, dtype=bool)
    attention = []
    live = np.arange(batch_size)  # the rows the model still steps
    for _ in range(int(max_lengths.max()) + 1):
        raw, states, attn_live = model.step(prev_tokens[live], states, memories)
        live_log_probs = constrain(raw, options, history[live], max_lengths[live], shortest_limit,
                                   None if prefix is None else prefix[live])
        next_tokens = np.full(batch_size, PAD_ID, dtype=np.int64)
        next_tokens[live] = live_log_probs.argmax(axis=1)
        scores[live] += live_log_probs[np.arange(len(live)), next_tokens[live]]
        history = np.concatenate([history, next_tokens[:, None]], axis=1)
        if options.return_attention:
            step_attn = np.zeros((batch_size, src.shape[1]), dtype=np.float32)
            step_attn[live] = attn_live
            attention.append(step_attn)
        finished |= next_tokens == EOS_ID
        prev_tokens = next_tokens
        still = ~finished[live]
        if not still.any():
            break
        if not still.all():
            keep = np.nonzero(still)[0]
            states, memories, live = select(states, keep), select(memories, keep), live[still]
    lengths = (history != PAD_ID).sum(axis=1)  # pieces + EOS
    scores = scores / length_penalty(lengths.astype(np.float32), np.float32(options.length_penalty))
    attention_array = np.stack(attention, axis=1) if attention else None  # (B, T, S)
    hypotheses = []
    for i, (tokens, score) in enumerate(zip(history.tolist(), scores.tolist())):
        tokens = strip_ids(tokens)
        attn = None if attention_array is None else attention_array[i, : len(tokens) + 1, : int(src_lengths[i])]
        hypotheses.append(Hypothesis(tokens=tokens, score=score, attention=attn))
    return hypotheses


def beam_search(model: NumpyEnsemble, src: np.ndarray, src_lengths: np.ndarray, options: DecodeOptions,
                prefix: np.ndarray | None = None) -> list[list[Hypothesis]]:
    """:func:`seq2seq.decoding.search.beam_search` without constraints: per sentence its ``nbest`` hypotheses."""
    beams = options.beam_size
    check_nbest(options.nbest, beams)
    batch_size = len(src_lengths)
    states, memories = model.start(src, src_lengths)
    flat = np.repeat(np.arange(batch_size), beams)  # sentence b: rows b*K .. b*K + K - 1
    states, memories = select(states, flat), select(memories, flat)  # the step graph reads a memory row per beam
    row_prefix = None if prefix is None else np.repeat(prefix, beams, axis=0)
    max_lengths = limits_with_prefix(src_lengths, options, prefix)
    selection = NumpyBeams(options, max_lengths, src_lengths, src.shape[1])
    shortest_limit, row_max_lengths = int(max_lengths.min()), np.repeat(max_lengths, beams)
    rows = batch_size * beams
    history = np.empty((rows, 0), dtype=np.int64)
    attn_history = np.empty((rows, 0, src.shape[1]), dtype=np.float32)
    prev_tokens = np.full(rows, BOS_ID, dtype=np.int64)
    live = np.arange(rows)  # the rows of sentences not yet done, which the model steps
    for _ in range(int(max_lengths.max()) + 1):
        raw, states, attn_live = model.step(prev_tokens[live], states, memories)
        log_probs = constrain(raw, options, history[live], row_max_lengths[live], shortest_limit,
                              None if row_prefix is None else row_prefix[live])
        if len(live) < rows:  # finished sentences' rows take part in the selection at -inf
            live_log_probs, log_probs = log_probs, np.full((rows, raw.shape[1]), -np.inf, dtype=np.float32)
            log_probs[live] = live_log_probs
        attention = None
        if options.return_attention:
            step_attn = np.zeros((rows, src.shape[1]), dtype=np.float32)
            step_attn[live] = attn_live
            attention = np.concatenate([attn_history, step_attn[:, None]], axis=1)
        chosen_rows, prev_tokens = selection.choose(history.shape[1], log_probs, history, attention)
        history = np.concatenate([history[chosen_rows], prev_tokens[:, None]], axis=1)
        if attention is not None:
            attn_history = attention[chosen_rows]
        if selection.done.all():
            break
        position = np.full(rows, -1)
        position[live] = np.arange(len(live))
        next_live = np.nonzero(np.repeat(~selection.done, beams))[0]
        states = select(states, position[chosen_rows[next_live]])
        if len(next_live) < len(live):
            memories = select(memories, position[next_live])
        live = next_live
    return selection.hypotheses()


def translate_ids(graphs: Sequence, src_ids: Sequence[Sequence[int]], options: DecodeOptions, *,
                  prefixes: Sequence[Sequence[int]] | None = None,
                  progress: Callable[[int], None] | None = None) -> list[list[Hypothesis]]:
    """:func:`seq2seq.decoding.driver.translate_ids` for greedy and beam search on the graphs (one, or several as
    an ensemble): source id sequences (each ending in EOS) in length-sorted batches; results in input order."""
    model = NumpyEnsemble(graphs)
    results: list[list[Hypothesis]] = [[] for _ in src_ids]
    for indices in sentence_batches([len(s) for s in src_ids], options.batch_size):
        src, src_lengths = pad_arrays([src_ids[i] for i in indices])
        batch_prefixes = [prefixes[i] for i in indices] if prefixes is not None else []
        prefix = pad_arrays(batch_prefixes)[0] if any(batch_prefixes) else None
        if options.beam_size == 1 and options.nbest == 1:
            hypotheses = [[h] for h in greedy_search(model, src, src_lengths, options, prefix)]
        else:
            hypotheses = beam_search(model, src, src_lengths, options, prefix)
        for index, hyps in zip(indices, hypotheses):
            results[index] = hyps or [Hypothesis(tokens=[], score=float("-inf"))]
        if progress is not None:
            progress(len(indices))
    return results
