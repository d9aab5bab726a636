"""Thresholds from normal frames only: the split-conformal bound.

With n exchangeable normal scores s_1..s_n and a new normal score s, P(s > s_(k)) <= 1 - k/(n+1)
for the k-th smallest s_(k). Taking k = ceil((n+1)(1-A)) bounds the false-alarm rate of the
threshold s_(k) at A (a frame is anomalous when its score is >= the threshold, so the
threshold is nudged just above s_(k)). It needs k <= n, i.e. n >= ceil((1-A)/A) frames.
"""

from __future__ import annotations

import math

import numpy as np


class TooFewFrames(ValueError):
    """Not enough normal scores for the target rate."""

    def __init__(self, n: int, needed: int, target_fpr: float):
        super().__init__(
            f"{n} normal frames cannot bound the false-alarm rate at {target_fpr:g}: at least {needed} are needed"
        )
        self.n, self.needed, self.target_fpr = n, needed, target_fpr


def conformal_rank(n: int, target_fpr: float) -> int:
    """k = ceil((n+1)(1-A)): the 1-based rank of the threshold among n sorted normal scores."""
    if not 0.0 < target_fpr < 1.0:
        raise ValueError(f"target false-alarm rate must be in (0, 1), got {target_fpr}")
    # round first: (n+1)(1-A) is often an integer that floating point puts a hair above it
    return math.ceil(round((n + 1) * (1.0 - target_fpr), 9))


def frames_needed(target_fpr: float) -> int:
    """The smallest n with conformal_rank(n, A) <= n."""
    n = 1
    while conformal_rank(n, target_fpr) > n:
        n += 1
    return n


def conformal_threshold(scores: np.ndarray, target_fpr: float, dtype: type = np.float64) -> float:
    """The threshold whose false-alarm rate on exchangeable normal scores is at most `target_fpr`.

    Verdicts compare `score >= threshold`, so the k-th smallest score itself must pass: the
    result is the next value above it in `dtype`, the precision the comparison runs in
    (float32 for anomaly maps: numpy compares a float32 map with a Python float in float32,
    which would round a float64 step back onto the score). Raises TooFewFrames when n is
    too small for the rate.
    """
    values = np.sort(np.asarray(scores, dtype=np.float64).ravel())
    n = values.size
    k = conformal_rank(n, target_fpr)
    if k > n:
        raise TooFewFrames(n, frames_needed(target_fpr), target_fpr)
    return float(np.nextafter(dtype(values[k - 1]), dtype(np.inf)))


# Summary of the normal raw scores stored with a calibration (what an operator compares with).
QUANTILES = {"p50": 0.5, "p90": 0.9, "p99": 0.99}


def score_quantiles(scores: np.ndarray) -> dict[str, float]:
    """p50, p90, p99 and max of the normal scores (linear interpolation, as numpy's default)."""
    values = np.asarray(scores, dtype=np.float64).ravel()
    if values.size == 0:
        raise ValueError("no scores to summarise")
    summary = {name: float(np.quantile(values, q)) for name, q in QUANTILES.items()}
    summary["max"] = float(values.max())
    return summary


def normal_pixel_score(anomaly_map: np.ndarray, foreground: np.ndarray | None) -> float:
    """A normal frame's pixel score: the highest anomaly-map value inside its foreground.

    A pixel threshold above the conformal bound of these maxima leaves the defect mask of a
    new normal frame empty on its part with probability >= 1 - A. An empty foreground (nothing
    salient) falls back to the whole map, as the Inspector itself does.
    """
    values = np.asarray(anomaly_map, dtype=np.float64)
    if foreground is not None:
        inside = np.asarray(foreground, dtype=bool)
        if inside.shape != values.shape:
            raise ValueError(f"foreground {inside.shape} and anomaly map {values.shape} differ in shape")
        if inside.any():
            values = values[inside]
    if values.size == 0:
        raise ValueError("empty anomaly map")
    return float(values.max())


def unit_threshold(scores: np.ndarray, target_fpr: float, dtype: type = np.float64) -> float:
    """`conformal_threshold` kept within [0, 1], the range of scores and of ControlRecord thresholds.

    The cap only bites when the bound's score is 1 itself (saturated scores): frames scoring
    exactly 1 are then anomalous, and the bound holds only for the scores below 1.
    """
    return min(1.0, conformal_threshold(scores, target_fpr, dtype))
