"""What the pages show, in memory: per camera the latest results and score trend, the alarm list.

Fed by the Kafka feeds (feeds.py), read by the web app (app.py); every method takes the lock.
A version counter lets each page ask "what changed since version v" for its live updates.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from common.bounded import BoundedMap
from common.schemas import InspectionResult, utc_now
from worker.alarms.events import AlarmEvent
from worker.dashboard.alarm_state import AlarmAck, Silence

FPS_WINDOW_S = 10.0
MAX_ALARMS = 1000


def fps(arrivals: deque[float], now: float, window_s: float = FPS_WINDOW_S) -> float:
    """Results per second over the last `window_s` (fewer seconds while the camera is new)."""
    while arrivals and arrivals[0] < now - window_s:
        arrivals.popleft()
    if len(arrivals) < 2:
        return 0.0
    span = max(now - arrivals[0], 1e-3)
    return round(len(arrivals) / max(span, 1.0), 2)


def summary(result: InspectionResult) -> dict[str, Any]:
    """The fields a camera tile needs (no mask or heatmap: those come as an image)."""
    return {
        "camera_id": result.camera_id,
        "line_id": result.line_id,
        "object_name": result.object_name,
        "frame_id": result.frame_id,
        "score": round(result.score, 4),
        "raw_score": result.raw_score,
        "threshold": result.threshold,
        "verdict": result.verdict,
        "captured_at": result.captured_at.isoformat(),
        "processed_at": result.processed_at.isoformat(),
        "regions": len(result.regions),
        "has_frame": result.source is not None,
        "clock_skew_s": result.clock_skew_s,
        **traceability_fields(result),
    }


def traceability_fields(result: InspectionResult) -> dict[str, Any]:
    """part_id, recipe, lot, frame_counter (None where the frame carried none)."""
    trace = result.traceability
    return {
        name: getattr(trace, name) if trace is not None else None
        for name in ("part_id", "recipe", "lot", "frame_counter")
    }


@dataclass
class CameraView:
    camera_id: str
    results: OrderedDict[str, InspectionResult] = field(default_factory=OrderedDict)
    # (epoch s, score, verdict, state version): the version lets a page fetch only the points it lacks
    history: deque[tuple[float, float, str, int]] = field(default_factory=deque)
    arrivals: deque[float] = field(default_factory=deque)  # monotonic receive times
    partition: int | None = None
    version: int = 0


@dataclass
class AlarmView:
    event: AlarmEvent
    ack: AlarmAck | None = None


class LiveState:
    def __init__(
        self, *, history_s: float = 300.0, results_per_camera: int = 40, max_cameras: int = 1000, clock=time.monotonic
    ) -> None:
        self.history_s = history_s
        self.results_per_camera = results_per_camera
        self._clock = clock
        self._lock = threading.Lock()
        self._version = 0
        # camera ids are the producer's to choose: the least recently seen camera goes past `max_cameras`
        self._cameras: BoundedMap[str, CameraView] = BoundedMap(max_cameras, "dashboard cameras")
        self._alarms: OrderedDict[str, AlarmView] = OrderedDict()
        self._acks: dict[str, AlarmAck] = {}  # may arrive before (or without) their alarm
        self._silences: dict[str, Silence] = {}
        self._alarms_version = 0
        self._lag: dict[int, int] = {}

    # ------------------------------------------------------------------ writes (feeds)

    def add_result(self, result: InspectionResult, partition: int | None = None) -> bool:
        """False for a redelivered result (same camera and frame id): delivery is at least once."""
        with self._lock:
            camera = self._cameras.setdefault(result.camera_id, lambda: CameraView(result.camera_id))
            if result.frame_id in camera.results:
                return False
            camera.results[result.frame_id] = result
            while len(camera.results) > self.results_per_camera:
                camera.results.popitem(last=False)
            self._version += 1
            camera.version = self._version
            now_epoch = result.processed_at.timestamp()
            camera.history.append((now_epoch, result.score, result.verdict, self._version))
            while camera.history and camera.history[0][0] < now_epoch - self.history_s:
                camera.history.popleft()
            camera.arrivals.append(self._clock())
            camera.partition = partition
            return True

    def add_alarm(self, event: AlarmEvent) -> None:
        with self._lock:
            self._alarms[event.alarm_id] = AlarmView(event, self._acks.get(event.alarm_id))
            self._alarms.move_to_end(event.alarm_id)
            while len(self._alarms) > MAX_ALARMS:
                self._alarms.popitem(last=False)
            self._bump_alarms()

    def apply_state(self, key: str, record: AlarmAck | Silence | None) -> None:
        """A record of the state topic; `record` None is a tombstone for `key`."""
        with self._lock:
            if isinstance(record, AlarmAck):
                self._acks[record.alarm_id] = record
                if record.alarm_id in self._alarms:
                    self._alarms[record.alarm_id].ack = record
            elif isinstance(record, Silence):
                self._silences[record.camera_id] = record
            elif key.startswith("silence:"):
                self._silences.pop(key[len("silence:") :], None)
            self._bump_alarms()

    def set_lag(self, lag: dict[int, int]) -> None:
        with self._lock:
            self._lag = dict(lag)

    def _bump_alarms(self) -> None:
        self._version += 1
        self._alarms_version = self._version

    # ------------------------------------------------------------------ reads (pages)

    @property
    def version(self) -> int:
        with self._lock:
            return self._version

    @property
    def cameras_forgotten(self) -> int:
        with self._lock:
            return self._cameras.evicted

    def result(self, camera_id: str, frame_id: str) -> InspectionResult | None:
        with self._lock:
            camera = self._cameras.peek(camera_id)
            return camera.results.get(frame_id) if camera else None

    def changes_since(self, version: int, now: datetime | None = None) -> dict[str, Any]:
        """Cameras changed after `version` (all of them for 0) with their trend points added since (all for
        0), the alarm list if it changed, lag and fps. `full` says whether the trends are whole."""
        now = now or utc_now()
        with self._lock:
            clock = self._clock()
            cameras = []
            for camera in sorted(self._cameras.values(), key=lambda c: c.camera_id):  # not in the order last seen
                entry = self._camera_entry(camera, clock, since=version)
                cameras.append(entry)
            payload: dict[str, Any] = {
                "version": self._version,
                "full": version == 0,
                "now": round(now.timestamp(), 3),  # the page draws trends against this clock, not its own
                "cameras": cameras,
                "lag_total": sum(self._lag.values()),
            }
            if version == 0 or self._alarms_version > version:
                payload["alarms"] = self._alarm_list(now)
            return payload

    def _camera_entry(self, camera: CameraView, clock: float, *, since: int) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "camera_id": camera.camera_id,
            "fps": fps(camera.arrivals, clock),
            "lag": self._lag.get(camera.partition, 0) if camera.partition is not None else None,
        }
        if camera.version > since and camera.results:
            entry["latest"] = summary(next(reversed(camera.results.values())))
            entry["history"] = [[round(t, 3), round(s, 4), v] for t, s, v, n in camera.history if n > since]
        return entry

    def _alarm_list(self, now: datetime) -> list[dict[str, Any]]:
        alarms = []
        for view in reversed(self._alarms.values()):
            event = view.event
            silence = self._silences.get(event.camera_id or "")
            ref = event.masks[-1] if event.masks else None
            alarms.append(
                {
                    "alarm_id": event.alarm_id,
                    "kind": event.kind,
                    "rule": event.rule,
                    "line_id": event.line_id,
                    "camera_id": event.camera_id,
                    "message": event.message,
                    "created_at": event.created_at.isoformat(),
                    "frame_id": event.frame_ids[-1] if event.frame_ids else None,
                    "part_id": event.part_ids[-1] if event.part_ids else None,
                    "result_ref": [ref.partition, ref.offset] if ref else None,
                    "acked_by": view.ack.by if view.ack else None,
                    "acked_at": view.ack.at.isoformat() if view.ack else None,
                    "silenced_until": silence.until.isoformat() if silence and silence.active(now) else None,
                }
            )
        return alarms
