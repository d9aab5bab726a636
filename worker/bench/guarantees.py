"""`linewatch-worker bench --through-kafka --guarantees`: exactly-once against at-least-once, side by side.

For every batch size, the Kafka bench (`kafka_path.run_kafka_bench`) runs once per processing
guarantee on the same broker, one after the other. Per run: frames/s of the backlog drain
(throughput-bound; the median round), and the paced latency (one frame in flight,
captured -> result received) at p50 and p99. The exactly-once rows also say what they cost
against the at-least-once row of the same batch size: throughput lost in %, and latency added.
"""

from __future__ import annotations

from typing import Any

from common.settings import LinewatchSettings
from worker.bench.kafka_path import run_kafka_bench

GUARANTEES = ("at-least-once", "exactly-once")


def run_guarantee_bench(
    settings: LinewatchSettings, frames: int, batches: list[int], width: int, height: int, rounds: int
) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    for batch in batches:
        by_guarantee: dict[str, dict[str, Any]] = {}
        for guarantee in GUARANTEES:
            kafka = settings.kafka.model_copy(update={"processing_guarantee": guarantee})
            report = run_kafka_bench(settings.model_copy(update={"kafka": kafka}), frames, batch, width, height, rounds)
            by_guarantee[guarantee] = row = summary(report, batch, guarantee)
            rows.append(row)
        add_cost(by_guarantee["exactly-once"], by_guarantee["at-least-once"])
    return {
        "method": f"per batch size, the Kafka bench ({rounds} backlog rounds of {frames} frames, then 16 paced "
        "frames) once per guarantee on the same broker",
        "rows": rows,
    }


def summary(report: dict[str, Any], batch: int, guarantee: str) -> dict[str, Any]:
    ms_per_frame = report["kafka_ms_per_frame_median"]
    paced = report["kafka_paced_one_in_flight"]["latency_ms_captured_to_arrival"]
    return {
        "batch": batch,
        "guarantee": guarantee,
        "frames_per_s": round(1000.0 / ms_per_frame, 2) if ms_per_frame else None,
        "paced_latency_ms_p50": paced.get("p50"),
        "paced_latency_ms_p99": paced.get("p99"),
        "complete": all(r["complete"] for r in report["kafka_backlog_rounds"]),
        "load_average_1m": report["load_average_1m"],
        "worker_counters_last_round": report["worker_counters_last_round"],
    }


def add_cost(exactly_once: dict[str, Any], at_least_once: dict[str, Any]) -> None:
    """Throughput lost (%) and latency added (ms) by exactly-once against at-least-once."""
    fast, slow = at_least_once["frames_per_s"], exactly_once["frames_per_s"]
    if fast and slow:
        exactly_once["throughput_cost_pct"] = round(100.0 * (fast - slow) / fast, 1)
    for q in ("p50", "p99"):
        a, b = at_least_once[f"paced_latency_ms_{q}"], exactly_once[f"paced_latency_ms_{q}"]
        if a is not None and b is not None:
            exactly_once[f"added_latency_ms_{q}"] = round(b - a, 1)
