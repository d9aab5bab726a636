"""The OPC UA server sink against a real Kafka broker, read by a real asyncua client: result nodes
with part ids, ResultReady events, users and anonymous access, the system state."""

from __future__ import annotations

import asyncio
import threading

import pytest
from asyncua import ua

from common.kafka import build_producer, ensure_topics
from common.settings import KafkaSettings, LinewatchSettings
from infra._proc import free_ports
from tests.support.line_sinks import LoopThread, make_result, publish_results
from tests.support.opcua_reader import ResultReader, self_signed
from worker.sinks.cli import watch_state
from worker.sinks.loop import SinkLoop
from worker.sinks.opcua_server import APPLICATION_URI, OpcUaServerSink
from worker.sinks.settings import OpcUaServerSettings, SinkCommonSettings, SinkSettings

pytestmark = pytest.mark.integration


def _endpoint() -> str:
    return f"opc.tcp://127.0.0.1:{free_ports(1)[0]}/linewatch/"


def test_results_reach_the_nodes_and_raise_result_ready(kafka_broker, topic_names):
    kafka = KafkaSettings(bootstrap_servers=kafka_broker.bootstrap, results_topic=topic_names("results"))
    settings = LinewatchSettings(kafka=kafka)
    endpoint = _endpoint()
    sink = OpcUaServerSink(OpcUaServerSettings(endpoint=endpoint, security_mode="None", users="mes:pa55"))
    loop = LoopThread(
        SinkLoop(
            settings,
            SinkCommonSettings(auto_offset_reset="earliest", late_after_ms=20_000, late_is_ng=True),
            sink,
            group_id="sink-opcua",
        )
    )

    async def scenario() -> None:
        async with ResultReader(endpoint, username="mes", password="pa55") as reader:
            publish_results(kafka, [make_result(1), make_result(2, verdict="anomalous"), make_result(3, age_ms=30_000)])
            await reader.wait_for_events(3)
            assert [e["PartId"] for e in reader.events] == ["P-0001", "P-0002", "P-0003"]
            assert [e["Verdict"] for e in reader.events] == ["OK", "NG", "NG"]  # the third is late, late = NG
            assert [e["Late"] for e in reader.events] == [False, False, True]
            nodes = await reader.read(
                "cam-1", "PartId", "ResultId", "ResultState", "Recipe", "FrameCounter", "ResultCount"
            )
            assert nodes == {
                "PartId": "P-0003",
                "ResultId": "frame-cam-1-3",
                "ResultState": 2,
                "Recipe": "R-1",
                "FrameCounter": 3,
                "ResultCount": 3,
            }
            assert await reader.state() == "healthy"
            sink.set_state("degraded", "test")
            assert await reader.state() == "degraded"

        with pytest.raises(ua.UaError):  # anonymous was not asked for
            async with ResultReader(endpoint):
                pass

    try:
        asyncio.run(scenario())
    finally:
        loop.stop()


def test_sign_and_encrypt_with_users(tmp_path):
    certificate, private_key = asyncio.run(self_signed(tmp_path, "server", APPLICATION_URI, server=True))
    endpoint = _endpoint()
    sink = OpcUaServerSink(
        OpcUaServerSettings(endpoint=endpoint, certificate=certificate, private_key=private_key, users="mes:pa55")
    )

    async def scenario() -> None:
        client_cert, client_key = await self_signed(tmp_path, "client", "urn:test:mes", server=False)
        security = {"certificate": client_cert, "private_key": client_key, "server_certificate": certificate}
        async with ResultReader(endpoint, security=security, username="mes", password="pa55") as reader:
            assert await reader.state() == "healthy"
        with pytest.raises(ua.UaError):  # the right user over no security: refused, the endpoint needs encryption
            async with ResultReader(endpoint, username="mes", password="pa55"):
                pass
        with pytest.raises(ua.UaError):  # encrypted but a wrong password
            async with ResultReader(endpoint, security=security, username="mes", password="nope"):
                pass

    try:
        asyncio.run(scenario())
    finally:
        sink.close()


def test_system_state_follows_the_line(kafka_broker, topic_names):
    kafka = KafkaSettings(
        bootstrap_servers=kafka_broker.bootstrap,
        frames_topic=topic_names("frames"),
        results_topic=topic_names("results"),
        dlq_topic=topic_names("dlq"),
    )
    settings = LinewatchSettings(kafka=kafka)
    ensure_topics(kafka, [kafka.frames_topic, kafka.dlq_topic, kafka.results_topic])
    endpoint = _endpoint()
    opcua = OpcUaServerSettings(
        endpoint=endpoint, security_mode="None", anonymous=True, faulted_after_s=2.0, state_interval_s=0.2
    )
    loop = LoopThread(
        SinkLoop(settings, SinkCommonSettings(auto_offset_reset="earliest"), OpcUaServerSink(opcua), group_id="s")
    )
    watcher = threading.Thread(
        target=watch_state, args=(loop.loop, settings, SinkSettings(opcua=opcua), loop.event), daemon=True
    )
    watcher.start()
    producer = build_producer(kafka)

    def send(topic: str) -> None:
        producer.send(topic, key=b"cam-1", value=b"frame")
        producer.flush(timeout=30)

    async def state_becomes(reader: ResultReader, wanted: str) -> None:
        for _ in range(300):
            if await reader.state() == wanted:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"SystemState never became {wanted}, still {await reader.state()}")

    async def scenario() -> None:
        async with ResultReader(endpoint) as reader:
            await asyncio.sleep(1.0)  # the watcher has read the topics' ends once
            send(kafka.frames_topic)  # a frame, and no worker answers it
            await state_becomes(reader, "faulted")
            publish_results(kafka, [make_result(1)])
            await state_becomes(reader, "healthy")
            send(kafka.dlq_topic)
            await state_becomes(reader, "degraded")

    try:
        asyncio.run(scenario())
    finally:
        producer.close()
        loop.stop()
        watcher.join(timeout=10)


def test_camera_ids_past_max_cameras_delete_the_least_recently_seen_folder(caplog):
    from common.schemas import utc_now
    from worker.sinks.verdict import line_verdict

    endpoint = _endpoint()
    sink = OpcUaServerSink(OpcUaServerSettings(endpoint=endpoint, security_mode="None", anonymous=True, max_cameras=5))

    def send(camera: str, n: int) -> None:
        result = make_result(n, camera=camera)
        sink.deliver_result(line_verdict(result, now=utc_now()), result)

    async def scenario() -> None:
        async with ResultReader(endpoint) as reader:
            folder = reader.client.get_node(ua.NodeId("linewatch/Cameras", reader.ns))
            names = {(await child.read_browse_name()).Name for child in await folder.get_children()}
            assert names == {"cam-1", "fake-16", "fake-17", "fake-18", "fake-19"}
            assert (await reader.read("cam-1", "ResultCount"))["ResultCount"] == 20  # kept: it keeps sending
            with pytest.raises(ua.UaStatusCodeError):
                await reader.client.get_node(ua.NodeId("linewatch/fake-0/ResultCount", reader.ns)).read_value()

    try:
        for n in range(20):  # a producer inventing a camera id per frame, between frames of the real camera
            send("cam-1", n)
            send(f"fake-{n}", n)
        assert len(sink.result_count) == 5 and sink._cameras.evicted == 16
        assert "OPC UA cameras: more than 5 kept" in caplog.text
        asyncio.run(scenario())
    finally:
        sink.close()
