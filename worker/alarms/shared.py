"""What the alarm evaluator and the MES deliverer share: metrics, heartbeats, errors, clients."""

from __future__ import annotations

import logging
import threading
from typing import Any

from kafka import KafkaConsumer
from opentelemetry import metrics as metrics_api

log = logging.getLogger(__name__)

PUBLISH_TIMEOUT_S = 30.0


class AlarmPublishError(RuntimeError):
    """Alarm events could not be acknowledged by the broker: offsets stay uncommitted."""


class AlarmMetrics:
    def __init__(self, meter: metrics_api.Meter | None) -> None:
        meter = meter or metrics_api.get_meter("linewatch.alarms")
        self.results = meter.create_counter(
            "linewatch.alarms.results", unit="{result}", description="Results read by the alarm service, by outcome"
        )
        self.raised = meter.create_counter(
            "linewatch.alarms.raised", unit="{alarm}", description="Alarm events published, by kind and rule"
        )
        self.deliveries = meter.create_counter(
            "linewatch.alarms.webhook.deliveries", unit="{alarm}", description="MES deliveries by outcome"
        )
        self.attempts = meter.create_counter(
            "linewatch.alarms.webhook.attempts", unit="{request}", description="MES HTTP attempts by status class"
        )


class Heartbeats:
    """When each loop last finished a cycle (read by the health endpoint). Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._beats: dict[str, float] = {}

    def beat(self, loop: str, now: float) -> None:
        with self._lock:
            self._beats[loop] = now

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            return dict(self._beats)


def close_clients(*clients: Any) -> None:
    """Close Kafka clients, best effort; consumers without a final commit (only explicit ones,
    after the work is done)."""
    for client in clients:
        try:
            if isinstance(client, KafkaConsumer):
                client.close(autocommit=False)
            else:
                client.close()
        except Exception:  # noqa: BLE001 - closing is best effort
            log.debug("closing %r failed", client, exc_info=True)
