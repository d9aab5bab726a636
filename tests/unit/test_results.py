"""Result building: defect regions measured per region, largest first, capped."""
import cv2
import numpy as np
import pytest

from worker.results import defect_regions


def test_regions_match_a_brute_force_measurement_and_are_capped():
    rng = np.random.default_rng(4)
    anomaly_map = cv2.GaussianBlur(rng.random((120, 160)).astype(np.float32), (0, 0), 2)
    anomaly_map = (anomaly_map - anomaly_map.min()) / (anomaly_map.max() - anomaly_map.min())
    mask = anomaly_map >= 0.5
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    assert count - 1 > 5
    expected = sorted(
        ((int(stats[l, 4]), float(anomaly_map[labels == l].max()), float(anomaly_map[labels == l].mean())) for l in range(1, count)),
        key=lambda row: -row[0],
    )[:5]
    regions = defect_regions(anomaly_map, mask, limit=5)
    assert [(r.area, r.peak_score, r.mean_score) for r in regions] == [pytest.approx(row) for row in expected]


def test_no_regions_for_an_empty_mask():
    assert defect_regions(np.zeros((8, 8), np.float32), np.zeros((8, 8), bool)) == []
