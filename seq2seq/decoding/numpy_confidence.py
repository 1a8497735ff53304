"""The confidence of :mod:`seq2seq.decoding.confidence` in numpy, over the onnxruntime graphs: the runtime without
torch gives ``--json``, ``generate()`` and the service their piece probabilities and confidence features too.

:func:`forced_pass` steps the graphs teacher-forced over given outputs (an ensemble's log-probabilities and
attention averaged), :func:`confidence_features` computes the features of
:data:`~seq2seq.calibration.FEATURE_NAMES` as the torch function does (same definitions, same floors and
thresholds), and :func:`assess_outputs` batches them; tests/test_numpy_search.py compares them with torch's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from seq2seq.decoding.batching import sentence_batches
from seq2seq.decoding.numpy_rules import log_softmax
from seq2seq.decoding.numpy_search import NumpyEnsemble
from seq2seq.padding import pad_arrays
from seq2seq.tokenizer import BOS_ID, EOS_ID, PAD_ID

#: the torch module's thresholds (seq2seq/decoding/confidence.py), repeated: that module imports torch
LOW_PROB, ATTENDED, LOG_PROB_FLOOR = 0.2, 0.3, -20.0


@dataclass
class NumpyPieceStats:
    """:class:`~seq2seq.decoding.confidence.SourcePieceStats` as numpy arrays (V,)."""

    piece_log_prob: np.ndarray
    rare: np.ndarray

    @classmethod
    def of(cls, tokenizer) -> "NumpyPieceStats":
        scores = np.asarray(tokenizer.piece_log_probs(), dtype=np.float32)
        rare = np.array([tokenizer.is_rare_piece(i) for i in range(len(scores))], dtype=bool)
        learned = scores[4:][~rare[4:]]
        lowest = np.float32(learned.min()) if learned.size else np.float32(0.0)
        return cls(piece_log_prob=np.where(rare, lowest, scores).astype(np.float32), rare=rare)


def forced_pass(model: NumpyEnsemble, src: np.ndarray, src_lengths: np.ndarray, tgt: np.ndarray,
                tgt_lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(B, T) outputs (no BOS/EOS, PAD after) -> (B, T + 1) log-probabilities of the pieces then EOS (0 past a
    row's end) and (B, T + 1, S) attention, teacher-forced."""
    batch_size, steps = tgt.shape[0], tgt.shape[1] + 1
    gold = np.concatenate([tgt, np.full((batch_size, 1), PAD_ID, dtype=np.int64)], axis=1)
    gold[np.arange(batch_size), tgt_lengths] = EOS_ID
    tgt_in = np.concatenate([np.full((batch_size, 1), BOS_ID, dtype=np.int64), tgt], axis=1)
    states, memories = model.start(src, src_lengths)
    token_log_probs = np.zeros((batch_size, steps), dtype=np.float32)
    attention = np.zeros((batch_size, steps, src.shape[1]), dtype=np.float32)
    for t in range(steps):
        log_probs, states, attention[:, t] = model.step(tgt_in[:, t], states, memories)
        token_log_probs[:, t] = log_probs[np.arange(batch_size), gold[:, t]]
    return np.where(gold == PAD_ID, np.float32(0.0), token_log_probs), attention


def confidence_features(token_log_probs: np.ndarray, output_lengths: np.ndarray, attention: np.ndarray,
                        src: np.ndarray, src_lengths: np.ndarray, source_words: np.ndarray,
                        vocabulary: NumpyPieceStats) -> np.ndarray:
    """:func:`seq2seq.decoding.confidence.confidence_features` (which documents the arguments): (B, 8) float32."""
    real = np.arange(token_log_probs.shape[1])[None, :] < output_lengths[:, None]  # (B, T)
    floored = np.maximum(token_log_probs, np.float32(LOG_PROB_FLOOR))
    count = output_lengths.astype(np.float32)
    mean_log_prob = np.where(real, floored, 0).sum(axis=1, dtype=np.float32) / count
    min_log_prob = np.where(real, floored, 0).min(axis=1)
    low_prob_share = (real & (np.exp(floored) < LOW_PROB)).sum(axis=1) / count

    pieces = src_lengths - 1  # source pieces without EOS
    divisor = np.maximum(pieces, 1).astype(np.float32)
    source_real = np.arange(src.shape[1])[None, :] < pieces[:, None]  # (B, S)
    received = np.where(real[:, :, None], attention, 0).sum(axis=1, dtype=np.float32)  # (B, S)
    unattended = (source_real & (received < ATTENDED)).sum(axis=1) / divisor

    length_ratio = np.log(count) - np.log(pieces.astype(np.float32) + 1)
    pieces_per_word = pieces.astype(np.float32) / np.maximum(source_words.astype(np.float32), 1)
    ids = np.where(source_real, src, 0)
    rare_share = (vocabulary.rare[ids] & source_real).sum(axis=1) / divisor
    piece_log_prob = np.where(source_real, vocabulary.piece_log_prob[ids], 0).sum(axis=1, dtype=np.float32) / divisor
    return np.stack([mean_log_prob, min_log_prob, low_prob_share, unattended, length_ratio, pieces_per_word,
                     rare_share, piece_log_prob], axis=1).astype(np.float32)


def assess_outputs(graphs, src_ids: list[list[int]], outputs: list[list[int]], source_words: list[int],
                   vocabulary: NumpyPieceStats, batch_size: int) -> list[tuple[list[float], list[float]]]:
    """Per output (input order): (its teacher-forced log-probabilities, pieces then EOS; its features), in
    length-sorted batches of ``batch_size`` (:func:`seq2seq.decoding.confidence.assess_outputs`)."""
    model = NumpyEnsemble(graphs)
    results: list = [None] * len(src_ids)
    for indices in sentence_batches([len(src_ids[i]) + len(outputs[i]) for i in range(len(src_ids))], batch_size):
        src, src_lengths = pad_arrays([src_ids[i] for i in indices])
        tgt, tgt_lengths = pad_arrays([list(outputs[i]) for i in indices])
        token_log_probs, attention = forced_pass(model, src, src_lengths, tgt, tgt_lengths)
        features = confidence_features(token_log_probs, tgt_lengths + 1, attention, src, src_lengths,
                                       np.array([source_words[i] for i in indices]), vocabulary)
        for row, index in enumerate(indices):
            results[index] = (token_log_probs[row, : tgt_lengths[row] + 1].tolist(), features[row].tolist())
    return results
