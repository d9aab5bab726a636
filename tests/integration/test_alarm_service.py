"""The alarm service against the real Kafka broker (infra/) and a real local HTTP MES.

Results are published to a results topic; the service must publish alarm events on the
alarms topic, deliver them signed to the MES webhook, dead-letter what the MES refuses, and
commit the results offsets. No mocks: everything is read back with real clients.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.admin import NewTopic
from pydantic import SecretStr

from common.kafka import build_admin, build_producer, connection_options
from common.schemas import ERROR_HEADER, DeadLetterError, InspectionResult, RleMask, Versions
from common.settings import AlarmSettings, KafkaSettings, LinewatchSettings
from tests.support.mes_server import MesServer
from worker.alarms.config import parse_rules
from worker.alarms.events import AlarmEvent
from worker.alarms.service import AlarmPublishError, AlarmService
from worker.alarms.webhook import IDEMPOTENCY_HEADER
from worker.stream.health import HealthServer

pytestmark = pytest.mark.integration

SECRET = "integration-mes-secret"
T0 = datetime(2024, 5, 1, 8, 0, tzinfo=timezone.utc)

RULES = {
    "rules": [
        {"name": "burst", "kind": "anomaly", "match": {"line": "line-1"}, "debounce": {"anomalous": 2, "of_last": 3}},
        {
            "name": "silent",
            "kind": "silence",
            "match": {"camera": "cam-silent"},
            "silent_for_s": 1.0,
            "expected": [{"line": "line-1", "camera": "cam-silent"}],
        },
    ]
}


def make_result(camera: str, n: int, score: float, frame_id: str | None = None) -> InspectionResult:
    anomalous = score >= 0.5
    return InspectionResult(
        frame_id=frame_id or f"{camera}-{n}",
        camera_id=camera,
        line_id="line-1",
        object_name="bottle",
        captured_at=T0 + timedelta(seconds=n),
        processed_at=T0 + timedelta(seconds=n, milliseconds=50),
        score=score,
        threshold=0.5,
        verdict="anomalous" if anomalous else "ok",
        mask=RleMask(size=(8, 8), counts="0@") if anomalous else None,
        versions=Versions(model_fingerprint="f", profile="tiny", prompt_set="p", threshold_version="static-0.5"),
        worker_id="it-worker",
    )


def read_all(kafka: KafkaSettings, topic: str, want: int, timeout_s: float = 30.0) -> list:
    consumer = KafkaConsumer(**connection_options(kafka), group_id=None, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [0])]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        records: list = []
        deadline = time.monotonic() + timeout_s
        while len(records) < want and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=300).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


def read_to_end(kafka: KafkaSettings, topic: str, timeout_s: float = 30.0) -> list:
    """Every record of `topic` up to its end offsets as of now (no waiting for more to arrive)."""
    consumer = KafkaConsumer(**connection_options(kafka), group_id=None, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [0])]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        end = consumer.end_offsets(partitions)
        records: list = []
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < end[tp] for tp in partitions):
            assert time.monotonic() < deadline, f"could not read {topic} to its end {end}"
            for batch in consumer.poll(timeout_ms=300).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


def record_at(kafka: KafkaSettings, topic: str, partition: int, offset: int):
    consumer = KafkaConsumer(**connection_options(kafka), group_id=None, enable_auto_commit=False)
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        consumer.seek(tp, offset)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=300).values():
                return batch[0]
        raise AssertionError(f"nothing at {topic}[{partition}]@{offset}")
    finally:
        consumer.close()


def committed_total(kafka: KafkaSettings, group_id: str, topic: str) -> int:
    """Sum of the group's committed offsets on `topic` (read without joining the group)."""
    consumer = KafkaConsumer(**connection_options(kafka), group_id=group_id, enable_auto_commit=False)
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        return sum(consumer.committed(TopicPartition(topic, p)) or 0 for p in partitions)
    finally:
        consumer.close(autocommit=False)


def wait_until(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_results_to_alarms_to_mes(kafka_broker) -> None:
    suffix = uuid.uuid4().hex[:8]
    kafka = KafkaSettings(
        bootstrap_servers=kafka_broker.bootstrap,
        client_id=f"it-alarms-{suffix}",
        results_topic=f"test.results.{suffix}",
        alarms_topic=f"test.alarms.{suffix}",
        partitions=2,
    )

    def mes_decides(body: bytes) -> int:
        return 422 if json.loads(body).get("camera_id") == "cam-refused" else 200

    with MesServer(SECRET, script=[503], decide=mes_decides) as mes:  # the first delivery fails once
        settings = LinewatchSettings(
            kafka=kafka,
            alarms=AlarmSettings(
                group_id=f"it-alarms-{suffix}",
                webhook_group_id=f"it-alarms-mes-{suffix}",
                dlq_topic=f"test.alarms.dlq.{suffix}",
                auto_offset_reset="earliest",
                tick_interval_s=0.2,
                webhook_url=mes.url,
                webhook_secret=SecretStr(SECRET),
                webhook_max_attempts=4,
                webhook_backoff_base_s=0.05,
                webhook_backoff_max_s=0.5,
                webhook_timeout_s=5.0,
            ),
        )
        service = AlarmService(settings, parse_rules(RULES))
        stop = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            try:
                service.run(stop)
            except BaseException as exc:  # noqa: BLE001 - reported below
                failure.append(exc)

        thread = threading.Thread(target=run, name="alarm-service", daemon=True)
        thread.start()
        try:
            producer = build_producer(kafka)
            sends = []
            results = [
                # cam-1: anomalous, ok, anomalous -> "burst" (2 of 3) at frame 2
                make_result("cam-1", 0, 0.91),
                make_result("cam-1", 1, 0.10),
                make_result("cam-1", 2, 0.88),
                # cam-2: one anomalous frame delivered twice (at least once) -> must not count twice
                make_result("cam-2", 0, 0.95),
                make_result("cam-2", 0, 0.95),
                make_result("cam-2", 1, 0.20),
                # cam-refused: raises an alarm the MES answers with 422 -> dead letter
                make_result("cam-refused", 0, 0.9),
                make_result("cam-refused", 1, 0.9),
            ]
            for r in results:
                sends.append(
                    producer.send(kafka.results_topic, key=r.camera_id.encode(), value=r.model_dump_json().encode())
                )
            producer.flush()
            for future in sends:
                future.get(timeout=30)
            producer.close()

            # burst(cam-1) + burst(cam-refused) + silence(cam-silent); cam-2 must stay quiet
            alarm_records = read_all(kafka, kafka.alarms_topic, want=3, timeout_s=60)
            events = [AlarmEvent.model_validate_json(r.value) for r in alarm_records]
            by_camera = {e.camera_id: e for e in events}
            assert sorted(by_camera) == ["cam-1", "cam-refused", "cam-silent"], events
            assert all(r.key == e.camera_id.encode() for r, e in zip(alarm_records, events))

            burst = by_camera["cam-1"]
            assert burst.kind == "anomaly" and burst.rule == "burst"
            assert burst.frame_ids == ["cam-1-0", "cam-1-2"] and burst.scores == [0.91, 0.88]
            assert (burst.anomalous_in_window, burst.window) == (2, 3)
            # the mask reference addresses the result message on the results topic
            ref = burst.masks[-1]
            assert ref.topic == kafka.results_topic and ref.has_mask
            source = InspectionResult.model_validate_json(record_at(kafka, ref.topic, ref.partition, ref.offset).value)
            assert source.frame_id == "cam-1-2" and source.mask is not None
            silence = by_camera["cam-silent"]
            assert silence.kind == "silence" and silence.rule == "silent" and silence.silent_for_s >= 1.0

            # MES: cam-1 and cam-silent accepted (one of them after a 503), cam-refused refused once
            got = mes.wait_for(4, timeout_s=60)
            accepted = {r.headers[IDEMPOTENCY_HEADER] for r in got if r.status == 200}
            assert accepted == {burst.alarm_id, silence.alarm_id}
            assert [r.status for r in got].count(503) == 1
            refused = [r for r in got if r.status == 422]
            assert len(refused) == 1  # no retry on a 4xx
            assert all(r.signature_ok for r in got)
            bodies = {r.headers[IDEMPOTENCY_HEADER]: r.body for r in got}
            assert {bodies[e.alarm_id] for e in events} == {r.value for r in alarm_records}  # same bytes as Kafka

            # the refused alarm is on the DLQ with the reason
            (dead,) = read_all(kafka, settings.alarms.dlq_topic, want=1, timeout_s=30)
            assert AlarmEvent.model_validate_json(dead.value).alarm_id == by_camera["cam-refused"].alarm_id
            error = DeadLetterError.model_validate_json(dict(dead.headers)[ERROR_HEADER])
            assert error.stage == "mes_webhook" and error.error_type == "refused"
            assert error.message.startswith("refused: HTTP 422")
            assert error.source is not None and error.source.topic == kafka.alarms_topic

            # results offsets are committed (after the alarms were acked), up to the end; and the
            # MES deliverer committed every alarm it delivered or dead-lettered
            wait_until(
                lambda: committed_total(kafka, settings.alarms.group_id, kafka.results_topic) == len(results),
                30,
                "results offsets committed",
            )
            wait_until(
                lambda: committed_total(kafka, settings.alarms.webhook_group_id, kafka.alarms_topic) == 3,
                30,
                "alarm offsets committed by the MES deliverer",
            )

            assert service.engine.stats.duplicates == 1
            # nothing else was raised: cam-2's duplicated anomalous frame counted once (1 of 3 < 2). Every
            # result is committed, so every alarm it raised is acknowledged: the topic's end says it all.
            assert len(read_to_end(kafka, kafka.alarms_topic)) == 3

            # /readyz of the alarm service, over real HTTP
            with HealthServer(0, service.readiness, host="127.0.0.1") as health:
                with urllib.request.urlopen(health.url + "/readyz", timeout=10) as response:
                    ready = json.loads(response.read())
            assert response.status == 200 and ready["ready"] is True
            assert set(ready["checks"]) == {
                "rules_loaded",
                "broker_reachable",
                "partitions_assigned",
                "evaluator_alive",
                "mes_deliverer_alive",
            }
            assert not failure
        finally:
            stop.set()
            thread.join(timeout=60)
        assert not thread.is_alive()
        assert not failure, failure


def test_results_are_not_committed_until_the_alarm_is_published(kafka_broker) -> None:
    """At least once: when the broker refuses the alarm event, the evaluator fails without committing;
    a restarted evaluator of the same group reads the result again and raises the alarm."""
    suffix = uuid.uuid4().hex[:8]
    kafka = KafkaSettings(
        bootstrap_servers=kafka_broker.bootstrap,
        client_id=f"it-alarms-alo-{suffix}",
        results_topic=f"test.results.alo.{suffix}",
        alarms_topic=f"test.alarms.tiny.{suffix}",
        partitions=1,
    )
    # an alarms topic whose messages can hold no alarm event: every publish is refused by the broker
    admin = build_admin(kafka)
    try:
        admin.create_topics(
            [
                NewTopic(
                    kafka.alarms_topic,
                    num_partitions=1,
                    replication_factor=1,
                    topic_configs={"max.message.bytes": "200"},
                )
            ]
        )
    finally:
        admin.close()
    alarms = AlarmSettings(group_id=f"it-alarms-alo-{suffix}", auto_offset_reset="earliest", tick_interval_s=0.2)
    rules = parse_rules({"rules": [{"name": "each", "kind": "anomaly"}]})

    producer = build_producer(kafka)
    result = make_result("cam-1", 0, 0.97)
    producer.send(kafka.results_topic, key=b"cam-1", value=result.model_dump_json().encode()).get(timeout=30)
    producer.close()

    failing = AlarmService(LinewatchSettings(kafka=kafka, alarms=alarms), rules)
    with pytest.raises(AlarmPublishError):
        failing.run(threading.Event())  # stops by itself: the publish fails
    assert committed_total(kafka, alarms.group_id, kafka.results_topic) == 0

    # restart with a usable alarms topic, same evaluator group: the result is read again
    fixed = kafka.model_copy(update={"alarms_topic": f"test.alarms.ok.{suffix}"})
    service = AlarmService(LinewatchSettings(kafka=fixed, alarms=alarms), rules)
    stop = threading.Event()
    thread = threading.Thread(target=service.run, args=(stop,), daemon=True)
    thread.start()
    try:
        (record,) = read_all(fixed, fixed.alarms_topic, want=1, timeout_s=60)
        assert AlarmEvent.model_validate_json(record.value).frame_ids == [result.frame_id]
        wait_until(
            lambda: committed_total(fixed, alarms.group_id, fixed.results_topic) == 1, 30, "commit after publish"
        )
    finally:
        stop.set()
        thread.join(timeout=60)
