"""What a Kafka bench round measured: per-frame latencies, the fill/steady/drain split, frames/s."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from common.schemas import InspectionResult
from worker.bench.inprocess import percentile


def ms_between(later: datetime, earlier: datetime) -> float:
    return (later - earlier).total_seconds() * 1000.0


def latency_stats(values: list[float]) -> dict[str, float | None]:
    return {"p50": percentile(values, 50), "p99": percentile(values, 99), "max": percentile(values, 100)}


def fill_and_drain(got: list[tuple[InspectionResult, datetime]], assigned_at: datetime, batch: int) -> dict[str, Any]:
    """The backlog run split into its fixed costs and its steady rate.

    fill: assignment -> first result built (offset lookup, first fetch and decode, first batch
    inferred); drain: last result built -> received here (send, acks, this consumer's fetch);
    steady: the rate between the first and the last result, over the frames after the first batch.
    """
    if len(got) <= batch:
        return {}
    processed = sorted(result.processed_at for result, _ in got)
    last_arrival = max(arrival for _, arrival in got)
    return {
        "fill_ms": round(ms_between(processed[0], assigned_at), 1),
        "drain_ms": round(ms_between(last_arrival, processed[-1]), 1),
        "steady_ms_per_frame": round(ms_between(processed[-1], processed[0]) / (len(got) - batch), 2),
    }


def kafka_report(got: list[tuple[InspectionResult, datetime]], frames: int, wall_s: float) -> dict[str, Any]:
    verdicts: dict[str, int] = {}
    for result, _ in got:
        verdicts[result.verdict] = verdicts.get(result.verdict, 0) + 1
    ms_per_frame = wall_s * 1000.0 / max(1, len(got))
    return {
        "frames": frames,
        "results": len(got),
        "complete": len(got) == frames,
        "verdicts": verdicts,
        "wall_s": round(wall_s, 3),
        "ms_per_frame": round(ms_per_frame, 2),
        "frames_per_s": round(len(got) / wall_s, 2) if wall_s > 0 else None,
        "latency_ms_captured_to_arrival": latency_stats([ms_between(a, r.captured_at) for r, a in got]),
        "latency_ms_captured_to_processed": latency_stats([ms_between(r.processed_at, r.captured_at) for r, a in got]),
    }
