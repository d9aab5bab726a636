"""Bounds on what the control plane lets a record or a frame header cost: refused records keep the
previous one, `worker.known_scopes_only` dead-letters frames of unknown scopes, drift labels are capped."""

from __future__ import annotations

import io
import json

import numpy as np
from opentelemetry.metrics import NoOpMeter
from PIL import Image

from common.control import ControlRecord
from common.control_topic import encode_control
from common.messages import frame_headers
from common.metrics import Metrics
from common.schemas import FrameMeta, utc_now
from common.settings import WorkerSettings
from worker.stream.control import ControlState
from worker.stream.drift import OVERFLOW, DriftWatch
from worker.stream.intake import Consumed, DeadLetter, Intake
from worker.stream.offsets import Checkpoint
from worker.stream.telemetry import Counters, ServiceTelemetry


def control_state(counters: Counters) -> ControlState:
    return ControlState(WorkerSettings(worker_id="w"), counters, Metrics.create(NoOpMeter("test")))


def test_a_record_beyond_its_bounds_is_refused_counted_and_the_previous_one_stays():
    counters = Counters()
    state = control_state(counters)
    assert state.apply_message(b"object:screw", encode_control(ControlRecord(version=1, image_threshold=0.4))) == (
        "applied"
    )
    silencing = json.dumps({"version": 2, "learning": {"frames": 10**9, "target_fpr": 0.1}}).encode()
    assert state.apply_message(b"object:screw", silencing) == "refused"
    assert counters.snapshot()["control_refused_out_of_bounds"] == 1
    resolved = state.resolve("cam-0", "screw")
    assert resolved.record.version == 1 and resolved.thresholds.image == 0.4 and not resolved.learning


def frame_message(camera_id: str, object_name: str, offset: int = 0) -> Consumed:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buffer, format="PNG")
    meta = FrameMeta(
        frame_id=f"f-{offset}",
        camera_id=camera_id,
        line_id="l1",
        object_name=object_name,
        captured_at=utc_now(),
        content_type="image/png",
        width=8,
        height=8,
    )
    return Consumed("frames", 0, offset, camera_id.encode(), buffer.getvalue(), frame_headers(meta))


class LetterCollectingIntake(Intake):
    """Intake whose dead letters are collected as (stage, error type, text); other items pass as they are."""

    def __init__(self, settings: WorkerSettings, letters: list) -> None:
        super().__init__(settings, Checkpoint(), ServiceTelemetry(), Counters())
        self.letters = letters

    def take(self, partition, message):
        item = super().take(partition, message)
        if isinstance(item, DeadLetter):
            self.letters.append((item.stage, item.error_type, item.text))
            return None
        return item


def intake(settings: WorkerSettings, state: ControlState, letters: list) -> Intake:
    taken = LetterCollectingIntake(settings, letters)
    taken.known_scope = state.knows
    return taken


def test_known_scopes_only_dead_letters_frames_no_record_applies_to():
    state = control_state(Counters())
    state.apply_message(b"camera:cam-1", encode_control(ControlRecord(version=1, image_threshold=0.4)))
    state.apply_message(b"object:nut", encode_control(ControlRecord(version=1, image_threshold=0.4)))
    letters: list = []
    strict = intake(WorkerSettings(worker_id="w", known_scopes_only=True), state, letters)
    assert strict.take(0, frame_message("cam-1", "screw", 1)) is not None  # the camera's record applies
    assert strict.take(0, frame_message("cam-2", "nut", 2)) is not None  # the object's record applies
    assert strict.take(0, frame_message("cam-9", "screw", 3)) is None
    assert [(stage, kind) for stage, kind, _ in letters] == [("header", "UnknownScope")]
    assert "cam-9" in letters[0][2] and "known_scopes_only" in letters[0][2]
    lenient = intake(WorkerSettings(worker_id="w"), state, letters)  # off by default
    assert lenient.take(0, frame_message("cam-9", "screw", 4)) is not None and len(letters) == 1


def test_drift_watches_at_most_max_scopes_and_labels_the_rest_as_overflow():
    drift = DriftWatch(window=4, max_scopes=3)
    labels = []
    for i in range(6):
        labels.append(drift.label(f"camera:c{i}/object:o"))
        drift.observe(labels[-1], 0.5, False)
    assert labels[:3] == [f"camera:c{i}/object:o" for i in range(3)] and set(labels[3:]) == {OVERFLOW}
    for i in range(100):
        drift.observe(f"camera:new{i}/object:o", 0.9, True)  # observed without asking for a label
    assert drift.label("camera:c0/object:o") == "camera:c0/object:o"
    assert len(drift._scopes) == 4  # three scopes and the overflow
