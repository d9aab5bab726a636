"""The MQTT sink against a real Mosquitto and a real Kafka broker: retained verdicts with part
ids, alarms, credentials, and no result lost or repeated while the sink or the broker is down."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from common.kafka import build_producer
from common.settings import KafkaSettings, LinewatchSettings
from infra.line_devices import MosquittoBroker, self_signed_pem
from tests.support.line_sinks import LoopThread, Subscriber, make_result, publish_results, wait_until
from worker.alarms.events import AlarmEvent
from worker.sinks.loop import SinkLoop
from worker.sinks.mqtt import MqttSink
from worker.sinks.settings import MqttSinkSettings, SinkCommonSettings

pytestmark = pytest.mark.integration

COMMON = SinkCommonSettings(auto_offset_reset="earliest", retry_interval_s=0.5)


def _settings(kafka_broker, topic_names) -> LinewatchSettings:
    kafka = KafkaSettings(
        bootstrap_servers=kafka_broker.bootstrap,
        results_topic=topic_names("results"),
        alarms_topic=topic_names("alarms"),
        partitions=2,
    )
    return LinewatchSettings(kafka=kafka)


def _loop(settings, mqtt_settings, group="sink-mqtt") -> LoopThread:
    return LoopThread(SinkLoop(settings, COMMON, MqttSink(mqtt_settings), group_id=group, alarms=True))


def _verdicts(subscriber) -> Counter:
    return Counter(p["part_id"] for t, p, retained in subscriber.snapshot() if t.endswith("/verdict") and not retained)


def test_sink_stopped_while_the_line_goes_on_delivers_every_missed_result_once(
    kafka_broker, topic_names, mosquitto_broker
):
    settings = _settings(kafka_broker, topic_names)
    mqtt_settings = MqttSinkSettings(host=mosquitto_broker.host, port=mosquitto_broker.port, topic_prefix="lw")
    subscriber = Subscriber(mosquitto_broker.host, mosquitto_broker.port, "lw/#")
    sink = _loop(settings, mqtt_settings)
    try:
        publish_results(settings.kafka, [make_result(n) for n in range(3)])
        wait_until(lambda: len(_verdicts(subscriber)) == 3, 60, "the first three verdicts")
        sink.stop()

        # down while the line goes on: what it missed waits in Kafka, however long the outage
        missed = [make_result(n, verdict="anomalous" if n == 7 else "ok") for n in range(3, 9)]
        for result in missed:
            publish_results(settings.kafka, [result])
        sink = _loop(settings, mqtt_settings)
        wait_until(lambda: len(_verdicts(subscriber)) == 9, 60, "the missed verdicts")
        time.sleep(2)  # anything delivered twice would arrive now
        assert _verdicts(subscriber) == Counter({f"P-{n:04d}": 1 for n in range(9)})

        alarm = AlarmEvent(alarm_id="a-1", kind="anomaly", rule="r", line_id="line-1", camera_id="cam-1")
        producer = build_producer(settings.kafka)
        producer.send(settings.kafka.alarms_topic, key=alarm.key, value=alarm.model_dump_json().encode())
        producer.flush(timeout=30)
        producer.close()
        wait_until(lambda: any(t == "lw/line-1/cam-1/alarm" for t, _, _ in subscriber.snapshot()), 30, "the alarm")
    finally:
        sink.stop()
        subscriber.close()

    late_joiner = Subscriber(mosquitto_broker.host, mosquitto_broker.port, "lw/line-1/cam-1/verdict")
    try:
        wait_until(lambda: late_joiner.snapshot(), 10, "the retained verdict")
        topic, payload, retained = late_joiner.snapshot()[0]
        assert retained and payload["part_id"] == "P-0008" and payload["state"] == "OK"
        assert payload["recipe"] == "R-1" and payload["frame_counter"] == 8
    finally:
        late_joiner.close()
    nine = [p for t, p, r in subscriber.snapshot() if t.endswith("/verdict") and p["part_id"] == "P-0007"]
    assert nine[0]["state"] == "NG" and nine[0]["verdict"] == "anomalous"


def test_broker_down_holds_results_back_over_tls_with_credentials(kafka_broker, topic_names, tmp_path):
    settings = _settings(kafka_broker, topic_names)
    cert, key = self_signed_pem(tmp_path / "tls")
    broker = MosquittoBroker(users={"line": "s3cret"}, tls=(cert, key), work_dir=tmp_path / "mqtt").start()
    auth = {"username": "line", "password": "s3cret", "ca_file": str(cert)}
    mqtt_settings = MqttSinkSettings(
        host=broker.host,
        port=broker.port,
        topic_prefix="lw",
        username="line",
        password="s3cret",
        tls=True,
        ca_file=cert,
    )
    subscriber = Subscriber(broker.host, broker.port, "lw/#", **auth)
    sink = _loop(settings, mqtt_settings, group="sink-mqtt-auth")
    try:
        publish_results(settings.kafka, [make_result(0, camera="cam-2")])
        wait_until(lambda: len(_verdicts(subscriber)) == 1, 60, "the first verdict")
        subscriber.close()
        broker.stop()
        publish_results(settings.kafka, [make_result(n, camera="cam-2") for n in range(1, 5)])
        time.sleep(3)
        broker.start()
        subscriber = Subscriber(broker.host, broker.port, "lw/#", **auth)
        wait_until(lambda: len(_verdicts(subscriber)) == 4, 60, "the verdicts held back")
        assert set(_verdicts(subscriber)) == {f"P-{n:04d}" for n in range(1, 5)}
    finally:
        sink.stop()
        subscriber.close()
        broker.close()
