"""One sink, one consumer group: results (and alarms) -> a sink -> commit after the sink took them.

The same discipline as the alarm service's MES deliverer: an offset is committed only once its
message was delivered (or found unreadable and logged), so a sink that is stopped, or whose far
end is down, resumes where it stopped and delivers every result it missed. While the far end is
down the loop rewinds to the undelivered message and polls again (it stays in the group), so the
results keep their order.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from kafka.errors import CommitFailedError, KafkaError
from opentelemetry import metrics as metrics_api
from pydantic import ValidationError

from common.kafka import build_consumer, ensure_topics
from common.schemas import InspectionResult, utc_now
from common.settings import LinewatchSettings
from worker.alarms.events import AlarmEvent
from worker.sinks.settings import SinkCommonSettings
from worker.sinks.verdict import LineVerdict, line_verdict
from worker.stream.offsets import Checkpoint

log = logging.getLogger(__name__)


class SinkUnavailable(RuntimeError):
    """The far end (broker, server, PLC) did not take the message: it is retried, never skipped."""


class Sink(Protocol):
    name: str

    def deliver_result(self, verdict: LineVerdict, result: InspectionResult) -> None: ...

    def deliver_alarm(self, event: AlarmEvent) -> None: ...

    def close(self) -> None: ...


class SinkLoop:
    """Consumer group `group_id` on the results topic (and the alarms topic with `alarms=True`)."""

    def __init__(
        self,
        settings: LinewatchSettings,
        common: SinkCommonSettings,
        sink: Sink,
        *,
        group_id: str,
        alarms: bool = False,
        consumer: Any = None,
        clock: Callable[[], datetime] = utc_now,
        meter: metrics_api.Meter | None = None,
    ) -> None:
        kafka = settings.kafka
        self.settings = settings
        self.common = common
        self.sink = sink
        self.clock = clock
        self.topics = [kafka.results_topic] + ([kafka.alarms_topic] if alarms else [])
        if consumer is None:
            ensure_topics(kafka, self.topics)
            consumer = build_consumer(
                kafka,
                group_id=group_id,
                auto_offset_reset=common.auto_offset_reset,
                client_id=f"{kafka.client_id}-sink-{sink.name}",
            )
        self.consumer = consumer
        self.checkpoint = Checkpoint(name=f"{sink.name} sink")
        self.checkpoint.subscribe(consumer, self.topics)
        meter = meter or metrics_api.get_meter("linewatch.sinks")
        self._deliveries = meter.create_counter(
            "linewatch.sink.deliveries", unit="{message}", description="Messages a line sink handled, by outcome"
        )
        self.delivered = 0
        self.last_lag = 0  # after the last poll (the consumer belongs to the polling thread)
        self.last_result_at: float | None = None  # monotonic time of the last result read
        self._down_since: float | None = None

    def step(self, stop: threading.Event) -> int:
        """Deliver what one poll returns, in order; returns how many were settled."""
        batch = self.consumer.poll(timeout_ms=500, max_records=50)
        settled = 0
        for partition, records in batch.items():
            for record in records:
                if stop.is_set():
                    self.checkpoint.seek_back(partition, record.offset)
                    break
                self.checkpoint.consumed(partition, record.offset)
                try:
                    self._deliver(record)
                except SinkUnavailable as exc:
                    self._outage(exc)
                    self.checkpoint.seek_back(partition, record.offset)  # read it again after the wait
                    stop.wait(self.common.retry_interval_s)
                    break
                self._recovered()
                self.checkpoint.done(partition, record.offset)
                settled += 1
        if settled:
            self._commit()
        self.last_lag = self.lag()
        return settled

    def _deliver(self, record: Any) -> None:
        body = record.value or b""
        try:
            if record.topic == self.settings.kafka.results_topic:
                result = InspectionResult.model_validate_json(body)
            else:
                event = AlarmEvent.model_validate_json(body)
        except (ValidationError, ValueError) as exc:
            log.error(
                "%s sink: %s[%d]@%d is unreadable, skipped: %s",
                self.sink.name,
                record.topic,
                record.partition,
                record.offset,
                str(exc).splitlines()[0],
            )
            self._deliveries.add(1, {"sink": self.sink.name, "outcome": "unreadable"})
            return
        if record.topic == self.settings.kafka.results_topic:
            self.last_result_at = time.monotonic()
            verdict = line_verdict(
                result, now=self.clock(), late_after_ms=self.common.late_after_ms, late_is_ng=self.common.late_is_ng
            )
            self.sink.deliver_result(verdict, result)
            outcome = "late" if verdict.late else "delivered"
        else:
            self.sink.deliver_alarm(event)
            outcome = "alarm"
        self.delivered += 1
        self._deliveries.add(1, {"sink": self.sink.name, "outcome": outcome})

    def _outage(self, exc: SinkUnavailable) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.warning(
                "%s sink: not delivered (%s); retrying every %gs", self.sink.name, exc, self.common.retry_interval_s
            )

    def _recovered(self) -> None:
        if self._down_since is not None:
            log.info("%s sink: delivering again after %.1fs", self.sink.name, time.monotonic() - self._down_since)
            self._down_since = None

    def _commit(self) -> None:
        try:
            self.checkpoint.commit()
        except CommitFailedError as exc:
            log.warning(
                "%s sink: commit failed after a rebalance (%s); some results may be delivered again",
                self.sink.name,
                exc,
            )
        except KafkaError as exc:
            log.warning("%s sink: commit failed (%s); retried with the next one", self.sink.name, exc)

    def lag(self) -> int:
        """Results and alarms not yet delivered by this sink (on its assigned partitions)."""
        total = 0
        for tp in self.checkpoint.assigned():
            high = self.consumer.highwater(tp)
            if high is None:
                continue
            try:
                total += max(0, high - self.consumer.position(tp))
            except KafkaError:
                continue
        return total

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.step(stop)

    def close(self) -> None:
        try:
            self._commit()
        finally:
            try:
                self.consumer.close(autocommit=False)
            finally:
                self.sink.close()
