"""Per-message logic of the worker service: parsing, decoding, staleness, shrinking, dead letters."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from common.codecs import mask_to_rle
from common.messages import dead_letter_error, dead_letter_record, estimate_record_size
from common.schemas import (
    ERROR_HEADER,
    FRAME_HEADER,
    Box,
    DeadLetterError,
    FrameMeta,
    Heatmap,
    InspectionResult,
    Region,
    SourceRef,
    Versions,
)
from worker.stream.intake import Consumed, is_stale, parse_meta
from worker.stream.results import ResultTooLarge, fit_result

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)


def meta(**update) -> FrameMeta:
    fields = dict(
        frame_id="f1",
        camera_id="cam-1",
        line_id="line-1",
        object_name="screw",
        captured_at=NOW,
        content_type="image/jpeg",
        width=32,
        height=24,
    )
    return FrameMeta(**(fields | update))


def headers_of(m: FrameMeta) -> list[tuple[str, bytes]]:
    return [
        (FRAME_HEADER, m.model_dump_json().encode()),
        ("traceparent", b"00-" + b"1" * 32 + b"-" + b"2" * 16 + b"-01"),
    ]


def rgb(h=24, w=32) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)


# ----------------------------------------------------------------------------- parse / decode


def test_parse_meta_round_trip():
    assert parse_meta(headers_of(meta())) == meta()


def test_stale_policy():
    assert not is_stale(meta(), NOW + timedelta(hours=5), None)  # no policy: never stale
    assert not is_stale(meta(), NOW + timedelta(seconds=2), 5.0)
    assert is_stale(meta(), NOW + timedelta(seconds=6), 5.0)
    assert not is_stale(meta(), NOW - timedelta(seconds=60), 5.0)  # stamped in the future


# ----------------------------------------------------------------------------- result shrinking


def result(regions: int = 0, heatmap_bytes: int = 0, mask: np.ndarray | None = None) -> InspectionResult:
    mask = np.zeros((24, 32), bool) if mask is None else mask
    return InspectionResult(
        frame_id="f1",
        camera_id="cam-1",
        line_id="line-1",
        object_name="screw",
        captured_at=NOW,
        processed_at=NOW,
        score=0.7,
        threshold=0.5,
        verdict="anomalous",
        mask=mask_to_rle(mask),
        heatmap=Heatmap(width=8, height=8, png_base64="A" * heatmap_bytes) if heatmap_bytes else None,
        regions=[
            Region(box=Box(x=i, y=i, w=1, h=1), area=1, peak_score=i / 1000, mean_score=0.5) for i in range(regions)
        ],
        versions=Versions(model_fingerprint="m", profile="tiny", prompt_set="p", threshold_version="t"),
        worker_id="w",
        source=SourceRef(topic="t", partition=0, offset=1),
    )


def test_small_result_is_unchanged():
    original = result(regions=3, heatmap_bytes=100)
    fitted, value = fit_result(original, 100_000, b"cam-1")
    assert fitted == original and InspectionResult.model_validate_json(value) == original


def test_heatmap_is_dropped_first():
    original = result(regions=3, heatmap_bytes=20_000)
    fitted, value = fit_result(original, 10_000, b"cam-1")
    assert fitted.heatmap is None and len(fitted.regions) == 3 and "heatmap dropped" in fitted.note
    assert estimate_record_size(b"cam-1", value) <= 10_000


def test_regions_are_capped_keeping_the_highest_peaks():
    original = result(regions=400, heatmap_bytes=5_000)
    base = len(result().model_dump_json()) + 600
    fitted, value = fit_result(original, base + 3_000, b"cam-1")
    assert fitted.heatmap is None and 0 < len(fitted.regions) < 400
    peaks = [r.peak_score for r in fitted.regions]
    assert min(peaks) > max(r.peak_score for r in original.regions if r not in fitted.regions)
    assert "regions capped" in fitted.note and "heatmap dropped" in fitted.note
    assert estimate_record_size(b"cam-1", value) <= base + 3_000
    assert fitted.mask == original.mask  # the mask is never touched


def test_a_mask_that_alone_is_too_large_raises():
    noisy = np.random.default_rng(1).random((24, 32)) > 0.5
    with pytest.raises(ResultTooLarge):
        fit_result(result(mask=noisy), 600, b"cam-1")


# ----------------------------------------------------------------------------- dead letters


def consumed(value: bytes | None = b"payload") -> Consumed:
    return Consumed(
        topic="frames", partition=2, offset=41, key=b"cam-1", value=value, headers=[("a", b"1"), (ERROR_HEADER, b"old")]
    )


def test_dead_letter_keeps_the_original_and_adds_the_error():
    message = consumed()
    error = dead_letter_error("decode", "X", "y" * 5000, worker_id="w", source=message.source, now=NOW)
    key, value, headers = dead_letter_record(message.key, message.value, message.headers, error, 1_000_000)
    assert (key, value) == (b"cam-1", b"payload")
    assert headers[0] == ("a", b"1") and [k for k, _ in headers].count(ERROR_HEADER) == 1
    parsed = DeadLetterError.model_validate_json(headers[-1][1])
    assert parsed.stage == "decode" and parsed.source == SourceRef(topic="frames", partition=2, offset=41)
    assert len(parsed.message) <= 2000


def test_dead_letter_too_large_omits_the_value_and_says_so():
    message = consumed(b"x" * 5000)
    error = dead_letter_error("decode", "X", "bad", worker_id="w", source=message.source, now=NOW)
    key, value, headers = dead_letter_record(message.key, message.value, message.headers, error, 2000)
    assert value is None and key == b"cam-1"
    assert "omitted" in DeadLetterError.model_validate_json(headers[-1][1]).message


def test_dead_letter_whose_frame_header_alone_is_too_large_still_has_a_key_or_a_value():
    message = Consumed(
        topic="frames", partition=2, offset=41, key=b"cam-1", value=b"v", headers=[(FRAME_HEADER, b"x" * 5000)]
    )
    error = dead_letter_error("header", "InvalidHeader", "bad", worker_id="w", source=message.source, now=NOW)
    key, value, headers = dead_letter_record(message.key, message.value, message.headers, error, 2000)
    assert (key, value) == (b"cam-1", None) and [k for k, _ in headers] == [ERROR_HEADER]
    key, value, headers = dead_letter_record(None, message.value, message.headers, error, 2000)
    assert (key, value) == (None, b"") and [k for k, _ in headers] == [ERROR_HEADER]  # the producer needs one
