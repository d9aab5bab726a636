"""Evaluation metrics against scikit-learn and hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from worker.eval.metrics import (
    DEFAULT_BINS,
    PixelMetricAccumulator,
    aupro_from_buckets,
    exact_buckets,
    f1_max_from_buckets,
    ground_truth_regions,
    image_metrics,
    integrate_up_to,
    nan_mean,
    score_to_bucket,
)


def sklearn_f1_max(labels: np.ndarray, scores: np.ndarray) -> float:
    precision, recall, _ = precision_recall_curve(labels, scores)
    f1 = np.divide(
        2 * precision * recall, precision + recall, out=np.zeros_like(precision), where=(precision + recall) > 0
    )
    return float(f1.max())


# --------------------------------------------------------------------------- exact image metrics


@pytest.mark.parametrize("seed", range(6))
def test_image_metrics_match_sklearn_exactly(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 300))
    labels = rng.integers(0, 2, n)
    labels[:2] = (0, 1)  # both classes present
    scores = rng.random(n) + 0.3 * labels
    if seed % 2:
        scores = np.round(scores, 1)  # many ties
    ours = image_metrics(scores, labels)
    assert ours.auroc == pytest.approx(roc_auc_score(labels, scores), abs=1e-6)
    assert ours.ap == pytest.approx(average_precision_score(labels, scores), abs=1e-6)
    assert ours.f1_max == pytest.approx(sklearn_f1_max(labels, scores), abs=1e-6)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 8), st.booleans()), min_size=2, max_size=40))
def test_image_metrics_match_sklearn_property(pairs):
    scores = np.array([p[0] / 8 for p in pairs])
    labels = np.array([int(p[1]) for p in pairs])
    if labels.min() == labels.max():
        return
    ours = image_metrics(scores, labels)
    assert ours.auroc == pytest.approx(roc_auc_score(labels, scores), abs=1e-6)
    assert ours.ap == pytest.approx(average_precision_score(labels, scores), abs=1e-6)
    assert ours.f1_max == pytest.approx(sklearn_f1_max(labels, scores), abs=1e-6)


def test_image_metrics_small_hand_case():
    # scores 0.1 (normal), 0.4 (anomalous), 0.35 (normal), 0.8 (anomalous)
    ours = image_metrics(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 1, 0, 1]))
    assert ours.auroc == 1.0 and ours.ap == 1.0 and ours.f1_max == 1.0


def test_image_metrics_undefined_with_one_class():
    ours = image_metrics(np.array([0.2, 0.7]), np.array([0, 0]))
    assert math.isnan(ours.auroc) and math.isnan(ours.ap) and math.isnan(ours.f1_max)
    only_anomalous = image_metrics(np.array([0.2, 0.7]), np.array([1, 1]))
    assert math.isnan(only_anomalous.auroc)
    assert only_anomalous.ap == 1.0 and only_anomalous.f1_max == 1.0


def test_exact_buckets_counts_per_distinct_score():
    positives, negatives = exact_buckets(np.array([0.5, 0.1, 0.5, 0.9]), np.array([1, 0, 0, 1]))
    assert positives.tolist() == [0, 1, 1] and negatives.tolist() == [1, 1, 0]


# --------------------------------------------------------------------------- streaming pixel metrics


def test_score_to_bucket_edges():
    bucket = score_to_bucket(np.array([0.0, 0.0999, 0.1001, 0.999, 1.0, 1.5, -0.2, np.nan]), 10)
    assert bucket.tolist() == [0, 0, 1, 9, 9, 9, 0, 0]
    assert bucket.dtype == np.int32


def _random_masks(rng, n_images, shape):
    masks = np.zeros((n_images, *shape), dtype=bool)
    for m in masks[: n_images // 2 + 1]:
        for _ in range(rng.integers(1, 4)):
            y, x = rng.integers(0, shape[0] - 6), rng.integers(0, shape[1] - 6)
            m[y : y + rng.integers(2, 7), x : x + rng.integers(2, 7)] = True
    return masks


def test_pixel_metrics_equal_sklearn_when_scores_sit_on_the_bin_grid():
    """Scores at bin centres: binning loses nothing, so the streaming path must match exactly."""
    bins = 1000
    rng = np.random.default_rng(7)
    masks = _random_masks(rng, 8, (40, 50))
    levels = rng.integers(0, bins, masks.shape) + 300 * masks
    maps = (np.clip(levels, 0, bins - 1) + 0.5) / bins
    accumulator = PixelMetricAccumulator(bins)
    for anomaly_map, mask in zip(maps, masks):
        accumulator.update(anomaly_map.astype(np.float32), mask)
    result = accumulator.result()
    labels, scores = masks.ravel(), maps.ravel()
    assert result.auroc == pytest.approx(roc_auc_score(labels, scores), abs=1e-9)
    assert result.ap == pytest.approx(average_precision_score(labels, scores), abs=1e-9)
    assert result.f1_max == pytest.approx(sklearn_f1_max(labels, scores), abs=1e-9)
    assert accumulator.n_images == 8


def binning_error_bounds(accumulator: PixelMetricAccumulator) -> tuple[float, float, float]:
    """Worst-case |binned - exact| for AUROC, AP and F1-max, from the histograms alone.

    Binning only hides the order of the pixels inside one bin. With T, F the
    anomalous / normal pixels above bin k and p_k, q_k those inside it:
    - AUROC: pairs inside a bin count 1/2 instead of 0 or 1: <= 0.5 * sum_k p_k q_k / (P N).
    - AP: each anomalous pixel of bin k gets the precision at the bin's lower edge instead
      of one between (T+1)/(T+1+F+q_k) and (T+p_k)/(T+p_k+F):
      <= sum_k p_k / P * (that spread).
    - F1-max: a cut inside bin k reaches at most 2(T+p_k) / (P+T+p_k+F) (all its anomalous
      pixels, none of its normal ones); the exact F1-max is at most the largest of these and
      at least the binned one (whose cuts are a subset of the exact ones).
    """
    pos = accumulator.anomalous.astype(np.float64)
    neg = accumulator.normal.astype(np.float64)
    n_pos, n_neg = pos.sum(), neg.sum()
    above_pos = np.cumsum(pos[::-1])[::-1] - pos
    above_neg = np.cumsum(neg[::-1])[::-1] - neg
    auroc = 0.5 * float(np.sum(pos * neg)) / (n_pos * n_neg)
    precision_hi = (above_pos + pos) / np.maximum(above_pos + pos + above_neg, 1)
    precision_lo = (above_pos + 1) / (above_pos + 1 + above_neg + neg)
    ap = float(np.sum(pos / n_pos * np.maximum(precision_hi - precision_lo, 0)))
    f1_inside = 2 * (above_pos + pos) / (n_pos + above_pos + pos + above_neg)
    f1 = float(np.max(f1_inside)) - f1_max_from_buckets(pos, neg)
    return auroc, ap, f1


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_pixel_metrics_close_to_sklearn_for_generic_scores(seed):
    """Continuous (beta-distributed) scores, ~0.5% anomalous pixels, the default 10,000 bins.

    The binned metrics must lie within the worst-case binning error computed
    from the histograms (binning_error_bounds), and that bound is below 1e-3.
    """
    rng = np.random.default_rng(seed)
    masks = _random_masks(rng, 10, (64, 64))
    maps = np.where(masks, rng.beta(5, 2, masks.shape), rng.beta(2, 5, masks.shape)).astype(np.float32)
    accumulator = PixelMetricAccumulator(DEFAULT_BINS)
    for anomaly_map, mask in zip(maps, masks):
        accumulator.update(anomaly_map, mask)
    result = accumulator.result()
    labels, scores = masks.ravel(), maps.ravel().astype(np.float64)
    auroc_bound, ap_bound, f1_bound = binning_error_bounds(accumulator)
    assert max(auroc_bound, ap_bound, f1_bound) < 1e-3
    assert abs(result.auroc - roc_auc_score(labels, scores)) <= auroc_bound + 1e-12
    assert abs(result.ap - average_precision_score(labels, scores)) <= ap_bound + 1e-12
    assert abs(result.f1_max - sklearn_f1_max(labels, scores)) <= f1_bound + 1e-12


def test_streaming_is_independent_of_how_images_are_split():
    rng = np.random.default_rng(3)
    masks = _random_masks(rng, 6, (30, 30))
    maps = rng.random(masks.shape).astype(np.float32)
    whole, left, right = PixelMetricAccumulator(500), PixelMetricAccumulator(500), PixelMetricAccumulator(500)
    for i, (anomaly_map, mask) in enumerate(zip(maps, masks)):
        whole.update(anomaly_map, mask)
        (left if i % 2 else right).update(anomaly_map, mask)
    left.merge(right)
    assert left.result() == whole.result()
    assert left.n_regions == whole.n_regions


def test_accumulator_memory_is_bins_only():
    accumulator = PixelMetricAccumulator(10_000)
    before = accumulator.nbytes
    accumulator.update(np.random.default_rng(0).random((300, 400)).astype(np.float32), np.zeros((300, 400), bool))
    assert accumulator.nbytes == before == 3 * 10_000 * 8


def test_pixel_metrics_without_anomalous_pixels_are_undefined():
    accumulator = PixelMetricAccumulator(100)
    accumulator.update(np.full((5, 5), 0.3, np.float32), np.zeros((5, 5), bool))
    result = accumulator.result()
    assert all(math.isnan(v) for v in (result.auroc, result.ap, result.f1_max, result.aupro))


def test_shape_mismatch_is_rejected():
    with pytest.raises(ValueError, match="differ in shape"):
        PixelMetricAccumulator(10).update(np.zeros((4, 4), np.float32), np.zeros((4, 5), bool))


# --------------------------------------------------------------------------- AUPRO


def test_ground_truth_regions_are_8_connected():
    mask = np.zeros((5, 5), bool)
    mask[0, 0] = mask[1, 1] = True  # diagonal neighbours: one region
    mask[4, 4] = True
    labels, areas = ground_truth_regions(mask)
    assert labels.max() == 2 and sorted(areas[1:].tolist()) == [1, 2]


def test_integrate_up_to_interpolates_at_the_limit():
    x, y = np.array([0.0, 0.2, 0.4]), np.array([0.0, 1.0, 1.0])
    assert integrate_up_to(x, y, 0.3) == pytest.approx(0.1 + 0.1)
    assert integrate_up_to(x, y, 0.1) == pytest.approx(0.5 * 0.1 * 0.5)
    assert integrate_up_to(np.array([0.0, 0.1]), np.array([0.0, 1.0]), 0.3) == pytest.approx(0.05 + 0.2)


def test_aupro_hand_computed_two_regions():
    """4 bins, centres c0..c3 = 0.125, 0.375, 0.625, 0.875; one 4x6 image.

    Region A (2 px, top-left): scores c3, c1.  Region B (4 px, bottom-right): c3, c2, c2, c0.
    Normal pixels (18): one at c2, two at c1, fifteen at c0.
    Threshold "bucket >= k":
      k=4 (above all): FPR 0,     PRO 0
      k=3:             FPR 0,     PRO (1/2 + 1/4)/2 = 0.375
      k=2:             FPR 1/18,  PRO (1/2 + 3/4)/2 = 0.625
      k=1:             FPR 3/18,  PRO (1   + 3/4)/2 = 0.875
      k=0:             FPR 1,     PRO 1
    PRO at FPR 0.3 (between 1/6 and 1): 0.875 + (0.3 - 1/6) / (5/6) * 0.125 = 0.895.
    Area to 0.3: 0 + (1/18)(0.375+0.625)/2 + (2/18)(0.625+0.875)/2 + (0.3-1/6)(0.875+0.895)/2
    AUPRO = area / 0.3.
    """
    c = [0.125, 0.375, 0.625, 0.875]
    anomaly_map = np.full((4, 6), c[0], np.float32)
    mask = np.zeros((4, 6), bool)
    mask[0, 0:2] = True
    anomaly_map[0, 0:2] = (c[3], c[1])
    mask[2:4, 4:6] = True
    anomaly_map[2:4, 4:6] = ((c[3], c[2]), (c[2], c[0]))
    anomaly_map[3, 0] = c[2]
    anomaly_map[1, 3] = anomaly_map[2, 1] = c[1]
    accumulator = PixelMetricAccumulator(4)
    accumulator.update(anomaly_map, mask)
    assert accumulator.n_regions == 2
    area = (1 / 18) * (0.375 + 0.625) / 2 + (2 / 18) * (0.625 + 0.875) / 2 + (0.3 - 1 / 6) * (0.875 + 0.895) / 2
    assert accumulator.result().aupro == pytest.approx(area / 0.3, abs=1e-12)
    assert accumulator.result().aupro == pytest.approx(0.7637037037, abs=1e-9)


def exact_aupro(maps: np.ndarray, masks: np.ndarray, fpr_limit: float = 0.3) -> float:
    """Brute-force reference: one threshold per distinct score, regions per image, pooled FPR."""
    regions = []
    for anomaly_map, mask in zip(maps, masks):
        labels, _ = ground_truth_regions(mask)
        regions += [anomaly_map[labels == r] for r in range(1, labels.max() + 1)]
    normal_scores = maps[~masks]
    fprs, pros = [0.0], [0.0]
    for threshold in np.unique(maps)[::-1]:
        fprs.append(float(np.mean(normal_scores >= threshold)))
        pros.append(float(np.mean([np.mean(r >= threshold) for r in regions])))
    return integrate_up_to(np.array(fprs), np.array(pros), fpr_limit) / fpr_limit


def test_aupro_matches_brute_force_on_the_bin_grid():
    bins = 64
    rng = np.random.default_rng(5)
    masks = _random_masks(rng, 6, (24, 24))
    levels = np.clip(rng.integers(0, bins, masks.shape) + 20 * masks, 0, bins - 1)
    maps = ((levels + 0.5) / bins).astype(np.float32)
    accumulator = PixelMetricAccumulator(bins)
    for anomaly_map, mask in zip(maps, masks):
        accumulator.update(anomaly_map, mask)
    assert accumulator.result().aupro == pytest.approx(exact_aupro(maps, masks), abs=1e-9)


def test_aupro_perfect_and_undefined():
    negatives = np.array([10, 0, 0, 0])
    assert aupro_from_buckets(negatives, np.array([0, 0, 0, 3.0]), 3) == pytest.approx(1.0)
    assert math.isnan(aupro_from_buckets(negatives, np.zeros(4), 0))


def test_nan_mean_skips_undefined():
    assert nan_mean([0.5, math.nan, 1.0]) == 0.75
    assert math.isnan(nan_mean([math.nan]))
