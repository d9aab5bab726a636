"""Skipped rules: the share of a camera's recent results that were `skipped` (stale frames).

A frame is skipped when it is older than `worker.max_frame_age_s` by the camera's clock or by the
broker's record time. A few skipped frames after a restart are normal; a steady share means a
backlog the workers do not catch up with, or a camera whose clock runs behind the broker's (the
worker's `linewatch.clock.skew` metric tells which). Per (rule, line, camera) the last `window`
results are kept; once `min_results` are in, a result that brings the skipped share above
`max_share` raises one alarm for the spell, re-armed when the share falls back to it or below.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone

from common.bounded import BoundedMap
from common.schemas import InspectionResult
from worker.alarms.config import SkippedRule
from worker.alarms.events import AlarmEvent, alarm_id_for

Partition = tuple[str, int]
MAX_FRAMES_IN_ALARM = 20


@dataclass
class _Stream:
    window: deque[tuple[str, bool, datetime]] = field(default_factory=deque)  # (frame id, skipped, captured_at)
    skipped: int = 0
    raised: bool = False  # an alarm was raised for the current spell
    last_alarm_at: float | None = None
    partition: Partition | None = None


class SkippedTracker:
    def __init__(self, rules: Iterable[SkippedRule], max_streams: int = 10_000) -> None:
        self.rules = list(rules)
        self._streams: BoundedMap[tuple[str, str, str], _Stream] = BoundedMap(max_streams, "skipped-rule streams")

    @property
    def forgotten(self) -> int:
        return self._streams.evicted

    def observe(self, result: InspectionResult, now: float, partition: Partition | None) -> list[AlarmEvent]:
        alarms = []
        for rule in self.rules:
            if rule.match.matches(result.line_id, result.camera_id, result.object_name):
                alarm = self._observe(rule, result, now, partition)
                if alarm is not None:
                    alarms.append(alarm)
        return alarms

    def _observe(
        self, rule: SkippedRule, result: InspectionResult, now: float, partition: Partition | None
    ) -> AlarmEvent | None:
        stream = self._streams.setdefault((rule.name, result.line_id, result.camera_id), _Stream)
        stream.partition = partition
        skipped = result.verdict == "skipped"
        if len(stream.window) == rule.window:
            stream.skipped -= stream.window.popleft()[1]
        stream.window.append((result.frame_id, skipped, result.captured_at))
        stream.skipped += skipped
        if len(stream.window) < rule.needed:
            return None
        share = stream.skipped / len(stream.window)
        if share <= rule.max_share:
            stream.raised = False
            return None
        if stream.raised or (stream.last_alarm_at is not None and now - stream.last_alarm_at < rule.cooldown_s):
            return None
        stream.raised, stream.last_alarm_at = True, now
        frames = [frame_id for frame_id, was_skipped, _ in stream.window if was_skipped][-MAX_FRAMES_IN_ALARM:]
        size = len(stream.window)
        return AlarmEvent(
            alarm_id=alarm_id_for("skipped", rule.name, result.line_id, result.camera_id, result.frame_id),
            kind="skipped",
            rule=rule.name,
            line_id=result.line_id,
            camera_id=result.camera_id,
            object_name=result.object_name,
            frame_ids=frames,
            part_ids=[None] * len(frames),
            window=size,
            rate=round(share, 6),
            rate_limit=rule.max_share,
            first_seen=stream.window[0][2],
            last_seen=stream.window[-1][2],
            created_at=datetime.fromtimestamp(now, timezone.utc),
            message=(
                f"{stream.skipped} of the last {size} results of {result.line_id}/{result.camera_id} skipped as stale "
                f"({share:.0%} > {rule.max_share:.0%}): a backlog, or the camera's clock out of step with the broker's"
            ),
        )

    def forget_partitions(self, gone: set[Partition]) -> int:
        dropped = [k for k, s in self._streams.items() if s.partition in gone]
        for k in dropped:
            self._streams.pop(k)
        return len(dropped)
