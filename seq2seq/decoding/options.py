"""How to decode: the search settings as one frozen value, built once per call and passed by name to every search.

:class:`DecodeOptions` holds what greedy, beam, constrained and sampling search read (``beam_size``, ``nbest``,
the length limits, the length penalty, ``min_length``, ``no_repeat_ngram``, ``return_attention``) and the batch
size :func:`~seq2seq.decoding.driver.translate_ids` decodes with. :meth:`DecodeOptions.from_config` builds it from
a model's ``decode`` section plus the caller's overrides (a request's beam size, n-best, ...); the names are the
config's names. :func:`check_beam_size`, :func:`check_batch_size` and :func:`check_nbest` raise the Python API's
errors for the ranges stated once in :mod:`seq2seq.config.checks` (``DECODE_RANGES``, ``nbest_range``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from seq2seq.config import DECODE_RANGES, MAX_SAMPLES, DecodeConfig, in_decode_range, nbest_range

__all__ = ["MAX_SAMPLES", "DecodeOptions", "check_batch_size", "check_beam_size", "check_nbest", "length_penalty"]


def length_penalty(length, alpha: float):
    """GNMT length penalty ``((5 + length) / 6) ** alpha`` (1 when alpha = 0), of a number or of an array (torch or
    numpy) of lengths (pieces + EOS): how every search ranks by ``log_prob / length_penalty``."""
    return ((5.0 + length) / 6.0) ** alpha


@dataclass(frozen=True)
class DecodeOptions:
    """The settings of one decode (every search reads the fields it needs).

    Attributes:
        beam_size: K hypotheses kept per sentence (1 with ``nbest`` 1 = greedy search).
        nbest: finished hypotheses returned per sentence (<= ``beam_size``), or samples per sentence when sampling.
        max_len_a, max_len_b: an output has at most ``max_len_a * source_length + max_len_b`` pieces.
        length_penalty: GNMT alpha; hypotheses rank by ``log_prob / ((5 + len) / 6) ** alpha`` (len: pieces + EOS).
        min_length: outputs shorter than this many pieces cannot end (EOS is banned before), unless at their
            length limit.
        no_repeat_ngram: no n-gram of this size appears twice in an output (0 = off).
        return_attention: keep each hypothesis's attention weights.
        batch_size: sentences decoded together (:func:`~seq2seq.decoding.driver.translate_ids`).
    """

    beam_size: int = 5
    nbest: int = 1
    max_len_a: float = 1.5
    max_len_b: int = 10
    length_penalty: float = 1.0
    min_length: int = 0
    no_repeat_ngram: int = 0
    return_attention: bool = False
    batch_size: int = 64

    @classmethod
    def from_config(cls, decode: DecodeConfig, **overrides) -> "DecodeOptions":
        """The options of ``decode`` (a model's ``decode`` section) with ``overrides`` (field name -> value; a
        value of None keeps the config's)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise TypeError(f"unknown decode options: {', '.join(unknown)}")
        values = {name: getattr(decode, name) for name in names if hasattr(decode, name)}
        values.update({name: value for name, value in overrides.items() if value is not None})
        return cls(**values)

    def replace(self, **changes) -> "DecodeOptions":
        return dataclasses.replace(self, **changes)


def check_beam_size(beam_size: int) -> None:
    """ValueError unless ``beam_size`` is in ``DECODE_RANGES["beam_size"]`` ([1, MAX_BEAM_SIZE])."""
    if not in_decode_range("beam_size", beam_size):
        raise ValueError(f"beam_size must be in [1, {DECODE_RANGES['beam_size'][1]}], got {beam_size}")


def check_batch_size(batch_size: int) -> None:
    """ValueError unless ``batch_size`` is in ``DECODE_RANGES["batch_size"]`` ([1, MAX_DECODE_BATCH_SIZE])."""
    if not in_decode_range("batch_size", batch_size):
        raise ValueError(f"batch_size must be in [1, {DECODE_RANGES['batch_size'][1]}], got {batch_size}")


def check_nbest(nbest: int, beam_size: int, sampling: bool = False) -> None:
    """ValueError unless ``nbest`` is in :func:`~seq2seq.config.nbest_range`: [1, beam_size] (search) or
    [1, MAX_SAMPLES] (sampling)."""
    low, high = nbest_range(beam_size, sampling)
    if low <= nbest <= high:
        return
    if sampling:
        raise ValueError(f"nbest (samples per input) must be between 1 and {high}, got {nbest}")
    raise ValueError(f"nbest must be between 1 and the beam size ({high}), got {nbest}")
