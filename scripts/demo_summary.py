"""Live summary for `make demo`: reads the results and dead-letter topics and prints, every few seconds,
frames/s, verdict counts, p50/p95 latency (processed_at - captured_at) and the dead-letter count; and,
against the synthetic producer's truth (header `lw-synthetic-defect` on the frames topic), image AUROC,
the F1 of the verdicts and the best F1 over all thresholds (F1-max).

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
from common.messages import FrameHeaderError, parse_frame_meta  # noqa: E402
from common.schemas import ERROR_HEADER, DeadLetterError, InspectionResult  # noqa: E402
from common.settings import LinewatchSettings  # noqa: E402
from producer.sources.synthetic import DEFECT_HEADER  # noqa: E402
from worker.eval.metrics import image_metrics  # noqa: E402


def _truth(record) -> tuple[str, int] | None:
    """(frame id, 1 if a defect was drawn else 0) of a synthetic frame record; None without truth."""
    headers = dict(record.headers or [])
    if DEFECT_HEADER not in headers:
        return None
    try:
        return parse_frame_meta(record.headers).frame_id, int(headers[DEFECT_HEADER] == b"1")
    except FrameHeaderError:
        return None


def detection(truth: dict[str, int], scores: dict[str, float], verdicts: dict[str, str]) -> dict:
    """Image AUROC and F1-max of the raw scores, and F1 of the ok/anomalous verdicts, against the truth."""
    judged = [f for f in scores if f in truth]
    labels = np.array([truth[f] for f in judged])
    out: dict = {"frames_with_truth": len(judged), "defective": int(labels.sum()) if judged else 0}
    if judged and 0 < labels.sum() < len(labels):
        metrics = image_metrics(np.array([scores[f] for f in judged]), labels)
        out.update(image_auroc=round(metrics.auroc, 3), image_f1_max=round(metrics.f1_max, 3))
    decided = [f for f in judged if verdicts[f] in ("ok", "anomalous")]
    if decided:
        tp = sum(1 for f in decided if truth[f] and verdicts[f] == "anomalous")
        fp = sum(1 for f in decided if not truth[f] and verdicts[f] == "anomalous")
        fn = sum(1 for f in decided if truth[f] and verdicts[f] == "ok")
        out["verdict_f1"] = round(2 * tp / (2 * tp + fp + fn), 3) if tp + fp + fn else None
    return out


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
    ensure_topics(ks, [ks.results_topic, ks.dlq_topic, ks.frames_topic])  # so subscribing does not wait
    consumer = build_consumer(
        ks,
        ks.results_topic,
        ks.dlq_topic,
        ks.frames_topic,
        group_id=f"linewatch-demo-summary-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
    )
    print(
        f"demo summary: bootstrap {ks.bootstrap_servers}, results topic {ks.results_topic!r}, "
        f"dead letters {ks.dlq_topic!r}; waiting for {args.expect} frames (timeout {args.timeout:.0f} s)",
        flush=True,
    )

    seen: set[str] = set()
    truth: dict[str, int] = {}
    raw_scores: dict[str, float] = {}
    verdict_of: dict[str, str] = {}
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
                    if record.topic == ks.frames_topic:
                        known = _truth(record)
                        if known is not None:
                            truth[known[0]] = known[1]
                        continue
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
                    raw_scores[result.frame_id] = result.raw_score if result.raw_score is not None else result.score
                    verdict_of[result.frame_id] = result.verdict
                    latencies.append((result.processed_at - result.captured_at).total_seconds() * 1000.0)
                    last = time.monotonic()
            if time.monotonic() >= next_print:
                print(line(), flush=True)
                next_print += args.interval
    finally:
        consumer.close()
    print(line(final=True), flush=True)
    found = detection(truth, raw_scores, verdict_of)
    if "image_auroc" in found:
        print(
            f"detection against the synthetic truth ({found['frames_with_truth']} frames, {found['defective']} with a "
            f"drawn defect): image AUROC {found['image_auroc']:.3f}, F1-max {found['image_f1_max']:.3f}, "
            f"F1 of the verdicts {found.get('verdict_f1')}",
            flush=True,
        )
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
                "detection": found,
            }
        ),
        flush=True,
    )
    if not complete:
        print(f"demo summary: timed out after {args.timeout:.0f} s", file=sys.stderr)
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
