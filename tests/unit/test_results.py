"""Result building: defect regions measured per region, largest first, capped."""

import cv2
import numpy as np
import pytest

from worker.stream.results import defect_regions


def test_regions_match_a_brute_force_measurement_and_are_capped():
    rng = np.random.default_rng(4)
    anomaly_map = cv2.GaussianBlur(rng.random((120, 160)).astype(np.float32), (0, 0), 2)
    anomaly_map = (anomaly_map - anomaly_map.min()) / (anomaly_map.max() - anomaly_map.min())
    mask = anomaly_map >= 0.5
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    assert count - 1 > 5
    expected = sorted(
        (
            (
                int(stats[i, 4]),
                tuple(int(v) for v in stats[i, :4]),
                float(anomaly_map[labels == i].max()),
                float(anomaly_map[labels == i].mean()),
            )
            for i in range(1, count)
        ),
        key=lambda row: -row[0],
    )[:5]
    regions = defect_regions(anomaly_map, mask, limit=5)
    assert [(r.area, (r.box.x, r.box.y, r.box.w, r.box.h), r.peak_score, r.mean_score) for r in regions] == [
        (area, box, pytest.approx(peak), pytest.approx(mean)) for area, box, peak, mean in expected
    ]


def test_regions_away_from_the_origin_keep_frame_coordinates():
    anomaly_map = np.zeros((60, 80), np.float32)
    anomaly_map[40:45, 50:53] = 0.9
    anomaly_map[10, 70] = 0.6
    regions = defect_regions(anomaly_map, anomaly_map >= 0.5)
    assert [(r.box.x, r.box.y, r.box.w, r.box.h, r.area) for r in regions] == [(50, 40, 3, 5, 15), (70, 10, 1, 1, 1)]
    assert [r.peak_score for r in regions] == [pytest.approx(0.9), pytest.approx(0.6)]


def test_no_regions_for_an_empty_mask():
    assert defect_regions(np.zeros((8, 8), np.float32), np.zeros((8, 8), bool)) == []
