"""Anomaly-detection metrics: exact at image level, streaming at pixel level.

Every metric is computed from *threshold buckets*: a 1-D array of how many
positive (anomalous) and how many negative (normal) items fall in each score
bucket, buckets in ascending score order. An item is predicted anomalous at
threshold bucket k when its bucket index is >= k.

- Exact image metrics use one bucket per distinct score (`exact_buckets`), so
  they equal the textbook definitions (scikit-learn's, ties included).
- Pixel metrics use a fixed grid of `bins` equal-width buckets over [0, 1]
  (`PixelMetricAccumulator`): memory is O(bins) whatever the number of images.
  The only error is that scores inside one bucket are treated as tied.

AUPRO (MVTec AD's per-region overlap) is accumulated the same way: for each
threshold bucket, the sum over ground-truth regions of the fraction of that
region's pixels falling in the bucket, plus the normal-pixel histogram that
gives the false-positive rate.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import cv2
import numpy as np

DEFAULT_BINS = 10_000
AUPRO_FPR_LIMIT = 0.3


# --------------------------------------------------------------------------- containers


@dataclass(frozen=True)
class ImageMetrics:
    """Image-level (sample-level) metrics in [0, 1]; NaN when a class is missing."""

    auroc: float
    ap: float
    f1_max: float


@dataclass(frozen=True)
class PixelMetrics:
    """Pixel-level metrics in [0, 1]; NaN when undefined (no anomalous or no normal pixel)."""

    auroc: float
    ap: float
    f1_max: float
    aupro: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


# --------------------------------------------------------------------------- bucket metrics


def _checked_buckets(positives: np.ndarray, negatives: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    positives = np.asarray(positives, dtype=np.float64)
    negatives = np.asarray(negatives, dtype=np.float64)
    if positives.shape != negatives.shape or positives.ndim != 1:
        raise ValueError(f"bucket arrays must be 1-D and equal: {positives.shape} vs {negatives.shape}")
    return positives, negatives


def _counts_above(buckets: np.ndarray) -> np.ndarray:
    """(K,) bucket counts -> (K,) counts at or above each bucket (reverse cumulative sum)."""
    return np.cumsum(buckets[::-1])[::-1]


def auroc_from_buckets(positives: np.ndarray, negatives: np.ndarray) -> float:
    """Area under the ROC curve from (K,) per-bucket counts, ascending buckets.

    Items sharing a bucket count as ties (half credit), which is exactly the
    trapezoidal ROC area. NaN if either class is empty.
    """
    positives, negatives = _checked_buckets(positives, negatives)
    n_pos, n_neg = positives.sum(), negatives.sum()
    if n_pos == 0 or n_neg == 0:
        return math.nan
    negatives_below = np.cumsum(negatives) - negatives
    wins = np.sum(positives * negatives_below) + 0.5 * np.sum(positives * negatives)
    return float(wins / (n_pos * n_neg))


def average_precision_from_buckets(positives: np.ndarray, negatives: np.ndarray) -> float:
    """Average precision (step-wise, as scikit-learn): sum over thresholds of (R_k - R_{k+1}) * P_k.

    positives, negatives: (K,) per-bucket counts, ascending buckets. NaN without positives.
    """
    positives, negatives = _checked_buckets(positives, negatives)
    n_pos = positives.sum()
    if n_pos == 0:
        return math.nan
    true_pos = _counts_above(positives)
    predicted = true_pos + _counts_above(negatives)
    precision = np.divide(true_pos, predicted, out=np.ones_like(true_pos), where=predicted > 0)
    # Recall gained when the threshold drops to bucket k = positives[k] / n_pos.
    return float(np.sum(positives / n_pos * precision))


def f1_max_from_buckets(positives: np.ndarray, negatives: np.ndarray) -> float:
    """Best F1 over all thresholds: max_k 2 TP_k / (2 TP_k + FP_k + FN_k). NaN without positives."""
    positives, negatives = _checked_buckets(positives, negatives)
    n_pos = positives.sum()
    if n_pos == 0:
        return math.nan
    true_pos = _counts_above(positives)
    false_pos = _counts_above(negatives)
    false_neg = n_pos - true_pos
    f1 = 2 * true_pos / (2 * true_pos + false_pos + false_neg)
    return float(f1.max())


def aupro_from_buckets(
    negatives: np.ndarray,
    region_overlap: np.ndarray,
    n_regions: int,
    fpr_limit: float = AUPRO_FPR_LIMIT,
) -> float:
    """Normalised area under the per-region-overlap curve up to `fpr_limit`.

    negatives: (K,) normal-pixel counts per bucket, ascending.
    region_overlap: (K,) sum over all ground-truth regions of (region pixels in bucket k) / (region area).
    n_regions: number of ground-truth regions (connected components) over all images.

    The curve runs from (FPR 0, PRO 0) (threshold above every score) through one
    point per bucket; it is integrated with the trapezoid rule, linearly
    interpolated at `fpr_limit`, and divided by `fpr_limit`. NaN if undefined.
    """
    negatives = np.asarray(negatives, dtype=np.float64)
    region_overlap = np.asarray(region_overlap, dtype=np.float64)
    n_neg = negatives.sum()
    if n_regions == 0 or n_neg == 0:
        return math.nan
    fpr = np.concatenate([[0.0], _counts_above(negatives)[::-1] / n_neg])
    pro = np.concatenate([[0.0], _counts_above(region_overlap)[::-1] / n_regions])
    return integrate_up_to(fpr, pro, fpr_limit) / fpr_limit


def integrate_up_to(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Trapezoid area under y(x) for x in [x[0], x_max]; x: (N,) non-decreasing, y: (N,).

    The segment crossing x_max is linearly interpolated. If the curve ends
    before x_max it is extended flat at its last value.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    inside = x <= x_max
    last = int(np.flatnonzero(inside)[-1])
    area = float(np.sum(np.diff(x[: last + 1]) * (y[1 : last + 1] + y[:last]) / 2))
    if x[last] < x_max:
        if last + 1 < len(x):
            t = (x_max - x[last]) / (x[last + 1] - x[last])
            y_cut = y[last] + t * (y[last + 1] - y[last])
        else:
            y_cut = y[last]
        area += (x_max - x[last]) * (y[last] + y_cut) / 2
    return area


# --------------------------------------------------------------------------- exact image metrics


def exact_buckets(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N,) scores and (N,) 0/1 labels -> (positives, negatives), one bucket per distinct score."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).astype(bool).ravel()
    if scores.shape != labels.shape:
        raise ValueError(f"{scores.shape[0]} scores but {labels.shape[0]} labels")
    _, bucket = np.unique(scores, return_inverse=True)
    size = int(bucket.max()) + 1 if bucket.size else 0
    positives = np.bincount(bucket[labels], minlength=size)
    negatives = np.bincount(bucket[~labels], minlength=size)
    return positives, negatives


def image_metrics(scores: np.ndarray, labels: np.ndarray) -> ImageMetrics:
    """Exact image AUROC, AP and F1-max from (N,) scores and (N,) 0/1 labels (1 = anomalous)."""
    positives, negatives = exact_buckets(scores, labels)
    return ImageMetrics(
        auroc=auroc_from_buckets(positives, negatives),
        ap=average_precision_from_buckets(positives, negatives),
        f1_max=f1_max_from_buckets(positives, negatives),
    )


# --------------------------------------------------------------------------- streaming pixel metrics


def score_to_bucket(scores: np.ndarray, bins: int) -> np.ndarray:
    """Scores (any shape, nominally in [0, 1]) -> int32 bucket indices in [0, bins).

    Bucket k holds scores in [k/bins, (k+1)/bins); 1.0 goes to the top bucket,
    values outside [0, 1] are clipped and NaN counts as 0.
    """
    scaled = np.nan_to_num(np.asarray(scores, dtype=np.float32), nan=0.0) * np.float32(bins)
    np.clip(scaled, 0, bins - 1, out=scaled)
    return scaled.astype(np.int32)


def ground_truth_regions(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) bool mask -> ((H, W) int32 labels 0 = background, 1..R; (R + 1,) pixel areas, [0] unused).

    Regions are 8-connected components, as in the MVTec AD evaluation code.
    """
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    areas = stats[:, cv2.CC_STAT_AREA].astype(np.int64)
    return labels, areas


class PixelMetricAccumulator:
    """Streams (anomaly map, ground-truth mask) pairs into O(bins) histograms.

    State: normal-pixel histogram (bins,), anomalous-pixel histogram (bins,),
    per-region overlap sums (bins,), the region count and the image count.
    Nothing per image or per pixel is kept.
    """

    def __init__(self, bins: int = DEFAULT_BINS) -> None:
        if bins < 2:
            raise ValueError("bins must be at least 2")
        self.bins = bins
        self.normal = np.zeros(bins, dtype=np.int64)
        self.anomalous = np.zeros(bins, dtype=np.int64)
        self.region_overlap = np.zeros(bins, dtype=np.float64)
        self.n_regions = 0
        self.n_images = 0

    def update(self, anomaly_map: np.ndarray, mask: np.ndarray) -> None:
        """Add one image. anomaly_map: (H, W) float in [0, 1]; mask: (H, W) bool, True = anomalous."""
        if anomaly_map.shape != mask.shape:
            raise ValueError(f"anomaly map {anomaly_map.shape} and mask {mask.shape} differ in shape")
        mask = np.asarray(mask, dtype=bool)
        bucket = score_to_bucket(anomaly_map, self.bins)
        # One pass gives both histograms: normal pixels in [0, bins), anomalous in [bins, 2 bins).
        both = np.bincount((bucket + mask * np.int32(self.bins)).ravel(), minlength=2 * self.bins)
        self.normal += both[: self.bins]
        self.anomalous += both[self.bins :]
        self.n_images += 1
        if both[self.bins :].any():
            labels, areas = ground_truth_regions(mask)
            inside = labels > 0
            weight = 1.0 / areas[labels[inside]]
            self.region_overlap += np.bincount(bucket[inside], weights=weight, minlength=self.bins)
            self.n_regions += len(areas) - 1

    def merge(self, other: PixelMetricAccumulator) -> None:
        """Add another accumulator's counts (same bins), e.g. from a parallel shard."""
        if other.bins != self.bins:
            raise ValueError("cannot merge accumulators with different bins")
        self.normal += other.normal
        self.anomalous += other.anomalous
        self.region_overlap += other.region_overlap
        self.n_regions += other.n_regions
        self.n_images += other.n_images

    def result(self, fpr_limit: float = AUPRO_FPR_LIMIT) -> PixelMetrics:
        return PixelMetrics(
            auroc=auroc_from_buckets(self.anomalous, self.normal),
            ap=average_precision_from_buckets(self.anomalous, self.normal),
            f1_max=f1_max_from_buckets(self.anomalous, self.normal),
            aupro=aupro_from_buckets(self.normal, self.region_overlap, self.n_regions, fpr_limit),
        )

    @property
    def nbytes(self) -> int:
        return self.normal.nbytes + self.anomalous.nbytes + self.region_overlap.nbytes


def nan_mean(values: list[float]) -> float:
    """Mean of the finite values; NaN if there are none."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan
