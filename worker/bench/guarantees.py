"""`linewatch-worker bench --through-kafka --guarantees`: exactly-once against at-least-once, side by side.

For every batch size one Kafka bench (`kafka_path.run_kafka_bench`) runs on the same broker,
Inspector and topics: one unmeasured round that takes the one-off costs, then `rounds` rounds of each
guarantee interleaved A B B A A B ..., so that a machine growing busier or quieter during the run
weighs on both alike. Per round: frames/s of the backlog drain (throughput-bound) and a paced run
(16 frames, one in flight: captured -> result received). Per guarantee: the median frames/s over its
rounds, the paced p50/p99 over all its paced frames and the publish thread's time per checkpoint.
The exactly-once row says what it costs against at-least-once: throughput lost in % (from the
medians, and per pair of neighbouring rounds: the machine's own drift), and latency added.
"""

from __future__ import annotations

from typing import Any

from common.settings import LinewatchSettings
from worker.bench.inprocess import percentile
from worker.bench.kafka_path import run_kafka_bench

AT_LEAST_ONCE, EXACTLY_ONCE = "at-least-once", "exactly-once"


def interleaved(rounds: int) -> list[str]:
    """A B B A A B ...: `rounds` rounds of each guarantee, each pair in alternating order."""
    order: list[str] = []
    for pair in range(rounds):
        order += [AT_LEAST_ONCE, EXACTLY_ONCE] if pair % 2 == 0 else [EXACTLY_ONCE, AT_LEAST_ONCE]
    return order


def run_guarantee_bench(
    settings: LinewatchSettings,
    frames: int,
    batches: list[int],
    width: int,
    height: int,
    rounds: int,
    emulate_frame_ms: float | None = None,
) -> dict[str, Any]:
    """`emulate_frame_ms`: instead of the models, an inspector that waits this long per frame of a batch."""
    rows: list[dict[str, Any]] = []
    for batch in batches:
        # a first, unmeasured round takes the one-off costs (first fetches, the transactional id's
        # first initialisation) off whichever guarantee would otherwise go first
        order = [EXACTLY_ONCE, *interleaved(rounds)]
        emulated = None if emulate_frame_ms is None else emulate_frame_ms * batch
        report = run_kafka_bench(
            settings, frames, batch, width, height, round_guarantees=order, emulate_batch_ms=emulated
        )
        measured = report["kafka_backlog_rounds"][1:]
        by_guarantee = {g: summary(measured, batch, g) for g in (AT_LEAST_ONCE, EXACTLY_ONCE)}
        add_cost(by_guarantee[EXACTLY_ONCE], by_guarantee[AT_LEAST_ONCE], measured)
        for row in by_guarantee.values():
            row["load_average_1m"] = report["load_average_1m"]
            rows.append(row)
    return {
        "method": f"per batch size, one Kafka bench of 1 + {2 * rounds} rounds (a backlog of {frames} frames, then 16 "
        "paced frames), the first one unmeasured, then the guarantees interleaved A B B A ...; frames/s = median "
        "over a guarantee's rounds",
        "inspector": "the models of the profile"
        if emulate_frame_ms is None
        else f"FixedTimeInspector: no models, waits {emulate_frame_ms:g} ms per frame of a batch",
        "cpu": report["cpu"],
        "rows": rows,
    }


def summary(rounds: list[dict[str, Any]], batch: int, guarantee: str) -> dict[str, Any]:
    mine = [r for r in rounds if r["guarantee"] == guarantee]
    paced = [ms for r in mine for ms in r["paced"]["arrival_latencies_ms"]]
    checkpoints = sum(r["worker_counters"].get("checkpoints", 0) for r in mine)
    checkpoint_ms = sum(r["worker_counters"].get("checkpoint_ms", 0) for r in mine)
    consumed = sum(r["worker_counters"].get("consumed", 0) for r in mine)
    return {
        "batch": batch,
        "guarantee": guarantee,
        "frames_per_s": percentile([r["frames_per_s"] for r in mine], 50),
        "frames_per_s_rounds": [r["frames_per_s"] for r in mine],
        "paced_latency_ms_p50": percentile(paced, 50),
        "paced_latency_ms_p99": percentile(paced, 99),
        # where the guarantee's own time goes: the publish thread settling a checkpoint (acks, or the
        # transaction's round trips) while the inference thread scores the next batch
        "checkpoint_ms_mean": round(checkpoint_ms / checkpoints, 1) if checkpoints else None,
        "frames_per_checkpoint": round(consumed / checkpoints, 1) if checkpoints else None,
        "complete": all(r["complete"] and r["paced"]["results"] == r["paced"]["frames"] for r in mine),
    }


def add_cost(exactly_once: dict[str, Any], at_least_once: dict[str, Any], rounds: list[dict[str, Any]]) -> None:
    """Throughput lost (%) and latency added (ms) by exactly-once against at-least-once.

    `throughput_cost_pct` compares the medians; `throughput_cost_pct_pairs` compares each pair of
    neighbouring rounds (one of each guarantee), which shows how far the machine's drift reaches.
    """
    fast, slow = at_least_once["frames_per_s"], exactly_once["frames_per_s"]
    if fast and slow:
        exactly_once["throughput_cost_pct"] = round(100.0 * (fast - slow) / fast, 1)
    pairs = []
    for first, second in zip(rounds[::2], rounds[1::2], strict=False):
        by = {first["guarantee"]: first["frames_per_s"], second["guarantee"]: second["frames_per_s"]}
        if by.get(AT_LEAST_ONCE) and by.get(EXACTLY_ONCE):
            pairs.append(round(100.0 * (by[AT_LEAST_ONCE] - by[EXACTLY_ONCE]) / by[AT_LEAST_ONCE], 1))
    exactly_once["throughput_cost_pct_pairs"] = pairs
    for q in ("p50", "p99"):
        a, b = at_least_once[f"paced_latency_ms_{q}"], exactly_once[f"paced_latency_ms_{q}"]
        if a is not None and b is not None:
            exactly_once[f"added_latency_ms_{q}"] = round(b - a, 1)
