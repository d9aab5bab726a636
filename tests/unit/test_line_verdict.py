"""The sinks' OK/NG view of a result: states, late flag, part fields; settings refuse insecure OPC UA."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.support.line_sinks import make_result
from worker.sinks.cli import main as sinks_main
from worker.sinks.health import LineSignals, system_state
from worker.sinks.mqtt import alarm_topic, verdict_topic
from worker.sinks.plc import CircuitBreaker
from worker.sinks.settings import OpcUaServerSettings, PlcClientSettings
from worker.sinks.verdict import line_verdict


def test_states_and_part_fields():
    ok = make_result(1)
    verdict = line_verdict(ok, now=ok.captured_at + timedelta(milliseconds=80))
    assert (verdict.state, verdict.result_state, verdict.part_id, verdict.product_id) == ("OK", 1, "P-0001", "R-1")
    assert verdict.delivery_ms == pytest.approx(80.0) and not verdict.late
    ng = make_result(2, verdict="anomalous")
    assert line_verdict(ng, now=ng.processed_at).state == "NG"
    skipped = make_result(3).model_copy(update={"verdict": "skipped"})
    assert line_verdict(skipped, now=skipped.processed_at).result_state == 0


@pytest.mark.parametrize(("late_is_ng", "state"), [(False, "OK"), (True, "NG")])
def test_a_late_verdict_is_flagged_and_optionally_ng(late_is_ng, state):
    result = make_result(1)
    verdict = line_verdict(
        result, now=result.captured_at + timedelta(milliseconds=501), late_after_ms=500, late_is_ng=late_is_ng
    )
    assert verdict.late and verdict.state == state
    on_time = line_verdict(result, now=result.captured_at + timedelta(milliseconds=499), late_after_ms=500)
    assert not on_time.late


def test_topics_keep_ids_in_one_level():
    assert verdict_topic("lw", "line/1", "cam+#") == "lw/line_1/cam__/verdict"
    assert alarm_topic("lw", "line-1", None) == "lw/line-1/_line/alarm"


def test_opcua_security_is_refused_unless_asked():
    with pytest.raises(ValueError, match="certificate"):
        OpcUaServerSettings().check()
    with pytest.raises(ValueError, match="anonymous"):
        OpcUaServerSettings(security_mode="None").check()
    OpcUaServerSettings(security_mode="None", anonymous=True).check()
    with pytest.raises(ValueError, match="endpoint"):
        PlcClientSettings().check()


def test_circuit_breaker_opens_and_half_opens():
    now = [0.0]
    breaker = CircuitBreaker(2, 5.0, clock=lambda: now[0])
    breaker.failure()
    assert breaker.allow()
    breaker.failure()
    assert not breaker.allow()
    now[0] = 5.0
    assert breaker.allow()  # one trial
    breaker.failure()
    assert not breaker.allow()
    now[0] = 10.0
    assert breaker.allow()
    breaker.success()
    assert breaker.allow() and breaker.failures == 0


def _state(**signals):
    base = {"now": 100.0, "last_result_at": 99.0, "frames_grew_at": 98.0, "dead_letters_grew_at": None, "lag": 0}
    return system_state(LineSignals(**(base | signals)), degraded_lag=10, faulted_after_s=30)[0]


def test_system_state():
    assert _state() == "healthy"
    assert _state(lag=11) == "degraded"
    assert _state(dead_letters_grew_at=80.0) == "degraded"
    assert _state(dead_letters_grew_at=60.0) == "healthy"  # longer ago than the window
    assert _state(last_result_at=60.0, frames_grew_at=95.0) == "faulted"  # frames, no answer for 35 s
    assert _state(last_result_at=None, frames_grew_at=65.0) == "faulted"
    assert _state(last_result_at=None, frames_grew_at=90.0) == "healthy"  # not long enough yet
    assert _state(last_result_at=60.0, frames_grew_at=50.0) == "healthy"  # quiet line, nothing waits


def test_sinks_cli_refuses_an_unsecured_server_nobody_asked_for(monkeypatch, capsys):
    monkeypatch.delenv("LINEWATCH_SINKS_CONFIG", raising=False)
    assert sinks_main(["opcua-server"]) == 2
    assert "opcua.certificate" in capsys.readouterr().err
