"""Live summary for `make demo`: reads the results and dead-letter topics and prints, every few seconds,
frames/s, verdict counts, p50/p95 latency (processed_at - captured_at) and the dead-letter count.

    python scripts/demo_summary.py --expect 40 --timeout 180

Reads both topics from the beginning with its own consumer group (never the worker's), and counts
only frames captured after it started (the demo's Kafka data survives between runs). Exits 0 once
`--expect` frames are accounted for (results + dead letters), 1 on timeout. Kafka settings come
from the environment (LINEWATCH_KAFKA__BOOTSTRAP_SERVERS ...), like every linewatch process.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from common.kafka import build_consumer, ensure_topics  # noqa: E402
from common.schemas import ERROR_HEADER, DeadLetterError, InspectionResult  # noqa: E402
from common.settings import LinewatchSettings  # noqa: E402


def _dead_letter_time(record) -> datetime | None:
    """When the frame was dead-lettered (the `lw-error` header's `time`), or None if unreadable."""
    for key, value in record.headers or []:
        if key == ERROR_HEADER and value:
            try:
                return DeadLetterError.model_validate_json(value).time
            except ValueError:
                return None
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--expect", type=int, default=40, help="stop after this many frames (results + dead letters)")
    parser.add_argument("--timeout", type=float, default=180.0, help="give up after this many seconds")
    parser.add_argument("--interval", type=float, default=3.0, help="seconds between summary lines")
    parser.add_argument(
        "--slack",
        type=float,
        default=5.0,
        help="also count frames captured this many seconds before the summary started",
    )
    args = parser.parse_args(argv)

    ks = LinewatchSettings().kafka
    since = datetime.now(timezone.utc) - timedelta(seconds=args.slack)
    ensure_topics(ks, [ks.results_topic, ks.dlq_topic])  # so subscribing does not wait for the worker
    consumer = build_consumer(
        ks,
        ks.results_topic,
        ks.dlq_topic,
        group_id=f"linewatch-demo-summary-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
    )
    print(
        f"demo summary: bootstrap {ks.bootstrap_servers}, results topic {ks.results_topic!r}, "
        f"dead letters {ks.dlq_topic!r}; waiting for {args.expect} frames (timeout {args.timeout:.0f} s)",
        flush=True,
    )

    seen: set[str] = set()
    verdicts: dict[str, int] = {}
    latencies: list[float] = []
    dead = 0
    last = None
    start = time.monotonic()
    next_print = start + args.interval

    def line(final: bool = False) -> str:
        done = len(seen) + dead
        # over the whole run (results come in batches, so a rate between arrivals would jump around)
        until = last if final and last is not None else time.monotonic()
        rate = len(seen) / (until - start) if until > start else 0.0
        p50 = f"{np.percentile(latencies, 50):.0f}" if latencies else "-"
        p95 = f"{np.percentile(latencies, 95):.0f}" if latencies else "-"
        counts = ", ".join(f"{k}={v}" for k, v in sorted(verdicts.items())) or "none yet"
        return (
            f"[{'final' if final else f'{time.monotonic() - start:5.0f}s'}] {done}/{args.expect} frames | "
            f"{rate:.2f} frames/s | verdicts: {counts} | latency ms p50 {p50} p95 {p95} | "
            f"dead letters {dead} | {ks.bootstrap_servers} {ks.results_topic}"
        )

    try:
        while len(seen) + dead < args.expect and time.monotonic() - start < args.timeout:
            for _tp, records in consumer.poll(timeout_ms=200).items():
                for record in records:
                    if record.topic == ks.dlq_topic:
                        captured = _dead_letter_time(record)
                        if captured is None or captured >= since:
                            dead += 1
                        continue
                    try:
                        result = InspectionResult.model_validate_json(record.value)
                    except ValueError:
                        continue
                    if result.captured_at < since or result.frame_id in seen:
                        continue  # an earlier demo's result, or a redelivery
                    seen.add(result.frame_id)
                    verdicts[result.verdict] = verdicts.get(result.verdict, 0) + 1
                    latencies.append((result.processed_at - result.captured_at).total_seconds() * 1000.0)
                    last = time.monotonic()
            if time.monotonic() >= next_print:
                print(line(), flush=True)
                next_print += args.interval
    finally:
        consumer.close()
    print(line(final=True), flush=True)
    complete = len(seen) + dead >= args.expect
    print(
        json.dumps(
            {
                "complete": complete,
                "results": len(seen),
                "dead_letters": dead,
                "verdicts": verdicts,
                "latency_ms_p50": round(float(np.percentile(latencies, 50)), 1) if latencies else None,
                "latency_ms_p95": round(float(np.percentile(latencies, 95)), 1) if latencies else None,
            }
        ),
        flush=True,
    )
    if not complete:
        print(f"demo summary: timed out after {args.timeout:.0f} s", file=sys.stderr)
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
