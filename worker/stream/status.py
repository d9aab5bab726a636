"""What the worker reports about itself: `ServiceStatus`, the readiness checks of /readyz and the
liveness checks of /healthz."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class ServiceStatus:
    """A snapshot for the health endpoint and tests."""

    worker_id: str
    running: bool
    models_loaded: bool
    broker_reachable: bool
    cache_degraded: bool
    assigned_partitions: tuple[tuple[str, int], ...]
    paused: bool
    waiting_frames: int
    uncommitted_messages: int
    inference_busy_s: float  # how long the batch now in the Inspector has been there; 0 when idle
    lag: dict[str, int]
    counters: dict[str, int]
    control_caught_up: bool = False  # the control topic was read to the end offsets seen at start
    control_scopes: int = 0  # scopes with a control record in force
    clock_skew: dict[str, dict[str, float]] = field(default_factory=dict)  # camera -> broker minus camera clock

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "assigned_partitions": [f"{t}:{p}" for t, p in self.assigned_partitions]}


def readiness_checks(status: ServiceStatus, inference_stuck: bool) -> dict[str, Any]:
    """/readyz of a stream worker: models loaded, control topic read, broker reachable, partitions assigned,
    device responsive."""
    return {
        "models_loaded": status.models_loaded,
        "control_caught_up": (status.control_caught_up, {"scopes": status.control_scopes}),
        "broker_reachable": status.broker_reachable,
        "partitions_assigned": (bool(status.assigned_partitions), status.as_dict()),
        "inference_responsive": (not inference_stuck, {"busy_s": status.inference_busy_s}),
    }


def liveness_checks(
    loop_age_s: float, loop_bound_s: float, device_busy_s: float, device_bound_s: float | None
) -> dict[str, Any]:
    """/healthz of a stream worker: its Kafka loop turned within `loop_bound_s`, and no batch has been
    in the device for longer than `device_bound_s` (`worker.inference_timeout_s`; None: not checked),
    whatever the queues hold. A failing check asks the orchestrator to restart the process."""
    return {
        "loop_turning": (loop_age_s <= loop_bound_s, {"since_s": round(loop_age_s, 3), "bound_s": loop_bound_s}),
        "device_responsive": (
            device_bound_s is None or device_busy_s <= device_bound_s,
            {"busy_s": round(device_busy_s, 3), "bound_s": device_bound_s},
        ),
    }


@runtime_checkable
class MonitoredCache(Protocol):
    """The part of the shared embedding cache (`RedisEmbeddingCache`) the service watches;
    the LRU-only cache (no Redis URL) has none of it."""

    @property
    def degraded(self) -> bool: ...

    def check(self) -> bool: ...

    def close(self) -> None: ...
