"""Liveness, readiness and metrics over plain HTTP (stdlib only).

`HealthServer` runs a `ThreadingHTTPServer` in a daemon thread and serves:

- `GET /healthz`  200 `{"status": "alive"}` while the process answers and every liveness check
                  passes (without a `liveness` callable: while the process answers at all), else
                  503 `{"status": "not alive", "checks": {...}, "failed": [...]}`.
- `GET /readyz`   200 `{"ready": true, "checks": {...}}` when every named check passes, else
                  503 `{"ready": false, "checks": {...}, "failed": ["broker_reachable", ...]}`.
                  A readiness callable that raises also gives 503 (`"error"` says why).
- `GET /metrics`  Prometheus text exposition (`prometheus_client.CONTENT_TYPE_LATEST`).

It knows nothing about the worker: the caller passes a `readiness` callable (and optionally a
`liveness` one) returning a mapping of check name -> bool (or -> `(bool, detail)`), and a
`metrics` callable returning the exposition bytes, typically `Telemetry.prometheus_text` from `common.telemetry`.
Without one, the default prometheus_client registry is served.

    server = HealthServer(port=settings.worker.health_port,
                          readiness=lambda: {"models_loaded": status.models_loaded,
                                             "broker_reachable": status.broker_reachable,
                                             "partitions_assigned": bool(status.assigned_partitions)},
                          metrics=telemetry.prometheus_text).start()
    ...
    server.stop()
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

log = logging.getLogger(__name__)

CheckValue = bool | tuple[bool, Any]
Readiness = Callable[[], Mapping[str, CheckValue]]
MetricsText = Callable[[], bytes]


def _default_metrics() -> bytes:
    return generate_latest(REGISTRY)


def evaluate_readiness(readiness: Readiness) -> tuple[bool, dict[str, Any]]:
    """Run the checks once; returns (ready, JSON-able body)."""
    try:
        raw = dict(readiness())
    except Exception as exc:  # a broken check must read as "not ready", never crash the server
        log.warning("readiness check raised: %r", exc)
        return False, {"ready": False, "checks": {}, "failed": ["readiness"], "error": f"{type(exc).__name__}: {exc}"}
    return _evaluate(raw)


def evaluate_liveness(liveness: Readiness | None) -> tuple[bool, dict[str, Any]]:
    """Run the liveness checks once; returns (alive, JSON-able body). No checks, or checks that
    raise, leave the process alive: a restart is for a check that fails."""
    try:
        raw = dict(liveness()) if liveness is not None else {}
    except Exception as exc:
        log.warning("liveness check raised: %r", exc)
        return True, {"status": "alive", "error": f"{type(exc).__name__}: {exc}"}
    if not raw:
        return True, {"status": "alive"}
    alive, body = _evaluate(raw)
    del body["ready"]
    return alive, {"status": "alive" if alive else "not alive", **body}


def _evaluate(raw: dict[str, CheckValue]) -> tuple[bool, dict[str, Any]]:
    checks: dict[str, Any] = {}
    details: dict[str, Any] = {}
    for name, value in raw.items():
        if isinstance(value, tuple):
            ok, detail = value
            checks[name] = bool(ok)
            details[name] = detail
        else:
            checks[name] = bool(value)
    failed = [name for name, ok in checks.items() if not ok]
    ready = bool(checks) and not failed  # no checks at all is not "ready": it is a wiring bug
    body: dict[str, Any] = {"ready": ready, "checks": checks}
    if details:
        body["details"] = details
    if failed:
        body["failed"] = failed
    if not checks:
        body["failed"] = ["no_checks"]
    return ready, body


class _Handler(BaseHTTPRequestHandler):
    server: _Server  # type: ignore[assignment]
    protocol_version = "HTTP/1.1"
    server_version = "linewatch-health/1"

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        self._dispatch(send_body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch(send_body=False)

    def _dispatch(self, send_body: bool) -> None:
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        if path == "/healthz":
            alive, body = evaluate_liveness(self.server.liveness)
            self._json(HTTPStatus.OK if alive else HTTPStatus.SERVICE_UNAVAILABLE, body, send_body)
        elif path == "/readyz":
            ready, body = evaluate_readiness(self.server.readiness)
            self._json(HTTPStatus.OK if ready else HTTPStatus.SERVICE_UNAVAILABLE, body, send_body)
        elif path == "/metrics":
            try:
                payload = self.server.metrics()
            except Exception as exc:
                log.exception("metrics export failed")
                self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"{type(exc).__name__}: {exc}"}, send_body)
                return
            self._send(HTTPStatus.OK, CONTENT_TYPE_LATEST, payload, send_body)
        else:
            self._json(
                HTTPStatus.NOT_FOUND,
                {"error": "not found", "endpoints": ["/healthz", "/readyz", "/metrics"]},
                send_body,
            )

    def _json(self, status: HTTPStatus, body: dict[str, Any], send_body: bool) -> None:
        self._send(status, "application/json", json.dumps(body, default=str).encode("utf-8"), send_body)

    def _send(self, status: HTTPStatus, content_type: str, payload: bytes, send_body: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if send_body:
            self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("health %s - " + format, self.address_string(), *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self, address: tuple[str, int], readiness: Readiness, metrics: MetricsText, liveness: Readiness | None
    ) -> None:
        self.readiness = readiness
        self.metrics = metrics
        self.liveness = liveness
        super().__init__(address, _Handler)


class HealthServer:
    """`/healthz`, `/readyz`, `/metrics` on `host:port` (port 0 picks a free one; see `.port`)."""

    def __init__(
        self,
        port: int,
        readiness: Readiness,
        metrics: MetricsText | None = None,
        host: str = "0.0.0.0",
        liveness: Readiness | None = None,
    ) -> None:
        self._address = (host, port)
        self._readiness = readiness
        self._liveness = liveness
        self._metrics = metrics or _default_metrics
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("health server is not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = self._address[0]
        if host in ("0.0.0.0", "", "::"):
            host = "127.0.0.1"
        return f"http://{host}:{self.port}"

    def start(self) -> HealthServer:
        if self._server is not None:
            return self
        self._server = _Server(self._address, self._readiness, self._metrics, self._liveness)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, name="linewatch-health", daemon=True
        )
        self._thread.start()
        log.info("health endpoints on %s (/healthz /readyz /metrics)", self.url)
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> HealthServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_health_server(
    port: int | None, readiness: Readiness, metrics: MetricsText | None = None, host: str = "0.0.0.0"
) -> HealthServer | None:
    """Start a server when `port` is configured (settings `worker.health_port`); None disables it."""
    if port is None:
        return None
    return HealthServer(port, readiness, metrics, host).start()
