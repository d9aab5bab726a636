"""The line's system state as the OPC UA server shows it: healthy, degraded or faulted.

- faulted: frames keep arriving but no worker has answered for `faulted_after_s`;
- degraded: results wait for this sink (lag above `degraded_lag`), or frames were dead-lettered
  within the last `faulted_after_s`;
- healthy otherwise.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Literal

from kafka import KafkaConsumer
from kafka.structs import TopicPartition

from common.kafka import connection_options
from common.settings import KafkaSettings

log = logging.getLogger(__name__)

SystemState = Literal["healthy", "degraded", "faulted"]


@dataclass(frozen=True)
class LineSignals:
    """Monotonic times of the last changes, and the sink's lag."""

    now: float
    last_result_at: float | None
    frames_grew_at: float | None
    dead_letters_grew_at: float | None
    lag: int


def system_state(signals: LineSignals, *, degraded_lag: int, faulted_after_s: float) -> tuple[SystemState, str]:
    """The state and the reason in words (pure)."""
    s = signals
    frames_waiting = s.frames_grew_at is not None and (s.last_result_at is None or s.frames_grew_at > s.last_result_at)
    if frames_waiting and s.now - (s.last_result_at or s.frames_grew_at or s.now) >= faulted_after_s:
        return "faulted", f"frames arrive but no worker answered for {faulted_after_s:g}s or more"
    if s.lag > degraded_lag:
        return "degraded", f"{s.lag} results wait for delivery (more than {degraded_lag})"
    if s.dead_letters_grew_at is not None and s.now - s.dead_letters_grew_at < faulted_after_s:
        return "degraded", "frames were dead-lettered recently"
    return "healthy", "results flow"


class TopicGrowth:
    """When the frames and dead-letter topics last grew (end offsets read with a group-less consumer)."""

    def __init__(self, kafka: KafkaSettings, consumer: Any = None) -> None:
        self.kafka = kafka
        self.consumer = consumer or KafkaConsumer(**connection_options(kafka), enable_auto_commit=False)
        self._ends: dict[str, int] = {}
        self.grew_at: dict[str, float] = {}

    def _end(self, topic: str) -> int | None:
        partitions = self.consumer.partitions_for_topic(topic)
        if not partitions:
            return None
        ends = self.consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
        return sum(ends.values())

    def poll(self) -> None:
        now = time.monotonic()
        for topic in (self.kafka.frames_topic, self.kafka.dlq_topic):
            try:
                end = self._end(topic)
            except Exception as exc:  # broker away: keep the last known times
                log.debug("end offsets of %s: %s", topic, exc)
                continue
            if end is None:
                continue
            if topic in self._ends and end > self._ends[topic]:
                self.grew_at[topic] = now
            self._ends[topic] = end

    def close(self) -> None:
        self.consumer.close()
