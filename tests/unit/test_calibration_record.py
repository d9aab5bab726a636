"""worker/calibration/record.py: normal scores -> ControlRecord, and the record file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from common.calibration import TooFewFrames
from common.control import ControlRecord, Learning, PromptOverrides, ReferenceSet, thresholds_in_force
from worker.calibration.record import RecordFileError, calibration_record, read_record_file, write_record_file

RAW = list(np.linspace(0.60, 0.79, 20))  # 20 scores: k = ceil(21 * 0.95) = 20 at 5%
PIXEL = list(np.linspace(0.30, 0.49, 20, dtype=np.float32))


def test_thresholds_are_the_conformal_bounds() -> None:
    record = calibration_record(RAW, PIXEL, target_fpr=0.05, by="alice", version=3)
    assert record.version == 3 and record.updated_by == "alice"
    assert record.image_threshold == np.nextafter(0.79, 1.0)
    assert record.pixel_threshold == float(np.nextafter(np.float32(PIXEL[-1]), np.float32(1.0)))
    assert record.calibration.n == 20 and record.calibration.pixel_n == 20
    assert record.calibration.quantiles["max"] == pytest.approx(0.79)
    assert record.calibration.quantiles["p50"] == pytest.approx(np.median(RAW))
    assert record.updated_at == record.calibration.calibrated_at


def test_at_ten_percent_the_two_highest_scores_pass() -> None:
    record = calibration_record(RAW, PIXEL, target_fpr=0.10, by="a", version=1)  # k = ceil(21 * 0.9) = 19
    assert record.image_threshold == np.nextafter(RAW[18], 1.0)
    assert sum(score >= record.image_threshold for score in RAW) == 1


def test_too_few_scores_are_refused() -> None:
    with pytest.raises(TooFewFrames, match="at least 99"):
        calibration_record(RAW, PIXEL, target_fpr=0.01, by="a", version=1)


def test_a_recalibration_keeps_prompts_and_references_and_ends_learning() -> None:
    base = ControlRecord(
        version=6,
        image_threshold=0.5,
        prompts=PromptOverrides(object_name="hex nut"),
        references=ReferenceSet(version="r2", frames=10),
        learning=Learning(frames=200, target_fpr=0.01),
    )
    record = calibration_record(RAW, PIXEL, target_fpr=0.05, by="bob", version=7, base=base)
    assert record.version == 7 and record.prompts == base.prompts and record.references == base.references
    assert record.learning is None and record.image_threshold == np.nextafter(0.79, 1.0)


def test_record_file_round_trip_and_thresholds_in_force(tmp_path: Path) -> None:
    record = calibration_record(RAW, PIXEL, target_fpr=0.05, by="a", version=2)
    path = tmp_path / "sub" / "cal.json"
    write_record_file(path, "camera:cam-1/object:bolt", record)
    loaded = read_record_file(path)
    assert loaded.scope == "camera:cam-1/object:bolt" and loaded.record == record
    assert json.loads(path.read_text())["record"]["version"] == 2
    force = thresholds_in_force(loaded.scope, loaded.record, image=0.5, pixel=0.5, static_version="static")
    assert (force.image, force.pixel, force.version) == (
        record.image_threshold,
        record.pixel_threshold,
        "camera:cam-1/object:bolt@v2",
    )


def test_a_file_with_a_bad_scope_is_never_written(tmp_path: Path) -> None:
    record = calibration_record(RAW, PIXEL, target_fpr=0.05, by="a", version=1)
    with pytest.raises(ValueError, match="not a control scope"):
        write_record_file(tmp_path / "x.json", "bolt", record)
    assert not (tmp_path / "x.json").exists()


def test_extra_keys_in_a_record_file_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"scope": "object:a", "record": {"version": 1}, "other": 1}))
    with pytest.raises(RecordFileError, match="Extra inputs are not permitted"):
        read_record_file(path)
