"""The whole line on one machine: the GigE Vision simulator -> producer (software trigger, one part
id per trigger) -> a tiny-profile worker -> the OPC UA server (read by a real asyncua client) and
the MQTT broker. Prints the latency from capture to the OPC UA node for each part."""

from __future__ import annotations

import asyncio
import os
import statistics
import threading
import time
import uuid
from datetime import timezone

import pytest

from common.settings import KafkaSettings, LinewatchSettings, ModelSettings, TelemetrySettings, WorkerSettings
from infra._proc import free_ports
from producer.cli import build_parser, run
from tests.support.line_sinks import LoopThread, Subscriber, wait_until
from tests.support.opcua_reader import ResultReader
from worker.sinks.loop import SinkLoop
from worker.sinks.mqtt import MqttSink
from worker.sinks.opcua_server import OpcUaServerSink
from worker.sinks.settings import MqttSinkSettings, OpcUaServerSettings, SinkCommonSettings
from worker.stream.service import WorkerService

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

PARTS = [f"PART-{n:03d}" for n in range(1, 7)]
SECONDS_BETWEEN_PARTS = 1.5  # a part every 1.5 s: the line is never queued, the latency is the path's own


def _settings(kafka_broker) -> LinewatchSettings:
    tag = uuid.uuid4().hex[:8]
    return LinewatchSettings(
        kafka=KafkaSettings(
            bootstrap_servers=kafka_broker.bootstrap,
            frames_topic=f"line.frames.{tag}",
            results_topic=f"line.results.{tag}",
            dlq_topic=f"line.dlq.{tag}",
            alarms_topic=f"line.alarms.{tag}",
            group_id=f"line-workers-{tag}",
            partitions=1,
        ),
        redis={"url": None},
        models=ModelSettings(profile="tiny", foreground="none"),
        worker=WorkerSettings(worker_id="line-worker", batch_max_frames=1, batch_max_wait_ms=0, heatmap_side=0),
        telemetry=TelemetrySettings(enabled=False),
    )


def _feed_parts(fifo: str, first_done: threading.Event) -> None:
    """The PLC's side: a part id per part; the first one warms the line up (its verdict is awaited)."""
    with open(fifo, "w", encoding="utf-8") as pipe:
        for n, part in enumerate(PARTS):
            pipe.write(part + "\n")
            pipe.flush()
            if n == 0:
                first_done.wait(120)
            time.sleep(SECONDS_BETWEEN_PARTS)


def test_camera_to_plc_and_mes(fake_camera_factory, kafka_broker, mosquitto_broker, tmp_path):
    camera = fake_camera_factory()
    settings = _settings(kafka_broker)
    common = SinkCommonSettings(auto_offset_reset="earliest", late_after_ms=10_000)
    endpoint = f"opc.tcp://127.0.0.1:{free_ports(1)[0]}/linewatch/"
    opcua = LoopThread(
        SinkLoop(
            settings,
            common,
            OpcUaServerSink(OpcUaServerSettings(endpoint=endpoint, security_mode="None", anonymous=True)),
            group_id="line-opcua",
        )
    )
    mqtt_settings = MqttSinkSettings(host=mosquitto_broker.host, port=mosquitto_broker.port, topic_prefix="plant")
    mqtt = LoopThread(SinkLoop(settings, common, MqttSink(mqtt_settings), group_id="line-mqtt", alarms=True))
    worker = WorkerService(settings)
    worker_stop = threading.Event()
    worker_thread = threading.Thread(target=worker.run, args=(worker_stop,), daemon=True)
    worker_thread.start()
    fifo = str(tmp_path / "part-ids")
    os.mkfifo(fifo)
    args = build_parser().parse_args(
        ["--source", f"genicam:{camera.address}", "--trigger", "software", "--part-ids", fifo]
        + ["--pixel-format", "BayerRG8", "--camera", "cam-a", "--line", "line-a", "--object", "washer"]
        + ["--recipe", "RCP-9", "--lot", "LOT-4"]
    )
    producer_code: list[int] = []
    producer = threading.Thread(target=lambda: producer_code.append(run(args, settings)), daemon=True)

    def line_ready() -> bool:
        status = worker.status()
        sinks_joined = all(loop.loop.checkpoint.assigned() for loop in (opcua, mqtt))
        return status.models_loaded and bool(status.assigned_partitions) and sinks_joined

    async def scenario() -> list[float]:
        async with ResultReader(endpoint) as reader:
            await asyncio.to_thread(wait_until, line_ready, 120, "the worker and the sinks to be ready")
            producer.start()
            first_done = threading.Event()
            feeder = threading.Thread(target=_feed_parts, args=(fifo, first_done), daemon=True)
            feeder.start()
            await reader.wait_for_events(1, timeout_s=120)
            first_done.set()
            await reader.wait_for_events(len(PARTS), timeout_s=120)
            feeder.join(timeout=10)
            assert [e["PartId"] for e in reader.events] == PARTS
            assert all(e["CameraId"] == "cam-a" and e["Verdict"] in ("OK", "NG") for e in reader.events)
            nodes = await reader.read("cam-a", "PartId", "Verdict", "Recipe", "Lot", "FrameCounter", "DeliveryTimeMs")
            assert (nodes["PartId"], nodes["Recipe"], nodes["Lot"]) == (PARTS[-1], "RCP-9", "LOT-4")
            assert nodes["FrameCounter"] > 0
            # capture (the host received the frame) -> result published -> OPC UA node written -> event at the client
            return [
                (
                    e["ProcessingTimeMs"],
                    e["DeliveryTimeMs"],
                    (e["received_at"] - e["CaptureTime"].replace(tzinfo=timezone.utc).timestamp()) * 1000.0,
                )
                for e in reader.events
            ]

    subscriber = Subscriber(mosquitto_broker.host, mosquitto_broker.port, "plant/#")
    try:
        latencies_ms = asyncio.run(scenario())
        producer.join(timeout=60)
        assert producer_code == [0]
        wait_until(
            lambda: any(p.get("part_id") == PARTS[-1] for _, p, _ in subscriber.snapshot()), 30, "the last verdict"
        )
    finally:
        subscriber.close()
        worker_stop.set()
        worker_thread.join(timeout=60)
        opcua.stop()
        mqtt.stop()

    retained = Subscriber(mosquitto_broker.host, mosquitto_broker.port, "plant/line-a/cam-a/verdict")
    try:
        wait_until(lambda: retained.snapshot(), 10, "the retained verdict")
        _, verdict, was_retained = retained.snapshot()[0]
        assert was_retained and verdict["part_id"] == PARTS[-1] and verdict["state"] in ("OK", "NG")
    finally:
        retained.close()

    steady = latencies_ms[1:]  # the first part also pays the worker's first inference (warm-up)
    print(f"\n{len(latencies_ms)} parts, 512x512 BayerRG8 frames, tiny profile on the CPU; ms from capture to:")
    for n, stage in enumerate(("result made by the worker", "OPC UA node written", "ResultReady at the client")):
        values = [row[n] for row in latencies_ms]
        median = statistics.median(v[n] for v in steady)
        print(f"  {stage:32s} first {values[0]:7.0f}, then median {median:5.0f}, max {max(v[n] for v in steady):5.0f}")
