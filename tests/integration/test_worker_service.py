"""The stream worker against the real Kafka broker and Redis (infra/), tiny model profile.

Workers run in threads of this process (`WorkerService.run(stop_event)`), one in a
subprocess to exercise `run_service` and SIGTERM. Every wait is bounded.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from kafka import TopicPartition
from pydantic import SecretStr

from common.codecs import encode_image, rle_to_mask
from common.kafka import build_consumer, build_producer, ensure_topics
from common.messages import frame_headers
from common.schemas import ERROR_HEADER, DeadLetterError, FrameMeta, InspectionResult, utc_now
from common.settings import (
    KafkaSettings,
    LinewatchSettings,
    ModelSettings,
    RedisSettings,
    TelemetrySettings,
    WorkerSettings,
)
from producer.publisher import build_frame_meta
from tests.support.inspectors import WrappedInspector, slow_worker_service
from worker.stream.service import WorkerService

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

REPO_ROOT = Path(__file__).resolve().parents[2]
HEIGHT, WIDTH = 48, 64
PARTITIONS = 4


# ----------------------------------------------------------------------------- helpers


def make_settings(kafka_broker, redis_url: str | None, **worker) -> LinewatchSettings:
    """Settings with topics, group and cache prefix of their own (tests never see each other's data)."""
    tag = uuid.uuid4().hex[:8]
    return LinewatchSettings(
        kafka=KafkaSettings(
            bootstrap_servers=kafka_broker.bootstrap,
            frames_topic=f"test.frames.{tag}",
            results_topic=f"test.results.{tag}",
            dlq_topic=f"test.dlq.{tag}",
            group_id=f"test-workers-{tag}",
            partitions=PARTITIONS,
        ),
        redis=RedisSettings(
            url=SecretStr(redis_url) if redis_url else None, key_prefix=f"test-{tag}", retry_after_s=1.0
        ),
        models=ModelSettings(profile="tiny", foreground="none"),
        worker=WorkerSettings(
            **(
                {
                    "worker_id": "worker-1",
                    "batch_max_frames": 4,
                    "batch_max_wait_ms": 50,
                    "commit_interval_ms": 200,
                    "heatmap_side": 32,
                }
                | worker
            )
        ),
        telemetry=TelemetrySettings(enabled=False),
    )


def with_worker(settings: LinewatchSettings, **worker) -> LinewatchSettings:
    return settings.model_copy(update={"worker": settings.worker.model_copy(update=worker)})


def image(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.linspace(60, 200, WIDTH, dtype=np.float32)[None, :, None]
    return np.clip(base + rng.normal(0, 20, (HEIGHT, WIDTH, 3)), 0, 255).astype(np.uint8)


def good_frame(seed: int, object_name: str = "screw", **meta) -> tuple[FrameMeta, bytes]:
    fields = (
        dict(
            camera_id=f"cam-{seed % 8}",
            line_id="line-1",
            object_name=object_name,
            content_type="image/jpeg",
            width=WIDTH,
            height=HEIGHT,
        )
        | meta
    )
    return build_frame_meta(**fields), encode_image(image(seed))


Record = tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]


def publish(settings: LinewatchSettings, records: list[Record], partition: int | None = None) -> None:
    """Send raw records (key, value, headers) to the frames topic, spread over partitions or on one."""
    ensure_topics(settings.kafka, [settings.kafka.frames_topic])
    producer = build_producer(settings.kafka)
    try:
        for i, (key, value, headers) in enumerate(records):
            producer.send(
                settings.kafka.frames_topic,
                key=key,
                value=value,
                headers=headers,
                partition=(i % PARTITIONS) if partition is None else partition,
            )
        producer.flush(timeout=30)
    finally:
        producer.close(timeout=5)


def publish_frames(settings: LinewatchSettings, frames: list[tuple[FrameMeta, bytes]]) -> set[str]:
    publish(settings, [(m.camera_id.encode(), data, frame_headers(m)) for m, data in frames])
    return {m.frame_id for m, _ in frames}


def read_topic(settings: LinewatchSettings, topic: str, done: Callable[[list], bool], timeout_s: float = 120.0) -> list:
    """Every record of `topic` read until `done(records)` (then one more short poll for extras)."""
    consumer = build_consumer(settings.kafka, topic, group_id=f"reader-{uuid.uuid4().hex[:8]}")
    records: list = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and not done(records):
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        for batch in consumer.poll(timeout_ms=1000).values():
            records.extend(batch)
    finally:
        consumer.close()
    return records


def read_results(settings: LinewatchSettings, frame_ids: set[str], timeout_s: float = 180.0) -> list[InspectionResult]:
    def all_seen(records: list) -> bool:
        return frame_ids <= {json.loads(r.value)["frame_id"] for r in records}

    records = read_topic(settings, settings.kafka.results_topic, all_seen, timeout_s)
    return [InspectionResult.model_validate_json(r.value) for r in records]


def committed_total(settings: LinewatchSettings) -> int:
    """Sum of the group's committed offsets on the frames topic (= messages committed, from offset 0)."""
    consumer = build_consumer(settings.kafka)  # same group id, never subscribes: only reads offsets
    try:
        topic = settings.kafka.frames_topic
        return sum(consumer.committed(TopicPartition(topic, p)) or 0 for p in range(PARTITIONS))
    finally:
        consumer.close()


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def serving_until_it_stops_itself(service: WorkerService) -> tuple[threading.Thread, list[BaseException]]:
    """A thread (not started) serving with no stop request, for tests where the watchdog ends the worker;
    the list gets what `run` raised."""
    outcome: list[BaseException] = []

    def serve() -> None:
        try:
            service.run(threading.Event())
        except BaseException as exc:
            outcome.append(exc)

    return threading.Thread(target=serve, daemon=True), outcome


@contextmanager
def running(service: WorkerService, join_timeout_s: float = 90.0) -> Iterator[Callable[[], None]]:
    """Run the service in a thread; yields `stop()` (graceful, bounded). Stops at exit anyway."""
    stop_event = threading.Event()
    errors: list[BaseException] = []

    def target() -> None:
        try:
            service.run(stop_event)
        except BaseException as exc:  # surfaced by stop()
            errors.append(exc)

    thread = threading.Thread(target=target, name=f"worker-{service.worker_id}", daemon=True)
    thread.start()

    def stop() -> None:
        stop_event.set()
        thread.join(join_timeout_s)
        assert not thread.is_alive(), f"worker {service.worker_id} did not stop within {join_timeout_s} s"
        assert not errors, f"worker {service.worker_id} crashed: {errors[0]!r}"

    try:
        yield stop
    finally:
        if thread.is_alive() or errors:
            stop()


# ----------------------------------------------------------------------------- tests


def test_every_frame_gets_exactly_one_result_with_a_full_size_mask(kafka_broker, redis_server):
    settings = make_settings(kafka_broker, redis_server.url)
    frames = [good_frame(i) for i in range(8)]
    service = WorkerService(settings)
    with running(service) as stop:
        sent = publish_frames(settings, frames)
        results = read_results(settings, sent)
        wait_until(lambda: committed_total(settings) == len(frames), 30, "all offsets committed")
        stop()
    by_id = {r.frame_id: r for r in results}
    assert set(by_id) == sent and len(results) == len(sent)  # no duplicates in a quiet run
    for result in results:
        assert rle_to_mask(result.mask).shape == (HEIGHT, WIDTH)
        assert result.verdict in ("ok", "anomalous") and 0.0 <= result.score <= 1.0
        assert result.source.topic == settings.kafka.frames_topic
        assert result.worker_id == "worker-1" and result.versions.profile == "tiny"
        assert result.heatmap is not None and result.timings_ms
    status = service.status()
    assert status.counters.get("results_ok", 0) + status.counters.get("results_anomalous", 0) == 8
    assert status.uncommitted_messages == 0 and not status.running
    assert committed_total(settings) == len(frames)


def test_two_workers_split_the_partitions_and_a_graceful_leave_loses_nothing(kafka_broker, redis_server):
    # worker-b's Inspector is held until the rebalance that worker-a's leave causes: worker-b then has
    # frames polled and not published, the revocation drops them uncommitted, and they must come again
    # (seek back to the first dropped one when the partitions return), not go missing.
    from worker.inspection.inspector import build_inspector

    settings = make_settings(kafka_broker, redis_server.url, batch_max_frames=2)
    held = StuckInspector(build_inspector(settings.models))
    first = slow_worker_service(with_worker(settings, worker_id="worker-a"), 0.2)
    second = WorkerService(with_worker(settings, worker_id="worker-b"), held)
    try:
        with running(first) as stop_first, running(second):

            def split() -> bool:
                a, b = first.status().assigned_partitions, second.status().assigned_partitions
                return bool(a) and bool(b) and len(set(a) | set(b)) == PARTITIONS and not set(a) & set(b)

            ensure_topics(settings.kafka, [settings.kafka.frames_topic])
            wait_until(split, 90, "both workers to own partitions")
            revoked_before = second.status().counters.get("rebalances", 0)
            early = [good_frame(i) for i in range(8)]
            late = [good_frame(100 + i) for i in range(8)]
            sent = publish_frames(settings, early)
            assert held.called.wait(60), "worker-b never inspected a batch"
            wait_until(
                lambda: (
                    first.status().counters.get("results_ok", 0) + first.status().counters.get("results_anomalous", 0)
                    > 0
                ),
                120,
                "worker-a to publish",
            )
            stop_first()  # graceful: finishes its frames, commits, leaves the group
            wait_until(
                lambda: second.status().counters.get("rebalances", 0) > revoked_before,
                60,
                "worker-b's partitions to be revoked (its unpublished frames are dropped)",
            )
            held.release.set()
            sent |= publish_frames(settings, late)
            results = read_results(settings, sent)
            wait_until(
                lambda: (
                    set(second.status().assigned_partitions)
                    == {(settings.kafka.frames_topic, p) for p in range(PARTITIONS)}
                ),
                60,
                "worker-b to take over",
            )
            wait_until(lambda: committed_total(settings) == len(sent), 60, "all offsets committed")
    finally:
        held.release.set()
    assert {r.frame_id for r in results} == sent  # the dropped frames were scored again
    assert {r.worker_id for r in results} == {"worker-a", "worker-b"}
    assert second.status().counters["rebalances"] >= 1


class PoisonInspector(WrappedInspector):
    """The real tiny Inspector, except that a batch holding a frame of object "poison" raises."""

    def inspect(self, frames):
        if any(frame.object_name == "poison" for frame in frames):
            raise RuntimeError("poisoned frame")
        return self.inner.inspect(frames)


def test_a_frame_failing_inference_is_dead_lettered_alone(kafka_broker, redis_server):
    from worker.inspection.inspector import build_inspector

    settings = make_settings(kafka_broker, None, batch_max_frames=4, batch_max_wait_ms=1000)
    frames = [good_frame(1), good_frame(2, object_name="poison"), good_frame(3)]
    service = WorkerService(settings, PoisonInspector(build_inspector(settings.models)))
    with running(service):
        publish(settings, [(m.camera_id.encode(), data, frame_headers(m)) for m, data in frames], partition=0)
        results = read_results(settings, {frames[0][0].frame_id, frames[2][0].frame_id})
        dead = read_topic(settings, settings.kafka.dlq_topic, lambda rs: len(rs) >= 1, 60)
        wait_until(lambda: committed_total(settings) == 3, 30, "all offsets committed")
    assert {r.frame_id for r in results} == {frames[0][0].frame_id, frames[2][0].frame_id}
    assert len(dead) == 1
    error = DeadLetterError.model_validate_json(dict(dead[0].headers)[ERROR_HEADER])
    assert (error.stage, error.error_type, error.message) == ("inference", "RuntimeError", "poisoned frame")
    assert error.source.offset == 1
    assert service.status().counters["inference_errors"] == 1


class TimedInspector(WrappedInspector):
    """The real tiny Inspector, recording when each `inspect` call started."""

    def __init__(self, inner):
        super().__init__(inner)
        self.started: list[float] = []

    def inspect(self, frames):
        self.started.append(time.monotonic())
        return self.inner.inspect(frames)


def test_the_next_batch_is_scored_while_the_results_of_the_last_are_built(kafka_broker, redis_server, monkeypatch):
    import worker.stream.outputs
    from worker.inspection.inspector import build_inspector

    build_s, built = 0.3, []
    real_build = worker.stream.outputs.build_result

    def slow_build(*args, **kwargs):  # result encoding made slow enough to see the overlap
        time.sleep(build_s)
        result = real_build(*args, **kwargs)
        built.append(time.monotonic())
        return result

    monkeypatch.setattr(worker.stream.outputs, "build_result", slow_build)  # where the publish thread calls it
    settings = make_settings(kafka_broker, None, batch_max_frames=2, batch_max_wait_ms=1000)
    frames = [good_frame(i) for i in range(6)]
    publish(settings, [(m.camera_id.encode(), data, frame_headers(m)) for m, data in frames], partition=0)
    inspector = TimedInspector(build_inspector(settings.models))
    service = WorkerService(settings, inspector)
    with running(service):
        results = read_results(settings, {m.frame_id for m, _ in frames})
        wait_until(lambda: committed_total(settings) == 6, 30, "all offsets committed")
    assert sorted(r.frame_id for r in results) == sorted(m.frame_id for m, _ in frames)
    assert len(inspector.started) == 3 and len(built) == 6
    # Batch 2 went to the Inspector before the 2nd result of batch 1 was built (serially it would wait 2 x 0.3 s).
    assert inspector.started[1] < built[1], (inspector.started, built)
    assert inspector.started[2] < built[3], (inspector.started, built)


class StuckInspector(WrappedInspector):
    """An Inspector whose `inspect` hangs until released (a wedged device)."""

    def __init__(self, inner):
        super().__init__(inner)
        self.called = threading.Event()
        self.release = threading.Event()

    def inspect(self, frames):
        self.called.set()
        self.release.wait(120)
        return self.inner.inspect(frames)


def test_a_shutdown_that_times_out_commits_nothing_it_did_not_publish(kafka_broker, redis_server, caplog):
    from worker.inspection.inspector import build_inspector

    settings = make_settings(kafka_broker, None, batch_max_frames=2, shutdown_timeout_s=1.0)
    frames = [good_frame(i) for i in range(2)]
    sent = publish_frames(settings, frames)
    inner = build_inspector(settings.models)
    stuck = StuckInspector(inner)
    try:
        with running(WorkerService(settings, stuck), join_timeout_s=30) as stop:
            assert stuck.called.wait(60), "the stuck inspector was never called"
            stopping = time.monotonic()
            stop()
        assert time.monotonic() - stopping < 20  # shutdown_timeout_s, then at most 10 s more for the threads
    finally:
        stuck.release.set()
    assert "still busy after 1 s" in caplog.text
    assert committed_total(settings) == 0  # nothing was published, so nothing may be committed
    with running(WorkerService(settings, inner)):  # the next member of the group scores them
        results = read_results(settings, sent)
    assert {r.frame_id for r in results} == sent


def test_a_wedged_inspector_makes_the_worker_leave_and_another_scores_its_frames(kafka_broker, redis_server, caplog):
    from worker.inspection.inspector import build_inspector
    from worker.stream.service import InferenceStuck

    settings = make_settings(kafka_broker, None, batch_max_frames=2, inference_timeout_s=2.0, shutdown_timeout_s=1.0)
    sent = publish_frames(settings, [good_frame(i) for i in range(2)])
    inner = build_inspector(settings.models)
    stuck = StuckInspector(inner)
    service = WorkerService(settings, stuck)
    thread, outcome = serving_until_it_stops_itself(service)
    try:
        thread.start()
        assert stuck.called.wait(60), "the stuck inspector was never called"
        wait_until(lambda: service.status().inference_busy_s > 1.0, 10, "the batch to be seen as busy")
        assert not service.inference_stuck()  # not yet past inference_timeout_s
        thread.join(30)  # 2 s to notice, then shutdown_timeout_s and at most 10 s for the threads
        assert not thread.is_alive(), "the watchdog did not stop the worker"
    finally:
        stuck.release.set()
    assert len(outcome) == 1 and isinstance(outcome[0], InferenceStuck), outcome
    assert service.status().counters["inference_stuck"] == 1
    assert "device looks wedged" in caplog.text
    assert committed_total(settings) == 0
    with running(WorkerService(settings, inner)):  # it left the group: the next member scores its frames
        results = read_results(settings, sent)
    assert {r.frame_id for r in results} == sent


def test_a_worker_started_after_redis_was_warmed_runs_no_text_encoder(kafka_broker, redis_server):
    settings = make_settings(kafka_broker, redis_server.url)
    warm = WorkerService(with_worker(settings, worker_id="warm-up"))
    with running(warm) as stop:
        sent = publish_frames(settings, [good_frame(i) for i in range(2)])
        read_results(settings, sent)
        stop()
    assert warm.inspector.text_encoder_calls > 0  # it computed and stored the embeddings

    second = WorkerService(with_worker(settings, worker_id="second"))
    with running(second) as stop:
        more = publish_frames(settings, [good_frame(10 + i) for i in range(2)])
        results = read_results(settings, sent | more)
        stop()
    assert more <= {r.frame_id for r in results if r.worker_id == "second"}
    assert second.inspector.text_encoder_calls == 0
    stats = second.cache.stats()
    assert stats.redis_hits > 0 and stats.misses == 0 and not second.status().cache_degraded


def test_redis_down_at_start_still_gives_results_and_reports_degraded(kafka_broker, redis_server_factory):
    redis_server = redis_server_factory()  # private: this test kills it
    settings = make_settings(kafka_broker, redis_server.url)
    redis_server.kill()
    try:
        service = WorkerService(settings)
        with running(service) as stop:
            sent = publish_frames(settings, [good_frame(i) for i in range(3)])
            results = read_results(settings, sent)
            assert {r.frame_id for r in results} == sent
            assert service.status().cache_degraded and service.cache.degraded
            # Redis comes back: the next lookup after retry_after_s uses it again.
            redis_server.restart()
            for attempt, name in enumerate(["nut", "washer", "capsule", "bottle cap"]):
                time.sleep(1.2)  # > retry_after_s
                extra = publish_frames(settings, [good_frame(50 + attempt, object_name=name)])
                read_results(settings, extra)
                if not service.status().cache_degraded:
                    break
            assert not service.status().cache_degraded
            stop()
    finally:
        redis_server.start()  # no-op when it runs


def test_a_broker_restart_mid_stream_loses_nothing(kafka_broker_factory, redis_server):
    kafka_broker = kafka_broker_factory()  # private: this test restarts it
    settings = make_settings(kafka_broker, redis_server.url)
    service = WorkerService(settings)
    with running(service):
        sent = publish_frames(settings, [good_frame(i) for i in range(4)])
        read_results(settings, sent)
        kafka_broker.restart()
        sent |= publish_frames(settings, [good_frame(100 + i) for i in range(4)])
        results = read_results(settings, sent)
        wait_until(lambda: committed_total(settings) == len(sent), 120, "all offsets committed")
        wait_until(lambda: service.status().broker_reachable, 30, "the broker to be reachable again")
    assert {r.frame_id for r in results} == sent


def test_frames_continue_the_producers_trace_and_metrics_are_recorded(kafka_broker, redis_server):
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from common.telemetry import setup_telemetry, traceparent_of

    telemetry = setup_telemetry("linewatch-test", set_global=False)
    exporter = InMemorySpanExporter()
    telemetry.tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    settings = make_settings(kafka_broker, redis_server.url)
    trace_id = uuid.uuid4().hex
    meta, data = good_frame(1)
    headers = frame_headers(meta) + [("traceparent", f"00-{trace_id}-{'ab' * 8}-01".encode())]
    with running(WorkerService(settings, telemetry=telemetry)):
        publish(settings, [(b"cam-1", data, headers)])
        records = read_topic(settings, settings.kafka.results_topic, lambda rs: len(rs) >= 1, 120)
    assert traceparent_of(records[0].headers).split("-")[1] == trace_id  # the result carries the trace on
    spans = [span for span in exporter.get_finished_spans() if f"{span.context.trace_id:032x}" == trace_id]
    names = {span.name for span in spans}
    assert {"linewatch.worker.frame", "decode", "inference", "publish", "tile_score", "pixel_map"} <= names
    frame_span = next(span for span in spans if span.name == "linewatch.worker.frame")
    assert f"{frame_span.parent.span_id:016x}" == "ab" * 8
    text = telemetry.prometheus_text().decode()
    for metric in (
        "linewatch_frames_processed",
        "linewatch_frame_latency",
        "linewatch_stage_duration",
        "linewatch_batch_size",
        "linewatch_cache_misses",
    ):
        assert metric in text, metric
    # what the guarantee costs the publish thread, per checkpoint
    assert 'stage="checkpoint"' in text
    telemetry.shutdown()


def test_stale_frames_get_a_skipped_result(kafka_broker, redis_server):
    settings = make_settings(kafka_broker, redis_server.url, max_frame_age_s=30.0)
    old = good_frame(1, captured_at=utc_now() - timedelta(minutes=5))
    service = WorkerService(settings)
    with running(service):
        # the fresh frame is stamped once the worker is in: its start-up (minutes on a loaded machine) is no age
        wait_until(lambda: service.status().assigned_partitions, 300, "the worker to join")
        fresh = good_frame(2)
        sent = publish_frames(settings, [old, fresh])
        results = {r.frame_id: r for r in read_results(settings, sent)}
    assert results[old[0].frame_id].verdict == "skipped" and "stale" in results[old[0].frame_id].note
    assert results[old[0].frame_id].mask is None
    assert results[fresh[0].frame_id].verdict in ("ok", "anomalous")


def test_backpressure_pauses_and_resumes_without_losing_frames(kafka_broker, redis_server):
    settings = make_settings(kafka_broker, redis_server.url, batch_max_frames=1, queue_max_frames=2)
    service = slow_worker_service(settings, 0.3)
    with running(service):
        sent = publish_frames(settings, [good_frame(i) for i in range(8)])
        results = read_results(settings, sent)
    assert {r.frame_id for r in results} == sent
    assert service.status().counters.get("pauses", 0) >= 1 and not service.status().paused


def test_serve_in_a_subprocess_stops_cleanly_on_sigterm(kafka_broker, redis_server, tmp_path):
    settings = make_settings(kafka_broker, redis_server.url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINEWATCH_")} | {
        "LINEWATCH_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "LINEWATCH_KAFKA__FRAMES_TOPIC": settings.kafka.frames_topic,
        "LINEWATCH_KAFKA__RESULTS_TOPIC": settings.kafka.results_topic,
        "LINEWATCH_KAFKA__DLQ_TOPIC": settings.kafka.dlq_topic,
        "LINEWATCH_KAFKA__GROUP_ID": settings.kafka.group_id,
        "LINEWATCH_REDIS__URL": redis_server.url,
        "LINEWATCH_MODELS__PROFILE": "tiny",
        "LINEWATCH_MODELS__FOREGROUND": "none",
        "LINEWATCH_WORKER__WORKER_ID": "subprocess-worker",
        "LINEWATCH_TELEMETRY__ENABLED": "false",
    }
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:  # `linewatch-worker serve`
        proc = subprocess.Popen(
            [sys.executable, "-m", "worker.cli", "serve"], cwd=REPO_ROOT, env=env, stdout=log, stderr=log
        )
    try:
        sent = publish_frames(settings, [good_frame(i) for i in range(4)])
        results = read_results(settings, sent)
        assert {r.frame_id for r in results} == sent
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log_path.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    output = log_path.read_text()
    assert "left the group" in output
    assert redis_server.url not in output  # settings are logged redacted
    assert committed_total(settings) == 4
