"""Features -> a calibrated confidence: an estimate of the translation's sentence chrF / 100 (plain numpy, saved as
JSON in the model directory as ``confidence.json``). The fit is ridge least squares on standardized features (each
feature minus its mean, over its standard deviation, on the split it is fitted on), predictions clipped to [0, 1]: a
weighted sum anyone can read back from the file. A translation whose estimated chrF is below :data:`BAD_CHRF` is
flagged as unlikely to be right (the file's ``low_threshold``); how many of the split's sentences that flags, and
how many of those really scored below it, are saved beside it. Without a calibration,
:func:`uncalibrated_confidence` is the geometric mean of the output's piece probabilities, marked as uncalibrated
wherever it is shown. Fitting and saving is :mod:`seq2seq.calibrate`; the features are
:mod:`seq2seq.decoding.confidence`.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from seq2seq.rank_metrics import spearman

#: the confidence features (computed by :mod:`seq2seq.decoding.confidence`), in the order calibrations read them
FEATURE_NAMES = ("mean_log_prob", "min_log_prob", "low_prob_share", "unattended_share", "length_ratio",
                 "pieces_per_word", "rare_piece_share", "source_piece_log_prob")

CALIBRATION_FILE = "confidence.json"
FORMAT = 1
#: what the confidence estimates
TARGET = "sentence chrF / 100 (sacrebleu sentence_chrf, detokenized output against the reference)"
#: a translation with chrF / 100 below this is unlikely to be right: an estimate below it is flagged
BAD_CHRF = 0.4
#: ridge penalty on the standardized weights (per sentence: small beside a split of ~1,000 sentences)
RIDGE = 1.0


@dataclass
class Calibration:
    """A fitted linear calibration: ``confidence = clip(bias + sum_i weights[i] * (x_i - means[i]) / scales[i])``."""

    features: list[str]
    means: list[float]
    scales: list[float]
    weights: list[float]
    bias: float
    split: str  #: the data split it was fitted on
    sentences: int  #: how many sentences
    spearman: float | None  #: Spearman of its confidence with sentence chrF on that split (None: undefined)
    low_threshold: float  #: below this, a translation is flagged as unlikely to be right
    low_share: float = 0.0  #: the share of the split's sentences flagged
    low_precision: float | None = None  #: of those, the share whose chrF / 100 is below BAD_CHRF
    target: str = TARGET
    format: int = FORMAT

    def predict(self, features: np.ndarray) -> np.ndarray:
        """(N, len(self.features)) features in this calibration's order -> (N,) confidences in [0, 1]."""
        features = np.asarray(features, dtype=np.float64).reshape(-1, len(self.features))
        standardized = (features - np.asarray(self.means)) / np.asarray(self.scales)
        return np.clip(self.bias + standardized @ np.asarray(self.weights), 0.0, 1.0)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path, known_features: Sequence[str] | None = None) -> "Calibration":
        """Read ``confidence.json``; ValueError naming the file (and what to do) when it cannot be used."""
        fix = f"recalibrate with `python -m seq2seq.calibrate --model {Path(path).parent}`"
        try:
            raw = json.loads(Path(path).read_text(encoding="utf-8"))
            calibration = cls(**raw)
        except (OSError, ValueError, TypeError) as err:
            raise ValueError(f"{path} is not a confidence calibration ({err}); {fix}") from None
        if calibration.format != FORMAT:
            raise ValueError(f"{path} has format {calibration.format}, this version reads {FORMAT}; {fix}")
        sizes = {len(calibration.means), len(calibration.scales), len(calibration.weights)}
        numbers = [*calibration.means, *calibration.scales, *calibration.weights, calibration.bias]
        if sizes != {len(calibration.features)} or not all(math.isfinite(float(x)) for x in numbers):
            raise ValueError(f"{path}: features, means, scales and weights must be finite lists of one length; {fix}")
        unknown = [name for name in calibration.features if known_features is not None and name not in known_features]
        if unknown:
            raise ValueError(f"{path} uses features this version does not compute ({', '.join(unknown)}); {fix}")
        return calibration


def fit_calibration(features: np.ndarray, chrf: Sequence[float], names: Sequence[str], split: str,
                    ridge: float = RIDGE) -> Calibration:
    """Fit to sentence chrF (0-100) from (N, F) features named ``names``, on the split called ``split``."""
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(chrf, dtype=np.float64) / 100.0
    if x.ndim != 2 or x.shape[0] != len(y) or x.shape[1] != len(names):
        raise ValueError(f"features {x.shape} must be (sentences, {len(names)}) with {len(y)} sentences")
    if len(y) < 2 * len(names):
        raise ValueError(f"{len(y)} sentences are too few to calibrate {len(names)} features; use a larger split")
    means, scales = x.mean(axis=0), x.std(axis=0)
    scales = np.where(scales > 1e-12, scales, 1.0)  # a constant feature gets weight 0, not a division by 0
    z = (x - means) / scales
    weights = np.linalg.solve(z.T @ z + ridge * np.eye(len(names)), z.T @ (y - y.mean()))
    calibration = Calibration(features=list(names), means=means.tolist(), scales=scales.tolist(),
                              weights=weights.tolist(), bias=float(y.mean()), split=split, sentences=len(y),
                              spearman=0.0, low_threshold=BAD_CHRF)
    predicted = calibration.predict(x)
    rho = spearman(predicted, y)
    calibration.spearman = round(rho, 4) if math.isfinite(rho) else None  # constant chrF or confidence: undefined
    calibration.low_share, calibration.low_precision = flag_statistics(predicted, y, BAD_CHRF)
    return calibration


def flag_statistics(confidence: np.ndarray, chrf: np.ndarray, threshold: float) -> tuple[float, float | None]:
    """(share of sentences with confidence below ``threshold``, share of those with chrF / 100 below it too;
    None when none is flagged), rounded to 4 decimals."""
    flagged = np.asarray(confidence) < threshold
    precision = round(float((np.asarray(chrf)[flagged] < threshold).mean()), 4) if flagged.any() else None
    return round(float(flagged.mean()), 4), precision


def uncalibrated_confidence(mean_log_prob: float) -> float:
    """Without a calibration: the geometric mean of the output's piece (and EOS) probabilities."""
    return float(math.exp(mean_log_prob))


def load_calibration(model_dir: str | Path, known_features: Sequence[str]) -> Calibration | None:
    """The model directory's ``confidence.json``, or None when it has none."""
    path = Path(model_dir) / CALIBRATION_FILE
    return Calibration.load(path, known_features) if path.is_file() else None


#: without a calibration, an output whose geometric-mean piece probability is below this is flagged (a mean
#: log-probability under -1.39; the Multi30k quick-start model's validation outputs average -0.75, SD 0.37)
UNCALIBRATED_LOW_THRESHOLD = 0.25
