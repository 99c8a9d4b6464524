"""Uncertainty of the report's accuracies, from the per-video predictions the evaluate step wrote.

Two tools, both on per-video correctness (True: the video was classified right):
  top1_ci        95 % bootstrap confidence interval of an accuracy over the test videos
                 (scipy.stats.bootstrap, BCa, fixed seed: the same files give the same report);
  mcnemar_exact  exact paired McNemar test of two models on the SAME test videos, matched by
                 video_id: a two-sided binomial test (scipy.stats.binomtest, p = 1/2) on the
                 videos exactly one of the two got right. pooled_mcnemar does the same over
                 several splits at once (each (split, video) pair is one matched pair).
Video sets that differ are refused (VideoSetMismatch), never silently intersected.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

CONFIDENCE = 0.95
N_RESAMPLES = 2000
SEED = 0
ALPHA = 0.05
BATCH = 250  # resamples per batch: memory O(BATCH x videos), also for Kinetics-sized test sets


class VideoSetMismatch(ValueError):
    """Two correctness vectors to be paired do not cover the same test videos."""


# ---------------------------------------------------------------- confidence interval
def _as_bool(correct) -> np.ndarray:
    values = np.asarray(correct)
    if values.ndim != 1:
        raise ValueError(f"correctness must be one value per video, got shape {values.shape}")
    if values.dtype != bool:
        if not np.isin(values, (0, 1)).all():
            raise ValueError("correctness must be boolean (or 0/1)")
        values = values.astype(bool)
    return values


def _rng_keyword() -> str:
    """scipy >= 1.15 calls the generator `rng`; older releases `random_state`."""
    return "rng" if "rng" in inspect.signature(sps.bootstrap).parameters else "random_state"


def top1_ci(correct, confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES, seed: int = SEED,
            method: str = "BCa") -> tuple[float, float]:
    """(low, high) confidence interval of the accuracy mean(correct), as fractions.

    correct: one bool (or 0/1) per test video. The bootstrap resamples videos with replacement
    (n_resamples times, generator seeded with `seed`, so the interval is reproducible). With no
    video: (nan, nan). When every video is right (or every one wrong) all resamples are identical
    and the bootstrap interval collapses to a point, which would claim certainty from a finite
    sample; there the exact Clopper-Pearson interval (scipy.stats.binomtest) is returned instead.
    """
    values = _as_bool(correct)
    n, k = len(values), int(values.sum())
    if n == 0:
        return math.nan, math.nan
    if k in (0, n):
        ci = sps.binomtest(k, n).proportion_ci(confidence_level=confidence, method="exact")
        return float(ci.low), float(ci.high)
    result = sps.bootstrap((values.astype(np.float64),), np.mean, n_resamples=n_resamples, batch=BATCH,
                           vectorized=True, confidence_level=confidence, method=method,
                           **{_rng_keyword(): np.random.default_rng(seed)})
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    if math.isnan(low) or math.isnan(high):  # BCa undefined (e.g. a very small n): fall back to percentile
        if method != "percentile":
            return top1_ci(values, confidence, n_resamples, seed, "percentile")
    return low, high


# ---------------------------------------------------------------- paired test
@dataclass(frozen=True)
class McNemar:
    """Exact McNemar test: n paired videos, of which only_a were right for model a only and only_b
    for model b only (the discordant pairs); p_value two-sided, 1.0 when nothing is discordant."""

    n: int
    only_a: int
    only_b: int
    p_value: float

    @property
    def discordant(self) -> int:
        return self.only_a + self.only_b


def paired(correct_a: pd.Series, correct_b: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Align two per-video correctness Series (index: video_id) on their video ids.

    Raises VideoSetMismatch if either has a duplicated video id or the two sets of ids differ."""
    for name, series in (("a", correct_a), ("b", correct_b)):
        if series.index.has_duplicates:
            dup = series.index[series.index.duplicated()][:3].tolist()
            raise VideoSetMismatch(f"model {name} lists video(s) {dup} more than once")
    ids_a, ids_b = set(correct_a.index), set(correct_b.index)
    if ids_a != ids_b:
        only_a, only_b = sorted(map(str, ids_a - ids_b)), sorted(map(str, ids_b - ids_a))
        raise VideoSetMismatch(f"the test videos differ: {len(only_a)} only in a (e.g. {only_a[:3]}), "
                               f"{len(only_b)} only in b (e.g. {only_b[:3]})")
    order = correct_a.index
    return _as_bool(correct_a.to_numpy()), _as_bool(correct_b.reindex(order).to_numpy())


def mcnemar_p(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts: binomial(only_a; only_a + only_b, 1/2)."""
    discordant = int(only_a) + int(only_b)
    if discordant == 0:
        return 1.0
    return float(min(1.0, sps.binomtest(int(only_a), discordant, 0.5, alternative="two-sided").pvalue))


def mcnemar_exact(correct_a: pd.Series, correct_b: pd.Series) -> McNemar:
    """Exact paired McNemar test of two models' per-video correctness on the same test videos
    (Series indexed by video_id; matched by id, refused with VideoSetMismatch if the sets differ)."""
    a, b = paired(correct_a, correct_b)
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    return McNemar(n=len(a), only_a=only_a, only_b=only_b, p_value=mcnemar_p(only_a, only_b))


def pooled_mcnemar(strata: list[tuple[pd.Series, pd.Series]]) -> McNemar:
    """One exact McNemar test over several strata (e.g. splits), each a pair (a, b) of correctness
    Series on the same videos. Every (stratum, video) is one matched pair, so the discordant counts
    add up; the null hypothesis is that in every stratum a discordant video is equally likely to
    favour either model. Raises VideoSetMismatch if any stratum's video sets differ."""
    tests = [mcnemar_exact(a, b) for a, b in strata]
    only_a, only_b = sum(t.only_a for t in tests), sum(t.only_b for t in tests)
    return McNemar(n=sum(t.n for t in tests), only_a=only_a, only_b=only_b, p_value=mcnemar_p(only_a, only_b))


def significant(p_value: float, alpha: float = ALPHA) -> bool | None:
    """p < alpha; None when there is no p-value."""
    return None if p_value is None or math.isnan(p_value) else bool(p_value < alpha)
