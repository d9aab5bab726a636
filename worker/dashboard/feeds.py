"""Kafka -> LiveState: the results feed (a consumer group per replica, from the end) and the
alarms feed (alarms of the last `alarms_lookback_s`, plus the whole acknowledgement/silence topic)."""

from __future__ import annotations

import logging
import threading
import time

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from pydantic import ValidationError

from common.kafka import build_consumer, connection_options, ensure_topics
from common.schemas import InspectionResult
from common.settings import LinewatchSettings
from worker.alarms.events import AlarmEvent
from worker.dashboard.alarm_state import parse_state_record
from worker.dashboard.state import LiveState

log = logging.getLogger("linewatch.dashboard")
LAG_INTERVAL_S = 2.0


class _SeekToEnd(ConsumerRebalanceListener):
    """A live view starts at the latest records, also after a restart with committed offsets."""

    def __init__(self) -> None:
        self.consumer: KafkaConsumer | None = None

    def on_partitions_revoked(self, revoked) -> None:
        pass

    def on_partitions_assigned(self, assigned) -> None:
        if self.consumer is not None and assigned:
            self.consumer.seek_to_end(*assigned)


def results_group(settings: LinewatchSettings) -> str:
    return f"{settings.dashboard.group_id}-{settings.dashboard.instance_id}"


def run_results_feed(settings: LinewatchSettings, state: LiveState, stop: threading.Event) -> None:
    ensure_topics(settings.kafka, [settings.kafka.results_topic])
    listener = _SeekToEnd()
    consumer = build_consumer(
        settings.kafka, group_id=results_group(settings), auto_offset_reset="latest", enable_auto_commit=True
    )
    listener.consumer = consumer
    consumer.subscribe([settings.kafka.results_topic], listener=listener)
    next_lag = 0.0
    try:
        while not stop.is_set():
            for tp, records in consumer.poll(timeout_ms=200).items():
                for record in records:
                    try:
                        state.add_result(InspectionResult.model_validate_json(record.value), tp.partition)
                    except (ValidationError, ValueError, TypeError) as exc:
                        log.warning(
                            "skipping a bad result at %s[%d]@%d: %s", tp.topic, tp.partition, record.offset, exc
                        )
            if time.monotonic() >= next_lag:
                next_lag = time.monotonic() + LAG_INTERVAL_S
                state.set_lag(_lag(consumer))
    finally:
        consumer.close()


def _lag(consumer: KafkaConsumer) -> dict[int, int]:
    assigned = list(consumer.assignment())
    if not assigned:
        return {}
    ends = consumer.end_offsets(assigned)
    return {tp.partition: max(0, ends[tp] - consumer.position(tp)) for tp in assigned}


def _partitions(consumer: KafkaConsumer, topic: str, stop: threading.Event) -> list[TopicPartition]:
    while not stop.is_set():
        partitions = consumer.partitions_for_topic(topic)
        if partitions:
            return [TopicPartition(topic, p) for p in sorted(partitions)]
        stop.wait(0.5)
    return []


def run_alarms_feed(settings: LinewatchSettings, state: LiveState, stop: threading.Event) -> None:
    alarms_topic, state_topic = settings.kafka.alarms_topic, settings.dashboard.state_topic
    ensure_topics(settings.kafka, [alarms_topic])
    consumer = KafkaConsumer(
        **connection_options(settings.kafka), group_id=None, enable_auto_commit=False, isolation_level="read_committed"
    )
    try:
        alarm_parts = _partitions(consumer, alarms_topic, stop)
        state_parts = _partitions(consumer, state_topic, stop)
        consumer.assign(alarm_parts + state_parts)
        consumer.seek_to_beginning(*state_parts)
        since_ms = int((time.time() - settings.dashboard.alarms_lookback_s) * 1000)
        found = consumer.offsets_for_times({tp: since_ms for tp in alarm_parts})
        for tp in alarm_parts:
            if found.get(tp) is None:
                consumer.seek_to_end(tp)
            else:
                consumer.seek(tp, found[tp].offset)
        while not stop.is_set():
            for tp, records in consumer.poll(timeout_ms=200).items():
                for record in records:
                    _apply(state, tp.topic == state_topic, record)
    finally:
        consumer.close()


def _apply(state: LiveState, is_state: bool, record) -> None:
    try:
        if is_state:
            key = (record.key or b"").decode("utf-8", "replace")
            state.apply_state(key, None if record.value is None else parse_state_record(record.value))
        elif record.value is not None:
            state.add_alarm(AlarmEvent.model_validate_json(record.value))
    except (ValidationError, ValueError) as exc:
        log.warning("skipping a bad record at %s@%d: %s", record.topic, record.offset, exc)


def start_feeds(settings: LinewatchSettings, state: LiveState, stop: threading.Event) -> list[threading.Thread]:
    threads = []
    for name, target in (("results", run_results_feed), ("alarms", run_alarms_feed)):
        thread = threading.Thread(target=_guarded, args=(target, settings, state, stop), name=f"dashboard-{name}")
        thread.daemon = True
        thread.start()
        threads.append(thread)
    return threads


def _guarded(target, settings: LinewatchSettings, state: LiveState, stop: threading.Event) -> None:
    """Keep a feed alive through broker outages: log, wait, start it again."""
    while not stop.is_set():
        try:
            target(settings, state, stop)
        except Exception:
            log.exception("dashboard feed %s failed; restarting in 2 s", target.__name__)
            stop.wait(2.0)
