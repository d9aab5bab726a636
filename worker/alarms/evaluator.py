"""results topic -> rule engine -> alarms topic, committing results offsets only after the alarms are acked.

Under `kafka.processing_guarantee: exactly-once` one poll's alarms and its results offsets commit
in one Kafka transaction (`transactional_id` = prefix + `-alarms-` + worker id): a crash between
publishing and committing leaves nothing visible to `read_committed` readers, and the restart
evaluates those results again. A transaction that fails is aborted and the loop stops with
`AlarmPublishError` (the rule engine already saw the results; a restart reads them again with
fresh state), as an unacknowledged publish does under at-least-once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata
from pydantic import ValidationError

from common.kafka import BrokerReachability, build_consumer, build_producer
from common.schemas import InspectionResult, SourceRef
from common.settings import LinewatchSettings
from worker.alarms.events import AlarmEvent
from worker.alarms.rules import RuleEngine
from worker.alarms.shared import PUBLISH_TIMEOUT_S, AlarmMetrics, AlarmPublishError, Heartbeats, close_clients
from worker.stream.offsets import Checkpoint

log = logging.getLogger(__name__)

KIND_HEADER = "lw-alarm-kind"


class AlarmEvaluator:
    """results topic -> rules -> alarms topic; commits results offsets after the alarms are acked."""

    def __init__(
        self,
        settings: LinewatchSettings,
        engine: RuleEngine,
        *,
        consumer: KafkaConsumer | None = None,
        producer: KafkaProducer | None = None,
        metrics: AlarmMetrics | None = None,
        heartbeats: Heartbeats | None = None,
        reachability: BrokerReachability | None = None,
        on_alarm: Callable[[AlarmEvent], None] | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.heartbeats = heartbeats or Heartbeats()
        self.metrics = metrics or AlarmMetrics(None)
        self._on_alarm = on_alarm
        kafka = settings.kafka
        self.consumer = consumer or build_consumer(
            kafka,
            group_id=settings.alarms.group_id,
            auto_offset_reset=settings.alarms.auto_offset_reset,
            client_id=f"{kafka.client_id}-alarms",
        )
        self.exactly_once = kafka.processing_guarantee == "exactly-once"
        self.producer = producer or self._build_producer()
        self.checkpoint = Checkpoint(reachability=reachability, name="alarm evaluator")
        self.checkpoint.subscribe(self.consumer, [kafka.results_topic], on_revoked=self._revoked)

    def _build_producer(self) -> KafkaProducer:
        kafka = self.settings.kafka
        if not self.exactly_once:
            return build_producer(kafka, client_id=f"{kafka.client_id}-alarms")
        producer = build_producer(
            kafka,
            client_id=f"{kafka.client_id}-alarms",
            transactional_id=f"{kafka.transactional_id_prefix}-alarms-{self.settings.worker.worker_id}",
            transaction_timeout_ms=kafka.transaction_timeout_ms,
        )
        producer.init_transactions()  # fences an earlier process with the same id
        return producer

    def _revoked(self, partitions: set) -> None:  # rebalance listener
        dropped = self.engine.forget_partitions({(tp.topic, tp.partition) for tp in partitions})
        log.info("alarm evaluator: %d partitions revoked, %d streams forgotten", len(partitions), dropped)

    def step(self) -> list[AlarmEvent]:
        """One cycle: poll, evaluate, tick silence rules, publish, commit. Returns the alarms raised."""
        timeout_ms = int(self.settings.alarms.tick_interval_s * 1000)
        batch = self.consumer.poll(timeout_ms=timeout_ms, max_records=500)
        alarms: list[AlarmEvent] = []
        consumed: list[tuple[Any, int]] = []
        for partition, records in batch.items():
            for record in records:
                self.checkpoint.consumed(partition, record.offset)
                consumed.append((partition, record.offset))
                alarms.extend(self._evaluate(record))
        alarms.extend(self.engine.tick())
        if self.exactly_once:
            if alarms or consumed:
                self._transaction(alarms, consumed)
            self.heartbeats.beat("evaluator", time.time())
            return alarms
        if alarms:
            self.publish(alarms)  # AlarmPublishError: nothing of this cycle is done, nothing committed
        for partition, offset in consumed:
            self.checkpoint.done(partition, offset)
        if consumed:
            try:
                self.checkpoint.commit()
            except CommitFailedError as exc:  # partitions moved during the cycle: they will be redelivered
                log.warning("alarm evaluator: commit failed after a rebalance (%s); results will be re-read", exc)
        self.heartbeats.beat("evaluator", time.time())
        return alarms

    def _evaluate(self, record: Any) -> list[AlarmEvent]:
        if record.value is None:
            self.metrics.results.add(1, {"outcome": "empty"})
            return []
        try:
            result = InspectionResult.model_validate_json(record.value)
        except (ValidationError, ValueError) as exc:
            self.metrics.results.add(1, {"outcome": "invalid"})
            log.warning(
                "alarm evaluator: skipping unreadable result %s[%d]@%d: %s",
                record.topic,
                record.partition,
                record.offset,
                str(exc).splitlines()[0],
            )
            return []
        before = self.engine.stats.duplicates
        alarms = self.engine.observe(
            result, SourceRef(topic=record.topic, partition=record.partition, offset=record.offset)
        )
        outcome = "duplicate" if self.engine.stats.duplicates > before else result.verdict
        self.metrics.results.add(1, {"outcome": outcome})
        return alarms

    def _transaction(self, alarms: list[AlarmEvent], consumed: list[tuple[Any, int]]) -> None:
        """The alarms and the offsets after `consumed`, committed together (or AlarmPublishError)."""
        offsets: dict[Any, int] = {}
        for partition, offset in consumed:
            offsets[partition] = max(offset + 1, offsets.get(partition, 0))
        self.producer.begin_transaction()
        try:
            self.publish(alarms, announce=False)
            if offsets:
                metadata = {tp: OffsetAndMetadata(offset, "", -1) for tp, offset in offsets.items()}
                self.producer.send_offsets_to_transaction(metadata, self.consumer.group_metadata())
            self.producer.commit_transaction()
        except (KafkaError, AlarmPublishError) as exc:
            try:
                self.producer.abort_transaction()
            except KafkaError as abort_exc:  # the broker aborts it after transaction_timeout_ms
                log.warning("alarm evaluator: abort failed: %s", abort_exc)
            self.checkpoint.reachability.error()
            raise AlarmPublishError(f"transaction of {len(alarms)} alarm events aborted: {exc!r}") from exc
        self.checkpoint.committed(offsets)
        self._announce(alarms)

    def publish(self, alarms: list[AlarmEvent], announce: bool = True) -> None:
        topic = self.settings.kafka.alarms_topic
        futures = []
        try:
            for alarm in alarms:
                futures.append(
                    self.producer.send(
                        topic,
                        key=alarm.key,
                        value=alarm.model_dump_json().encode("utf-8"),
                        headers=[(KIND_HEADER, alarm.kind.encode("ascii"))],
                    )
                )
            self.producer.flush(timeout=PUBLISH_TIMEOUT_S)
            for future in futures:
                future.get(timeout=PUBLISH_TIMEOUT_S)
        except KafkaError as exc:
            self.checkpoint.reachability.error()
            raise AlarmPublishError(f"could not publish {len(alarms)} alarm events to {topic}: {exc!r}") from exc
        self.checkpoint.reachability.ok()
        if announce:
            self._announce(alarms)

    def _announce(self, alarms: list[AlarmEvent]) -> None:
        for alarm in alarms:
            self.metrics.raised.add(1, {"kind": alarm.kind, "rule": alarm.rule})
            log.warning("ALARM %s %s [%s] %s", alarm.kind, alarm.rule, alarm.alarm_id, alarm.message)
            if self._on_alarm is not None:
                self._on_alarm(alarm)

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.step()

    def close(self) -> None:
        close_clients(self.consumer, self.producer)
