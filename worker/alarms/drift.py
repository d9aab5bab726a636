"""Drift rules: the anomalous share of a stream's recent verdicts against its calibrated rate.

A threshold calibrated at false-alarm rate A flags about A of the good frames. When many
more are flagged over a long window, either the line makes defects in series or the
scene drifted (light, camera, product) away from the calibration frames: both need a person.

Per (rule, line, camera, object) the verdicts of the last `window` inspected frames (`ok`
or `anomalous`; `skipped` and `calibrating` are no verdicts) are kept. Once `min_frames`
are in, a frame that brings the share above `multiple x target_rate` raises one alarm for
the drift spell; the spell ends (the rule re-arms) when the share falls back to the limit
or below. `cooldown_s` spaces a stream's alarms as for the other rules.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone

from common.bounded import BoundedMap
from common.schemas import InspectionResult
from worker.alarms.config import DriftRule
from worker.alarms.events import AlarmEvent, MaskRef, alarm_id_for

Partition = tuple[str, int]
MAX_FRAMES_IN_ALARM = 20  # the newest anomalous frames named in a drift alarm

VERDICTS = ("ok", "anomalous")


@dataclass(frozen=True)
class Observation:
    """One result as the alarm rules remember it (anomaly windows and drift windows alike)."""

    frame_id: str
    score: float
    anomalous: bool
    captured_at: datetime
    ref: MaskRef | None
    part_id: str | None = None


def part_id_of(result: InspectionResult) -> str | None:
    return result.traceability.part_id if result.traceability is not None else None


@dataclass
class _DriftStream:
    window: deque[Observation]
    anomalous: int = 0  # in the window
    drifting: bool = False  # an alarm was raised for the current spell
    last_alarm_at: float | None = None
    partition: Partition | None = None


class DriftTracker:
    """State of every drift rule's streams; `observe` returns the alarms a result raises."""

    def __init__(self, rules: Iterable[DriftRule], max_streams: int = 10_000) -> None:
        self.rules = list(rules)
        self._streams: BoundedMap[tuple[str, str, str, str], _DriftStream] = BoundedMap(
            max_streams, "drift-rule streams"
        )

    @property
    def forgotten(self) -> int:
        return self._streams.evicted

    def observe(
        self, result: InspectionResult, ref: MaskRef | None, now: float, partition: Partition | None
    ) -> list[AlarmEvent]:
        if result.verdict not in VERDICTS:
            return []
        alarms = []
        for rule in self.rules:
            if rule.match.matches(result.line_id, result.camera_id, result.object_name):
                alarm = self._observe(rule, result, ref, now, partition)
                if alarm is not None:
                    alarms.append(alarm)
        return alarms

    def _observe(
        self, rule: DriftRule, result: InspectionResult, ref: MaskRef | None, now: float, partition: Partition | None
    ) -> AlarmEvent | None:
        key = (rule.name, result.line_id, result.camera_id, result.object_name)
        stream = self._streams.setdefault(key, lambda: _DriftStream(window=deque()))
        stream.partition = partition
        verdict = Observation(
            result.frame_id, result.score, result.verdict == "anomalous", result.captured_at, ref, part_id_of(result)
        )
        if len(stream.window) == rule.window:
            stream.anomalous -= stream.window.popleft().anomalous
        stream.window.append(verdict)
        stream.anomalous += verdict.anomalous
        if len(stream.window) < rule.needed:
            return None
        rate = stream.anomalous / len(stream.window)
        if rate <= rule.limit:
            stream.drifting = False  # back within the limit: re-armed
            return None
        if stream.drifting:
            return None
        if stream.last_alarm_at is not None and now - stream.last_alarm_at < rule.cooldown_s:
            return None
        stream.drifting = True
        stream.last_alarm_at = now
        return self._alarm(rule, result, stream, rate, now)

    def _alarm(
        self, rule: DriftRule, result: InspectionResult, stream: _DriftStream, rate: float, now: float
    ) -> AlarmEvent:
        hits = [v for v in stream.window if v.anomalous][-MAX_FRAMES_IN_ALARM:]  # scanned only when raising
        size = len(stream.window)
        return AlarmEvent(
            alarm_id=alarm_id_for(
                "drift", rule.name, result.line_id, result.camera_id, result.object_name, result.frame_id
            ),
            kind="drift",
            rule=rule.name,
            line_id=result.line_id,
            camera_id=result.camera_id,
            object_name=result.object_name,
            frame_ids=[v.frame_id for v in hits],
            part_ids=[v.part_id for v in hits],
            scores=[v.score for v in hits],
            anomalous_in_window=stream.anomalous,
            window=size,
            rate=round(rate, 6),
            rate_limit=rule.limit,
            masks=[v.ref for v in hits if v.ref is not None],
            first_seen=stream.window[0].captured_at,
            last_seen=stream.window[-1].captured_at,
            created_at=datetime.fromtimestamp(now, timezone.utc),
            message=(
                f"{stream.anomalous} of the last {size} frames of {result.line_id}/{result.camera_id}"
                f" ({result.object_name}) anomalous: rate {rate:.2%} > {rule.multiple:g} x target {rule.target_rate:g}"
                " (calibration drifted, or defects in series)"
            ),
        )

    def forget_partitions(self, gone: set[Partition]) -> int:
        """Drop the streams last read from revoked partitions; returns how many."""
        dropped = [k for k, s in self._streams.items() if s.partition in gone]
        for k in dropped:
            self._streams.pop(k)
        return len(dropped)
