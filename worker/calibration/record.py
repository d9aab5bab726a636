"""From normal scores to a ControlRecord, and the record file that carries it with its scope.

Record file (written by `calibrate --out`, read by `inspect --calibration`):

    {"scope": "object:metal nut", "record": {<ControlRecord JSON>}}

The scope is in the file because a record means nothing without it: its version is counted
per scope on the control topic and `versions.threshold_version` is `<scope>@v<version>`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from common.calibration import score_quantiles, unit_threshold
from common.control import Calibration, ControlRecord, parse_scope


class RecordFileError(ValueError):
    """A record file that cannot be read or does not hold a scope and a valid ControlRecord."""


class RecordFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    scope: str
    record: ControlRecord


def calibration_record(
    raw_scores: Sequence[float],
    pixel_scores: Sequence[float],
    *,
    target_fpr: float,
    by: str,
    version: int,
    base: ControlRecord | None = None,
) -> ControlRecord:
    """The record whose image and pixel thresholds are the conformal bounds of the normal scores.

    `base` is the scope's record in force: its prompt overrides and reference set are kept
    (a calibration changes thresholds only); learning mode ends, since this is its outcome.
    Raises TooFewFrames when there are too few scores for `target_fpr`.
    """
    raw = np.asarray(raw_scores, dtype=np.float64)
    pixel = np.asarray(pixel_scores, dtype=np.float64)
    image_threshold = unit_threshold(raw, target_fpr)
    # anomaly maps are float32 and compared with the threshold in float32
    pixel_threshold = unit_threshold(pixel, target_fpr, np.float32) if pixel.size else None
    calibration = Calibration(
        n=int(raw.size),
        target_fpr=target_fpr,
        quantiles=score_quantiles(raw),
        pixel_n=int(pixel.size) if pixel.size else None,
        by=by,
    )
    fields = {
        "version": version,
        "image_threshold": image_threshold,
        "pixel_threshold": pixel_threshold,
        "calibration": calibration,
        "learning": None,
        "updated_at": calibration.calibrated_at,
        "updated_by": by,
    }
    if base is None:
        return ControlRecord(**fields)
    return ControlRecord(**(base.model_dump() | fields))


def write_record_file(path: Path, scope: str, record: ControlRecord) -> None:
    parse_scope(scope)  # never write a file that cannot be read back
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(RecordFile(scope=scope, record=record).model_dump_json(indent=2) + "\n", encoding="utf-8")


def read_record_file(path: Path) -> RecordFile:
    """The scope and record of a file written by `calibrate --out`; RecordFileError says what is wrong."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RecordFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RecordFileError(f"{path}: not JSON: {exc.msg} at line {exc.lineno}") from None
    if not isinstance(data, dict) or "scope" not in data or "record" not in data:
        raise RecordFileError(f'{path}: expected {{"scope": ..., "record": {{...}}}} as written by calibrate --out')
    try:
        parse_scope(str(data["scope"]))
        return RecordFile.model_validate(data)
    except (ValueError, ValidationError) as exc:
        raise RecordFileError(f"{path}: {exc}") from None
