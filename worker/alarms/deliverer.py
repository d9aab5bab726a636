"""alarms topic -> MES webhook; refused or exhausted events -> alarms DLQ; each committed after either."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import CommitFailedError, KafkaError
from pydantic import ValidationError

from common.kafka import BrokerReachability, build_consumer, build_producer
from common.messages import dead_letter_error, dead_letter_record
from common.schemas import SourceRef, utc_now
from common.settings import LinewatchSettings
from worker.alarms.events import AlarmEvent
from worker.alarms.shared import PUBLISH_TIMEOUT_S, AlarmMetrics, AlarmPublishError, Heartbeats, close_clients
from worker.alarms.webhook import RetryPolicy, WebhookClient
from worker.stream.offsets import Checkpoint

log = logging.getLogger(__name__)


class MesDeliverer:
    """alarms topic -> MES webhook; refused or exhausted events -> alarms DLQ; commit after either."""

    def __init__(
        self,
        settings: LinewatchSettings,
        webhook: WebhookClient,
        *,
        consumer: KafkaConsumer | None = None,
        producer: KafkaProducer | None = None,
        metrics: AlarmMetrics | None = None,
        heartbeats: Heartbeats | None = None,
        reachability: BrokerReachability | None = None,
    ) -> None:
        self.settings = settings
        self.webhook = webhook
        self.heartbeats = heartbeats or Heartbeats()
        self.metrics = metrics or AlarmMetrics(None)
        kafka = settings.kafka
        worst_case_ms = int((webhook.policy.worst_case_s(webhook.timeout_s) + 60) * 1000)
        self.consumer = consumer or build_consumer(
            kafka,
            group_id=settings.alarms.webhook_group_id,
            # alarms raised before this group first joined must still reach the MES
            auto_offset_reset="earliest",
            client_id=f"{kafka.client_id}-alarms-mes",
            max_poll_interval_ms=max(300_000, worst_case_ms),
        )
        self.producer = producer or build_producer(kafka, client_id=f"{kafka.client_id}-alarms-mes")
        self.checkpoint = Checkpoint(reachability=reachability, name="MES deliverer")
        self.checkpoint.subscribe(self.consumer, [kafka.alarms_topic])

    def step(self, stop: threading.Event) -> int:
        """Deliver what one poll returns, one event at a time; returns how many were settled."""
        batch = self.consumer.poll(timeout_ms=500, max_records=20)
        settled = 0
        for partition, records in batch.items():
            for record in records:
                if stop.is_set() or not self._settle(partition, record, stop):
                    # stopped mid-way: rewind so the unsettled events are read again, in order
                    self.checkpoint.seek_back(partition, record.offset)
                    return settled
                settled += 1
        self.heartbeats.beat("mes_deliverer", time.time())
        return settled

    def _settle(self, partition: Any, record: Any, stop: threading.Event) -> bool:
        """Deliver or dead-letter one event, then commit it. False when stopped before either."""
        self.checkpoint.consumed(partition, record.offset)
        body: bytes = record.value or b""
        try:
            event = AlarmEvent.model_validate_json(body)
        except (ValidationError, ValueError) as exc:
            self._dead_letter(record, "invalid_event", f"not an AlarmEvent: {str(exc).splitlines()[0]}")
            self.metrics.deliveries.add(1, {"outcome": "invalid_event"})
        else:

            def on_attempt(_n: int, status: int | None, _text: str | None) -> None:
                self.metrics.attempts.add(1, {"status": "error" if status is None else f"{status // 100}xx"})

            outcome = self.webhook.deliver(body, event.alarm_id, kind=event.kind, stop=stop, on_attempt=on_attempt)
            if outcome.aborted:
                return False
            if outcome.delivered:
                log.info("alarm %s delivered to the MES (%d attempts)", event.alarm_id, outcome.attempts)
                self.metrics.deliveries.add(1, {"outcome": "delivered"})
            else:
                self._dead_letter(record, outcome.error_type or "refused", outcome.reason or "refused")
                self.metrics.deliveries.add(1, {"outcome": outcome.error_type or "refused"})
        self.checkpoint.done(partition, record.offset)
        try:
            self.checkpoint.commit([partition])
        except CommitFailedError as exc:
            log.warning("MES deliverer: commit failed after a rebalance (%s); the event may be delivered again", exc)
        return True

    def _dead_letter(self, record: Any, error_type: str, reason: str) -> None:
        error = dead_letter_error(
            "mes_webhook",
            error_type,
            reason,
            worker_id=self.settings.worker.worker_id,
            now=utc_now(),
            source=SourceRef(topic=record.topic, partition=record.partition, offset=record.offset),
        )
        key, value, headers = dead_letter_record(
            record.key, record.value, record.headers, error, self.settings.kafka.max_message_bytes
        )
        future = self.producer.send(self.settings.alarms.dlq_topic, key=key, value=value, headers=headers)
        try:
            future.get(timeout=PUBLISH_TIMEOUT_S)
        except KafkaError as exc:
            self.checkpoint.reachability.error()
            raise AlarmPublishError(
                f"could not dead-letter alarm at {record.topic}[{record.partition}]@{record.offset}"
            ) from exc
        self.checkpoint.reachability.ok()
        log.error("alarm at %s[%d]@%d dead-lettered: %s", record.topic, record.partition, record.offset, reason)

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.step(stop)

    def close(self) -> None:
        close_clients(self.consumer, self.producer)


def webhook_from_settings(settings: LinewatchSettings) -> WebhookClient | None:
    alarms = settings.alarms
    if not alarms.webhook_url:
        return None
    assert alarms.webhook_secret is not None  # enforced by AlarmSettings
    return WebhookClient(
        alarms.webhook_url,
        alarms.webhook_secret,
        timeout_s=alarms.webhook_timeout_s,
        policy=RetryPolicy(alarms.webhook_max_attempts, alarms.webhook_backoff_base_s, alarms.webhook_backoff_max_s),
        ca_file=alarms.webhook_ca_file,
    )
