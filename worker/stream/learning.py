"""Learning mode: a scope's first frames calibrate its thresholds (pure bookkeeping, no Kafka).

A record with `learning` set and no `image_threshold` puts its scope in learning. The worker
keeps the raw image score and the normal pixel score (the per-frame max of the anomaly map
inside the foreground, as the `calibrate` command computes it) of each frame it sees of that
scope; once it has `learning.frames` of them (or more, when the conformal bound at
`learning.target_fpr` needs more) `calibrated_record` turns them into the next version of the
record, which the worker publishes to the learned-records topic (`<control topic>.learned`: the
broker lets workers write that topic and not the control topic). Every worker takes a learned
record as the scope's record in force only when it answers the learning record in force (its next
version, only thresholds and calibration changed). With several workers each learns from the
frames of its partitions; the first calibrated record on the topic wins, the others carry the
same version and are refused as not newer.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

from common.calibration import conformal_threshold, frames_needed
from common.control import Calibration, ControlRecord
from common.schemas import utc_now


def normal_pixel_score(anomaly_map: np.ndarray, foreground: np.ndarray | None) -> float:
    """The frame's pixel score for calibration: max of the anomaly map inside the foreground
    (the whole map when the foreground is empty or missing)."""
    values = np.asarray(anomaly_map, dtype=np.float32)
    if foreground is not None and foreground.shape == values.shape and foreground.any():
        values = values[foreground.astype(bool)]
    return float(values.max()) if values.size else 0.0


def frames_to_learn(record: ControlRecord) -> int:
    """How many frames the scope collects: `learning.frames`, at least what the conformal bound needs."""
    assert record.learning is not None
    return max(record.learning.frames, frames_needed(record.learning.target_fpr))


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
    """The next version of the learning record, with conformal thresholds from the learned scores."""
    record, learning = learned.record, learned.record.learning
    assert learning is not None
    raw = np.asarray(learned.raw, dtype=np.float64)
    by = f"worker:{worker_id}"
    return record.model_copy(
        update={
            "version": record.version + 1,
            "image_threshold": min(1.0, conformal_threshold(raw, learning.target_fpr)),
            "pixel_threshold": min(1.0, conformal_threshold(np.asarray(learned.pixel), learning.target_fpr)),
            "calibration": Calibration(
                n=raw.size,
                target_fpr=learning.target_fpr,
                quantiles={name: float(np.quantile(raw, q)) for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))}
                | {"max": float(raw.max())},
                pixel_n=len(learned.pixel),
                by=by,
            ),
            "updated_by": by,
            "updated_at": utc_now(),
        }
    )
