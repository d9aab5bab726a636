"""The alarm evaluator under `kafka.processing_guarantee: exactly-once`, against the real broker."""

from __future__ import annotations

import threading
import uuid

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from common.kafka import build_producer, connection_options
from common.settings import AlarmSettings, KafkaSettings, LinewatchSettings, WorkerSettings
from tests.integration.test_alarm_service import committed_total, make_result, wait_until
from worker.alarms.config import parse_rules
from worker.alarms.events import AlarmEvent
from worker.alarms.service import AlarmPublishError, AlarmService

pytestmark = pytest.mark.integration


def alarms_read(kafka: KafkaSettings, isolation_level: str) -> list[AlarmEvent]:
    """Every alarm event on the topic up to its end, as a reader with `isolation_level` sees it."""
    consumer = KafkaConsumer(
        **connection_options(kafka), group_id=None, enable_auto_commit=False, isolation_level=isolation_level
    )
    try:
        tp = TopicPartition(kafka.alarms_topic, 0)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        end = consumer.end_offsets([tp])[tp]  # read_committed: the last stable offset
        records: list = []
        while consumer.position(tp) < end:
            for batch in consumer.poll(timeout_ms=300).values():
                records.extend(batch)
        return [AlarmEvent.model_validate_json(r.value) for r in records]
    finally:
        consumer.close()


def test_an_aborted_transaction_hides_its_alarm_and_the_restart_raises_it_once(kafka_broker, monkeypatch) -> None:
    suffix = uuid.uuid4().hex[:8]
    kafka = KafkaSettings(
        bootstrap_servers=kafka_broker.bootstrap,
        client_id=f"it-alarms-eos-{suffix}",
        results_topic=f"test.results.eos.{suffix}",
        alarms_topic=f"test.alarms.eos.{suffix}",
        partitions=1,
        processing_guarantee="exactly-once",
    )
    settings = LinewatchSettings(
        kafka=kafka,
        alarms=AlarmSettings(group_id=f"it-alarms-eos-{suffix}", auto_offset_reset="earliest", tick_interval_s=0.2),
        worker=WorkerSettings(worker_id=f"alarms-{suffix}"),
    )
    rules = parse_rules({"rules": [{"name": "each", "kind": "anomaly"}]})
    producer = build_producer(kafka)
    result = make_result("cam-1", 0, 0.97)
    producer.send(kafka.results_topic, key=b"cam-1", value=result.model_dump_json().encode()).get(timeout=30)
    producer.close()

    real_commit = KafkaProducer.commit_transaction

    def broker_gone(self):  # the alarm is sent inside the transaction; its commit fails
        raise KafkaError("commit failed (test)")

    monkeypatch.setattr(KafkaProducer, "commit_transaction", broker_gone)
    with pytest.raises(AlarmPublishError, match="aborted"):
        AlarmService(settings, rules).run(threading.Event())
    monkeypatch.setattr(KafkaProducer, "commit_transaction", real_commit)
    assert [a.frame_ids for a in alarms_read(kafka, "read_uncommitted")] == [[result.frame_id]]  # it was written
    assert alarms_read(kafka, "read_committed") == []  # ... in a transaction that was aborted
    assert committed_total(kafka, settings.alarms.group_id, kafka.results_topic) == 0

    service = AlarmService(settings, rules)  # the restart reads the result again, with fresh rule state
    stop = threading.Event()
    thread = threading.Thread(target=service.run, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_until(lambda: committed_total(kafka, settings.alarms.group_id, kafka.results_topic) == 1, 60, "the commit")
    finally:
        stop.set()
        thread.join(timeout=60)
    assert not thread.is_alive()
    committed = alarms_read(kafka, "read_committed")
    assert [a.frame_ids for a in committed] == [[result.frame_id]]  # once
