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
    loop_age_s: float = 0.0  # since the poll loop last began a turn; 0 while starting or stopped

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


def liveness_checks(status: ServiceStatus, inference_timeout_s: float | None, loop_stall_s: float) -> dict[str, Any]:
    """/healthz of a stream worker, whatever the queues hold: no batch has been in the device for longer
    than `inference_timeout_s` (None: not checked), and the poll loop began a turn within that bound (at
    least `loop_stall_s`, the longest a turn may wait on the broker). A failing check asks for a restart."""
    loop_bound = max(inference_timeout_s or 0.0, loop_stall_s)
    busy = status.inference_busy_s
    return {
        "loop_turning": (status.loop_age_s <= loop_bound, {"since_s": status.loop_age_s, "bound_s": loop_bound}),
        "device_responsive": (
            inference_timeout_s is None or busy <= inference_timeout_s,
            {"busy_s": busy, "bound_s": inference_timeout_s},
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
