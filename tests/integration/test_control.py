"""The control topic against the real broker: records applied live by running workers, the
compacted state read before /readyz turns green, tombstones, refusals, learning mode and the
`linewatch-worker control` commands. Workers run in threads (tiny profile); every wait is bounded."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime

import pytest
from kafka.admin import ConfigResource, ConfigResourceType

from common.audit import publish_change, read_audit
from common.calibration import conformal_threshold
from common.control import ControlRecord, Learning, PromptOverrides
from common.control_topic import read_control_topic
from common.kafka import build_admin, build_consumer
from common.schemas import InspectionResult, utc_now
from common.settings import LinewatchSettings
from tests.integration.test_worker_service import (
    good_frame,
    make_settings,
    publish_frames,
    read_results,
    running,
    wait_until,
    with_worker,
)
from worker.stream.health import HealthServer
from worker.stream.service import WorkerService
from worker.stream.status import readiness_checks

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

SCOPE = "object:screw"  # every frame of good_frame() shows a screw


def control_settings(kafka_broker, redis_server, **worker) -> LinewatchSettings:
    """make_settings with a control topic of the test's own."""
    settings = make_settings(kafka_broker, redis_server.url, **worker)
    tag = uuid.uuid4().hex[:8]
    topics = {"control_topic": f"test.control.{tag}", "audit_topic": f"test.audit.{tag}"}
    return settings.model_copy(update={"kafka": settings.kafka.model_copy(update=topics)})


def put(settings: LinewatchSettings, scope: str, record: ControlRecord | None) -> datetime:
    """Publish a record (or tombstone) and its audit record, as the control commands do; returns when
    the broker acknowledged both (UTC)."""
    before = read_control_topic(settings.kafka)[0].records.get(scope)
    publish_change(settings.kafka, scope, before, record, "set" if record is not None else "delete", by="test")
    return utc_now()


class ResultsTap:
    """Every result published from now on, collected by a thread (its own consumer group)."""

    def __init__(self, settings: LinewatchSettings):
        self.consumer = build_consumer(
            settings.kafka, settings.kafka.results_topic, group_id=f"tap-{uuid.uuid4().hex[:8]}"
        )
        self.results: list[InspectionResult] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            for batch in self.consumer.poll(timeout_ms=200).values():
                with self._lock:
                    self.results.extend(InspectionResult.model_validate_json(r.value) for r in batch)

    def snapshot(self) -> list[InspectionResult]:
        with self._lock:
            return list(self.results)

    def close(self) -> None:
        self._stop.set()
        self.thread.join(10)
        self.consumer.close()


class FrameStream:
    """Frames every `interval_s` over all partitions until stopped (a running line)."""

    def __init__(self, settings: LinewatchSettings, interval_s: float = 0.1):
        self.settings, self.interval_s = settings, interval_s
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        seed = 1000
        while not self._stop.is_set():
            publish_frames(self.settings, [good_frame(seed + i) for i in range(4)])  # one per partition
            seed += 4
            self._stop.wait(self.interval_s * 4)

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(30)


def applied(service: WorkerService, version: str, camera: str = "cam-0") -> bool:
    return service.control.state.resolve(camera, "screw").thresholds.version == version


def readyz(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


# ----------------------------------------------------------------------------- tests


def test_two_running_workers_apply_a_new_threshold_within_2_s(kafka_broker, redis_server):
    settings = control_settings(kafka_broker, redis_server, batch_max_frames=2)
    first = WorkerService(with_worker(settings, worker_id="worker-a"))
    second = WorkerService(with_worker(settings, worker_id="worker-b"))
    tap = ResultsTap(settings)
    with running(first), running(second):
        stream = FrameStream(settings)
        try:
            wait_until(
                lambda: (
                    {r.worker_id for r in tap.snapshot() if r.versions.threshold_version == "static-0.5"}
                    == {"worker-a", "worker-b"}
                ),
                120,
                "both workers to publish results with the static threshold",
            )
            sent_at = put(settings, SCOPE, ControlRecord(version=1, image_threshold=0.0, updated_by="test"))
            version = f"{SCOPE}@v1"

            def first_stamped() -> dict[str, InspectionResult]:
                found: dict[str, InspectionResult] = {}
                for result in tap.snapshot():
                    if result.versions.threshold_version == version and result.worker_id not in found:
                        found[result.worker_id] = result
                return found

            wait_until(lambda: len(first_stamped()) == 2, 30, "results of both workers stamped with the new version")
        finally:
            stream.stop()
    tap.close()
    for worker_id, result in sorted(first_stamped().items()):
        delay = (result.processed_at - sent_at).total_seconds()
        print(f"\n{worker_id}: record acknowledged -> first result stamped {version}: {delay * 1000:.0f} ms")
        assert delay < 2.0, f"{worker_id} applied the record only after {delay:.2f} s"
        assert result.verdict == "anomalous" and result.threshold == 0.0 and result.score >= 0.5
    assert first.status().counters.get("control_applied") == second.status().counters.get("control_applied") == 1


def test_a_worker_started_later_applies_the_compacted_state_before_it_is_ready(kafka_broker, redis_server):
    settings = control_settings(kafka_broker, redis_server)
    put(settings, SCOPE, ControlRecord(version=1, image_threshold=0.9))
    put(settings, SCOPE, ControlRecord(version=2, image_threshold=0.0, pixel_threshold=1.0))
    put(settings, "camera:cam-1", ControlRecord(version=3, image_threshold=1.0))
    put(settings, "camera:cam-2", ControlRecord(version=1, image_threshold=1.0))
    put(settings, "camera:cam-2", None)  # deleted before the worker starts
    admin = build_admin(settings.kafka)
    try:
        described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, settings.kafka.control_topic)])
        (configs,) = next(iter(described.values())).values()  # {type: {name: {key: data}}}
    finally:
        admin.close()
    policy = configs["cleanup.policy"]
    assert (policy.get("value") if isinstance(policy, dict) else policy) == "compact"

    service = WorkerService(settings)
    readiness = lambda: readiness_checks(service.status(), service.inference_stuck())  # noqa: E731
    with HealthServer(0, readiness, host="127.0.0.1") as health:
        seen_before_ready: list[dict] = []
        with running(service):
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                code, body = readyz(health.url)
                if code == 200:
                    break
                seen_before_ready.append(body)
                time.sleep(0.05)
            assert code == 200, f"/readyz never turned green: {body}"
            # green means: the whole compacted state is in force
            assert body["checks"]["control_caught_up"] is True and body["details"]["control_caught_up"]["scopes"] == 2
            assert applied(service, f"{SCOPE}@v2") and applied(service, "camera:cam-1@v3", camera="cam-1")
            assert applied(service, f"{SCOPE}@v2", camera="cam-2")  # the tombstone removed camera:cam-2
            assert all("control_caught_up" in b["checks"] for b in seen_before_ready)
            assert any(not b["checks"]["control_caught_up"] for b in seen_before_ready)  # not ready while it read
            frames = [good_frame(i) for i in range(4)]  # cameras cam-0 .. cam-3
            results = {r.camera_id: r for r in results_for(settings, frames)}
    assert results["cam-1"].versions.threshold_version == "camera:cam-1@v3" and results["cam-1"].verdict == "ok"
    for camera in ("cam-0", "cam-2", "cam-3"):
        assert results[camera].versions.threshold_version == f"{SCOPE}@v2" and results[camera].verdict == "anomalous"
        assert results[camera].regions == []  # pixel threshold 1.0: no defect mask


def test_a_malformed_record_is_refused_and_a_tombstone_reverts_to_the_static_threshold(kafka_broker, redis_server):
    settings = control_settings(kafka_broker, redis_server)
    service = WorkerService(settings)

    def results_of(seeds: range) -> list[InspectionResult]:
        return results_for(settings, [good_frame(i) for i in seeds])

    with running(service):
        wait_until(lambda: service.status().control_caught_up, 120, "the control topic read")
        put(settings, SCOPE, ControlRecord(version=4, image_threshold=0.0, updated_by="test"))
        wait_until(lambda: applied(service, f"{SCOPE}@v4"), 10, "v4 in force")
        stamped = results_of(range(0, 4))

        publish_control_raw(settings, SCOPE.encode(), b"{this is not json")
        put(settings, SCOPE, ControlRecord(version=3, image_threshold=1.0))  # older than the one in force
        publish_control_raw(
            settings, b"screws", ControlRecord(version=9, image_threshold=1.0).model_dump_json().encode()
        )
        wait_until(lambda: service.status().counters.get("control_refused", 0) == 3, 10, "three refusals")
        kept = results_of(range(4, 8))

        put(settings, SCOPE, None)
        wait_until(lambda: applied(service, "static-0.5"), 10, "the tombstone applied")
        reverted = results_of(range(8, 12))
    counters = service.status().counters
    assert counters["control_refused_not_json"] == counters["control_refused_not_newer"] == 1
    assert counters["control_refused_not_a_scope"] == 1 and counters["control_deleted"] == 1
    for result in stamped + kept:
        assert (result.versions.threshold_version, result.threshold, result.verdict) == (
            f"{SCOPE}@v4",
            0.0,
            "anomalous",
        )
    for result in reverted:
        assert (result.versions.threshold_version, result.threshold) == ("static-0.5", 0.5)
        assert result.verdict == ("anomalous" if result.raw_score >= 0.5 else "ok")


def results_for(settings: LinewatchSettings, frames: list) -> list[InspectionResult]:
    """Publish frames and return their results (only theirs: the results topic holds earlier ones too)."""
    sent = publish_frames(settings, frames)
    return [r for r in read_results(settings, sent) if r.frame_id in sent]


def publish_control_raw(settings: LinewatchSettings, key: bytes, value: bytes) -> None:
    """A message the control helpers would never write (bad key or value)."""
    from common.kafka import build_producer

    producer = build_producer(settings.kafka)
    try:
        producer.send(settings.kafka.control_topic, key=key, value=value).get(30)
    finally:
        producer.close(timeout=5)


def test_learning_mode_calibrates_from_the_first_frames_then_judges_with_the_published_record(
    kafka_broker, redis_server
):
    settings = control_settings(kafka_broker, redis_server)
    frames_to_learn = 10  # target 0.1 needs at least 9
    service = WorkerService(settings)
    with running(service):
        wait_until(lambda: service.status().control_caught_up, 120, "the control topic read")
        put(settings, SCOPE, ControlRecord(version=1, learning=Learning(frames=frames_to_learn, target_fpr=0.1)))
        wait_until(lambda: service.control.state.resolve("cam-0", "screw").learning, 10, "learning in force")
        learning = results_for(settings, [good_frame(i) for i in range(frames_to_learn)])
        wait_until(lambda: applied(service, f"{SCOPE}@v2"), 30, "the calibrated record back from the topic")
        table, refused = read_control_topic(settings.kafka)
        judged = results_for(settings, [good_frame(100 + i) for i in range(4)])
    assert len(learning) == frames_to_learn and not refused
    assert all(r.verdict == "calibrating" and r.versions.threshold_version == f"{SCOPE}@v1" for r in learning)
    record = table.records[SCOPE]
    assert record.version == 2 and record.calibration.by == "worker:worker-1" and record.calibration.n == 10
    # the worker's threshold is the conformal one of the raw scores the learning results carry
    assert record.image_threshold == pytest.approx(conformal_threshold([r.raw_score for r in learning], 0.1))
    assert record.pixel_threshold is not None and record.calibration.pixel_n == 10
    for result in judged:
        assert result.versions.threshold_version == f"{SCOPE}@v2" and result.threshold == record.image_threshold
        assert result.verdict == ("anomalous" if result.raw_score >= record.image_threshold else "ok")
    assert service.status().counters["control_calibrated"] == 1
    trail, _ = read_audit(settings.kafka, SCOPE)  # the learning record and the worker's calibration, once each
    assert [(a.action, a.version, a.by) for a in trail] == [("set", 1, "test"), ("learned", 2, "worker:worker-1")]
    assert trail[1].after == record and trail[1].topic is None


def test_control_commands_set_get_list_delete_against_the_broker(kafka_broker, redis_server, monkeypatch, capsys):
    from worker.cli import main

    settings = control_settings(kafka_broker, redis_server)
    monkeypatch.setenv("LINEWATCH_KAFKA__BOOTSTRAP_SERVERS", settings.kafka.bootstrap_servers)
    monkeypatch.setenv("LINEWATCH_KAFKA__CONTROL_TOPIC", settings.kafka.control_topic)

    def run(*argv: str) -> tuple[int, str, str]:
        code = main(["control", *argv])
        out, err = capsys.readouterr()
        return code, out, err

    assert run("set", "--scope", "camera:c1/object:nut", "--image-threshold", "0.7", "--by", "ana")[0] == 0
    code, out, _ = run("set", "--scope", "camera:c1/object:nut", "--extra-anomalous", "rusty {}", "--by", "bo")
    record = json.loads(out)["record"]
    assert code == 0 and record["version"] == 2 and record["image_threshold"] == 0.7
    assert record["prompts"]["extra_anomalous_states"] == ["rusty {}"] and record["updated_by"] == "bo"
    code, out, _ = run("get", "--scope", "camera:c1/object:nut")
    assert code == 0 and json.loads(out)["record"]["version"] == 2
    assert run("set", "--scope", "object:bolt", "--learning-frames", "20", "--target-fpr", "0.1")[0] == 0
    code, out, _ = run("list")
    assert code == 0 and [json.loads(line)["scope"] for line in out.splitlines()] == [
        "camera:c1/object:nut",
        "object:bolt",
    ]
    assert run("delete", "--scope", "object:bolt")[0] == 0
    code, _, err = run("get", "--scope", "object:bolt")
    assert code == 1 and "no record in force" in err
    code, _, err = run("set", "--scope", "bolt", "--image-threshold", "0.5")
    assert code == 2 and "not a control scope" in err
    code, _, err = run("set", "--scope", "object:bolt", "--image-threshold", "2")
    assert code == 2 and "image_threshold" in err


def test_prompt_overrides_of_a_camera_reach_the_inspector_of_a_running_worker(kafka_broker, redis_server):
    settings = control_settings(kafka_broker, redis_server)
    service = WorkerService(settings)
    prompts = PromptOverrides(object_name="hex nut", extra_anomalous_states=("rusty {}", "{} with a chipped thread"))
    with running(service):
        wait_until(lambda: service.status().control_caught_up, 120, "the control topic read")
        put(settings, "camera:cam-x", ControlRecord(version=1, prompts=prompts))
        wait_until(lambda: service.status().control_scopes == 1, 10, "the record in force")
        # the same image from a camera with overrides and from one without
        same = [good_frame(7, camera_id="cam-x"), good_frame(7, camera_id="cam-y")]
        results = {r.camera_id: r for r in results_for(settings, same)}
    assert results["cam-x"].raw_score != pytest.approx(results["cam-y"].raw_score, abs=1e-6)
    assert results["cam-x"].object_name == results["cam-y"].object_name == "screw"  # the frame's own name is kept
    assert results["cam-x"].versions.threshold_version == "static-0.5"  # prompts only: static thresholds
