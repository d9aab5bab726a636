"""`calibrate --publish`, `--from-topic`, `--from-feedback` and `feedback add|list` against the
real Kafka broker (tests/conftest.py), tiny profile without a foreground stage.

The commands run in-process through `worker.cli.main`, configured by `LINEWATCH_*` variables
as an operator would; topics are unique to each test.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType

from common.codecs import encode_image
from common.control import ControlRecord, FeedbackRecord
from common.kafka import build_admin, build_producer, ensure_topics
from common.messages import frame_headers
from common.settings import KafkaSettings
from producer.publisher import build_frame_meta
from producer.sources.synthetic import SyntheticSource
from worker.calibration.record import read_record_file
from worker.cli import main

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

OBJECT = "washer"
CAMERA = "cam-a"
SCOPE = f"camera:{CAMERA}/object:{OBJECT}"
TINY = ["--profile", "tiny", "--foreground", "none", "--no-progress"]


@pytest.fixture
def kafka(kafka_broker, topic_names, monkeypatch) -> KafkaSettings:
    """Point the commands at the test broker and this test's own topics."""
    env = {
        "BOOTSTRAP_SERVERS": kafka_broker.bootstrap,
        "FRAMES_TOPIC": topic_names("frames"),
        "CONTROL_TOPIC": topic_names("control"),
        "FEEDBACK_TOPIC": topic_names("feedback"),
        "PARTITIONS": "2",
    }
    for name, value in env.items():
        monkeypatch.setenv(f"LINEWATCH_KAFKA__{name}", value)
    monkeypatch.setenv("LINEWATCH_TELEMETRY__ENABLED", "false")
    monkeypatch.delenv("LINEWATCH_CONFIG", raising=False)
    return KafkaSettings(**{k.lower(): v for k, v in env.items()})


def publish_frames(kafka: KafkaSettings, camera: str, object_name: str, count: int, seed: int) -> list[tuple]:
    """`count` good synthetic frames of `camera`, keyed by it; returns (frame id, partition, offset) each."""
    ensure_topics(kafka, [kafka.frames_topic])
    producer = build_producer(kafka)
    sent = []
    try:
        for frame in SyntheticSource(width=96, height=72, seed=seed, defect_rate=0.0, limit=count):
            meta = build_frame_meta(
                camera_id=camera,
                line_id="line-1",
                object_name=object_name,
                content_type="image/png",
                width=96,
                height=72,
            )
            future = producer.send(
                kafka.frames_topic,
                key=camera.encode(),
                value=encode_image(frame.rgb, "image/png"),
                headers=frame_headers(meta),
            )
            done = future.get(timeout=30)
            sent.append((meta.frame_id, done.partition, done.offset))
    finally:
        producer.close(timeout=5)
    return sent


def control_records(kafka: KafkaSettings, scope: str) -> list[ControlRecord]:
    """Every record of `scope` on the control topic, in order."""
    consumer = KafkaConsumer(bootstrap_servers=kafka.bootstrap_servers, group_id=None, enable_auto_commit=False)
    try:
        tps = [TopicPartition(kafka.control_topic, p) for p in consumer.partitions_for_topic(kafka.control_topic)]
        consumer.assign(tps)
        consumer.seek_to_beginning()
        end = consumer.end_offsets(tps)
        records = []
        deadline = time.monotonic() + 30
        while any(consumer.position(tp) < end[tp] for tp in tps) and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records += [r for r in batch if r.key == scope.encode()]
        return [ControlRecord.model_validate_json(r.value) for r in sorted(records, key=lambda r: r.offset)]
    finally:
        consumer.close()


def cleanup_policy(kafka: KafkaSettings, topic: str) -> str:
    admin = build_admin(kafka)
    try:
        resource = ConfigResource(ConfigResourceType.TOPIC, topic, configs={"cleanup.policy": None})
        answer = admin.describe_configs([resource], config_filter="all")
    finally:
        admin.close()
    [by_topic] = answer.values()
    return by_topic[topic]["cleanup.policy"]["value"]


def calibrate(*args: str) -> list[str]:
    return ["calibrate", "--object", OBJECT, "--camera", CAMERA, "--target-fpr", "0.05", *TINY, *args]


def test_publish_numbers_versions_and_from_topic_takes_the_cameras_newest_frames(kafka, capsys) -> None:
    publish_frames(kafka, CAMERA, OBJECT, 24, seed=1)
    publish_frames(kafka, "cam-b", "bolt", 6, seed=2)  # another camera's frames must not be taken

    assert main(calibrate("--from-topic", "--frames", "20", "--publish", "--by", "tester")) == 0
    out, err = capsys.readouterr()
    assert f"published scope {SCOPE} version 1 to {kafka.control_topic}" in out
    assert "skipped" not in err  # 20 frames found, all of cam-a and of the washer
    [first] = control_records(kafka, SCOPE)
    assert first.version == 1 and first.calibration.n == 20 and first.calibration.by == "tester"
    assert first.image_threshold is not None and first.pixel_threshold is not None
    assert cleanup_policy(kafka, kafka.control_topic) == "compact"  # created compacted: a scope's last record stays

    assert main(calibrate("--from-topic", "--frames", "19", "--publish")) == 0
    assert f"published scope {SCOPE} version 2" in capsys.readouterr().out
    records = control_records(kafka, SCOPE)
    assert [r.version for r in records] == [1, 2] and records[1].calibration.n == 19


def test_asking_for_more_frames_than_the_topic_holds_says_so(kafka, capsys) -> None:
    publish_frames(kafka, CAMERA, OBJECT, 12, seed=3)
    assert main(calibrate("--from-topic", "--frames", "30")) == 2
    err = capsys.readouterr().err
    assert f"holds only 12 frames of camera {CAMERA}" in err and "at least 19 are needed (give 7 more)" in err


def test_false_alarms_from_feedback_join_the_normal_frames(kafka, tmp_path, capsys) -> None:
    sent = publish_frames(kafka, CAMERA, OBJECT, 26, seed=4)
    # the oldest frames were flagged and marked false alarms; the newest 19 are the normal set
    for frame_id, partition, offset in sent[:3]:
        add = ["feedback", "add", "--frame-id", frame_id, "--camera", CAMERA, "--object", OBJECT, "--by", "op"]
        assert main([*add, "--label", "false_alarm", "--partition", str(partition), "--offset", str(offset)]) == 0
        assert f'"frame_id":"{frame_id}"' in capsys.readouterr().out
    frame_id, partition, offset = sent[3]
    base = ["feedback", "add", "--camera", CAMERA, "--object", OBJECT, "--by", "op"]
    # a confirmed defect is no normal frame; a false alarm without a position, or past the end, cannot be fetched
    assert (
        main(
            [*base, "--frame-id", frame_id, "--label", "defect", "--partition", str(partition), "--offset", str(offset)]
        )
        == 0
    )
    assert main([*base, "--frame-id", "unplaced", "--label", "false_alarm"]) == 0
    assert (
        main([*base, "--frame-id", "future", "--label", "false_alarm", "--partition", "0", "--offset", "100000"]) == 0
    )
    capsys.readouterr()

    assert main(["feedback", "list", "--camera", CAMERA, "--label", "false_alarm"]) == 0
    listed = [FeedbackRecord.model_validate_json(line) for line in capsys.readouterr().out.splitlines()]
    assert [r.frame_id for r in listed] == [f for f, _, _ in sent[:3]] + ["unplaced", "future"]

    out = tmp_path / "cal.json"
    assert main(calibrate("--from-topic", "--frames", "19", "--from-feedback", "--out", str(out))) == 0
    err = capsys.readouterr().err
    assert "3 false-alarm frame(s) added from feedback" in err
    assert (
        "false alarm cam-a/unplaced: no frames-topic position" in err and "future" in err and "not written yet" in err
    )
    assert read_record_file(out).record.calibration.n == 19 + 3

    # the feedback alone is too little for 5%: refused, naming how many are needed
    assert main(calibrate("--from-feedback")) == 2
    assert (
        "3 normal frames cannot bound the false-alarm rate at 0.05: at least 19 are needed" in capsys.readouterr().err
    )


def test_an_unreachable_broker_is_a_clear_error(monkeypatch, capsys) -> None:
    monkeypatch.setenv("LINEWATCH_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.setenv("LINEWATCH_TELEMETRY__ENABLED", "false")
    assert main(["feedback", "list"]) == 1
    assert "error: Kafka at 127.0.0.1:1" in capsys.readouterr().err


def test_the_calibration_summary_matches_the_scores(kafka, tmp_path) -> None:
    """The threshold is the conformal bound of the frames' own raw scores: just above the highest at n = 19."""
    publish_frames(kafka, CAMERA, OBJECT, 19, seed=5)
    out = tmp_path / "cal.json"
    assert main(calibrate("--from-topic", "--frames", "19", "--out", str(out))) == 0
    record = read_record_file(out).record
    assert record.image_threshold == np.nextafter(record.calibration.quantiles["max"], 1.0)
