"""Spearman's rho and AUROC against brute force: ranks counted pair by pair, the correlation written out, and the
share of (positive, negative) pairs ordered right."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from seq2seq.rank_metrics import auroc, average_ranks, spearman


def ranks_by_counting(values: list[float]) -> list[float]:
    """1 + how many are smaller + half of how many others are equal."""
    return [1 + sum(w < v for w in values) + (sum(w == v for w in values) - 1) / 2 for v in values]


def pearson_by_hand(x: list[float], y: list[float]) -> float:
    mx, my = sum(x) / len(x), sum(y) / len(y)
    cov = sum((a - mx) * (b - my) for a, b in zip(x, y))
    return cov / math.sqrt(sum((a - mx) ** 2 for a in x) * sum((b - my) ** 2 for b in y))


def samples(seed: int, n: int, levels: int) -> list[float]:
    rng = random.Random(seed)
    return [float(rng.randint(0, levels)) for _ in range(n)]  # few levels: many ties


@pytest.mark.parametrize("seed", range(4))
def test_spearman_is_the_correlation_of_ranks_counted_by_hand(seed):
    x, y = samples(seed, 23, 5), samples(seed + 100, 23, 8)
    assert average_ranks(x).tolist() == ranks_by_counting(x)
    assert spearman(x, y) == pytest.approx(pearson_by_hand(ranks_by_counting(x), ranks_by_counting(y)), abs=1e-12)


def test_spearman_of_known_orders():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)  # 1 - 6 * 2 / (3 * 8)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))


@pytest.mark.parametrize("seed", range(4))
def test_auroc_is_the_share_of_pairs_ordered_right(seed):
    positives, negatives = samples(seed, 17, 6), samples(seed + 7, 11, 6)
    pairs = list(itertools.product(positives, negatives))
    expected = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs) / len(pairs)
    assert auroc(positives, negatives) == pytest.approx(expected, abs=1e-12)


def test_auroc_extremes_and_errors():
    assert auroc([3, 4], [1, 2]) == 1.0 and auroc([1, 2], [3, 4]) == 0.0 and auroc([1], [1]) == 0.5
    with pytest.raises(ValueError, match="at least one"):
        auroc([], [1.0])
