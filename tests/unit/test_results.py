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


def _inspection(score: float, anomaly_map: np.ndarray):
    from worker.inspection.types import Inspection

    return Inspection("f", score, anomaly_map, np.ones(anomaly_map.shape, bool))


def _meta():
    from common.schemas import FrameMeta, utc_now

    return FrameMeta(
        frame_id="f", camera_id="cam", line_id="l", object_name="nut", captured_at=utc_now(),
        content_type="image/png", width=8, height=6,
    )  # fmt: skip


def _versions():
    from common.schemas import Versions

    return Versions(model_fingerprint="fp", profile="tiny", prompt_set="p", threshold_version="unset")


def test_a_control_records_thresholds_decide_verdict_mask_score_and_version():
    from common.control import ControlRecord, thresholds_in_force
    from common.settings import WorkerSettings
    from worker.stream.results import build_result

    anomaly_map = np.linspace(0, 1, 48, dtype=np.float32).reshape(6, 8)
    record = ControlRecord(version=4, image_threshold=0.8, pixel_threshold=0.9)
    thresholds = thresholds_in_force("object:nut", record, image=0.5, pixel=0.5, static_version="static-0.5")
    settings = WorkerSettings()
    calibrated = build_result(
        _meta(), _inspection(0.7, anomaly_map), versions=_versions(), worker_settings=settings, thresholds=thresholds
    )
    static = build_result(_meta(), _inspection(0.7, anomaly_map), versions=_versions(), worker_settings=settings)
    assert (calibrated.verdict, calibrated.threshold, calibrated.raw_score) == ("ok", 0.8, pytest.approx(0.7))
    assert calibrated.score == pytest.approx(0.5 * 0.7 / 0.8)  # the threshold maps to 0.5
    assert calibrated.versions.threshold_version == "object:nut@v4"
    assert sum(r.area for r in calibrated.regions) == int((anomaly_map >= 0.9).sum())
    assert (static.verdict, static.threshold, static.versions.threshold_version) == ("anomalous", 0.5, "static-0.5")
    assert static.score == pytest.approx(static.raw_score)  # the static 0.5 threshold leaves scores as they are


def test_a_calibrating_scope_reports_its_raw_score_and_no_verdict():
    from common.settings import WorkerSettings
    from worker.stream.results import build_result

    result = build_result(
        _meta(), _inspection(0.99, np.zeros((6, 8), np.float32)), versions=_versions(),
        worker_settings=WorkerSettings(), calibrating=True,
    )  # fmt: skip
    assert (result.verdict, result.raw_score) == ("calibrating", pytest.approx(0.99))


@pytest.mark.parametrize(("raw", "threshold", "expected"), [(0.0, 0.7, 0.0), (0.7, 0.7, 0.5), (1.0, 0.7, 1.0),
                                                            (0.35, 0.7, 0.25), (0.85, 0.7, 0.75), (0.3, 0.5, 0.3)])  # fmt: skip
def test_normalised_score_maps_the_threshold_to_one_half(raw, threshold, expected):
    from common.control import normalised_score

    assert normalised_score(raw, threshold) == pytest.approx(expected)
