"""Every translation's confidence: per-piece probabilities and a sentence confidence, set on the translations a
search returned (:meth:`seq2seq.translator.Translator.generate` calls :func:`add_confidence`).

One batched teacher-forced pass of the chosen outputs (:func:`seq2seq.decoding.confidence.assess_outputs`) gives
each piece's probability and the sentence's features; the model directory's calibration
(:mod:`seq2seq.calibration`) turns the features into an estimate of the sentence's chrF / 100. Without one, the
confidence is the geometric mean of the piece probabilities, marked uncalibrated.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from seq2seq.calibration import UNCALIBRATED_LOW_THRESHOLD, Calibration, uncalibrated_confidence
from seq2seq.decoding.confidence import FEATURE_NAMES, SourcePieceStats, assess_outputs


def add_confidence(entries: Sequence[Sequence], src_ids: Sequence[list[int]], sources: Sequence[str], models,
                   vocabulary: SourcePieceStats, calibration: Calibration | None, batch_size: int, device,
                   autocast_dtype=None) -> None:
    """Set ``piece_probs``, ``confidence``, ``confidence_calibrated``, ``low_confidence`` and
    ``confidence_features`` on every translation of every entry (one entry per source: its n-best list).

    ``src_ids``: the sources' ids as decoded (ending in EOS); ``sources``: their texts (for the word counts).
    """
    flat = [(number, translation) for number, entry in enumerate(entries) for translation in entry]
    if not flat:
        return
    words = [max(len(source.split()), 1) for source in sources]
    assessed = assess_outputs(models, [src_ids[n] for n, _ in flat], [list(t.tokens) for _, t in flat],
                              [words[n] for n, _ in flat], vocabulary, batch_size, device, autocast_dtype)
    features = np.array([a.features for a in assessed], dtype=np.float64).reshape(len(flat), len(FEATURE_NAMES))
    if calibration is not None:
        columns = [FEATURE_NAMES.index(name) for name in calibration.features]
        confidences = calibration.predict(features[:, columns]).tolist()
        threshold = calibration.low_threshold
    else:
        confidences = [uncalibrated_confidence(row[FEATURE_NAMES.index("mean_log_prob")]) for row in features]
        threshold = UNCALIBRATED_LOW_THRESHOLD
    for (_, translation), assessment, confidence, row in zip(flat, assessed, confidences, features.tolist()):
        translation.piece_probs = [math.exp(value) for value in assessment.token_log_probs]
        translation.confidence = float(confidence)
        translation.confidence_calibrated = calibration is not None
        translation.low_confidence = bool(confidence < threshold)
        translation.confidence_features = dict(zip(FEATURE_NAMES, row))


def confidence_json(translation, id_to_piece) -> dict:
    """A translation's confidence as the CLI's ``--json`` and the service show it: ``confidence`` (4 decimals, or
    None when not computed), ``confidence_calibrated``, ``low_confidence``, and per output piece then ``</s>`` its
    name (``pieces``) and probability (``piece_probs``, 4 decimals)."""
    if translation.confidence is None:
        return {"confidence": None, "confidence_calibrated": translation.confidence_calibrated,
                "low_confidence": False, "pieces": [], "piece_probs": []}
    return {"confidence": round(translation.confidence, 4), "confidence_calibrated": translation.confidence_calibrated,
            "low_confidence": translation.low_confidence,
            "pieces": [id_to_piece(i) for i in translation.tokens] + ["</s>"],
            "piece_probs": [round(p, 4) for p in translation.piece_probs]}
