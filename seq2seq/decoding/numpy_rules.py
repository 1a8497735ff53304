"""The logit constraints and length limits of :mod:`seq2seq.decoding.logits`, on numpy arrays: what the runtime
without torch applies after each step of the onnxruntime graphs (:mod:`seq2seq.decoding.numpy_search`).

Each function computes what its torch namesake computes (tests/test_numpy_search.py compares them), on (N, V)
float32 log-probabilities of N rows and their (N, t) generated ids; the GNMT length penalty is shared as it is
(:func:`seq2seq.decoding.options.length_penalty` works on numbers and on arrays).
"""

from __future__ import annotations

import numpy as np

from seq2seq.decoding.options import DecodeOptions
from seq2seq.tokenizer import BOS_ID, EOS_ID, PAD_ID

NEG_INF = np.float32(-np.inf)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """(N, V) -> (N, V) float32 log-probabilities (``x - max - log(sum(exp(x - max)))``, as torch computes it)."""
    shifted = logits.astype(np.float32, copy=False) - logits.max(axis=-1, keepdims=True).astype(np.float32)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def max_output_lengths(src_lengths: np.ndarray, max_len_a: float, max_len_b: int) -> np.ndarray:
    """(B,) largest number of output pieces (EOS excluded): ``a * src_len + b`` in float32 (as torch rounds it),
    truncated, at least 1."""
    limits = src_lengths.astype(np.float32) * np.float32(max_len_a) + np.float32(max_len_b)
    return np.maximum(limits.astype(np.int64), 1)


def limits_with_prefix(src_lengths: np.ndarray, options: DecodeOptions, prefix: np.ndarray | None) -> np.ndarray:
    """(B,) maximum output pieces, never shorter than the row's forced prefix."""
    limits = max_output_lengths(src_lengths, options.max_len_a, options.max_len_b)
    return limits if prefix is None else np.maximum(limits, (prefix != PAD_ID).sum(axis=1))


def ban_repeated_ngrams(log_probs: np.ndarray, history: np.ndarray, ngram_size: int) -> None:
    """Forbid (in place) any token that would complete an n-gram already in the row's history (0 = off)."""
    t = history.shape[1]
    if ngram_size <= 0 or t < ngram_size:
        return
    if ngram_size == 1:
        log_probs[np.arange(len(history))[:, None], history] = NEG_INF
        return
    ngrams = np.lib.stride_tricks.sliding_window_view(history, ngram_size, axis=1)  # (N, t - n + 1, n)
    current = history[:, t - ngram_size + 1 :]  # (N, n - 1)
    rows, starts = np.nonzero((ngrams[:, :, :-1] == current[:, None, :]).all(axis=-1))
    log_probs[rows, ngrams[rows, starts, -1]] = NEG_INF


def constrain(raw_log_probs: np.ndarray, options: DecodeOptions, history: np.ndarray, max_lengths: np.ndarray,
              shortest_limit: int, prefix: np.ndarray | None) -> np.ndarray:
    """The step's log-probabilities after every rule of :func:`seq2seq.decoding.logits.next_log_probs`: no PAD or
    BOS, no EOS before ``min_length`` (unless at the limit), no repeated n-gram, only EOS at the row's length limit,
    and the forced prefix token (scored by the model) where a row has one.

    Args:
        raw_log_probs: (N, V) the model's; history: (N, t); max_lengths: (N,); shortest_limit: their minimum;
        prefix: (N, P) forced ids (PAD = free) or None.
    """
    log_probs = raw_log_probs.copy()
    log_probs[:, PAD_ID] = NEG_INF
    log_probs[:, BOS_ID] = NEG_INF
    t = history.shape[1]
    if t < options.min_length:
        log_probs[max_lengths > t, EOS_ID] = NEG_INF
    ban_repeated_ngrams(log_probs, history, options.no_repeat_ngram)
    if t >= shortest_limit:
        at_limit = max_lengths <= t
        eos = log_probs[:, EOS_ID].copy()
        log_probs[at_limit] = NEG_INF
        log_probs[:, EOS_ID] = eos
    if prefix is not None and t < prefix.shape[1]:
        rows = np.nonzero(prefix[:, t] != PAD_ID)[0]
        forced = prefix[rows, t]
        log_probs[rows] = NEG_INF
        log_probs[rows, forced] = raw_log_probs[rows, forced]
    return log_probs


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(B, C) -> the k largest of each row, best first, and their column indices (ties: the lower index first)."""
    if k < scores.shape[1]:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        values = np.take_along_axis(scores, part, axis=1)
        order = np.lexsort((part, -values), axis=1)  # by value descending, then index ascending
        indices = np.take_along_axis(part, order, axis=1)
    else:
        indices = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, indices, axis=1), indices
