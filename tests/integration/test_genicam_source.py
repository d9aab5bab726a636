"""The GenICam source against Aravis' GigE Vision camera simulator over loopback (no mocks):
frame counters and timestamps, software triggers with part ids, exposure/gain, lost frames
seen as counter gaps by the producer, and a reconnect after the camera drops off."""

from __future__ import annotations

import io
import itertools
import threading
import time
import uuid

import pytest

from common.kafka import build_consumer
from common.messages import parse_frame_meta
from common.settings import KafkaSettings, LinewatchSettings
from producer.cli import build_parser, run
from producer.sources.genicam import GenICamSource

pytestmark = pytest.mark.integration


def test_free_run_frames_carry_counter_and_timestamp(fake_camera_factory):
    camera = fake_camera_factory()
    with GenICamSource(camera.address, pixel_format="Mono8", exposure_us=2000.0, gain_db=3.0) as source:
        frames = list(itertools.islice(source, 5))
        assert source._camera.get_exposure_time() == pytest.approx(2000.0)
        assert source._camera.get_gain() == pytest.approx(3.0)
    counters = [f.frame_counter for f in frames]
    assert counters == list(range(counters[0], counters[0] + 5))  # no loss on a clean link
    stamps = [f.hardware_timestamp_ns for f in frames]
    assert all(b > a for a, b in zip(stamps, stamps[1:]))
    assert frames[0].rgb.shape == (512, 512, 3)
    assert (frames[0].rgb[..., 0] == frames[0].rgb[..., 2]).all()  # grey, replicated
    assert all(f.part_id is None for f in frames)


def test_software_trigger_one_frame_per_part_id(fake_camera_factory):
    camera = fake_camera_factory()
    parts = ["P-1", "P-2", "P-3"]
    with GenICamSource(camera.address, trigger="software", part_ids=iter(parts), pixel_format="BayerRG8") as source:
        frames = list(source)
    assert [f.part_id for f in frames] == parts
    assert frames[0].rgb.shape == (512, 512, 3)


def test_reconnects_after_the_camera_drops(fake_camera_factory):
    camera = fake_camera_factory()
    source = GenICamSource(camera.address, frame_timeout_s=0.5, reconnect_attempts=20, reconnect_delay_s=0.25)
    try:
        frames = iter(source)
        next(frames)
        camera.kill()
        time.sleep(1.0)
        camera.start()
        for _ in range(100):  # frames received before the drop may still be queued
            frame = next(frames)
            if source.reconnects:
                break
        assert source.reconnects == 1
        assert frame.frame_counter is not None  # a frame of the camera that came back
    finally:
        source.close()


def test_producer_notices_frames_the_camera_lost(fake_camera_factory, kafka_broker, topic_names, caplog):
    camera = fake_camera_factory(lost_per_thousand=2)  # ~1 in 3 frames of 512x512 loses a packet
    topic = topic_names("frames")
    settings = LinewatchSettings(kafka=KafkaSettings(bootstrap_servers=kafka_broker.bootstrap, frames_topic=topic))
    args = build_parser().parse_args(
        ["--source", f"genicam:{camera.address}", "--no-packet-resend", "--limit", "20", "--camera", "cam-g"]
        + ["--recipe", "R-12", "--lot", "L-7"]
    )
    out = io.StringIO()
    assert run(args, settings, out=out) == 0
    assert "frame(s) missed in" in out.getvalue()
    gap_lines = [r.message for r in caplog.records if "frame(s) missed" in r.message]
    assert gap_lines

    consumer = build_consumer(settings.kafka, topic, group_id=f"t-{uuid.uuid4().hex[:6]}", consumer_timeout_ms=5000)
    metas = [parse_frame_meta(r.headers) for r in consumer]
    consumer.close()
    assert len(metas) == 20
    counters = [m.traceability.frame_counter for m in sorted(metas, key=lambda m: m.captured_at)]
    jumps = sum(1 for a, b in zip(counters, counters[1:]) if b != a + 1)
    assert jumps == len(gap_lines)  # one log line per gap in what was published
    assert {(m.traceability.recipe, m.traceability.lot, m.traceability.part_id) for m in metas} == {
        ("R-12", "L-7", None)
    }


def test_hardware_trigger_waits_for_the_line_without_reconnecting(fake_camera_factory):
    camera = fake_camera_factory()
    source = GenICamSource(camera.address, trigger="hardware", trigger_source="Line0", frame_timeout_s=0.3)
    frames: list = []
    reader = threading.Thread(target=lambda: frames.extend(source), daemon=True)
    try:
        assert source._camera.get_trigger_source() == "Line0"
        assert source._camera.get_device().get_string_feature_value("TriggerMode") == "On"
        reader.start()
        time.sleep(2.0)  # several frame timeouts: no part came by, which is no failure
        assert frames == [] and source.reconnects == 0 and reader.is_alive()
    finally:
        source.close()  # ends the iteration
        reader.join(timeout=5)
    assert not reader.is_alive()
