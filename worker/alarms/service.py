"""Kafka adapters of the alarm service.

Two loops, each with its own consumer group, run in one process:

1. `AlarmEvaluator` (group `alarms.group_id`, default `linewatch-alarms`) reads
   `linewatch.results`, feeds the `RuleEngine`, publishes the alarm events to
   `linewatch.alarms` (key = camera id, or line id) and only then commits the results
   offsets: at least once. Silence rules are evaluated after every poll
   (`alarms.tick_interval_s`).
2. `MesDeliverer` (group `alarms.webhook_group_id`, default `linewatch-alarms-mes`) reads
   `linewatch.alarms` and POSTs every event to the MES (`webhook.py`). It commits an event's
   offset once the MES accepted it, or once it was dead-lettered to `alarms.dlq_topic`
   (refused with a 4xx, or still failing after `webhook_max_attempts`). An MES outage
   therefore holds deliveries back (in order) instead of losing them; a slow MES never
   delays alarm evaluation.

Caveat: duplicate results are dropped by frame id only within the process (bounded LRU).
After a restart or a rebalance, results after the last committed offset are read again; the
rule engine starts from empty windows, so they may raise an alarm again. Anomaly alarm ids
are derived from rule + stream + triggering frame ids, so a re-raised identical alarm has
the same `Idempotency-Key` and the MES can drop it; the Kafka alarms topic may still hold
it twice.

Silence state is per process: run one alarm service replica (as compose does), or accept
that `expected` streams are watched by every replica.
"""
from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata
from opentelemetry import metrics as metrics_api
from pydantic import ValidationError

from common.kafka import build_consumer, build_producer, ensure_topics
from common.messages import dead_letter_error, dead_letter_record
from common.schemas import InspectionResult, SourceRef, utc_now
from common.settings import LinewatchSettings
from worker.alarms.config import RulesFile
from worker.alarms.events import AlarmEvent
from worker.alarms.rules import Clock, RuleEngine
from worker.alarms.webhook import RetryPolicy, WebhookClient

log = logging.getLogger(__name__)

KIND_HEADER = "lw-alarm-kind"
PUBLISH_TIMEOUT_S = 30.0


class AlarmPublishError(RuntimeError):
    """Alarm events could not be acknowledged by the broker: offsets stay uncommitted."""


def _commit_one(consumer: KafkaConsumer, topic: str, partition: int, offset: int) -> None:
    consumer.commit({TopicPartition(topic, partition): OffsetAndMetadata(offset + 1, "", -1)})


def tcp_reachable(bootstrap_servers: str, timeout_s: float = 1.0) -> bool:
    """True when a TCP connection to any bootstrap server opens (a cheap, thread-safe probe)."""
    for server in bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        host = host.strip("[]") or "127.0.0.1"
        try:
            with socket.create_connection((host, int(port or 9092)), timeout=timeout_s):
                return True
        except (OSError, ValueError):
            continue
    return False


class _AlarmMetrics:
    def __init__(self, meter: metrics_api.Meter | None) -> None:
        meter = meter or metrics_api.get_meter("linewatch.alarms")
        self.results = meter.create_counter(
            "linewatch.alarms.results", unit="{result}", description="Results read by the alarm service, by outcome"
        )
        self.raised = meter.create_counter(
            "linewatch.alarms.raised", unit="{alarm}", description="Alarm events published, by kind and rule"
        )
        self.deliveries = meter.create_counter(
            "linewatch.alarms.webhook.deliveries", unit="{alarm}", description="MES deliveries by outcome"
        )
        self.attempts = meter.create_counter(
            "linewatch.alarms.webhook.attempts", unit="{request}", description="MES HTTP attempts by status class"
        )


class _Status:
    """Thread-safe snapshot the health endpoint reads (the Kafka clients stay in their threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.assigned: set[tuple[str, int]] = set()
        self.heartbeat: dict[str, float] = {}

    def set_assigned(self, partitions: set[tuple[str, int]]) -> None:
        with self._lock:
            self.assigned = set(partitions)

    def beat(self, loop: str, now: float) -> None:
        with self._lock:
            self.heartbeat[loop] = now

    def snapshot(self) -> tuple[set[tuple[str, int]], dict[str, float]]:
        with self._lock:
            return set(self.assigned), dict(self.heartbeat)


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, evaluator: AlarmEvaluator) -> None:
        self._evaluator = evaluator

    def on_partitions_revoked(self, revoked: Any) -> None:
        parts = {(tp.topic, tp.partition) for tp in revoked}
        dropped = self._evaluator.engine.forget_partitions(parts)
        assigned, _ = self._evaluator.status.snapshot()
        self._evaluator.status.set_assigned(assigned - parts)
        log.info("alarm evaluator: %d partitions revoked, %d streams forgotten", len(parts), dropped)

    def on_partitions_assigned(self, assigned: Any) -> None:
        current, _ = self._evaluator.status.snapshot()
        self._evaluator.status.set_assigned(current | {(tp.topic, tp.partition) for tp in assigned})
        log.info("alarm evaluator: assigned %s", sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned))


class AlarmEvaluator:
    """results topic -> rules -> alarms topic; commits results offsets after the alarms are acked."""

    def __init__(
        self,
        settings: LinewatchSettings,
        engine: RuleEngine,
        *,
        consumer: KafkaConsumer | None = None,
        producer: KafkaProducer | None = None,
        metrics: _AlarmMetrics | None = None,
        status: _Status | None = None,
        on_alarm: Callable[[AlarmEvent], None] | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.status = status or _Status()
        self.metrics = metrics or _AlarmMetrics(None)
        self._on_alarm = on_alarm
        kafka = settings.kafka
        self.consumer = consumer or build_consumer(
            kafka,
            group_id=settings.alarms.group_id,
            auto_offset_reset=settings.alarms.auto_offset_reset,
            client_id=f"{kafka.client_id}-alarms",
        )
        self.producer = producer or build_producer(kafka, client_id=f"{kafka.client_id}-alarms")
        self.consumer.subscribe([kafka.results_topic], listener=_Rebalance(self))

    def step(self) -> list[AlarmEvent]:
        """One cycle: poll, evaluate, tick silence rules, publish, commit. Returns the alarms raised."""
        timeout_ms = int(self.settings.alarms.tick_interval_s * 1000)
        batch = self.consumer.poll(timeout_ms=timeout_ms, max_records=500)
        alarms: list[AlarmEvent] = []
        consumed = 0
        for records in batch.values():
            for record in records:
                consumed += 1
                alarms.extend(self._evaluate(record))
        alarms.extend(self.engine.tick())
        if alarms:
            self.publish(alarms)
        if consumed:
            try:
                self.consumer.commit()
            except CommitFailedError as exc:  # partitions moved during the cycle: they will be redelivered
                log.warning("alarm evaluator: commit failed after a rebalance (%s); results will be re-read", exc)
        self.status.beat("evaluator", time.time())
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
                record.topic, record.partition, record.offset, str(exc).splitlines()[0],
            )
            return []
        before = self.engine.stats.duplicates
        alarms = self.engine.observe(result, SourceRef(topic=record.topic, partition=record.partition, offset=record.offset))
        outcome = "duplicate" if self.engine.stats.duplicates > before else result.verdict
        self.metrics.results.add(1, {"outcome": outcome})
        return alarms

    def publish(self, alarms: list[AlarmEvent]) -> None:
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
            raise AlarmPublishError(f"could not publish {len(alarms)} alarm events to {topic}: {exc!r}") from exc
        for alarm in alarms:
            self.metrics.raised.add(1, {"kind": alarm.kind, "rule": alarm.rule})
            log.warning("ALARM %s %s [%s] %s", alarm.kind, alarm.rule, alarm.alarm_id, alarm.message)
            if self._on_alarm is not None:
                self._on_alarm(alarm)

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.step()

    def close(self) -> None:
        for client in (self.consumer, self.producer):
            try:
                if isinstance(client, KafkaConsumer):
                    client.close(autocommit=False)  # only explicit commits, after the work is done
                else:
                    client.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                log.debug("closing %r failed", client, exc_info=True)


class MesDeliverer:
    """alarms topic -> MES webhook; refused or exhausted events -> alarms DLQ; commit after either."""

    def __init__(
        self,
        settings: LinewatchSettings,
        webhook: WebhookClient,
        *,
        consumer: KafkaConsumer | None = None,
        producer: KafkaProducer | None = None,
        metrics: _AlarmMetrics | None = None,
        status: _Status | None = None,
    ) -> None:
        self.settings = settings
        self.webhook = webhook
        self.status = status or _Status()
        self.metrics = metrics or _AlarmMetrics(None)
        kafka = settings.kafka
        worst_case_ms = int((webhook.policy.worst_case_s(webhook.timeout_s) + 60) * 1000)
        self.consumer = consumer or build_consumer(
            kafka,
            kafka.alarms_topic,
            group_id=settings.alarms.webhook_group_id,
            # alarms raised before this group first joined must still reach the MES
            auto_offset_reset="earliest",
            client_id=f"{kafka.client_id}-alarms-mes",
            max_poll_interval_ms=max(300_000, worst_case_ms),
        )
        self.producer = producer or build_producer(kafka, client_id=f"{kafka.client_id}-alarms-mes")

    def step(self, stop: threading.Event) -> int:
        """Deliver what one poll returns, one event at a time; returns how many were settled."""
        batch = self.consumer.poll(timeout_ms=500, max_records=20)
        settled = 0
        for records in batch.values():
            for record in records:
                if stop.is_set() or not self._settle(record, stop):
                    # stopped mid-way: rewind so the unsettled events are read again, in order
                    self.consumer.seek(TopicPartition(record.topic, record.partition), record.offset)
                    return settled
                settled += 1
        self.status.beat("mes_deliverer", time.time())
        return settled

    def _settle(self, record: Any, stop: threading.Event) -> bool:
        """Deliver or dead-letter one event, then commit it. False when stopped before either."""
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
        try:
            _commit_one(self.consumer, record.topic, record.partition, record.offset)
        except CommitFailedError as exc:
            log.warning("MES deliverer: commit failed after a rebalance (%s); the event may be delivered again", exc)
        return True

    def _dead_letter(self, record: Any, error_type: str, reason: str) -> None:
        error = dead_letter_error(
            "mes_webhook", error_type, reason, worker_id=self.settings.worker.worker_id, now=utc_now(),
            source=SourceRef(topic=record.topic, partition=record.partition, offset=record.offset),
        )
        key, value, headers = dead_letter_record(
            record.key, record.value, record.headers, error, self.settings.kafka.max_message_bytes
        )
        future = self.producer.send(self.settings.alarms.dlq_topic, key=key, value=value, headers=headers)
        try:
            future.get(timeout=PUBLISH_TIMEOUT_S)
        except KafkaError as exc:
            raise AlarmPublishError(f"could not dead-letter alarm at {record.topic}[{record.partition}]@{record.offset}") from exc
        log.error("alarm at %s[%d]@%d dead-lettered: %s", record.topic, record.partition, record.offset, reason)

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.step(stop)

    def close(self) -> None:
        for client in (self.consumer, self.producer):
            try:
                if isinstance(client, KafkaConsumer):
                    client.close(autocommit=False)  # only explicit commits, after the work is done
                else:
                    client.close()
            except Exception:  # noqa: BLE001
                log.debug("closing %r failed", client, exc_info=True)


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


class AlarmService:
    """The evaluator in the calling thread, the MES deliverer (when a webhook is configured) in another."""

    def __init__(
        self,
        settings: LinewatchSettings,
        rules: RulesFile,
        *,
        clock: Clock = time.time,
        webhook: WebhookClient | None = None,
        meter: metrics_api.Meter | None = None,
        ensure: bool = True,
    ) -> None:
        self.settings = settings
        self.rules = rules
        self.status = _Status()
        self.metrics = _AlarmMetrics(meter)
        self.webhook = webhook if webhook is not None else webhook_from_settings(settings)
        if ensure:
            kafka = settings.kafka
            ensure_topics(kafka, [kafka.results_topic, kafka.alarms_topic, settings.alarms.dlq_topic])
        self.engine = RuleEngine(rules, clock=clock, dedup_entries=settings.alarms.dedup_entries)
        self.evaluator = AlarmEvaluator(settings, self.engine, metrics=self.metrics, status=self.status)
        self.deliverer = (
            MesDeliverer(settings, self.webhook, metrics=self.metrics, status=self.status) if self.webhook else None
        )
        self._failure: BaseException | None = None

    def readiness(self) -> dict[str, Any]:
        """Checks for /readyz: broker reachable, partitions assigned, loops alive."""
        assigned, beats = self.status.snapshot()
        now = time.time()
        stale_after = max(10.0, 5 * self.settings.alarms.tick_interval_s)
        checks: dict[str, Any] = {
            "rules_loaded": (bool(self.rules.rules), len(self.rules.rules)),
            "broker_reachable": tcp_reachable(self.settings.kafka.bootstrap_servers),
            "partitions_assigned": (bool(assigned), sorted(f"{t}[{p}]" for t, p in assigned)),
            "evaluator_alive": now - beats.get("evaluator", 0.0) < stale_after,
        }
        if self.deliverer is not None:
            # a delivery may legitimately retry for a while: allow the worst case
            assert self.webhook is not None
            allowance = self.webhook.policy.worst_case_s(self.webhook.timeout_s) + stale_after
            checks["mes_deliverer_alive"] = now - beats.get("mes_deliverer", 0.0) < allowance
        return checks

    def _deliver_thread(self, stop: threading.Event) -> None:
        assert self.deliverer is not None
        try:
            self.deliverer.run(stop)
        except BaseException as exc:  # noqa: BLE001 - reported by run()
            self._failure = exc
            log.exception("MES deliverer failed; stopping the alarm service")
            stop.set()

    def run(self, stop: threading.Event) -> None:
        """Run until `stop` is set or a loop fails (then raise its error after closing)."""
        thread = None
        if self.deliverer is not None:
            self.status.beat("mes_deliverer", time.time())
            thread = threading.Thread(target=self._deliver_thread, args=(stop,), name="alarms-mes", daemon=True)
            thread.start()
        try:
            self.evaluator.run(stop)
        except BaseException:
            stop.set()
            raise
        finally:
            if thread is not None:
                thread.join(timeout=30)
            self.close()
        if self._failure is not None:
            raise self._failure

    def close(self) -> None:
        self.evaluator.close()
        if self.deliverer is not None:
            self.deliverer.close()
