"""Pure arithmetic of the scale bench: throughput, latency percentiles and rebalance pauses.

Every result the bench collects is an `Arrival`: which partition (camera) it came from, which
worker produced it, when the frame was captured and when its result arrived (epoch seconds, one
clock: everything runs on one machine).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Arrival:
    partition: int
    worker: str
    captured: float
    arrived: float
    frame_id: str = ""


def percentile_ms(values_s: Sequence[float], q: float) -> float | None:
    return round(float(np.percentile(values_s, q)) * 1000.0, 1) if len(values_s) else None


def latency_ms(arrivals: Iterable[Arrival]) -> dict[str, float | None]:
    """p50 and p99 of capture-to-result, in milliseconds."""
    waits = [a.arrived - a.captured for a in arrivals]
    return {"p50": percentile_ms(waits, 50), "p99": percentile_ms(waits, 99)}


def drain_rate(arrivals: Sequence[Arrival], trim: float = 0.0) -> float:
    """Results per second while a backlog drains: between the first and the last arrival, or with
    `trim` (a fraction) between the arrivals that many in from either end, leaving out the fill
    (workers' first fetches) and the tail (workers that finish their share at different moments)."""
    times = sorted(a.arrived for a in arrivals)
    skip = int(len(times) * trim)
    times = times[skip : len(times) - skip] if skip else times
    if len(times) < 2 or times[-1] <= times[0]:
        return 0.0
    return (len(times) - 1) / (times[-1] - times[0])


def owners(arrivals: Iterable[Arrival], start: float, end: float) -> dict[int, str]:
    """Which worker produced each partition's last result in [start, end]."""
    last: dict[int, tuple[float, str]] = {}
    for a in arrivals:
        if start <= a.arrived <= end and a.arrived >= last.get(a.partition, (-1.0, ""))[0]:
            last[a.partition] = (a.arrived, a.worker)
    return {partition: worker for partition, (_, worker) in last.items()}


def stall_s(times: Sequence[float], event_at: float, until: float, baseline_s: float = 4.0) -> float:
    """How much longer than usual one partition went without a result around an event.

    `times`: that partition's arrival times, sorted. The longest gap from its last result
    before the event to `until` (a partition still silent at `until` counts up to it), less
    the partition's median gap in the `baseline_s` before the event (its normal cadence).
    """
    before = [t for t in times if event_at - baseline_s <= t <= event_at]
    usual = statistics.median(np.diff(before)) if len(before) >= 3 else 0.0
    window = [t for t in times if t <= event_at][-1:] + [t for t in times if event_at < t <= until]
    if not window:
        return until - event_at
    edges = [*window, until]
    longest = max(b - a for a, b in zip(edges, edges[1:], strict=False))
    return max(0.0, longest - usual)


@dataclass(frozen=True)
class Pause:
    """A rebalance event's effect: the worst stall of the partitions the event's worker held
    (before or after), of all the others, and how many partitions changed owner."""

    affected_max_s: float
    others_max_s: float
    others_p50_s: float
    moved: int

    def as_dict(self) -> dict[str, float | int]:
        return {
            "affected_max_s": round(self.affected_max_s, 2),
            "others_max_s": round(self.others_max_s, 2),
            "others_p50_s": round(self.others_p50_s, 2),
            "partitions_moved": self.moved,
        }


def pause(
    arrivals: Sequence[Arrival], partitions: int, worker: str, event_at: float, until: float, settle_s: float = 2.0
) -> Pause:
    """The `Pause` of an event at `event_at` concerning `worker` (joined, left, killed, restarted)."""
    before = owners(arrivals, event_at - settle_s, event_at)
    after = owners(arrivals, until - settle_s, until)
    by_partition: dict[int, list[float]] = {p: [] for p in range(partitions)}
    for a in arrivals:
        by_partition.setdefault(a.partition, []).append(a.arrived)
    stalls = {p: stall_s(sorted(times), event_at, until) for p, times in by_partition.items()}
    affected = {p for p in stalls if worker in (before.get(p), after.get(p))}
    others = [stalls[p] for p in stalls if p not in affected]
    return Pause(
        affected_max_s=max((stalls[p] for p in affected), default=0.0),
        others_max_s=max(others, default=0.0),
        others_p50_s=statistics.median(others) if others else 0.0,
        moved=sum(1 for p in stalls if before.get(p) != after.get(p)),
    )
