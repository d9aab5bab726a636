"""The PLC sink against a PLC's OPC UA server (a real asyncua server running the PLC side of the
handshake): typed writes, ResultReady / Ack, no result lost while the PLC is away, circuit breaker."""

from __future__ import annotations

import time

import pytest

from common.settings import KafkaSettings, LinewatchSettings
from infra._proc import free_ports
from tests.support.line_sinks import LoopThread, make_result, publish_results, wait_until
from tests.support.plc_sim import PlcSimulator
from worker.sinks.loop import SinkLoop
from worker.sinks.plc import PlcSink
from worker.sinks.settings import PlcClientSettings, SinkCommonSettings

pytestmark = pytest.mark.integration


def test_handshake_types_and_catch_up_after_the_plc_was_away(kafka_broker, topic_names):
    endpoint = f"opc.tcp://127.0.0.1:{free_ports(1)[0]}/plc/"
    plc = PlcSimulator(endpoint).start()
    kafka = KafkaSettings(bootstrap_servers=kafka_broker.bootstrap, results_topic=topic_names("results"))
    plc_settings = PlcClientSettings(
        endpoint=endpoint,
        security_mode="None",
        result_id_node="ns=2;s=Inspection.ResultId",
        part_id_node="ns=2;s=Inspection.PartId",
        score_node="ns=2;s=Inspection.Score",
        verdict_node="ns=2;s=Inspection.Verdict",
        verdict_type="Int16",
        result_ready_node="ns=2;s=Inspection.ResultReady",
        ack_node="ns=2;s=Inspection.Ack",
        ack_timeout_s=1.0,
        failures_to_open=2,
        open_for_s=1.0,
    )
    sink = PlcSink(plc_settings)
    loop = LoopThread(
        SinkLoop(
            LinewatchSettings(kafka=kafka),
            SinkCommonSettings(auto_offset_reset="earliest", retry_interval_s=0.2),
            sink,
            group_id="sink-plc",
        )
    )
    try:
        publish_results(kafka, [make_result(1), make_result(2, verdict="anomalous")])
        wait_until(lambda: len(plc.taken) == 2, 60, "two handshakes")
        assert [(t["PartId"], t["Verdict"]) for t in plc.taken] == [("P-0001", 1), ("P-0002", 2)]
        assert plc.taken[0]["types"] == {"Verdict": "Int16", "PartId": "String", "ResultId": "String", "Score": "Float"}

        plc.acking = False  # the PLC stops taking results: nothing may be lost or skipped
        publish_results(kafka, [make_result(3)])
        wait_until(lambda: sink.breaker.opened_at is not None, 30, "the circuit breaker to open")
        plc.stop()  # and then goes away entirely
        publish_results(kafka, [make_result(4)])
        time.sleep(2)
        plc.acking = True
        plc.start()
        wait_until(lambda: len(plc.taken) == 4, 60, "the held-back results")
        assert [t["PartId"] for t in plc.taken] == ["P-0001", "P-0002", "P-0003", "P-0004"]
    finally:
        loop.stop()
        plc.close()
