"""reporting.stats: bootstrap confidence interval of top-1 and the exact paired McNemar test,
checked against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from actionrepro.reporting import stats


def outcomes(right: int, n: int) -> np.ndarray:
    return np.arange(n) < right


def series(values, ids=None) -> pd.Series:
    values = list(values)
    ids = ids if ids is not None else [f"v{i:03d}" for i in range(len(values))]
    return pd.Series(values, index=pd.Index(ids, name="video_id"), dtype=bool)


# ---------------------------------------------------------------- confidence interval
def test_ci_contains_the_point_estimate_and_matches_the_normal_approximation_at_large_n():
    low, high = stats.top1_ci(outcomes(320, 400))  # 80 %
    assert low < 0.8 < high
    # Wald: 0.8 ± 1.96 * sqrt(0.8 * 0.2 / 400) = 0.8 ± 0.0392
    assert low == pytest.approx(0.8 - 0.0392, abs=0.01) and high == pytest.approx(0.8 + 0.0392, abs=0.01)


def test_ci_narrows_as_the_number_of_test_videos_grows():
    widths = []
    for n in (50, 200, 800):
        low, high = stats.top1_ci(outcomes(int(0.7 * n), n))
        assert low < 0.7 < high
        widths.append(high - low)
    assert widths[0] > widths[1] > widths[2]
    assert widths[0] / widths[2] == pytest.approx(4.0, rel=0.25)  # width ~ 1/sqrt(n): 16x the videos, 1/4 the width


def test_ci_is_deterministic_and_the_seed_is_the_only_randomness():
    data = outcomes(613, 997)
    assert stats.top1_ci(data) == stats.top1_ci(data)
    # another seed moves the bounds by about one video (1/997), no more
    other = stats.top1_ci(data, seed=1)
    assert other != stats.top1_ci(data)
    assert np.allclose(other, stats.top1_ci(data), atol=3 / 997)


def test_ci_when_every_video_is_right_or_wrong_is_the_exact_clopper_pearson_interval():
    # k = n: lower bound (alpha/2) ** (1/n); k = 0: upper bound 1 - (alpha/2) ** (1/n)
    low, high = stats.top1_ci(outcomes(10, 10))
    assert (low, high) == (pytest.approx(0.025 ** (1 / 10)), 1.0)
    low, high = stats.top1_ci(outcomes(0, 10))
    assert (low, high) == (0.0, pytest.approx(1 - 0.025 ** (1 / 10)))
    assert stats.top1_ci(outcomes(1, 1)) == (pytest.approx(0.025), 1.0)


def test_ci_of_tiny_or_empty_samples_does_not_crash():
    for right, n in ((1, 2), (2, 3), (1, 3)):
        low, high = stats.top1_ci(outcomes(right, n))
        assert 0.0 <= low <= right / n <= high <= 1.0
    assert all(math.isnan(v) for v in stats.top1_ci([]))


def test_ci_accepts_0_1_and_refuses_anything_else():
    assert stats.top1_ci([1, 0, 1, 1]) == stats.top1_ci([True, False, True, True])
    with pytest.raises(ValueError):
        stats.top1_ci([1, 2, 0])
    with pytest.raises(ValueError):
        stats.top1_ci(np.ones((3, 2), bool))


# ---------------------------------------------------------------- McNemar
def test_mcnemar_p_value_equals_the_binomial_computed_by_hand():
    # a right only on 1 video, b right only on 5; 2 videos both right, 2 both wrong
    a = series([1, 0, 0, 0, 0, 0, 1, 1, 0, 0])
    b = series([0, 1, 1, 1, 1, 1, 1, 1, 0, 0])
    result = stats.mcnemar_exact(a, b)
    assert (result.n, result.only_a, result.only_b, result.discordant) == (10, 1, 5, 6)
    # two-sided: 2 * P(X <= 1), X ~ Bin(6, 1/2) = 2 * (1 + 6) / 64
    assert result.p_value == pytest.approx(2 * 7 / 64)
    # all 4 discordant videos one way: 2 * 0.5 ** 4
    assert stats.mcnemar_p(0, 4) == pytest.approx(0.125)
    assert stats.mcnemar_p(3, 3) == 1.0  # balanced: capped at 1


def test_mcnemar_is_one_without_discordant_videos():
    same = series(outcomes(150, 200))
    result = stats.mcnemar_exact(same, same.copy())
    assert (result.only_a, result.only_b, result.p_value) == (0, 0, 1.0)
    assert stats.mcnemar_p(0, 0) == 1.0


def test_mcnemar_is_symmetric():
    rng = np.random.default_rng(3)
    a, b = series(rng.random(300) < 0.7), series(rng.random(300) < 0.6)
    ab, ba = stats.mcnemar_exact(a, b), stats.mcnemar_exact(b, a)
    assert (ab.only_a, ab.only_b) == (ba.only_b, ba.only_a)
    assert ab.p_value == pytest.approx(ba.p_value)
    assert 0.0 <= ab.p_value <= 1.0


def test_mcnemar_matches_videos_by_id_not_by_row_order():
    ids = ["b", "a", "c", "d"]
    a = series([True, False, True, False], ids)
    b = series([True, True, False, False], ids)
    shuffled = b.iloc[[2, 0, 3, 1]]
    assert stats.mcnemar_exact(a, shuffled) == stats.mcnemar_exact(a, b)
    # positional pairing would see a different table: check the id-matched counts
    assert (stats.mcnemar_exact(a, shuffled).only_a, stats.mcnemar_exact(a, shuffled).only_b) == (1, 1)


def test_mcnemar_refuses_different_or_duplicated_video_sets():
    a = series([True, False, True], ["x", "y", "z"])
    with pytest.raises(stats.VideoSetMismatch, match="differ"):
        stats.mcnemar_exact(a, series([True, False, True], ["x", "y", "w"]))
    with pytest.raises(stats.VideoSetMismatch, match="differ"):
        stats.mcnemar_exact(a, series([True, False], ["x", "y"]))
    with pytest.raises(stats.VideoSetMismatch, match="more than once"):
        stats.mcnemar_exact(a, series([True, False, True], ["x", "y", "y"]))


def test_pooled_mcnemar_adds_the_discordant_videos_of_every_split():
    # split 1: 4 videos only b right (p 0.125); split 2: 2 (p 0.5); pooled: 6 -> 2 * 0.5 ** 6
    split1 = (series(outcomes(10, 20)), series(outcomes(14, 20)))
    split2 = (series(outcomes(5, 20)), series(outcomes(7, 20)))  # same ids as split 1: pairs are per split
    assert stats.mcnemar_exact(*split1).p_value == pytest.approx(0.125)
    assert stats.mcnemar_exact(*split2).p_value == pytest.approx(0.5)
    pooled = stats.pooled_mcnemar([split1, split2])
    assert (pooled.n, pooled.only_a, pooled.only_b) == (40, 0, 6)
    assert pooled.p_value == pytest.approx(2 * 0.5 ** 6)
    with pytest.raises(stats.VideoSetMismatch):
        stats.pooled_mcnemar([split1, (series(outcomes(5, 20)), series(outcomes(7, 19)))])


def test_significance_at_five_percent():
    assert stats.significant(0.049) is True
    assert stats.significant(0.05) is False
    assert stats.significant(math.nan) is None
