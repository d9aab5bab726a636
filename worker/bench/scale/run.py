"""`make bench-scale`: 1, 2, 4 and 8 workers on a real broker; rebalance pauses; a live scale-up.

    python -m worker.bench.scale.run --bootstrap-servers 127.0.0.1:9092 [--json out.json]

16 partitions, 16 cameras (camera i on partition i). Workers are `WorkerService` processes with
an emulated Inspector of fixed service time per batch (`worker.bench.scale.worker`). Phases:

1. **throughput**: for each worker count, a backlog drained (frames/s against N times one
   worker's rate), then a paced load at half the fleet's capacity (p50/p99 capture-to-result).
2. **rebalances**: 4 workers under a steady load, then a fifth joins, it leaves (SIGTERM), one
   is SIGKILLed and restarted at once under the same name, one is SIGKILLed for good. For each:
   how much longer than usual partitions went without results, the event's own worker's
   partitions apart from all the others; eager (range) vs cooperative-sticky vs cooperative-sticky
   with static membership.
3. **scale-up**: 2 -> 4 workers under load (cooperative-sticky, static): frames sent vs results.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from common.settings import KafkaSettings
from worker.bench.machine import cpu_model
from worker.bench.scale.rig import Cameras, Collector, Fleet, Topics
from worker.bench.scale.stats import drain_rate, latency_ms, pause

WARM_FPS = 0.5  # per camera, while workers start
# name -> (assignor, static membership, session timeout ms): a static member's session must
# outlast a restart (process start, models, warm-up), a dynamic member's only a missed heartbeat
MODES = {
    "eager": ("range", False, 10_000),
    "cooperative": ("cooperative-sticky", False, 10_000),
    "static": ("cooperative-sticky", True, 30_000),
}


@dataclass(frozen=True)
class Bench:
    bootstrap: str
    counts: tuple[int, ...] = (1, 2, 4, 8)
    partitions: int = 16
    service_ms: float = 250.0
    batch: int = 8
    drain_s: float = 8.0  # how long the backlog takes at linear speed
    steady_fps: float = 4.0  # per camera, in the rebalance phase
    run_id: str = uuid.uuid4().hex[:8]

    @property
    def kafka(self) -> KafkaSettings:
        return KafkaSettings(bootstrap_servers=self.bootstrap, partitions=self.partitions)

    @property
    def worker_fps(self) -> float:
        """One worker's ceiling: full batches back to back."""
        return self.batch / (self.service_ms / 1000.0)

    @contextmanager
    def phase(self, name: str, mode: str) -> Iterator[tuple[Fleet, Cameras, Collector]]:
        topics = Topics(f"bench-scale.{self.run_id}.{name}")
        topics.create(self.kafka)
        assignor, static, session_timeout_ms = MODES[mode]
        fleet = Fleet(
            self.bootstrap,
            topics,
            f"bench-scale-{self.run_id}-{name}",
            assignor,
            static,
            self.partitions,
            self.service_ms,
            self.batch,
            session_timeout_ms,
        )
        cameras = Cameras(self.kafka, topics.frames, self.partitions)
        collector = Collector(self.kafka, topics.results, self.partitions)
        try:
            yield fleet, cameras, collector
        finally:
            cameras.close()
            fleet.close()
            collector.close()


def names(n: int, first: int = 0) -> list[str]:
    return [f"w{i}" for i in range(first, first + n)]


def throughput(bench: Bench, n: int) -> dict:
    with bench.phase(f"tp{n}", "static") as (fleet, cameras, collector):
        start(bench, fleet, cameras, collector, names(n))
        cameras.stop()
        collector.wait_for(set(cameras.sent), 30.0)
        per_camera = math.ceil(bench.drain_s * n * bench.worker_fps / bench.partitions)
        backlog = cameras.burst(per_camera)
        drained = collector.wait_for(backlog, 120.0)
        rate, whole = drain_rate(drained, trim=0.1), drain_rate(drained)
        paced_fps = 0.5 * n * bench.worker_fps / bench.partitions
        mark = time.time()
        cameras.pace(paced_fps)
        time.sleep(5.0)
        cameras.stop()
        paced_ids = {i for i in cameras.sent if i not in backlog}
        paced = [a for a in collector.wait_for(paced_ids, 30.0) if a.arrived >= mark]
        return {
            "workers": n,
            "backlog_frames": len(backlog),
            "backlog_results": len({a.frame_id for a in drained}),
            "frames_per_s": round(rate, 1),  # the middle 80% of the backlog
            "frames_per_s_whole_backlog": round(whole, 1),  # first to last result, fill and tail included
            "paced_load_fps": round(paced_fps * bench.partitions, 1),
            "latency_ms": latency_ms(paced),
        }


def start(bench: Bench, fleet: Fleet, cameras: Cameras, collector: Collector, workers: list[str]) -> None:
    """Start `workers` under a trickle of frames (a slow start builds no backlog) until they share
    every partition."""
    fleet.start(*workers)
    cameras.pace(WARM_FPS)
    if not collector.wait_stable(set(workers), bench.partitions, 180.0, window_s=3.0 / WARM_FPS):
        raise RuntimeError(f"{len(workers)} workers never shared the {bench.partitions} partitions")


def settle(collector: Collector, bench: Bench, workers: set[str], least_s: float) -> float:
    """Wait `least_s`, then until `workers` share all partitions, then 2 s more; returns the time."""
    time.sleep(least_s)
    collector.wait_stable(workers, bench.partitions, 120.0)
    time.sleep(2.0)
    return time.time()


def rebalances(bench: Bench, mode: str) -> dict:
    session_s = MODES[mode][2] / 1000.0
    with bench.phase(f"rb-{mode}", mode) as (fleet, cameras, collector):
        start(bench, fleet, cameras, collector, names(4))
        cameras.pace(bench.steady_fps)
        settle(collector, bench, set(names(4)), 3.0)
        report = {}

        def measure(event: str, worker: str, at: float, until: float) -> None:
            report[event] = pause(collector.snapshot(), bench.partitions, worker, at, until).as_dict()
            print(f"  {mode:<12} {event:<8} {report[event]}", file=sys.stderr)

        at = time.time()
        fleet.start("w4")
        measure("join", "w4", at, settle(collector, bench, set(names(5)), 0.0))
        at = time.time()
        fleet.terminate("w4")
        measure("leave", "w4", at, settle(collector, bench, set(names(4)), 0.0))
        at = time.time()
        fleet.kill("w3")
        fleet.start("w3")
        measure("restart", "w3", at, settle(collector, bench, set(names(4)), session_s + 1.0))
        at = time.time()
        fleet.kill("w2")
        measure("sigkill", "w2", at, settle(collector, bench, {"w0", "w1", "w3"}, session_s + 1.0))
        return report


def scale_up(bench: Bench) -> dict:
    with bench.phase("up", "static") as (fleet, cameras, collector):
        start(bench, fleet, cameras, collector, names(2))
        load_per_camera = 0.6 * 2 * bench.worker_fps / bench.partitions  # 60% of two workers
        cameras.pace(load_per_camera)
        settle(collector, bench, set(names(2)), 3.0)
        at = time.time()
        fleet.start("w2", "w3")
        until = settle(collector, bench, set(names(4)), 0.0)
        time.sleep(2.0)
        cameras.stop()
        sent = set(cameras.sent)
        arrived = collector.wait_for(sent, 60.0)
        unique = {a.frame_id for a in arrived}
        worst = max(
            (pause(collector.snapshot(), bench.partitions, w, at, until).others_max_s for w in ("w2", "w3")),
            default=0.0,
        )
        return {
            "load_fps": round(load_per_camera * bench.partitions, 1),
            "sent": len(sent),
            "results": len(unique),
            "lost": len(sent - unique),
            "duplicates": len(arrived) - len(unique),
            "kept_partitions_max_stall_s": round(worst, 2),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.bench.scale.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap-servers", default=os.environ.get("LINEWATCH_KAFKA__BOOTSTRAP_SERVERS"))
    parser.add_argument("--counts", default="1,2,4,8", help="worker counts of the throughput phase")
    parser.add_argument("--modes", default="eager,cooperative,static", help="rebalance phase modes")
    parser.add_argument("--service-ms", type=float, default=250.0, help="emulated inference time per batch")
    parser.add_argument("--json", help="also write the report here")
    args = parser.parse_args(argv)
    if not args.bootstrap_servers:
        parser.error("--bootstrap-servers (or LINEWATCH_KAFKA__BOOTSTRAP_SERVERS) is required")
    counts = tuple(int(c) for c in args.counts.split(",") if c)
    bench = Bench(args.bootstrap_servers, counts=counts, service_ms=args.service_ms)
    started = time.monotonic()
    report: dict = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "partitions": bench.partitions,
        "service_ms_per_batch": bench.service_ms,
        "batch": bench.batch,
        "one_worker_ceiling_fps": bench.worker_fps,
        "modes": {name: {"assignor": a, "static": st, "session_timeout_ms": ms} for name, (a, st, ms) in MODES.items()},
    }
    report["throughput"] = [throughput(bench, n) for n in counts]
    base = report["throughput"][0]["frames_per_s"] / counts[0] if counts else 0.0
    for row in report["throughput"]:
        row["vs_linear"] = round(row["frames_per_s"] / (base * row["workers"]), 2) if base else None
        print(f"  {row}", file=sys.stderr)
    report["rebalance_pause_s"] = {mode: rebalances(bench, mode) for mode in args.modes.split(",") if mode}
    report["scale_up_2_to_4"] = scale_up(bench)
    report["wall_s"] = round(time.monotonic() - started, 1)
    report["load_average_1m"] = round(os.getloadavg()[0], 2)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as out:
            out.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
