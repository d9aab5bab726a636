"""Learning mode: a scope's first frames calibrate its thresholds (pure bookkeeping, no Kafka).

A record with `learning` set and no `image_threshold` puts its scope in learning. The worker
keeps the raw image score and the normal pixel score of each frame it sees of that scope;
once it has `learning.frames` of them (or more, when the conformal bound at
`learning.target_fpr` needs more) `calibrated_record` turns them into the next version of the
record, which the worker publishes to the learned-records topic (`<control topic>.learned`: the
broker lets workers write that topic and not the control topic). Every worker takes a learned
record as the scope's record in force only when it answers the learning record in force (its next
version, only thresholds and calibration changed). With several workers each learns from the
frames of its partitions; the first calibrated record on the topic wins, the others carry the
same version and are refused as `replayed`.

Scores and thresholds come from the functions `calibrate` uses
(`common.calibration.normal_pixel_score`, `worker.calibration.record.calibration_record`), so both
give the same thresholds, rounded alike, from the same scores.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from common.control import MAX_LEARNED_THRESHOLD, ControlRecord
from common.control import frames_to_learn as learning_frames
from worker.calibration.record import calibration_record


def frames_to_learn(record: ControlRecord) -> int:
    """How many frames the scope collects: `learning.frames`, at least what the conformal bound needs."""
    assert record.learning is not None
    return learning_frames(record.learning)


@dataclass
class _Scope:
    version: int
    raw: list[float] = field(default_factory=list)
    pixel: list[float] = field(default_factory=list)
    done: bool = False


@dataclass(frozen=True)
class Learned:
    """The scores a scope learned from: `calibrated_record` turns them into a record."""

    scope: str
    record: ControlRecord
    raw: tuple[float, ...]
    pixel: tuple[float, ...]


class LearningBook:
    """Scores collected per scope in learning, for the record version in force (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._scopes: dict[str, _Scope] = {}

    def observe(self, scope: str, record: ControlRecord, raw: float, pixel: float) -> Learned | None:
        """Count one frame; returns the scores once the scope has enough (once per record version)."""
        with self._lock:
            state = self._scopes.get(scope)
            if state is None or state.version != record.version:  # a new learning record restarts
                state = self._scopes[scope] = _Scope(record.version)
            if state.done:
                return None  # calibrated record sent: the frames wait for it to come back from the topic
            state.raw.append(float(raw))
            state.pixel.append(float(pixel))
            if len(state.raw) < frames_to_learn(record):
                return None
            state.done = True
            return Learned(scope, record, tuple(state.raw), tuple(state.pixel))

    def progress(self, scope: str) -> int:
        with self._lock:
            state = self._scopes.get(scope)
            return len(state.raw) if state is not None else 0


def calibrated_record(learned: Learned, worker_id: str) -> ControlRecord:
    """The next version of the learning record, calibrated as `calibrate` would from the same scores.

    Every other field stays as it was, `learning` included: a learned record is taken only as the
    answer to the learning record in force (`common.control.answers_learning`); its thresholds end
    the learning. They are capped at MAX_LEARNED_THRESHOLD (a lower threshold: more alarms, never
    fewer), the most a learned record may set."""
    record, learning = learned.record, learned.record.learning
    assert learning is not None
    calibrated = calibration_record(
        learned.raw,
        learned.pixel,
        target_fpr=learning.target_fpr,
        by=f"worker:{worker_id}",
        version=record.version + 1,
        base=record,
    )
    capped = {
        name: min(value, MAX_LEARNED_THRESHOLD)
        for name in ("image_threshold", "pixel_threshold")
        if (value := getattr(calibrated, name)) is not None
    }
    return calibrated.model_copy(update={"learning": learning} | capped)
