"""Frame message building: FrameMeta header, frame ids, size estimation (no broker needed)."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone

import pytest
from pydantic import ValidationError

from common.messages import FrameHeaderError, estimate_record_size, frame_headers, parse_frame_meta
from common.schemas import FRAME_HEADER
from producer.publisher import _find_config_value, build_frame_meta, new_frame_id


def _meta(**overrides):
    fields = dict(
        camera_id="cam-1", line_id="line-1", object_name="washer", content_type="image/jpeg", width=640, height=480
    )
    return build_frame_meta(**(fields | overrides))


def test_frame_meta_defaults_are_fresh_and_utc():
    before = datetime.now(timezone.utc)
    meta = _meta()
    assert meta.schema_version == 1
    assert meta.captured_at.tzinfo is not None and before <= meta.captured_at <= datetime.now(timezone.utc)
    assert (meta.camera_id, meta.line_id, meta.object_name) == ("cam-1", "line-1", "washer")
    assert (meta.width, meta.height, meta.content_type) == (640, 480, "image/jpeg")


def test_frame_ids_are_uuid4_hex_and_every_frame_gets_its_own():
    frame_id = new_frame_id()
    assert uuid.UUID(hex=frame_id).version == 4 and uuid.UUID(hex=frame_id).hex == frame_id  # 32 lowercase hex
    first, second = _meta(), _meta()
    assert first.frame_id != second.frame_id and uuid.UUID(hex=first.frame_id).version == 4
    assert _meta(frame_id="given-1").frame_id == "given-1"  # a caller's id is kept
    assert parse_frame_meta(frame_headers(first)).frame_id == first.frame_id  # a valid header id


def test_header_round_trip():
    captured = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)
    meta = _meta(frame_id="f-1", captured_at=captured, content_type="image/png")
    headers = frame_headers(meta, extra=[("x-extra", b"1")])
    assert headers[0][0] == FRAME_HEADER and isinstance(headers[0][1], bytes)
    assert ("x-extra", b"1") in headers
    decoded = json.loads(headers[0][1])
    assert decoded["frame_id"] == "f-1" and decoded["content_type"] == "image/png"
    assert parse_frame_meta(headers) == meta
    assert parse_frame_meta(headers).captured_at == captured


def test_parse_rejects_missing_or_bad_header():
    with pytest.raises(FrameHeaderError, match="no lw-frame header"):
        parse_frame_meta([("traceparent", b"x")])
    with pytest.raises(FrameHeaderError, match="frame_id") as refused:
        parse_frame_meta([(FRAME_HEADER, b'{"frame_id": ""}')])
    assert refused.value.error_type == "InvalidHeader"
    with pytest.raises(FrameHeaderError, match="exactly one"):
        parse_frame_meta(frame_headers(_meta()) * 2)


def test_meta_validation_applies():
    with pytest.raises(ValidationError):
        _meta(width=0)
    with pytest.raises(ValidationError):
        _meta(captured_at=datetime(2024, 1, 1))  # naive time


def test_estimate_bounds_the_real_record_size():
    value = b"\xff" * 100_000
    headers = frame_headers(_meta()) + [("traceparent", b"0" * 55)]
    size = estimate_record_size(b"cam-1", value, headers)
    payload = len(value) + len(b"cam-1") + sum(len(k) + len(v) for k, v in headers)
    assert payload < size < payload + 200
    assert estimate_record_size(b"cam-1", value + b"x", headers) == size + 1


def test_topic_config_parsing_for_both_client_generations():
    v3 = {"topic": {"frames": {"max.message.bytes": {"value": "2048", "config_source": "DYNAMIC_TOPIC_CONFIG"}}}}
    assert _find_config_value(v3, "frames", "max.message.bytes") == "2048"
    assert _find_config_value(v3, "other", "max.message.bytes") is None

    class Response:  # kafka-python 2.x DescribeConfigsResponse shape
        resources = [(0, None, 2, "frames", [("max.message.bytes", "4096", False, False, False)])]

    assert _find_config_value([Response()], "frames", "max.message.bytes") == "4096"
    assert _find_config_value([Response()], "nope", "max.message.bytes") is None
