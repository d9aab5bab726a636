"""`linewatch-worker bench --through-kafka`: the Inspector in-process vs. the same Inspector behind Kafka.

Needs a reachable broker (LINEWATCH_KAFKA__BOOTSTRAP_SERVERS) and, for the prompt-embedding
cache, Redis (LINEWATCH_REDIS__URL; without a URL an in-process LRU is used). Every run
uses its own topics and consumer groups, so it never touches production topics or offsets.

One Inspector is built and warmed (prompt embeddings computed and cached), then `rounds`
times (default 3), alternating:

1. **in-process**: `inspector.inspect` over the synthetic frames, already decoded, in
   batches of `batch` (what a library user minimally does; `bench.run_batches`);
2. **through Kafka, throughput-bound**: all frames are published to the frames topic
   *before* a worker starts, then a `WorkerService` with the SAME Inspector
   (`batch_max_frames = batch`) drains the backlog while this process consumes the
   results topic. The worker is never starved, so frames/s is the pipeline's capacity.
   The round's `overhead_ms_per_frame` = its Kafka wall time per frame - the mean of the
   in-process runs just before and just after it (JPEG decode, header parsing, result
   building/encoding, produce with acks=all, commits); the headline is the median over
   rounds. That figure holds the run's fixed costs too (`fill_ms`: offset lookup, first
   fetch, decode and batch before the first result; `drain_ms`: the last result's way
   back); `steady_overhead_ms_per_frame` leaves them out: the rate between the first and
   the last result, what a continuously fed worker pays per frame. The clock starts when
   the worker has its partitions (group join excluded; reported apart). Latencies in this phase include the time a frame waited in the
   backlog, so they grow with the frame's position in it (the p50 is about half the run);

and, after the last round, one more in-process run and:

3. **through Kafka, paced**: a few frames sent one at a time, each after the previous
   result came back: the latency of an idle pipeline (includes the worker's
   `batch_max_wait_ms` wait for a batch to fill).

Both paths run in this one process with the same torch thread count (`torch_threads`,
`--torch-threads`). With as many torch threads as cores (the default), the worker's own
threads (poll + decode, publish, Kafka I/O) take CPU from inference; with one core left
free, as on a GPU worker whose device does the inference, they run beside it.
Where the overhead goes is reported two ways: `kafka_only_steps_cpu_ms` replays the
worker's per-frame steps that the in-process path does not have (parse + decode, build
the result, serialise it) on the bench frames; `cpu_ms_per_frame_by_thread` is the CPU
each thread of this process used during the backlog run. A broker and Redis on the same
machine take CPU too, and the machine's load average is reported next to the figures.

Latencies: `captured_at` is stamped when the frame is published; `processed_at` is stamped
by the worker when it built the result; "arrival" is when this process received the result.
"""

from __future__ import annotations

import os
import platform
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import torch

from common.codecs import encode_image
from common.kafka import build_consumer, ensure_topics
from common.messages import frame_headers
from common.schemas import InspectionResult
from common.settings import LinewatchSettings
from worker.bench.inprocess import percentile, run_batches, synthetic_frames, warm_up
from worker.bench.kafka_report import fill_and_drain, kafka_report, latency_stats, ms_between
from worker.bench.machine import cpu_model
from worker.inspection.measure import StageClock
from worker.inspection.types import Frame

RESULT_TIMEOUT_S = 300.0
ASSIGN_TIMEOUT_S = 60.0
OBJECT_NAME = "metal washer"


class _ResultCollector:
    """Consumes the results topic from the beginning with its own group; records arrival times."""

    def __init__(self, settings: LinewatchSettings, group_id: str):
        ks = settings.kafka
        self.consumer = build_consumer(
            ks, ks.results_topic, group_id=group_id, client_id=group_id, auto_offset_reset="earliest"
        )
        self.results: dict[str, tuple[InspectionResult, datetime]] = {}

    def collect(self, wanted: set[str], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not wanted <= self.results.keys() and time.monotonic() < deadline:
            records = self.consumer.poll(timeout_ms=100)
            arrived = datetime.now(timezone.utc)
            for batch in records.values():
                for record in batch:
                    result = InspectionResult.model_validate_json(record.value)
                    self.results.setdefault(result.frame_id, (result, arrived))

    def close(self) -> None:
        self.consumer.close()


def _cpu_by_thread_s() -> dict[str, float]:
    """CPU seconds so far of this process's threads, by Python thread name (Linux; else empty)."""
    names = {thread.native_id: thread.name for thread in threading.enumerate()}
    seconds: dict[str, float] = {}
    tasks = os.listdir("/proc/self/task") if os.path.isdir("/proc/self/task") else []
    for task in tasks:
        try:
            with open(f"/proc/self/task/{task}/schedstat") as stat:
                on_cpu_ns = int(stat.read().split()[0])
        except OSError:  # the thread ended meanwhile
            continue
        name = names.get(int(task), "native threads (torch)")
        seconds[name] = seconds.get(name, 0.0) + on_cpu_ns / 1e9
    return seconds


def _cpu_ms_per_frame(before: dict[str, float], after: dict[str, float], frames: int) -> dict[str, float]:
    used = {name: (after[name] - before.get(name, 0.0)) * 1000.0 / frames for name in after}
    return {name: round(ms, 2) for name, ms in sorted(used.items(), key=lambda item: -item[1]) if ms >= 0.01}


def _cpu_ms_each(step: Callable[[Any], Any], items: list[Any]) -> float:
    start = time.thread_time()
    for item in items:
        step(item)
    return round((time.thread_time() - start) * 1000.0 / len(items), 3)


def _kafka_only_steps(inspector: Any, frames: list[Frame], settings: LinewatchSettings) -> dict[str, float]:
    """CPU ms per frame of what the worker does beyond `inspect`, replayed on the bench frames."""
    from producer.publisher import build_frame_meta
    from worker.stream.intake import decode_frame, parse_meta
    from worker.stream.results import build_result, fit_result

    ws = settings.worker
    height, width = frames[0].image.shape[:2]
    meta = build_frame_meta(
        camera_id="bench-cam",
        line_id="bench-line",
        object_name=OBJECT_NAME,
        content_type="image/jpeg",
        width=width,
        height=height,
    )
    headers = frame_headers(meta)
    payloads = [encode_image(frame.image) for frame in frames]  # what FramePublisher sends

    def parse_and_decode(payload: bytes) -> None:
        decode_frame(parse_meta(headers), payload, max_bytes=ws.max_frame_bytes, max_pixels=ws.max_frame_pixels)

    def build(inspection: Any) -> InspectionResult:
        return build_result(meta, inspection, versions=inspector.versions, worker_settings=ws)

    inspections = inspector.inspect(frames[: ws.batch_max_frames])
    results = [build(inspection) for inspection in inspections]
    return {
        "parse_and_decode": _cpu_ms_each(parse_and_decode, payloads),
        "build_result": _cpu_ms_each(build, inspections),
        "serialise_and_fit": _cpu_ms_each(
            lambda r: fit_result(r, settings.kafka.max_message_bytes, b"bench-cam"), results
        ),
    }


def _publish(publisher: Any, rgb: Any) -> str:
    """Send one bench frame (not yet flushed); its frame id."""
    meta, _future = publisher.publish_array(rgb, camera_id="bench-cam", line_id="bench-line", object_name=OBJECT_NAME)
    return meta.frame_id


@dataclass
class _RunningWorker:
    service: Any  # WorkerService
    thread: threading.Thread
    stop_event: threading.Event

    def stop(self, timeout_s: float) -> bool:
        """Graceful stop (the worker commits and leaves the group); True if it stopped in time."""
        self.stop_event.set()
        self.thread.join(timeout_s)
        return not self.thread.is_alive()


def _drain_backlog(
    settings: LinewatchSettings,
    inspector: Any,
    cache: Any,
    publisher: Any,
    collector: _ResultCollector,
    rgbs: list[Any],
) -> tuple[dict[str, Any], _RunningWorker]:
    """Publish `rgbs` as a backlog, then start a worker (the bench's group) and time it draining them.

    The clock runs from partition assignment to the last result received. Returns the report
    and the worker, still running (the caller stops it).
    """
    from worker.stream.service import WorkerService

    frames, clock = len(rgbs), StageClock()
    with clock.stage("publish"):
        sent_ids = [_publish(publisher, rgb) for rgb in rgbs]
        publisher.flush(60.0)
    publish_s = clock.ms["publish"] / 1000.0
    if publisher.stats.sent < len(sent_ids):
        raise RuntimeError(f"not every frame reached the broker: {publisher.stats.summary()}")

    service, stop_event = WorkerService(settings, inspector, cache=cache), threading.Event()
    thread = threading.Thread(target=service.run, args=(stop_event,), name="lw-bench-worker", daemon=True)
    with clock.stage("group_join"):
        thread.start()
        deadline = time.monotonic() + ASSIGN_TIMEOUT_S
        while not service.status().assigned_partitions and time.monotonic() < deadline and thread.is_alive():
            time.sleep(0.005)
    cpu_before = _cpu_by_thread_s()
    assigned_at = datetime.now(timezone.utc)  # the drain's start: fill + steady + drain then fit in its wall time
    with clock.stage("drain"):
        collector.collect(set(sent_ids), RESULT_TIMEOUT_S)
    cpu_by_thread = _cpu_ms_per_frame(cpu_before, _cpu_by_thread_s(), frames)
    got = [collector.results[i] for i in sent_ids if i in collector.results]
    drain_s = clock.ms["drain"] / 1000.0
    report = kafka_report(got, frames, drain_s) | fill_and_drain(got, assigned_at, settings.worker.batch_max_frames)
    report |= {
        "group_join_s": round(clock.ms["group_join"] / 1000.0, 3),
        "publish_s": round(publish_s, 3),
        "publish_frames_per_s": round(frames / publish_s, 1),
        "cpu_ms_per_frame_by_thread": cpu_by_thread,
    }
    return report, _RunningWorker(service, thread, stop_event)


def run_kafka_bench(
    settings: LinewatchSettings,
    frames: int,
    batch: int,
    width: int,
    height: int,
    rounds: int = 3,
    round_guarantees: Sequence[str] = (),
    emulate_batch_ms: float | None = None,
) -> dict:
    """`rounds` backlog runs through Kafka, each between two in-process runs of the same frames.

    Each round's overhead is its Kafka ms/frame minus the mean of the in-process runs on either
    side of it; the headline is the median over rounds, which a busy neighbour moves least.
    `round_guarantees` (one `kafka.processing_guarantee` per round, `rounds` is then its length)
    runs each round's worker under its own guarantee and gives every round a paced run.
    `emulate_batch_ms` replaces the models with an inspector that only waits that long per batch
    (a stand-in for a GPU: the frames/s are then the Kafka path's, on a CPU left to it).
    """
    from producer.publisher import FramePublisher
    from worker.inspection.inspector import build_inspector
    from worker.inspection.redis_cache import build_embedding_cache

    rounds = len(round_guarantees) or rounds
    frames, batch, rounds = max(1, frames), max(1, batch), max(1, rounds)
    load_at_start = os.getloadavg()[0]
    run_id = uuid.uuid4().hex[:10]
    kafka = settings.kafka.model_copy(
        update={
            "frames_topic": f"linewatch.bench.{run_id}.frames",
            "results_topic": f"linewatch.bench.{run_id}.results",
            "dlq_topic": f"linewatch.bench.{run_id}.frames.dlq",
            "group_id": f"linewatch-bench-{run_id}",
            "client_id": f"linewatch-bench-{run_id}",
        }
    )
    worker = settings.worker.model_copy(
        update={
            "batch_max_frames": batch,
            "queue_max_frames": max(settings.worker.queue_max_frames, 2 * batch),
            "max_frame_age_s": None,  # the backlog is old by design: never skip it
            "health_port": None,
            "worker_id": f"bench-{run_id}",
        }
    )
    settings = settings.model_copy(update={"kafka": kafka, "worker": worker})
    ensure_topics(kafka, [kafka.frames_topic, kafka.results_topic, kafka.dlq_topic])

    in_frames = synthetic_frames(frames, width, height)
    rgbs = [frame.image for frame in in_frames]

    cache = build_embedding_cache(settings.redis)
    if emulate_batch_ms is None:
        inspector = build_inspector(settings.models, cache=cache)
    else:
        from worker.bench.scale.worker import FixedTimeInspector

        inspector = FixedTimeInspector(emulate_batch_ms / 1000.0)
    warm_ms = warm_up(inspector, in_frames)  # prompt embeddings: computed once, cached (Redis + LRU)
    inspector.inspect(in_frames[:batch])  # warm the batch shape too

    # The bench's own clients get their own client ids, so their threads are told apart from the worker's.
    collector = _ResultCollector(settings, f"linewatch-bench-results-{run_id}")
    publisher = FramePublisher(kafka.model_copy(update={"client_id": f"linewatch-bench-publisher-{run_id}"}))
    in_process = [run_batches(inspector, in_frames, batch)]
    backlogs: list[dict[str, Any]] = []
    stopped_cleanly = True
    try:
        for round_index in range(rounds):
            # Each round a new worker of the same group starts after its backlog is published,
            # from the offsets the previous one committed: it drains exactly this round's frames.
            guarantee = round_guarantees[round_index] if round_guarantees else settings.kafka.processing_guarantee
            round_settings = settings.model_copy(
                update={"kafka": settings.kafka.model_copy(update={"processing_guarantee": guarantee})}
            )
            backlog, worker = _drain_backlog(round_settings, inspector, cache, publisher, collector, rgbs)
            backlog["guarantee"] = guarantee
            try:
                if round_guarantees or round_index == rounds - 1:  # the last worker serves the paced run
                    paced = backlog["paced"] = _paced(publisher, collector, rgbs[: min(frames, 16)])
            finally:
                stopped_cleanly &= worker.stop(settings.worker.shutdown_timeout_s + 30.0)
            status = worker.service.status()
            backlog["worker_counters"] = status.counters
            in_process.append(run_batches(inspector, in_frames, batch))
            around = (in_process[-2]["ms_per_frame"] + in_process[-1]["ms_per_frame"]) / 2.0
            backlog["in_process_ms_per_frame_around"] = round(around, 2)
            backlog["overhead_ms_per_frame"] = round(backlog["ms_per_frame"] - around, 2)
            if "steady_ms_per_frame" in backlog:
                backlog["steady_overhead_ms_per_frame"] = round(backlog["steady_ms_per_frame"] - around, 2)
            backlogs.append(backlog)
        kafka_only_steps = _kafka_only_steps(inspector, in_frames, settings)
    finally:
        publisher.close(10.0)
        collector.close()
        if hasattr(cache, "close"):
            cache.close()

    models = getattr(inspector, "models", None)
    device = getattr(models, "device", None)
    overheads = [b["overhead_ms_per_frame"] for b in backlogs]
    steady = [b["steady_overhead_ms_per_frame"] for b in backlogs if "steady_overhead_ms_per_frame" in b]
    return {
        "profile": getattr(models, "profile", settings.models.profile),
        "inspector": type(inspector).__name__
        + ("" if emulate_batch_ms is None else f" ({emulate_batch_ms:g} ms/batch)"),
        "foreground": settings.models.foreground,
        "device": str(device) if device is not None else platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "load_average_1m": {"start": round(load_at_start, 2), "end": round(os.getloadavg()[0], 2)},
        "frame_size": [width, height],
        "bootstrap_servers": kafka.bootstrap_servers,
        "topics": {"frames": kafka.frames_topic, "results": kafka.results_topic, "dlq": kafka.dlq_topic},
        "embedding_cache": type(cache).__name__,
        "warm_first_call_ms": warm_ms,
        "method": f"{rounds} rounds; each: a backlog of all frames published before a worker starts "
        "(throughput-bound), clock from partition assignment to the last result received, "
        "compared with in-process runs of the same frames just before and just after it",
        "overhead_ms_per_frame_median": percentile(overheads, 50),
        "overhead_ms_per_frame_rounds": overheads,
        "steady_overhead_ms_per_frame_median": percentile(steady, 50),
        "steady_overhead_ms_per_frame_rounds": steady,
        "in_process_ms_per_frame_median": percentile([run["ms_per_frame"] for run in in_process], 50),
        "kafka_ms_per_frame_median": percentile([b["ms_per_frame"] for b in backlogs], 50),
        "in_process_runs": in_process,
        "kafka_backlog_rounds": backlogs,
        "kafka_only_steps_cpu_ms": kafka_only_steps,
        "kafka_paced_one_in_flight": paced,
        "worker_counters_last_round": status.counters,
        "worker_stopped_cleanly": stopped_cleanly,
    }


def _paced(publisher: Any, collector: _ResultCollector, rgbs: list[Any]) -> dict[str, Any]:
    """One frame in flight at a time: the latency of an idle pipeline."""
    paced_ids: list[str] = []
    for rgb in rgbs:
        paced_ids.append(_publish(publisher, rgb))
        publisher.flush(30.0)
        collector.collect({paced_ids[-1]}, 60.0)
    got = [collector.results[i] for i in paced_ids if i in collector.results]
    return {
        "frames": len(paced_ids),
        "results": len(got),
        "latency_ms_captured_to_arrival": latency_stats([ms_between(a, r.captured_at) for r, a in got]),
        "latency_ms_captured_to_processed": latency_stats([ms_between(r.processed_at, r.captured_at) for r, a in got]),
        "arrival_latencies_ms": [round(ms_between(a, r.captured_at), 2) for r, a in got],
    }
