"""The search functions called with their options by keyword, as the tests write them.

``run_beam(model, src, src_lengths, beam_size=3, nbest=2, length_penalty=0.0)`` builds the
:class:`~seq2seq.decoding.options.DecodeOptions` and the Ensemble the search functions take. Greedy search and
sampling default to ``length_penalty=0.0`` (raw log-probabilities), beam search to the options' 1.0.
"""

from __future__ import annotations

from seq2seq.decoding.ensemble import as_ensemble
from seq2seq.decoding.options import DecodeOptions
from seq2seq.decoding.sampling import sample_search
from seq2seq.decoding.search import beam_search, greedy_search


def run_beam(model, src, src_lengths, *, prefix=None, constraints=None, trace=None, **options):
    return beam_search(as_ensemble(model), src, src_lengths, DecodeOptions(**options), prefix=prefix,
                       constraints=constraints, trace=trace)


def run_greedy(model, src, src_lengths, *, prefix=None, trace=None, length_penalty=0.0, **options):
    return greedy_search(as_ensemble(model), src, src_lengths, DecodeOptions(length_penalty=length_penalty, **options),
                         prefix=prefix, trace=trace)


def run_sampling(model, src, src_lengths, sampler, *, prefix=None, length_penalty=0.0, **options):
    return sample_search(as_ensemble(model), src, src_lengths, DecodeOptions(length_penalty=length_penalty, **options),
                         sampler, prefix=prefix)
