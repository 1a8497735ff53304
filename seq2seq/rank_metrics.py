"""How well a score ranks things: Spearman's rank correlation and the area under the ROC curve (plain numpy)."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def average_ranks(values: Sequence[float]) -> np.ndarray:
    """Ranks 1..n of ``values``; tied values share the mean of the ranks they span."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), dtype=np.float64)
    sorted_values = values[order]
    start = 0
    while start < len(values):
        end = start
        while end + 1 < len(values) and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2.0 + 1.0
        start = end + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho: the Pearson correlation of the two samples' average ranks (nan when either is constant)."""
    if len(x) != len(y):
        raise ValueError(f"spearman: {len(x)} and {len(y)} values; they must pair up")
    if len(x) < 2:
        return float("nan")
    rx, ry = average_ranks(x) - (len(x) + 1) / 2.0, average_ranks(y) - (len(y) + 1) / 2.0
    denominator = np.sqrt((rx * rx).sum() * (ry * ry).sum())
    return float((rx * ry).sum() / denominator) if denominator > 0 else float("nan")


def auroc(positives: Sequence[float], negatives: Sequence[float]) -> float:
    """The probability that a random positive scores higher than a random negative (ties count half): the area
    under the ROC curve, from the Mann-Whitney U statistic."""
    if len(positives) == 0 or len(negatives) == 0:
        raise ValueError("auroc needs at least one positive and one negative score")
    ranks = average_ranks(np.concatenate([np.asarray(positives, float), np.asarray(negatives, float)]))
    n_pos, n_neg = len(positives), len(negatives)
    u = ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))
