"""Decoding in batches: source id sequences in, hypotheses (or scores of given targets) out.

Sentences are sorted by length and decoded ``batch_size`` at a time, each batch under the chosen autocast dtype;
results come back in input order. Which search runs is decided here, once: sampling (``Sampling``), constrained
beam search (any constraints), greedy (beam 1, one output) or beam search. The text layer on top is
:class:`seq2seq.translator.Translator`.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from seq2seq.decoding.batching import sentence_batches, source_ids  # noqa: F401 (re-exported)
from seq2seq.decoding.ensemble import as_ensemble
from seq2seq.decoding.forced import TargetScore, score_targets
from seq2seq.decoding.hypothesis import Hypothesis
from seq2seq.decoding.options import DecodeOptions
from seq2seq.decoding.sampling import Sampling, sample_search
from seq2seq.decoding.search import beam_search, greedy_search
from seq2seq.padding import pad_rows


def pad_batch(sequences: Sequence[Sequence[int]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad id lists into (B, S) with PAD_ID (:func:`~seq2seq.padding.pad_rows`); returns (ids,
    lengths (B,))."""
    ids, lengths = pad_rows(sequences)
    return ids.to(device), lengths.to(device)


def pad_prefixes(prefixes: Sequence[Sequence[int]], device: torch.device) -> torch.Tensor | None:
    """Forced target prefixes -> (B, P) right-padded with PAD_ID, or None when no row has one."""
    return pad_rows(prefixes)[0].to(device) if any(prefixes) else None


def translate_ids(
    model,
    src_ids: Sequence[Sequence[int]],
    options: DecodeOptions,
    *,
    device: torch.device | str = "cpu",
    autocast_dtype: torch.dtype | None = None,
    prefixes: Sequence[Sequence[int]] | None = None,
    constraints: Sequence[Sequence[Sequence[int]]] | None = None,
    sampling: Sampling | None = None,
    trace: list | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[list[Hypothesis]]:
    """Decode source id sequences (each ending in EOS) in length-sorted batches; results in input order.

    Args:
        model: a Seq2Seq, a list of them, or an Ensemble (wrapped once, here, for every batch).
        options: how to decode (:class:`~seq2seq.decoding.options.DecodeOptions`): ``beam_size`` 1 with ``nbest``
            1 runs greedy search, otherwise beam search; ``batch_size`` sentences per batch.
        prefixes: per sentence, target ids its output must start with (empty = none).
        constraints: per sentence, phrases (target id lists) its output must contain: constrained beam search.
        sampling: draw ``options.nbest`` samples per sentence instead of searching, each sentence with its own
            random stream (:meth:`~seq2seq.decoding.sampling.Sampling.for_inputs`: the same samples in any batch).
        trace: a list that receives greedy or beam search's per-step record (see
            :func:`~seq2seq.decoding.search.beam_search`); its batch rows follow the length-sorted batches, so
            trace one sentence at a time.
        progress: called after each batch with the number of sentences it decoded (a progress bar's update).
    """
    model = as_ensemble(model)
    device = torch.device(device)
    constrained = constraints is not None and any(constraints)
    results: list[list[Hypothesis]] = [[] for _ in src_ids]
    for indices in sentence_batches([len(s) for s in src_ids], options.batch_size):
        src, src_lengths = pad_batch([src_ids[i] for i in indices], device)
        prefix = pad_prefixes([prefixes[i] for i in indices], device) if prefixes is not None else None
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            if sampling is not None:
                sampler = sampling.for_inputs([src_ids[i] for i in indices], device)
                hypotheses = sample_search(model, src, src_lengths, options, sampler, prefix=prefix)
            elif constrained:
                hypotheses = beam_search(model, src, src_lengths, options, prefix=prefix,
                                         constraints=[list(constraints[i]) for i in indices])
            elif options.beam_size == 1 and options.nbest == 1:
                hypotheses = [[h] for h in greedy_search(model, src, src_lengths, options, prefix=prefix, trace=trace)]
            else:
                hypotheses = beam_search(model, src, src_lengths, options, prefix=prefix, trace=trace)
        for index, hyps in zip(indices, hypotheses):
            results[index] = hyps or [Hypothesis(tokens=[], score=float("-inf"))]
        if progress is not None:
            progress(len(indices))
    return results


def score_ids(
    model,
    src_ids: Sequence[Sequence[int]],
    tgt_ids: Sequence[Sequence[int]],
    options: DecodeOptions,
    *,
    device: torch.device | str = "cpu",
    autocast_dtype: torch.dtype | None = None,
) -> list[TargetScore]:
    """Score given targets (piece ids, no BOS/EOS) of source id sequences (ending in EOS); input order.

    Reads ``options.batch_size``, ``options.length_penalty`` (scores are normalized as beam search ranks) and
    ``options.return_attention``.
    """
    if len(src_ids) != len(tgt_ids):
        raise ValueError(f"{len(src_ids)} sources but {len(tgt_ids)} targets: they must pair up one to one")
    model = as_ensemble(model)
    device = torch.device(device)
    results: list[TargetScore | None] = [None] * len(src_ids)
    for indices in sentence_batches([len(s) for s in src_ids], options.batch_size):
        src, src_lengths = pad_batch([src_ids[i] for i in indices], device)
        tgt, tgt_lengths = pad_batch([tgt_ids[i] for i in indices], device)  # (B, T), T may be 0
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            scored = score_targets(model, src, src_lengths, tgt, tgt_lengths, options.length_penalty,
                                   options.return_attention)
        for index, result in zip(indices, scored):
            results[index] = result
    return results
