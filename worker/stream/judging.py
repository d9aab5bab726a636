"""From the control record in force to a frame's verdict: thresholds, learning mode, drift.

`Judge.resolve` (inference thread) looks up the record for the frame's (camera, object), so
its prompt overrides reach the Inspector; `Judge.judge` (publish thread) decides with the same
record: the thresholds for `build_result`, or `calibrating` while the scope is learning. When a
scope has learned enough frames the Judge sends the calibrated record to the control topic
(`send_control`); verdicts begin once it comes back from the topic.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from common.calibration import normal_pixel_score
from common.control import ControlRecord, ThresholdsInForce, scope_key
from common.metrics import Metrics
from worker.inspection.types import Inspection
from worker.stream.control import ControlState, Resolved
from worker.stream.drift import DriftWatch
from worker.stream.learning import LearningBook, calibrated_record
from worker.stream.references import ReferenceBanks
from worker.stream.telemetry import Counters

log = logging.getLogger(__name__)

SendControl = Callable[[str, ControlRecord], None]


class Judge:
    def __init__(
        self, state: ControlState, send_control: SendControl, *, worker_id: str, counters: Counters, metrics: Metrics
    ) -> None:
        self.state = state
        self.send_control = send_control
        self.worker_id = worker_id
        self.counters = counters
        self.metrics = metrics
        self.learning = LearningBook()
        self.drift = DriftWatch()
        self.references: ReferenceBanks | None = None  # set by the control plane: banks and pools

    def resolve(self, camera_id: str, object_name: str) -> Resolved:
        resolved = self.state.resolve(camera_id, object_name)
        if self.references is None:
            return resolved
        few_shot = self.references.context(resolved.scope, camera_id, object_name)
        return resolved if few_shot is None else replace(resolved, few_shot=few_shot)

    def judge(self, resolved: Resolved, inspection: Inspection) -> tuple[ThresholdsInForce, bool]:
        """(thresholds, calibrating) for one inspected frame."""
        raw = float(np.clip(inspection.score, 0.0, 1.0))
        if resolved.learning:
            assert resolved.scope is not None and resolved.record is not None
            pixel = normal_pixel_score(inspection.anomaly_map, inspection.foreground)
            learned = self.learning.observe(resolved.scope, resolved.record, raw, pixel)
            if learned is not None:
                record = calibrated_record(learned, self.worker_id)
                log.info(
                    "%s learned from %d frames: image threshold %.4f, pixel threshold %.4f; publishing v%d",
                    resolved.scope,
                    len(learned.raw),
                    record.image_threshold,
                    record.pixel_threshold,
                    record.version,
                )
                self.counters.add("control_calibrated")
                self.send_control(resolved.scope, record)
            return resolved.thresholds, True
        # drift is watched per camera and object (the first MAX_SCOPES of them; the rest share one label)
        frame_scope = self.drift.label(scope_key(resolved.camera_id, resolved.object_name))
        above_rate, p95 = self.drift.observe(frame_scope, raw, raw >= resolved.thresholds.image)
        self.metrics.scope_drift(frame_scope, above_rate, p95)
        return resolved.thresholds, False
