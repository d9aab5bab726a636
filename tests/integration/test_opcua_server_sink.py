"""The OPC UA server sink against a real Kafka broker, read by a real asyncua client: result nodes
with part ids, ResultReady events, users and anonymous access, the system state."""

from __future__ import annotations

import asyncio

import pytest
from asyncua import ua

from common.settings import KafkaSettings, LinewatchSettings
from infra._proc import free_ports
from tests.support.line_sinks import LoopThread, make_result, publish_results
from tests.support.opcua_reader import ResultReader
from worker.sinks.loop import SinkLoop
from worker.sinks.opcua_server import OpcUaServerSink
from worker.sinks.settings import OpcUaServerSettings, SinkCommonSettings

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
