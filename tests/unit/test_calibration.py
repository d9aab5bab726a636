"""The conformal threshold (common/calibration.py): exact ranks, refusals, and a seeded
Monte-Carlo check that the false-alarm rate on fresh normal frames stays within its bound."""

from __future__ import annotations

import math

import numpy as np
import pytest

from common.calibration import (
    TooFewFrames,
    conformal_rank,
    conformal_threshold,
    frames_needed,
    normal_pixel_score,
    score_quantiles,
    unit_threshold,
)

DRAWS = 2000  # calibrations per case
FRESH = 400  # new normal frames scored against each calibration


# --------------------------------------------------------------------------- exact


@pytest.mark.parametrize(
    ("n", "rate", "rank"),
    [(19, 0.05, 19), (20, 0.05, 20), (39, 0.05, 38), (99, 0.01, 99), (100, 0.01, 100), (199, 0.01, 198)],
)
def test_conformal_rank_is_ceil_of_n_plus_1_times_1_minus_a(n: int, rate: float, rank: int) -> None:
    assert conformal_rank(n, rate) == rank == math.ceil(round((n + 1) * (1 - rate), 9))


@pytest.mark.parametrize(("rate", "needed"), [(0.05, 19), (0.01, 99), (0.1, 9), (0.5, 1), (0.2, 4)])
def test_frames_needed(rate: float, needed: int) -> None:
    assert frames_needed(rate) == needed
    assert conformal_rank(needed, rate) <= needed
    assert conformal_rank(needed - 1, rate) > needed - 1 or needed == 1


@pytest.mark.parametrize("rate", [0.0, 1.0, -0.1, 1.5])
def test_rates_outside_the_unit_interval_are_refused(rate: float) -> None:
    with pytest.raises(ValueError, match="must be in"):
        conformal_rank(10, rate)


def test_too_few_frames_names_how_many_are_needed() -> None:
    scores = np.linspace(0.1, 0.9, 98)
    with pytest.raises(TooFewFrames, match="98 normal frames .* 0.01: at least 99 are needed") as caught:
        conformal_threshold(scores, 0.01)
    assert (caught.value.n, caught.value.needed) == (98, 99)
    assert conformal_threshold(np.append(scores, 0.95), 0.01) > 0.95  # 99: the largest score must pass


def test_threshold_is_just_above_the_kth_smallest_score() -> None:
    scores = np.random.default_rng(3).permutation(np.arange(1, 40) / 40.0)  # 39 scores, 0.025 .. 0.975
    threshold = conformal_threshold(scores, 0.05)  # k = ceil(40 * 0.95) = 38
    assert threshold > 38 / 40 and threshold == np.nextafter(38 / 40, 1.0)
    assert (scores >= threshold).sum() == 1  # only the 39th is above


def test_unit_threshold_caps_saturated_scores_at_one() -> None:
    assert conformal_threshold(np.ones(19), 0.05) > 1.0
    assert unit_threshold(np.ones(19), 0.05) == 1.0
    assert unit_threshold(np.full(19, 0.5), 0.05) == np.nextafter(0.5, 1.0)


def test_score_quantiles() -> None:
    summary = score_quantiles(np.arange(101) / 100.0)
    assert summary == pytest.approx({"p50": 0.5, "p90": 0.9, "p99": 0.99, "max": 1.0})
    with pytest.raises(ValueError):
        score_quantiles(np.array([]))


def test_normal_pixel_score_is_the_max_inside_the_foreground() -> None:
    anomaly = np.zeros((4, 5), np.float32)
    anomaly[0, 0] = 0.9  # outside the part
    anomaly[2, 3] = 0.4
    foreground = np.zeros((4, 5), bool)
    foreground[1:, 2:] = True
    assert normal_pixel_score(anomaly, foreground) == pytest.approx(0.4)
    assert normal_pixel_score(anomaly, np.zeros((4, 5), bool)) == pytest.approx(0.9)  # nothing salient
    assert normal_pixel_score(anomaly, None) == pytest.approx(0.9)
    with pytest.raises(ValueError, match="shape"):
        normal_pixel_score(anomaly, np.ones((5, 4), bool))


# --------------------------------------------------------------------------- Monte Carlo


def _uniform(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    return rng.random(shape)


def _beta(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    return rng.beta(8.0, 3.0, shape)  # good parts crowded near 0.7, like a zero-shot score


def _fine_ties(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    return np.round(rng.beta(2.0, 5.0, shape), 3)  # a score printed with 3 decimals: many ties


def _coarse_ties(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    return rng.choice(np.array([0.2, 0.3, 0.35, 0.5, 0.8]), size=shape, p=[0.3, 0.3, 0.2, 0.15, 0.05])


def _false_alarm_rates(sample, n: int, rate: float, seed: int) -> np.ndarray:
    """One false-alarm rate per calibration: a threshold from n normal scores, FRESH new ones against it."""
    rng = np.random.default_rng(seed)
    calibration = sample(rng, (DRAWS, n))
    fresh = sample(rng, (DRAWS, FRESH))
    thresholds = np.array([conformal_threshold(row, rate) for row in calibration])
    return (fresh >= thresholds[:, None]).mean(axis=1)


def _tolerance(rates: np.ndarray) -> float:
    """4 standard errors of the Monte-Carlo mean over DRAWS calibrations (a 1-in-30000 false failure)."""
    return 4.0 * float(rates.std(ddof=1)) / math.sqrt(rates.size)


@pytest.mark.parametrize(("rate", "n"), [(0.05, 19), (0.05, 60), (0.01, 99), (0.01, 250)])
@pytest.mark.parametrize("sample", [_uniform, _beta, _fine_ties], ids=["uniform", "beta", "ties-3-decimals"])
def test_false_alarm_rate_is_bounded_and_the_bound_is_tight(sample, rate: float, n: int) -> None:
    rates = _false_alarm_rates(sample, n, rate, seed=n)
    mean, tolerance = float(rates.mean()), _tolerance(rates)
    # exchangeable scores: E[FPR] = 1 - k/(n+1), between A - 1/(n+1) and A
    assert mean <= rate + tolerance, (mean, rate, tolerance)
    assert mean >= rate - 1.0 / (n + 1) - tolerance, (mean, rate, tolerance)


@pytest.mark.parametrize(("rate", "n"), [(0.05, 40), (0.01, 120)])
def test_heavy_ties_only_make_the_threshold_more_conservative(rate: float, n: int) -> None:
    rates = _false_alarm_rates(_coarse_ties, n, rate, seed=7)
    assert float(rates.mean()) <= rate + _tolerance(rates)


def test_too_few_frames_for_a_rate_is_refused_not_approximated() -> None:
    rng = np.random.default_rng(0)
    for rate in (0.05, 0.01):
        needed = frames_needed(rate)
        with pytest.raises(TooFewFrames):
            conformal_threshold(rng.random(needed - 1), rate)
        assert 0.0 < conformal_threshold(rng.random(needed), rate) <= 1.0


def test_a_float32_threshold_survives_the_float32_comparison_of_maps() -> None:
    maps = np.random.default_rng(5).random((19, 8, 8), dtype=np.float32)
    maxima = maps.max(axis=(1, 2)).astype(np.float64)
    naive = conformal_threshold(maxima, 0.05)  # one float64 step: rounds back onto the max in float32
    assert (maps.max() >= naive).item()
    threshold = conformal_threshold(maxima, 0.05, np.float32)
    assert not (maps >= threshold).any() and threshold > maps.max()
