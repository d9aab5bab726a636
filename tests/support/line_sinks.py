"""Helpers of the line-sink tests: results with part ids on a real topic, a sink loop in a thread,
and an MQTT subscriber that records what it received."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import timedelta

import paho.mqtt.client as mqtt

from common.kafka import build_producer
from common.schemas import InspectionResult, Traceability, Versions, utc_now
from common.settings import KafkaSettings


def make_result(n: int, *, camera: str = "cam-1", verdict: str = "ok", age_ms: float = 20.0) -> InspectionResult:
    captured = utc_now() - timedelta(milliseconds=age_ms)
    return InspectionResult(
        frame_id=f"frame-{camera}-{n}",
        camera_id=camera,
        line_id="line-1",
        object_name="washer",
        captured_at=captured,
        processed_at=captured + timedelta(milliseconds=age_ms / 2),
        score=0.9 if verdict == "anomalous" else 0.1,
        threshold=0.5,
        verdict=verdict,  # type: ignore[arg-type]
        versions=Versions(model_fingerprint="t", profile="tiny", prompt_set="p", threshold_version="static-0.5"),
        worker_id="test",
        traceability=Traceability(part_id=f"P-{n:04d}", recipe="R-1", lot="L-1", frame_counter=n),
    )


def publish_results(kafka: KafkaSettings, results: list[InspectionResult]) -> None:
    producer = build_producer(kafka)
    try:
        for result in results:
            producer.send(kafka.results_topic, key=result.camera_id.encode(), value=result.model_dump_json().encode())
        producer.flush(timeout=30)
    finally:
        producer.close()


class LoopThread:
    """`loop.run(stop)` in a thread; `stop()` sets the event, joins and closes the loop."""

    def __init__(self, loop) -> None:
        self.loop = loop
        self.event = threading.Event()
        self.thread = threading.Thread(target=loop.run, args=(self.event,), daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.event.set()
        self.thread.join(timeout=30)
        self.loop.close()


class Subscriber:
    """An MQTT subscriber on `topic` that keeps (topic, payload as JSON, retained flag) of every message."""

    def __init__(self, host: str, port: int, topic: str, *, ca_file: str | None = None, **auth: str) -> None:
        self.messages: list[tuple[str, dict, bool]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2)
        if auth:
            client.username_pw_set(auth["username"], auth["password"])
        if ca_file:
            client.tls_set(ca_certs=ca_file)
        client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        client.on_subscribe = lambda *_: self._subscribed.set()
        client.on_message = self._on_message
        client.connect(host, port)
        client.loop_start()
        self.client = client
        if not self._subscribed.wait(10):
            raise TimeoutError(f"no SUBACK for {topic}")

    def _on_message(self, _client, _userdata, message) -> None:
        with self._lock:
            self.messages.append((message.topic, json.loads(message.payload), bool(message.retain)))

    def snapshot(self) -> list[tuple[str, dict, bool]]:
        with self._lock:
            return list(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.1)
