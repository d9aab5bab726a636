"""The alarm rule engine: pure logic over InspectionResults and a clock (no Kafka, no HTTP).

Semantics (also in docs/guides/alarms-and-mes.md):

- Every rule whose `match` fits a result's line/camera/object sees it; rules are independent.
- Duplicates: a result whose (camera id, frame id) was already observed is ignored entirely
  (at-least-once delivery redelivers results). The memory is a bounded LRU
  (`dedup_entries`), in process only: after a restart, results redelivered from the last
  committed offset are evaluated again.
- anomaly rules keep, per (rule, line, camera, object), a window of the last `of_last`
  inspected frames (`skipped` verdicts are not inspections and stay out). A frame is anomalous
  when `score >= threshold` if the rule sets one, else when the result's verdict is `anomalous`.
  An alarm is raised by an anomalous frame that brings the window to `anomalous` or more
  anomalous frames, unless the same stream raised one less than `cooldown_s` ago. Raising
  empties the window, so the next alarm needs `anomalous` new anomalous frames.
- silence rules track, per (rule, line, camera) - or per (rule, line) with `per: line` - the
  clock time of the last matching result. Streams are tracked once seen, and from engine start
  when listed under `expected`. `tick()` raises an alarm when a stream has been silent for
  `silent_for_s`; once per silent spell (a new result ends the spell), and not within
  `cooldown_s` of the stream's previous silence alarm.
- The clock (`clock()`, seconds since the epoch) is the processing time of this process:
  tests pass a fake one.
- drift rules (worker/alarms/drift.py) watch the anomalous share of a stream's last `window`
  verdicts against `multiple x target_rate`: one alarm per drift spell.
- skipped rules (worker/alarms/skipped.py) watch the share of `skipped` (stale) results of a
  camera's last `window` against `max_share`: one alarm per spell.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

from common.bounded import BoundedMap
from common.schemas import InspectionResult, SourceRef
from worker.alarms.config import AnomalyRule, DriftRule, RulesFile, SilenceRule, SkippedRule
from worker.alarms.drift import DriftTracker, Observation, part_id_of
from worker.alarms.events import AlarmEvent, MaskRef, alarm_id_for
from worker.alarms.skipped import SkippedTracker

Clock = Callable[[], float]
Partition = tuple[str, int]


class SeenFrames:
    """A bounded LRU set of frame keys."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._items: OrderedDict[tuple[str, str], None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self._items

    def add(self, key: tuple[str, str]) -> bool:
        """Remember `key`; False when it was already there (a duplicate)."""
        if key in self._items:
            self._items.move_to_end(key)
            return False
        self._items[key] = None
        if len(self._items) > self.capacity:
            self._items.popitem(last=False)
        return True


@dataclass
class _AnomalyStream:
    window: deque[Observation]
    last_alarm_at: float | None = None
    partition: Partition | None = None


@dataclass
class _SilenceStream:
    line_id: str
    camera_id: str | None
    last_seen_clock: float
    expected: bool = False
    object_name: str | None = None
    last_frame_id: str | None = None
    first_captured_at: datetime | None = None
    last_captured_at: datetime | None = None
    alarmed: bool = False  # an alarm was raised for the current silent spell
    last_alarm_at: float | None = None
    partition: Partition | None = None


@dataclass
class EngineStats:
    observed: int = 0
    duplicates: int = 0
    alarms: dict[str, int] = field(default_factory=lambda: {"anomaly": 0, "silence": 0, "drift": 0, "skipped": 0})


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, timezone.utc)


class RuleEngine:
    def __init__(
        self,
        rules: RulesFile | Sequence[AnomalyRule | SilenceRule | DriftRule | SkippedRule],
        *,
        clock: Clock = time.time,
        dedup_entries: int = 100_000,
        max_streams: int = 10_000,
    ) -> None:
        rule_list = list(rules.rules if isinstance(rules, RulesFile) else rules)
        self.anomaly_rules = [r for r in rule_list if isinstance(r, AnomalyRule)]
        self.silence_rules = [r for r in rule_list if isinstance(r, SilenceRule)]
        self._drift = DriftTracker((r for r in rule_list if isinstance(r, DriftRule)), max_streams)
        self._skipped = SkippedTracker((r for r in rule_list if isinstance(r, SkippedRule)), max_streams)
        self._clock = clock
        self._seen = SeenFrames(dedup_entries)
        # keyed by camera ids and object names that producers choose: the least recently seen go past the cap;
        # the streams the rules expect are kept apart and never go
        self._anomaly: BoundedMap[tuple[str, str, str, str], _AnomalyStream] = BoundedMap(
            max_streams, "anomaly streams"
        )
        self._silence: BoundedMap[tuple[str, str, str | None], _SilenceStream] = BoundedMap(
            max_streams, "silence streams"
        )
        self._expected: dict[tuple[str, str, str | None], _SilenceStream] = {}
        self.stats = EngineStats()
        self.started_at = clock()
        for rule in self.silence_rules:
            for stream in rule.expected:
                camera = stream.camera if rule.per == "camera" else None
                self._expected[(rule.name, stream.line, camera)] = _SilenceStream(
                    line_id=stream.line, camera_id=camera, last_seen_clock=self.started_at, expected=True
                )

    @property
    def streams_forgotten(self) -> int:
        """Streams dropped to stay within `max_streams` (the least recently seen), all rule kinds together."""
        return self._anomaly.evicted + self._silence.evicted + self._drift.forgotten + self._skipped.forgotten

    # ------------------------------------------------------------------ results

    def observe(self, result: InspectionResult, source: SourceRef | None = None) -> list[AlarmEvent]:
        """Feed one result (with where it was read from); returns the anomaly alarms it raises."""
        if not self._seen.add((result.camera_id, result.frame_id)):
            self.stats.duplicates += 1
            return []
        self.stats.observed += 1
        now = self._clock()
        partition = (source.topic, source.partition) if source is not None else None
        ref = (
            MaskRef(
                frame_id=result.frame_id,
                topic=source.topic,
                partition=source.partition,
                offset=source.offset,
                has_mask=result.mask is not None,
            )
            if source is not None
            else None
        )
        for rule in self.silence_rules:
            if rule.match.matches(result.line_id, result.camera_id, result.object_name):
                self._seen_by_silence(rule, result, now, partition)
        alarms: list[AlarmEvent] = self._skipped.observe(result, now, partition)
        self.stats.alarms["skipped"] += len(alarms)
        if result.verdict == "skipped":
            return alarms
        for rule in self.anomaly_rules:
            if rule.match.matches(result.line_id, result.camera_id, result.object_name):
                alarm = self._observe_anomaly(rule, result, ref, now, partition)
                if alarm is not None:
                    alarms.append(alarm)
        drift = self._drift.observe(result, ref, now, partition)
        self.stats.alarms["drift"] += len(drift)
        return alarms + drift

    def _observe_anomaly(
        self,
        rule: AnomalyRule,
        result: InspectionResult,
        ref: MaskRef | None,
        now: float,
        partition: Partition | None,
    ) -> AlarmEvent | None:
        key = (rule.name, result.line_id, result.camera_id, result.object_name)
        stream = self._anomaly.setdefault(key, lambda: _AnomalyStream(window=deque(maxlen=rule.debounce.of_last)))
        stream.partition = partition
        anomalous = result.score >= rule.threshold if rule.threshold is not None else result.verdict == "anomalous"
        stream.window.append(
            Observation(result.frame_id, result.score, anomalous, result.captured_at, ref, part_id_of(result))
        )
        if not anomalous:
            return None
        hits = [obs for obs in stream.window if obs.anomalous]
        if len(hits) < rule.debounce.anomalous:
            return None
        if stream.last_alarm_at is not None and now - stream.last_alarm_at < rule.cooldown_s:
            return None
        stream.last_alarm_at = now
        stream.window.clear()
        self.stats.alarms["anomaly"] += 1
        frame_ids = [obs.frame_id for obs in hits]
        threshold_text = f"score >= {rule.threshold:g}" if rule.threshold is not None else "verdict anomalous"
        return AlarmEvent(
            alarm_id=alarm_id_for(
                "anomaly", rule.name, result.line_id, result.camera_id, result.object_name, *frame_ids
            ),
            kind="anomaly",
            rule=rule.name,
            line_id=result.line_id,
            camera_id=result.camera_id,
            object_name=result.object_name,
            frame_ids=frame_ids,
            part_ids=[obs.part_id for obs in hits],
            scores=[obs.score for obs in hits],
            threshold=rule.threshold,
            anomalous_in_window=len(hits),
            window=rule.debounce.of_last,
            masks=[obs.ref for obs in hits if obs.ref is not None],
            first_seen=hits[0].captured_at,
            last_seen=hits[-1].captured_at,
            created_at=_utc(now),
            message=(
                f"{len(hits)} of the last {rule.debounce.of_last} frames of {result.line_id}/{result.camera_id}"
                f" ({result.object_name}) anomalous ({threshold_text}); peak score {max(o.score for o in hits):.3f}"
            ),
        )

    def _seen_by_silence(
        self, rule: SilenceRule, result: InspectionResult, now: float, partition: Partition | None
    ) -> None:
        camera = result.camera_id if rule.per == "camera" else None
        key = (rule.name, result.line_id, camera)
        stream = self._expected.get(key) or self._silence.setdefault(
            key, lambda: _SilenceStream(line_id=result.line_id, camera_id=camera, last_seen_clock=now)
        )
        stream.last_seen_clock = now
        stream.alarmed = False  # the silent spell (if any) is over
        stream.partition = partition
        stream.object_name = result.object_name
        stream.last_frame_id = result.frame_id
        stream.last_captured_at = result.captured_at
        if stream.first_captured_at is None:
            stream.first_captured_at = result.captured_at

    # ------------------------------------------------------------------ time

    def tick(self) -> list[AlarmEvent]:
        """Raise the silence alarms that are due now (call it regularly, e.g. after every poll)."""
        if not self.silence_rules:
            return []
        now = self._clock()
        rules = {rule.name: rule for rule in self.silence_rules}
        alarms: list[AlarmEvent] = []
        for (rule_name, _line, _camera), stream in [*self._expected.items(), *self._silence.items()]:
            rule = rules[rule_name]
            silent = now - stream.last_seen_clock
            if stream.alarmed or silent < rule.silent_for_s:
                continue
            if stream.last_alarm_at is not None and now - stream.last_alarm_at < rule.cooldown_s:
                continue
            stream.alarmed = True
            stream.last_alarm_at = now
            self.stats.alarms["silence"] += 1
            alarms.append(self._silence_alarm(rule, stream, now, silent))
        return alarms

    def _silence_alarm(self, rule: SilenceRule, stream: _SilenceStream, now: float, silent: float) -> AlarmEvent:
        what = f"{stream.line_id}/{stream.camera_id}" if stream.camera_id else f"line {stream.line_id}"
        if stream.last_frame_id is None:
            since = f"never@{stream.last_seen_clock:.3f}"
            message = f"no result from {what} since the alarm service started {silent:.0f} s ago (expected)"
        else:
            since = stream.last_frame_id
            message = f"no result from {what} for {silent:.0f} s (last frame {stream.last_frame_id})"
        return AlarmEvent(
            alarm_id=alarm_id_for("silence", rule.name, stream.line_id, stream.camera_id or "*", since),
            kind="silence",
            rule=rule.name,
            line_id=stream.line_id,
            camera_id=stream.camera_id,
            object_name=stream.object_name,
            frame_ids=[stream.last_frame_id] if stream.last_frame_id else [],
            silent_for_s=round(silent, 3),
            first_seen=stream.first_captured_at,
            last_seen=stream.last_captured_at,
            created_at=_utc(now),
            message=message,
        )

    # ------------------------------------------------------------------ rebalance

    def forget_partitions(self, partitions: Iterable[Partition]) -> int:
        """Drop learned state of streams last read from `partitions` (revoked in a rebalance).

        Their new owner evaluates them from now on; without this, this instance would report
        them silent. Streams listed as `expected` are kept. Returns how many were dropped.
        """
        gone = set(partitions)
        if not gone:
            return 0
        anomaly = [k for k, s in self._anomaly.items() if s.partition in gone]
        silence = [k for k, s in self._silence.items() if s.partition in gone and not s.expected]
        for k in anomaly:
            self._anomaly.pop(k)
        for k2 in silence:
            self._silence.pop(k2)
        return len(anomaly) + len(silence) + self._drift.forget_partitions(gone) + self._skipped.forget_partitions(gone)
