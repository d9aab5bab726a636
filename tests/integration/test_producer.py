"""The producer against the real Kafka broker (infra/): CLI run, refusal of oversize frames,
clean stop on SIGINT, frames on the camera partitions table. No mocks: messages are read back with a real consumer."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from kafka.admin import NewTopic

from common.codecs import decode_image, encode_image
from common.kafka import build_admin, build_consumer
from common.messages import parse_frame_meta
from common.settings import KafkaSettings
from common.telemetry import setup_telemetry
from producer.cli import main
from producer.publisher import FramePublisher, FrameTooLargeError, build_frame_meta

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
TRACEPARENT = re.compile(r"^00-(?!0{32})([0-9a-f]{32})-(?!0{16})([0-9a-f]{16})-[0-9a-f]{2}$")


def _settings(kafka_broker, topic: str, **overrides) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=kafka_broker.bootstrap, frames_topic=topic, partitions=2, **overrides)


def _read_all(settings: KafkaSettings, topic: str, expected: int, timeout_s: float = 30.0) -> list:
    consumer = build_consumer(settings, topic, group_id=f"test-{uuid.uuid4().hex[:8]}", consumer_timeout_ms=1000)
    records: list = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=500)
            for partition_records in batch.values():
                records.extend(partition_records)
            if len(records) >= expected:
                # Linger a little to catch unexpected extra messages (duplicates).
                for partition_records in consumer.poll(timeout_ms=1000).values():
                    records.extend(partition_records)
                break
    finally:
        consumer.close()
    return records


def _header(record, name: str) -> bytes | None:
    values = [v for k, v in (record.headers or []) if k == name]
    assert len(values) <= 1, f"header {name} repeated"
    return values[0] if values else None


def test_cli_synthetic_publishes_frames(kafka_broker, topic_names, monkeypatch, capsys):
    topic = topic_names("frames")
    monkeypatch.setenv("LINEWATCH_KAFKA__BOOTSTRAP_SERVERS", kafka_broker.bootstrap)
    monkeypatch.setenv("LINEWATCH_KAFKA__FRAMES_TOPIC", topic)
    monkeypatch.setenv("LINEWATCH_KAFKA__PARTITIONS", "2")
    code = main(
        [
            "--source",
            "synthetic",
            "--limit",
            "20",
            "--camera",
            "cam-7",
            "--line",
            "line-3",
            "--width",
            "320",
            "--height",
            "240",
            "--seed",
            "4",
            "--defect-rate",
            "0.3",
            "--log-level",
            "WARNING",
        ]
    )
    assert code == 0
    assert "frames sent: 20, refused: 0, failed: 0" in capsys.readouterr().out

    records = _read_all(_settings(kafka_broker, topic), topic, 20)
    assert len(records) == 20
    metas = []
    trace_ids = set()
    for record in records:
        assert record.key == b"cam-7"
        meta = parse_frame_meta(record.headers)
        metas.append(meta)
        assert (meta.camera_id, meta.line_id, meta.object_name) == ("cam-7", "line-3", "washer")
        assert (meta.width, meta.height, meta.content_type) == (320, 240, "image/jpeg")
        rgb = decode_image(record.value, meta.content_type)
        assert rgb.shape == (meta.height, meta.width, 3)
        traceparent = _header(record, "traceparent")
        assert traceparent is not None
        match = TRACEPARENT.match(traceparent.decode("ascii"))
        assert match, traceparent
        trace_ids.add(match.group(1))
    assert len({m.frame_id for m in metas}) == 20
    assert len(trace_ids) == 20  # one producer span (and trace) per frame
    # One key, one partition: the camera's frames keep their order.
    assert len({r.partition for r in records}) == 1
    times = [m.captured_at for m in sorted(metas, key=lambda m: m.captured_at)]
    assert [m.captured_at for m in metas] == times


def test_cli_folder_source_sends_files_unchanged(kafka_broker, topic_names, monkeypatch, tmp_path):
    topic = topic_names("folder")
    rng = np.random.default_rng(0)
    originals = []
    for i in range(3):
        data = encode_image(rng.integers(0, 255, (40 + i, 50, 3), dtype=np.uint8), "image/png")
        (tmp_path / f"frame{i}.png").write_bytes(data)
        originals.append(data)
    monkeypatch.setenv("LINEWATCH_KAFKA__BOOTSTRAP_SERVERS", kafka_broker.bootstrap)
    code = main(["--source", f"folder:{tmp_path}", "--topic", topic, "--object", "metal nut", "--log-level", "WARNING"])
    assert code == 0
    records = _read_all(_settings(kafka_broker, topic), topic, 3)
    assert [r.value for r in sorted(records, key=lambda r: r.offset)] == originals
    metas = [parse_frame_meta(r.headers) for r in sorted(records, key=lambda r: r.offset)]
    assert [(m.content_type, m.width, m.height, m.object_name) for m in metas] == [
        ("image/png", 50, 40 + i, "metal nut") for i in range(3)
    ]


def test_oversize_frame_is_refused_by_the_topic_limit(kafka_broker, topic_names):
    topic = topic_names("small")
    settings = _settings(kafka_broker, topic)
    admin = build_admin(settings)
    try:  # a topic that accepts 50 kB, below the client's own 1 MiB
        admin.create_topics([NewTopic(topic, 1, 1, topic_configs={"max.message.bytes": "50000"})])
    finally:
        admin.close()
    telemetry = setup_telemetry("producer-test", set_global=False)
    noise = np.random.default_rng(1).integers(0, 255, (256, 256, 3), dtype=np.uint8)  # ~200 kB as PNG
    small = np.full((32, 32, 3), 128, np.uint8)
    with FramePublisher(settings, telemetry=telemetry) as publisher:
        assert publisher.topic_limit == 50000 and publisher.max_bytes == 50000
        with pytest.raises(FrameTooLargeError) as refused:
            publisher.publish_array(
                noise, camera_id="cam-1", line_id="l", object_name="noise", content_type="image/png"
            )
        message = str(refused.value)
        assert refused.value.size > 50000 and refused.value.limit == 50000
        assert f"{refused.value.size:,} bytes" in message and "50,000 bytes" in message
        assert "max.message.bytes" in message and topic in message
        meta, future = publisher.publish_array(small, camera_id="cam-1", line_id="l", object_name="gray")
        record_metadata = future.get(timeout=30)
        assert record_metadata.topic == topic
    assert (publisher.stats.sent, publisher.stats.refused, publisher.stats.failed) == (1, 1, 0)
    prom = telemetry.prometheus_text().decode()
    assert 'outcome="refused"' in prom and 'outcome="sent"' in prom
    telemetry.shutdown()
    records = _read_all(settings, topic, 1, timeout_s=15)
    assert [parse_frame_meta(r.headers).frame_id for r in records] == [meta.frame_id]


def test_cli_reports_refusals_by_the_settings_limit(kafka_broker, topic_names, monkeypatch, capsys):
    topic = topic_names("limit")
    monkeypatch.setenv("LINEWATCH_KAFKA__BOOTSTRAP_SERVERS", kafka_broker.bootstrap)
    monkeypatch.setenv("LINEWATCH_KAFKA__MAX_MESSAGE_BYTES", "20000")
    # 640x480 PNG frames of the noisy synthetic scene are far above 20 kB.
    code = main(
        ["--source", "synthetic", "--limit", "3", "--format", "png", "--topic", topic, "--log-level", "WARNING"]
    )
    captured = capsys.readouterr()
    assert code == 1
    assert "frames sent: 0, refused: 3, failed: 0" in captured.out
    assert "20,000 bytes" in captured.err and "LINEWATCH_KAFKA__MAX_MESSAGE_BYTES" in captured.err


def test_sigint_stops_cleanly_after_flushing(kafka_broker, topic_names):
    topic = topic_names("sigint")
    env = dict(os.environ, LINEWATCH_KAFKA__BOOTSTRAP_SERVERS=kafka_broker.bootstrap, PYTHONUNBUFFERED="1")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "producer",
            "--source",
            "synthetic",
            "--fps",
            "20",
            "--topic",
            topic,
            "--width",
            "160",
            "--height",
            "120",
            "--log-level",
            "INFO",
        ],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        # Wait until it is publishing (the start-up line), then let it run a little.
        lines = []
        while time.monotonic() < deadline:
            line = process.stderr.readline()
            lines.append(line)
            if "publishing synthetic" in line or process.poll() is not None:
                break
        time.sleep(1.5)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, "".join(lines) + err
    match = re.search(r"frames sent: (\d+), refused: 0, failed: 0", out)
    assert match, out + err
    sent = int(match.group(1))
    assert sent >= 5
    records = _read_all(KafkaSettings(bootstrap_servers=kafka_broker.bootstrap), topic, sent)
    assert len(records) == sent  # everything reported as sent is on the broker, nothing more
    assert len({parse_frame_meta(r.headers).frame_id for r in records}) == sent


def test_frames_land_on_the_camera_partitions_table(kafka_broker, topic_names):
    from common.partitions import assign, partition_of

    topic = topic_names("table")
    cameras = [f"cam-{i}" for i in range(1, 41)]
    table = assign(cameras, 16)
    settings = _settings(kafka_broker, topic, camera_partitions=table).model_copy(update={"partitions": 16})
    data = encode_image(np.full((8, 8, 3), 128, np.uint8))
    with FramePublisher(settings) as publisher:
        futures = {}
        for camera in [*cameras, "cam-99"]:  # cam-99 is not in the table: murmur2 of its id
            meta = build_frame_meta(
                camera_id=camera, line_id="l", object_name="o", content_type="image/jpeg", width=8, height=8
            )
            futures[camera] = publisher.publish(data, meta)
        acked = {camera: future.get(30).partition for camera, future in futures.items()}
    records = _read_all(settings, topic, len(futures))
    landed = {r.key.decode(): r.partition for r in records}
    assert acked == landed == table | {"cam-99": partition_of("cam-99", 16)}
    listed = [landed[camera] for camera in cameras]
    assert max(listed.count(p) for p in range(16)) == 3  # 40 cameras, 16 partitions: at most 3 on one
