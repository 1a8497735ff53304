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
from seq2seq.calibration import FEATURE_NAMES
from seq2seq.onnx_graphs import OnnxGraphs


def add_confidence(entries: Sequence[Sequence], src_ids: Sequence[list[int]], sources: Sequence[str], models,
                   vocabulary, calibration: Calibration | None, batch_size: int, device,
                   autocast_dtype=None) -> None:
    """Set ``piece_probs``, ``confidence``, ``confidence_calibrated``, ``low_confidence`` and
    ``confidence_features`` on every translation of every entry (one entry per source: its n-best list).

    ``src_ids``: the sources' ids as decoded (ending in EOS); ``sources``: their texts (for the word counts).
    ``models``: torch models, or :class:`~seq2seq.onnx_graphs.OnnxGraphs` (then numpy throughout, without torch:
    :mod:`seq2seq.decoding.numpy_confidence`, with ``vocabulary`` a
    :class:`~seq2seq.decoding.numpy_confidence.NumpyPieceStats`).
    """
    flat = [(number, translation) for number, entry in enumerate(entries) for translation in entry]
    if not flat:
        return
    words = [max(len(source.split()), 1) for source in sources]
    inputs = ([src_ids[n] for n, _ in flat], [list(t.tokens) for _, t in flat], [words[n] for n, _ in flat])
    if all(isinstance(model, OnnxGraphs) for model in models):  # the runtime without torch
        from seq2seq.decoding.numpy_confidence import assess_outputs as assess_on_graphs

        assessed = assess_on_graphs(models, *inputs, vocabulary, batch_size)
    else:
        from seq2seq.decoding.confidence import assess_outputs

        assessed = [(a.token_log_probs, a.features)
                    for a in assess_outputs(models, *inputs, vocabulary, batch_size, device, autocast_dtype)]
    features = np.array([f for _, f in assessed], dtype=np.float64).reshape(len(flat), len(FEATURE_NAMES))
    if calibration is not None:
        columns = [FEATURE_NAMES.index(name) for name in calibration.features]
        confidences = calibration.predict(features[:, columns]).tolist()
        threshold = calibration.low_threshold
    else:
        confidences = [uncalibrated_confidence(row[FEATURE_NAMES.index("mean_log_prob")]) for row in features]
        threshold = UNCALIBRATED_LOW_THRESHOLD
    for (_, translation), (token_log_probs, _), confidence, row in zip(flat, assessed, confidences,
                                                                       features.tolist()):
        translation.piece_probs = [math.exp(value) for value in token_log_probs]
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
