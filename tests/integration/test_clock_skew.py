"""Staleness by the broker's clock against a real broker: the frames topic stamps records with the
broker's append time, so a camera clock running ahead cannot keep a backlog fresh; the worker's
status shows each camera's skew."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from kafka.admin import ConfigResource, ConfigResourceType

from common.kafka import build_admin
from common.schemas import utc_now
from tests.integration.test_worker_service import (
    good_frame,
    make_settings,
    publish_frames,
    read_results,
    running,
    wait_until,
)
from worker.stream.service import WorkerService
from worker.stream.startup import ensure_worker_topics

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def test_a_backlogged_frame_from_a_camera_clock_ahead_is_skipped_by_the_broker_clock(kafka_broker, redis_server):
    settings = make_settings(kafka_broker, redis_server.url, max_frame_age_s=2.0)
    ensure_worker_topics(settings.kafka)  # the frames topic as workers create it
    admin = build_admin(settings.kafka)
    try:
        described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, settings.kafka.frames_topic)])
        (configs,) = next(iter(described.values())).values()  # {type: {name: {key: data}}}
    finally:
        admin.close()
    kind = configs["message.timestamp.type"]
    assert (kind.get("value") if isinstance(kind, dict) else kind) == "LogAppendTime"

    ahead = good_frame(1, camera_id="cam-ahead", captured_at=utc_now() + timedelta(hours=1))
    sent = publish_frames(settings, [ahead])
    time.sleep(3.0)  # a backlog: older than max_frame_age_s by the broker's clock, "from the future" by the camera's
    service = WorkerService(settings)
    with running(service):
        wait_until(lambda: service.status().assigned_partitions, 120, "the worker to join")
        stale_first = {r.frame_id: r for r in read_results(settings, set(sent))}
        fresh = good_frame(2, camera_id="cam-fresh")
        sent |= publish_frames(settings, [fresh])
        results = stale_first | {r.frame_id: r for r in read_results(settings, sent)}
        skew = service.status().clock_skew
    stale = results[ahead[0].frame_id]
    assert stale.verdict == "skipped" and "by the broker's clock" in stale.note, stale.note
    assert results[fresh[0].frame_id].verdict in ("ok", "anomalous")
    assert skew["cam-ahead"]["latest_s"] == pytest.approx(-3600, abs=60)
    assert stale.clock_skew_s == pytest.approx(-3600, abs=60)  # results carry it to the dashboard
    assert abs(skew["cam-fresh"]["latest_s"]) < 30
