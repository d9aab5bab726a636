"""Health server over real HTTP on a free port."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from typing import Any

import pytest
from prometheus_client import CONTENT_TYPE_LATEST

from common.telemetry import setup_telemetry
from worker.stream.health import HealthServer, evaluate_readiness, start_health_server


def get(url: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers.items()), response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, dict(exc.headers.items()), exc.read()


class Status:
    def __init__(self) -> None:
        self.models_loaded = False
        self.broker_reachable = True
        self.partitions: list[int] = []

    def checks(self) -> dict[str, Any]:
        return {
            "models_loaded": self.models_loaded,
            "broker_reachable": self.broker_reachable,
            "partitions_assigned": (bool(self.partitions), self.partitions),
        }


def test_healthz_readyz_metrics_over_http() -> None:
    status = Status()
    telemetry = setup_telemetry("health-test", set_global=False)
    telemetry.metrics.frame_done("ok", 0.25)
    with HealthServer(0, status.checks, telemetry.prometheus_text, host="127.0.0.1") as server:
        assert server.port > 0
        code, _, body = get(server.url + "/healthz")
        assert code == 200 and json.loads(body) == {"status": "alive"}

        code, headers, body = get(server.url + "/readyz")
        assert code == 503 and headers["Content-Type"] == "application/json"
        data = json.loads(body)
        assert data["ready"] is False
        assert data["failed"] == ["models_loaded", "partitions_assigned"]
        assert data["checks"] == {"models_loaded": False, "broker_reachable": True, "partitions_assigned": False}

        status.models_loaded = True
        status.partitions = [0, 3]
        code, _, body = get(server.url + "/readyz")
        data = json.loads(body)
        assert code == 200 and data["ready"] is True and "failed" not in data
        assert data["details"] == {"partitions_assigned": [0, 3]}

        status.broker_reachable = False
        code, _, body = get(server.url + "/readyz")
        assert code == 503 and json.loads(body)["failed"] == ["broker_reachable"]

        code, headers, body = get(server.url + "/metrics")
        assert code == 200 and headers["Content-Type"] == CONTENT_TYPE_LATEST
        text = body.decode()
        assert "linewatch_frames_processed" in text and 'outcome="ok"' in text

        code, _, body = get(server.url + "/readyz", method="HEAD")
        assert code == 503 and body == b""
        code, _, body = get(server.url + "/nope")
        assert code == 404
    telemetry.shutdown()


def test_a_failing_check_is_not_ready_and_the_server_survives() -> None:
    def boom() -> dict[str, bool]:
        raise RuntimeError("status object gone")

    def bad_metrics() -> bytes:
        raise ValueError("exporter broke")

    with HealthServer(0, boom, bad_metrics, host="127.0.0.1") as server:
        code, _, body = get(server.url + "/readyz")
        assert code == 503
        assert json.loads(body)["error"] == "RuntimeError: status object gone"
        assert get(server.url + "/metrics")[0] == 500
        assert get(server.url + "/healthz")[0] == 200


def test_default_metrics_use_the_prometheus_client_registry() -> None:
    from prometheus_client import REGISTRY, Counter

    name = f"linewatch_health_test_{uuid.uuid4().hex[:8]}"
    counter = Counter(name, "registered by test_health", registry=REGISTRY)
    try:
        counter.inc(3)
        with HealthServer(0, lambda: {"ok": True}, host="127.0.0.1") as server:
            code, headers, body = get(server.url + "/metrics")
        assert code == 200 and headers.get("Content-Type", "").startswith("text/plain")
        assert f"{name}_total 3.0".encode() in body  # what was registered by default is what is served
    finally:
        REGISTRY.unregister(counter)


def test_no_checks_is_a_wiring_bug_not_ready() -> None:
    ready, body = evaluate_readiness(lambda: {})
    assert not ready and body["failed"] == ["no_checks"]


def test_start_health_server_disabled_without_port() -> None:
    assert start_health_server(None, lambda: {"x": True}) is None
    server = start_health_server(0, lambda: {"x": True}, host="127.0.0.1")
    assert server is not None
    try:
        assert get(server.url + "/readyz")[0] == 200
    finally:
        server.stop()
    with pytest.raises(RuntimeError):
        _ = server.port


def test_healthz_fails_when_a_liveness_check_fails() -> None:
    alive = {"loop_turning": True, "device_responsive": (True, {"busy_s": 0.0})}
    with HealthServer(0, lambda: {"ok": True}, host="127.0.0.1", liveness=lambda: alive) as server:
        code, _, body = get(server.url + "/healthz")
        assert code == 200 and json.loads(body)["status"] == "alive"

        alive["device_responsive"] = (False, {"busy_s": 700.0})
        code, _, body = get(server.url + "/healthz")
        data = json.loads(body)
        assert code == 503 and data["status"] == "not alive" and data["failed"] == ["device_responsive"]
        assert data["details"]["device_responsive"] == {"busy_s": 700.0}
        assert get(server.url + "/readyz")[0] == 200  # readiness is its own question
