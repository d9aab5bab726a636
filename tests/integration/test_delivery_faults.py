"""Faults of the delivery core against the real broker: a device that never returns, a record that
cannot be built, a record with nothing smaller to send, a partition moving to another worker under
load. Workers run in threads of this process with the real tiny Inspector, wrapped where a test
needs it to hang, slow down or count.
"""

from __future__ import annotations

import dataclasses
import json
import time
import urllib.error
import urllib.request
from collections import Counter

import pytest

from common.kafka import build_producer, ensure_topics
from common.messages import frame_headers
from common.schemas import ERROR_HEADER, DeadLetterError
from common.settings import LinewatchSettings
from tests.integration.test_worker_service import (
    PARTITIONS,
    StuckInspector,
    committed_total,
    good_frame,
    make_settings,
    publish,
    publish_frames,
    read_results,
    read_topic,
    running,
    serving_until_it_stops_itself,
    wait_until,
    with_worker,
)
from tests.support.inspectors import DelayedInspector
from worker.stream.service import InferenceStuck, WorkerService, health_server

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]


def healthz(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


def trickle(settings: LinewatchSettings, frames: list, gap_s: float = 0.02) -> set[str]:
    """Send frames one at a time to partition 0, each on the broker before the next: the worker
    polls them one or two at a time, so its micro-batches hold single frames."""
    ensure_topics(settings.kafka, [settings.kafka.frames_topic])
    producer = build_producer(settings.kafka)
    try:
        for meta, data in frames:
            producer.send(
                settings.kafka.frames_topic,
                key=meta.camera_id.encode(),
                value=data,
                headers=frame_headers(meta),
                partition=0,
            ).get(timeout=30)
            time.sleep(gap_s)
    finally:
        producer.close(timeout=5)
    return {meta.frame_id for meta, _ in frames}


def test_a_device_that_never_returns_fails_healthz_and_the_watchdog_stops_the_worker(kafka_broker, redis_server):
    # 60 single-frame batches against an inference queue of 10 batches: the poll thread must not wait
    # on the full queue, or it never reaches the watchdog.
    from worker.inspection.inspector import build_inspector

    timeout_s = 5.0
    settings = make_settings(
        kafka_broker, None, batch_max_wait_ms=0, inference_timeout_s=timeout_s, shutdown_timeout_s=1.0
    )
    inner = build_inspector(settings.models)
    hung = StuckInspector(inner)  # held until the end of the test: it never returns while the worker runs
    service = WorkerService(settings, hung)
    thread, outcome = serving_until_it_stops_itself(service)
    try:
        with health_server(service, 0, host="127.0.0.1") as health:
            thread.start()
            wait_until(lambda: service.status().assigned_partitions, 300, "the worker to join")
            assert healthz(health.url)[0] == 200
            sent = trickle(settings, [good_frame(i) for i in range(60)])
            assert hung.called.wait(60), "the Inspector was never called"
            wait_until(lambda: healthz(health.url)[0] != 200, timeout_s + 10, "/healthz to fail")
            code, body = healthz(health.url)
            assert code == 503 and body["status"] == "not alive" and "device_responsive" in body["failed"]
            thread.join(60)  # the watchdog: inference_timeout_s, then shutdown_timeout_s and 10 s per thread
            assert not thread.is_alive(), "the watchdog never ran: the poll thread is held"
    finally:
        hung.release.set()
    assert len(outcome) == 1 and isinstance(outcome[0], InferenceStuck), outcome
    assert committed_total(settings) == 0
    with running(WorkerService(settings, inner)):  # what an orchestrator's restart does: every frame judged
        results = read_results(settings, sent)
        wait_until(lambda: committed_total(settings) == len(sent), 60, "all offsets committed")
    assert {r.frame_id for r in results} == sent


def with_guarantee(settings: LinewatchSettings, guarantee: str) -> LinewatchSettings:
    return settings.model_copy(update={"kafka": settings.kafka.model_copy(update={"processing_guarantee": guarantee})})


@pytest.mark.parametrize("guarantee", ["at-least-once", "exactly-once"])
def test_a_record_that_cannot_be_built_is_dead_lettered_after_max_attempts(
    kafka_broker, redis_server, monkeypatch, guarantee
):
    import worker.stream.outputs

    settings = with_guarantee(make_settings(kafka_broker, None, batch_max_frames=2, max_attempts=3), guarantee)
    frames = [good_frame(i) for i in range(6)]
    poison = frames[3][0].frame_id
    real_fit, tries = worker.stream.outputs.fit_result, []

    def fit_result(result, *args, **kwargs):  # encoding this one frame's result always raises
        if result.frame_id == poison:
            tries.append(time.monotonic())
            raise ValueError("cannot encode this result (test)")
        return real_fit(result, *args, **kwargs)

    monkeypatch.setattr(worker.stream.outputs, "fit_result", fit_result)  # where the publish thread calls it
    publish(settings, [(m.camera_id.encode(), data, frame_headers(m)) for m, data in frames], partition=0)
    others = {m.frame_id for m, _ in frames} - {poison}
    with running(WorkerService(settings)):
        results = read_results(settings, others)
        dead = read_topic(settings, settings.kafka.dlq_topic, lambda records: len(records) >= 1, 120)
        wait_until(lambda: committed_total(settings) == len(frames), 60, "the partition's lag to reach 0")
    assert len(tries) == 3  # read again twice, then dead-lettered
    assert {r.frame_id for r in results} == others  # every other frame judged
    assert len(dead) == 1
    error = DeadLetterError.model_validate_json(dict(dead[0].headers)[ERROR_HEADER])
    assert (error.stage, error.error_type, error.message) == (
        "publish",
        "ValueError",
        "cannot encode this result (test)",
    )
    assert error.source.offset == 3


def test_a_record_with_nothing_smaller_to_send_is_read_again_not_committed_past(
    kafka_broker, redis_server, monkeypatch
):
    from worker.stream.outputs import Records

    settings = make_settings(kafka_broker, None, batch_max_frames=2)
    frames = [good_frame(i) for i in range(6)]
    records = [(m.camera_id.encode(), data, frame_headers(m)) for m, data in frames]
    bad = good_frame(99)[0]
    records[2] = (bad.camera_id.encode(), b"not an image", frame_headers(bad))  # dead-lettered at intake
    good = {m.frame_id for m, _ in frames} - {frames[2][0].frame_id}
    real_dead_letter = Records.dead_letter

    def too_large(self, letter):  # the producer refuses this dead letter for its size, and nothing is smaller
        record = real_dead_letter(self, letter)
        if letter.message.offset != 2:
            return record
        return dataclasses.replace(record, value=b"x" * (settings.kafka.max_message_bytes + 1), smaller=None)

    monkeypatch.setattr(Records, "dead_letter", too_large)
    publish(settings, records[:4], partition=0)
    service = WorkerService(settings)
    with running(service):
        refused = lambda: service.status().counters.get("publish_errors", 0)  # noqa: E731
        wait_until(lambda: refused() >= 1, 120, "the dead letter to be refused for its size")
        publish(settings, records[4:], partition=0)  # frames after it, in checkpoints of their own
        deadline = time.monotonic() + 20
        while committed_total(settings) <= 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert committed_total(settings) <= 2  # never past the dead letter that could not be sent
        assert refused() >= 2  # it was read again
        monkeypatch.undo()  # the dead letter fits again (a topic limit raised, say)
        dead = read_topic(settings, settings.kafka.dlq_topic, lambda records: len(records) >= 1, 120)
        results = read_results(settings, good)
        wait_until(lambda: committed_total(settings) == len(frames), 60, "the partition's lag to reach 0")
    assert good <= {r.frame_id for r in results}
    assert len(dead) == 1
    error = DeadLetterError.model_validate_json(dict(dead[0].headers)[ERROR_HEADER])
    assert error.stage == "decode" and error.source.offset == 2


class CountingInspector(DelayedInspector):
    """The real tiny Inspector, slowed down, counting each frame id it is given (across workers)."""

    def __init__(self, inner, delay_s: float, seen: Counter):
        super().__init__(inner, delay_s)
        self.seen = seen

    def inspect(self, frames):
        self.seen.update(frame.frame_id for frame in frames)
        return super().inspect(frames)


def test_a_cooperative_rebalance_redoes_only_the_work_of_the_partitions_that_moved(kafka_broker, redis_server):
    from worker.inspection.inspector import build_inspector

    settings = make_settings(kafka_broker, None, batch_max_frames=1)
    settings = settings.model_copy(
        update={"kafka": settings.kafka.model_copy(update={"assignor": "cooperative-sticky"})}
    )
    seen: Counter = Counter()
    first = WorkerService(
        with_worker(settings, worker_id="worker-a"), CountingInspector(build_inspector(settings.models), 0.3, seen)
    )
    second = WorkerService(
        with_worker(settings, worker_id="worker-b"), CountingInspector(build_inspector(settings.models), 0.0, seen)
    )
    topic = settings.kafka.frames_topic
    with running(first):
        wait_until(
            lambda: len(first.status().assigned_partitions) == PARTITIONS, 120, "worker-a to own every partition"
        )
        sent = publish_frames(settings, [good_frame(i) for i in range(48)])  # worker-a polls them all at once
        wait_until(lambda: sum(seen.values()) >= 4, 60, "worker-a to score")
        with running(second):
            wait_until(lambda: second.status().assigned_partitions, 120, "worker-b to take partitions")
            kept = set(first.status().assigned_partitions)
            results = read_results(settings, sent)
            wait_until(lambda: committed_total(settings) == len(sent), 60, "all offsets committed")
    partition_of = {r.frame_id: r.source.partition for r in results}
    twice = {frame_id for frame_id, n in seen.items() if n > 1}
    assert 0 < len(kept) < PARTITIONS and first.status().counters["rebalances"] >= 1
    assert not {frame_id for frame_id in twice if (topic, partition_of[frame_id]) in kept}  # kept work went on
    assert {r.frame_id for r in results} == sent
