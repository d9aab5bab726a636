"""Turn an Inspection into the InspectionResult message (DESIGN.md, result contract).

- `build_result` / `skipped_result`: the result of an inspected / deliberately skipped frame.
- `fit_result`: a result serialised within the topic's size limit, shrunk if it
  must be (heatmap first, then regions), or `ResultTooLarge`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import cv2
import numpy as np

from common.codecs import heatmap_to_png, mask_to_rle
from common.control import ThresholdsInForce, normalised_score
from common.messages import estimate_record_size
from common.schemas import Box, FrameMeta, InspectionResult, Instance, Region, SourceRef, Versions, utc_now
from common.settings import WorkerSettings
from worker.inspection.types import Inspection

MAX_REGIONS = 50  # keeps a result small even for a map full of specks


def defect_regions(anomaly_map: np.ndarray, mask: np.ndarray, limit: int = MAX_REGIONS) -> list[Region]:
    """Connected regions of the (H, W) bool defect mask with their peak and mean score, largest first."""
    pixels = np.asarray(mask, dtype=bool).view(np.uint8)  # no copy
    # Labelling a whole frame costs about 1 ms; most masks are empty or small, so only their bounding box is labelled.
    left, top, width, height = cv2.boundingRect(pixels)
    if width == 0:
        return []
    window = (slice(top, top + height), slice(left, left + width))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(pixels[window], connectivity=8)
    scores = anomaly_map[window]
    # Only the largest `limit` regions are reported, so only they are measured, each inside its own box.
    largest = 1 + np.argsort(-stats[1:, cv2.CC_STAT_AREA], kind="stable")[:limit]
    regions = []
    for label in largest:
        x, y, w, h, area = (int(v) for v in stats[label])
        values = scores[y : y + h, x : x + w][labels[y : y + h, x : x + w] == label]
        regions.append(
            Region(
                box=Box(x=left + x, y=top + y, w=w, h=h),
                area=area,
                peak_score=float(values.max()),
                mean_score=float(values.mean()),
            )
        )
    return regions


def build_result(
    meta: FrameMeta,
    inspection: Inspection,
    *,
    versions: Versions,
    worker_settings: WorkerSettings,
    worker_id: str | None = None,
    source: SourceRef | None = None,
    thresholds: ThresholdsInForce | None = None,
    calibrating: bool = False,
    reference_bank: str | None = None,
) -> InspectionResult:
    """The result message for one inspected frame: verdict, RLE defect mask, regions, instances, timings.

    `thresholds` are those of the control record in force (default: the static settings);
    `score` is the raw score normalised so that the image threshold maps to 0.5. While the
    scope is `calibrating` (learning mode) the verdict says so and nothing is anomalous.
    `reference_bank` names the bank that scored the frame (`versions.reference_bank`).
    """
    thresholds = thresholds or static_thresholds(worker_settings)
    raw_score = float(np.clip(inspection.score, 0.0, 1.0))
    mask = inspection.anomaly_map >= thresholds.pixel
    verdict: Literal["ok", "anomalous", "calibrating"]
    if calibrating:
        verdict = "calibrating"
    else:
        verdict = "anomalous" if raw_score >= thresholds.image else "ok"
    return InspectionResult(
        frame_id=meta.frame_id,
        camera_id=meta.camera_id,
        line_id=meta.line_id,
        object_name=meta.object_name,
        captured_at=meta.captured_at,
        processed_at=utc_now(),
        score=normalised_score(raw_score, thresholds.image),
        raw_score=raw_score,
        threshold=thresholds.image,
        verdict=verdict,
        mask=mask_to_rle(mask),
        heatmap=heatmap_to_png(inspection.anomaly_map, worker_settings.heatmap_side)
        if worker_settings.heatmap_side
        else None,
        regions=defect_regions(inspection.anomaly_map, mask),
        instances=[
            Instance(box=Box(x=i.box[0], y=i.box[1], w=i.box[2], h=i.box[3]), area=i.area, score=i.score, tiles=i.tiles)
            for i in inspection.instances
        ],
        timings_ms=dict(inspection.timings_ms),
        versions=versions.model_copy(
            update={"threshold_version": thresholds.version, "reference_bank": reference_bank}
        ),
        worker_id=worker_id or worker_settings.worker_id,
        source=source,
        traceability=meta.traceability,
    )


def static_thresholds(worker_settings: WorkerSettings) -> ThresholdsInForce:
    """The thresholds of the settings, in force where no control record sets any."""
    return ThresholdsInForce(
        image=worker_settings.threshold,
        pixel=worker_settings.pixel_threshold,
        version=worker_settings.threshold_version,
    )


def skipped_result(
    meta: FrameMeta,
    reason: str,
    *,
    versions: Versions,
    worker_settings: WorkerSettings,
    worker_id: str | None = None,
    source: SourceRef | None = None,
) -> InspectionResult:
    """A result for a frame that was deliberately not inspected (e.g. too old): verdict 'skipped'."""
    return InspectionResult(
        frame_id=meta.frame_id,
        camera_id=meta.camera_id,
        line_id=meta.line_id,
        object_name=meta.object_name,
        captured_at=meta.captured_at,
        processed_at=utc_now(),
        score=0.0,
        threshold=worker_settings.threshold,
        verdict="skipped",
        versions=versions.model_copy(update={"threshold_version": worker_settings.threshold_version}),
        worker_id=worker_id or worker_settings.worker_id,
        source=source,
        note=reason,
        traceability=meta.traceability,
    )


# --------------------------------------------------------------------------- sizes


class ResultTooLarge(Exception):
    """Even without heatmap and regions the result exceeds the message limit."""


def _with_note(result: InspectionResult, note: str, **update: Any) -> InspectionResult:
    return result.model_copy(update={**update, "note": f"{result.note}; {note}" if result.note else note})


def fit_result(
    result: InspectionResult,
    max_bytes: int,
    key: bytes | None = None,
    headers: Sequence[tuple[str, bytes]] = (),
) -> tuple[InspectionResult, bytes]:
    """The result and its JSON, within `max_bytes` once key and headers are counted.

    Shrinks in this order, saying so in `note`: drop the heatmap, then keep only the
    regions with the highest peak scores (halving their number until it fits).
    Raises ResultTooLarge when even that is not enough (the mask alone is too big).
    """

    def fits(candidate: InspectionResult) -> tuple[bool, bytes]:
        value = candidate.model_dump_json().encode("utf-8")
        return estimate_record_size(key, value, headers) <= max_bytes, value

    ok, value = fits(result)
    if ok:
        return result, value
    if result.heatmap is not None:
        result = _with_note(result, f"heatmap dropped to fit {max_bytes} bytes", heatmap=None)
        ok, value = fits(result)
        if ok:
            return result, value
    regions = sorted(result.regions, key=lambda r: r.peak_score, reverse=True)
    keep = len(regions)
    while keep > 0:
        keep //= 2
        candidate = _with_note(
            result, f"regions capped to {keep} of {len(regions)} to fit {max_bytes} bytes", regions=regions[:keep]
        )
        ok, value = fits(candidate)
        if ok:
            return candidate, value
    raise ResultTooLarge(
        f"result of frame {result.frame_id} is {len(value)} bytes without heatmap and regions; limit is {max_bytes}"
    )
