"""Bad frames end to end: real broker and Redis, tiny models, worker in a thread.

One partition carries good frames with bad ones between them: one of each way a frame is
refused (undecodable, tombstone, over the configured pixel and byte limits, lw-frame header
missing or invalid). Each bad one must land in the DLQ with the expected stage, type and
reason in `lw-error` and its original key, value and headers; every good one gets a result;
the worker keeps running and commits past all of them. Every reason a frame can be refused
for is tests/unit/test_bad_input.py's job. Then the results-topic size limit: results shrunk
to fit (saying so in `note`) and one whose mask alone is too big, dead-lettered.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest

from common.codecs import encode_image, rle_to_mask
from common.messages import frame_headers
from common.schemas import ERROR_HEADER, FRAME_HEADER, DeadLetterError, RleMask
from producer.publisher import build_frame_meta
from tests.integration.test_worker_service import (
    HEIGHT,
    PARTITIONS,
    WIDTH,
    Record,
    committed_total,
    good_frame,
    image,
    make_settings,
    publish,
    read_results,
    read_topic,
    running,
    wait_until,
    with_worker,
)
from tests.support.bad_inputs import png_claiming
from worker.stream.service import WorkerService

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

MAX_FRAME_PIXELS = 5_000  # the good frames have 64 x 48 = 3072
MAX_FRAME_BYTES = 8_000  # the good JPEGs are about 3.5 kB


@dataclass(frozen=True)
class Bad:
    """A bad record and what its dead letter must say."""

    name: str
    record: Record
    stage: str
    error_type: str
    reason: str  # a substring of lw-error's message


def meta_json(seed: int, **update) -> bytes:
    """An lw-frame header value: a good frame's meta with some fields replaced (no validation)."""
    return json.dumps(json.loads(good_frame(seed)[0].model_dump_json()) | update).encode()


def bad_records() -> list[Bad]:
    """One bad record per way to the DLQ: decoder, limits from the settings, header parser."""
    jpeg = encode_image(image(0))
    noise = np.random.default_rng(7).integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)

    def with_meta(seed: int, value: bytes | None, **meta) -> Record:
        frame_meta = good_frame(seed, **meta)[0]
        return frame_meta.camera_id.encode(), value, frame_headers(frame_meta)

    def with_header(seed: int, value: bytes) -> Record:
        return f"cam-{seed}".encode(), jpeg, [(FRAME_HEADER, value), ("traceparent", b"00-garbage")]

    return [
        Bad(
            "truncated JPEG",
            with_meta(100, jpeg[: len(jpeg) // 2]),
            "decode",
            "ImageDecodeError.undecodable",
            "truncated",
        ),
        Bad("tombstone", with_meta(103, None), "decode", "ImageDecodeError.empty", "payload is empty"),
        Bad(
            "PNG bomb",
            with_meta(104, png_claiming(50_000, 50_000), content_type="image/png", width=50_000, height=50_000),
            "decode",
            "ImageDecodeError.too_many_pixels",
            f"50000x50000 = 2500000000 pixels, limit is {MAX_FRAME_PIXELS}",
        ),
        Bad(
            "over the byte limit",
            with_meta(107, encode_image(noise, "image/png"), content_type="image/png"),
            "decode",
            "ImageDecodeError.too_large",
            f"limit is {MAX_FRAME_BYTES}",
        ),
        Bad(
            "lw-frame missing",
            (b"cam-10", jpeg, [("traceparent", b"00-garbage")]),
            "header",
            "MissingHeader",
            f"no {FRAME_HEADER} header",
        ),
        Bad(
            "wrong schema version",
            with_header(14, meta_json(14, schema_version=2)),
            "header",
            "InvalidHeader",
            "schema_version: Input should be 1 (got 2)",
        ),
    ]


def lw_error(record) -> DeadLetterError:
    return DeadLetterError.model_validate_json(dict(record.headers)[ERROR_HEADER])


def results_count(service: WorkerService) -> int:
    counters = service.status().counters
    return counters.get("results_ok", 0) + counters.get("results_anomalous", 0)


# ----------------------------------------------------------------------------- bad frames


def test_every_bad_frame_is_dead_lettered_with_its_reason_and_the_worker_goes_on(kafka_broker, redis_server):
    settings = make_settings(
        kafka_broker, redis_server.url, max_frame_pixels=MAX_FRAME_PIXELS, max_frame_bytes=MAX_FRAME_BYTES
    )
    bad = bad_records()
    good = [good_frame(i) for i in range(len(bad) + 1)]
    records: list[Record] = [(good[0][0].camera_id.encode(), good[0][1], frame_headers(good[0][0]))]
    for case, (meta, data) in zip(bad, good[1:]):  # good, bad, good, bad, ..., good
        records += [case.record, (meta.camera_id.encode(), data, frame_headers(meta))]
    bad_offsets = {2 * i + 1: case for i, case in enumerate(bad)}

    service = WorkerService(settings)
    with running(service) as stop:
        publish(settings, records, partition=0)  # one partition: the order and offsets are known
        results = read_results(settings, {meta.frame_id for meta, _ in good})
        dead = read_topic(settings, settings.kafka.dlq_topic, lambda rs: len(rs) >= len(bad), 120)
        wait_until(lambda: committed_total(settings) == len(records), 60, "offsets committed past every record")
        status = service.status()
        assert status.running and not status.uncommitted_messages  # still serving, nothing left behind
        stop()

    assert sorted(r.frame_id for r in results) == sorted(meta.frame_id for meta, _ in good)  # once each
    assert all(r.verdict in ("ok", "anomalous") for r in results)
    assert len(dead) == len(bad)
    for record in dead:
        error = lw_error(record)
        case = bad_offsets[error.source.offset]
        assert (error.stage, error.error_type) == (case.stage, case.error_type), (case.name, error)
        assert case.reason in error.message, (case.name, error.message)
        assert (error.source.topic, error.source.partition) == (settings.kafka.frames_topic, 0)
        assert error.worker_id == "worker-1"
        key, value, headers = case.record
        assert record.key == key and record.value == value, case.name  # the original, byte for byte
        assert [h for h in record.headers if h[0] != ERROR_HEADER] == headers, case.name
    assert {lw_error(r).source.offset for r in dead} == set(bad_offsets)
    counters = service.status().counters
    assert counters["consumed"] == len(records) and counters["dead_letters"] == len(bad)
    assert results_count(service) == len(good)

    # The group's offsets are past everything: a new member of the group gets nothing again. Proof that
    # it polled partition 0 past the old records: the one frame published after it joined is answered,
    # and it is the only one consumed.
    second = WorkerService(with_worker(settings, worker_id="worker-2"))
    with running(second):
        wait_until(lambda: len(second.status().assigned_partitions) == PARTITIONS, 60, "worker-2 to own the partitions")
        sentinel_meta, sentinel = good_frame(500)
        publish(settings, [(sentinel_meta.camera_id.encode(), sentinel, frame_headers(sentinel_meta))], partition=0)
        read_results(settings, {sentinel_meta.frame_id})  # partition 0 is in order: older records would come first
        wait_until(lambda: results_count(second) == 1, 30, "worker-2 to count its result")
        assert second.status().counters.get("consumed", 0) == 1


# ----------------------------------------------------------------------------- results too large


def test_results_over_the_message_limit_are_shrunk_or_dead_lettered(kafka_broker, redis_server):
    # A 64 x 48 frame's full result (heatmap 64 x 48, noisy tiny-model mask) is about 6 kB and
    # about 3 kB without heatmap and regions; a 256 x 192 frame's mask alone is about 25 kB.
    limit = 4096
    settings = make_settings(kafka_broker, redis_server.url, heatmap_side=64)
    worker_settings = settings.model_copy(
        update={"kafka": settings.kafka.model_copy(update={"max_message_bytes": limit})}
    )
    small = [good_frame(i) for i in range(4)]
    rng = np.random.default_rng(3)
    big_image = np.clip(np.linspace(60, 200, 256)[None, :, None] + rng.normal(0, 20, (192, 256, 3)), 0, 255)
    big_meta = build_frame_meta(
        camera_id="cam-big", line_id="line-1", object_name="screw", content_type="image/jpeg", width=256, height=192
    )
    big: Record = (b"cam-big", encode_image(big_image.astype(np.uint8)), frame_headers(big_meta))
    records: list[Record] = [(m.camera_id.encode(), data, frame_headers(m)) for m, data in small[:2]]
    records += [big] + [(m.camera_id.encode(), data, frame_headers(m)) for m, data in small[2:]]
    assert len(big[1]) > limit

    service = WorkerService(worker_settings)  # creates the results and DLQ topics with the small limit
    with running(service):
        publish(settings, records, partition=0)  # the frames topic keeps the default limit
        raw = read_topic(settings, settings.kafka.results_topic, lambda rs: len(rs) >= len(small), 180)
        dead = read_topic(settings, settings.kafka.dlq_topic, lambda rs: len(rs) >= 1, 120)
        wait_until(lambda: committed_total(settings) == len(records), 60, "offsets committed past every record")

    results = [json.loads(r.value) for r in raw]
    assert sorted(r["frame_id"] for r in results) == sorted(m.frame_id for m, _ in small)
    for record, result in zip(raw, results):
        assert len(record.value) < limit
        assert result["heatmap"] is None and f"heatmap dropped to fit {limit} bytes" in result["note"]
        assert rle_to_mask(RleMask.model_validate(result["mask"])).shape == (HEIGHT, WIDTH)  # never cut
    assert service.status().counters["results_shrunk"] == len(small)

    assert len(dead) == 1
    error = lw_error(dead[0])
    assert (error.stage, error.error_type, error.source.offset) == ("encode", "ResultTooLarge", 2)
    assert f"result of frame {big_meta.frame_id}" in error.message and f"limit is {limit}" in error.message
    # the original 256 x 192 JPEG does not fit next to the error either: left out, and said so
    assert dead[0].value is None and f"[original value of {len(big[1])} bytes omitted: too large]" in error.message
    assert dead[0].key == big[0] and [h for h in dead[0].headers if h[0] != ERROR_HEADER] == big[2]
