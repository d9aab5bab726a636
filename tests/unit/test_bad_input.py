"""Every kind of bad frame is refused with a clear reason, through the worker's own functions.

`parse_meta` and `decode_frame` are what the worker's poll thread calls; a `Rejected`
becomes the dead letter's `lw-error` (stage, error_type, message). Two tables, one row per
kind of bad frame: each row checks the stage, the type and that the message names the problem.
This is the one place for the rejection reasons; tests/integration/test_bad_input_dlq.py checks
the way of a rejection through a real worker to the DLQ, tests/unit/test_fuzz_decoding.py that
nothing else escapes on arbitrary input.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
import pytest
from PIL import ImageFile

from common.codecs import ImageDecodeError, decode_image, encode_image
from common.schemas import FRAME_HEADER, FrameMeta
from common.settings import WorkerSettings
from tests.support.bad_inputs import jpeg_claiming, png_claiming
from worker.stream.intake import Rejected, decode_frame, parse_meta

LIMITS = WorkerSettings()  # the worker's default limits
HEIGHT, WIDTH = 48, 64
META = dict(
    schema_version=1,
    frame_id="f-1",
    camera_id="cam-1",
    line_id="line-1",
    object_name="screw",
    captured_at="2024-05-01T12:00:00Z",
    content_type="image/jpeg",
    width=WIDTH,
    height=HEIGHT,
)


def image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)


def meta(**update) -> FrameMeta:
    return FrameMeta.model_validate(META | update)


def decode(value: bytes | None, frame_meta: FrameMeta | None = None, **limits) -> np.ndarray:
    limits = {"max_bytes": LIMITS.max_frame_bytes, "max_pixels": LIMITS.max_frame_pixels} | limits
    return decode_frame(frame_meta or meta(), value, **limits)


def rejected_decode(value: bytes | None, frame_meta: FrameMeta | None = None, **limits) -> Rejected:
    with pytest.raises(Rejected) as info:
        decode(value, frame_meta, **limits)
    assert info.value.stage == "decode"
    return info.value


def rejected_header(headers: list[tuple[str, bytes]]) -> Rejected:
    with pytest.raises(Rejected) as info:
        parse_meta(headers)
    assert info.value.stage == "header"
    assert len(info.value.message) < 500  # a reason, never an echo of the whole input
    return info.value


def header(**update) -> list[tuple[str, bytes]]:
    return [(FRAME_HEADER, json.dumps(META | update).encode())]


@pytest.fixture
def no_pixel_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail if PIL starts decoding pixels (allocating the pixel buffer) at all."""

    def load(self):
        raise AssertionError(f"pixels of a {self.size[0]}x{self.size[1]} image were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)


# ----------------------------------------------------------------------------- good frames pass


def test_a_good_jpeg_and_png_decode_to_the_announced_shape():
    assert decode(encode_image(image())).shape == (HEIGHT, WIDTH, 3)
    png = decode(encode_image(image(), "image/png"), meta(content_type="image/png"))
    assert png.dtype == np.uint8 and np.array_equal(png, image())


# ----------------------------------------------------------------------------- payloads


@dataclass(frozen=True)
class BadPayload:
    """A payload `decode_frame` refuses: what it is sent with, and what the refusal must say."""

    payload: Callable[[], bytes | None]
    error_type: str
    says: Callable[[bytes | None], list[str]]  # fragments of the message (may quote the payload)
    meta: dict = field(default_factory=dict)
    limits: dict = field(default_factory=dict)
    before_decoding: bool = False  # refused from the header/size alone: no pixel buffer allocated


def _jpeg() -> bytes:
    return encode_image(image())


def _png() -> bytes:
    return encode_image(image(), "image/png")


PNG = {"content_type": "image/png"}
TOO_MANY = "ImageDecodeError.too_many_pixels"
BAD_PAYLOADS = {
    "truncated-jpeg": BadPayload(
        lambda: _jpeg()[: len(_jpeg()) // 2], "ImageDecodeError.undecodable", lambda _: ["JPEG", "truncated"]
    ),
    "truncated-png": BadPayload(
        lambda: _png()[: len(_png()) // 2], "ImageDecodeError.undecodable", lambda _: ["truncated"], meta=PNG
    ),
    "jpeg-cut-inside-its-header": BadPayload(
        lambda: _jpeg()[:20], "ImageDecodeError.undecodable", lambda _: ["JPEG header"]
    ),
    "random-bytes": BadPayload(
        lambda: np.random.default_rng(1).bytes(4096),
        "ImageDecodeError.undecodable",
        lambda noise: ["not a JPEG or PNG", noise[:8].hex()],
    ),
    "empty": BadPayload(lambda: b"", "ImageDecodeError.empty", lambda _: ["empty"]),
    "tombstone": BadPayload(lambda: None, "ImageDecodeError.empty", lambda _: ["empty"]),
    "png-decompression-bomb": BadPayload(
        lambda: png_claiming(50_000, 50_000),
        TOO_MANY,
        lambda _: ["50000x50000", f"limit is {LIMITS.max_frame_pixels}"],
        meta=PNG | {"width": 50_000, "height": 50_000},
        before_decoding=True,
    ),
    "jpeg-claiming-huge-dimensions": BadPayload(
        lambda: jpeg_claiming(65_000, 60_000),
        TOO_MANY,
        lambda _: ["65000x60000", str(LIMITS.max_frame_pixels)],
        meta={"width": 65_000, "height": 60_000},
        before_decoding=True,
    ),
    # 100 M pixels: above PIL's built-in MAX_IMAGE_PIXELS (89 M) but the message still names our limit
    "the-configured-pixel-limit-not-pils": BadPayload(
        lambda: png_claiming(10_000, 10_000),
        TOO_MANY,
        lambda _: ["10000x10000", "limit is 50000000"],
        meta=PNG,
        limits={"max_pixels": 50_000_000},
        before_decoding=True,
    ),
    "a-real-frame-over-the-pixel-limit": BadPayload(
        _jpeg,
        TOO_MANY,
        lambda _: [f"{WIDTH}x{HEIGHT}", f"limit is {WIDTH * HEIGHT - 1}"],
        limits={"max_pixels": WIDTH * HEIGHT - 1},
    ),
    "over-the-byte-limit": BadPayload(
        _jpeg,
        "ImageDecodeError.too_large",
        lambda jpeg: [f"{len(jpeg)} bytes", f"limit is {len(jpeg) - 1}"],
        limits={"max_bytes": len(_jpeg()) - 1},
        before_decoding=True,
    ),
    "png-under-a-jpeg-header": BadPayload(
        _png, "ImageDecodeError.content_type", lambda _: ["payload is PNG", "image/jpeg"]
    ),
    "pixels-disagree-with-the-announced-size": BadPayload(
        _jpeg,
        "SizeMismatch",
        lambda _: [f"image is {WIDTH}x{HEIGHT}", f"header says {WIDTH * 2}x{HEIGHT}"],
        meta={"width": WIDTH * 2},
    ),
}


@pytest.mark.parametrize("case", BAD_PAYLOADS.values(), ids=BAD_PAYLOADS.keys())
def test_a_bad_payload_is_refused_with_its_reason(case: BadPayload, request: pytest.FixtureRequest):
    payload = case.payload()
    if case.before_decoding:
        request.getfixturevalue("no_pixel_decoding")
    error = rejected_decode(payload, meta(**case.meta), **case.limits)
    assert error.error_type == case.error_type
    for fragment in case.says(payload):
        assert fragment in error.message, (fragment, error.message)


def test_the_hostile_payloads_are_tiny():
    assert len(png_claiming(50_000, 50_000)) < 200 and len(jpeg_claiming(65_000, 60_000)) < 1000


def test_unknown_content_type_in_the_codec():
    with pytest.raises(ImageDecodeError) as info:
        decode_image(encode_image(image()), "image/gif")
    assert info.value.reason == "content_type" and "image/gif" in str(info.value)


# ----------------------------------------------------------------------------- the lw-frame header


MISSING = [
    f"{name}: Field required"
    for name in ("camera_id", "line_id", "object_name", "captured_at", "content_type", "width", "height")
]
BAD_HEADERS = {
    # names are case-sensitive: "LW-FRAME" is not the frame header
    "missing": ([("traceparent", b"00-abc"), ("LW-FRAME", json.dumps(META).encode())], "MissingHeader", [FRAME_HEADER]),
    "no-headers-at-all": ([], "MissingHeader", [FRAME_HEADER]),
    "not-json": ([(FRAME_HEADER, b'{"frame_id": "x", "camera_id": ')], "InvalidHeader", ["Invalid JSON"]),
    "not-utf8": ([(FRAME_HEADER, b'{"frame_id": "\xff\xfe"}')], "InvalidHeader", ["not UTF-8", "byte 14"]),
    **{
        f"json-{kind}-not-an-object": (
            [(FRAME_HEADER, value)],
            "InvalidHeader",
            ["Input should be an object", f"(got {got})"],
        )
        for kind, value, got in [
            ("list", b"[1, 2]", "[1, 2]"),
            ("number", b"42", "42"),
            ("null", b"null", "None"),
            ("string", b'"lw"', "'lw'"),
        ]
    },
    "empty": ([(FRAME_HEADER, b"")], "InvalidHeader", ["header is empty"]),
    "blank": ([(FRAME_HEADER, b"   ")], "InvalidHeader", ["header is empty"]),
    "wrong-schema-version": (header(schema_version=2), "InvalidHeader", ["schema_version: Input should be 1 (got 2)"]),
    "duplicate-is-ambiguous": (
        [header()[0], ("traceparent", b"x"), header()[0]],
        "InvalidHeader",
        [f"2 {FRAME_HEADER} headers"],
    ),
    "object-name-empty": (
        header(object_name=""),
        "InvalidHeader",
        ["object_name: String should have at least 1 character"],
    ),
    "object-name-blank": (
        header(object_name="   "),
        "InvalidHeader",
        ["object_name: Value error, object_name must be printable text and not blank"],
    ),
    # quoted shortened: repr() adds the quotes
    "object-name-10kB": (
        header(object_name="x" * 10_240),
        "InvalidHeader",
        ["object_name: String should have at most 100 characters", "(10242 chars)"],
    ),
    "object-name-control-characters": (
        header(object_name="screw\nINFO forged log line"),
        "InvalidHeader",
        ["object_name must be printable"],
    ),
    **{
        f"{name}-control-characters": (
            header(**{name: "cam\r\n1"}),
            "InvalidHeader",
            [f"{name}: Value error, must be printable"],
        )
        for name in ("frame_id", "camera_id", "line_id")
    },
    "unknown-content-type": (
        header(content_type="image/gif"),
        "InvalidHeader",
        ["content_type: Input should be 'image/jpeg' or 'image/png' (got 'image/gif')"],
    ),
    "zero-width": (header(width=0), "InvalidHeader", ["width: Input should be greater than 0 (got 0)"]),
    "huge-height": (
        header(height=70_000),
        "InvalidHeader",
        ["height: Input should be less than or equal to 65535 (got 70000)"],
    ),
    "naive-time": (header(captured_at="2024-05-01T12:00:00"), "InvalidHeader", ["captured_at must carry a timezone"]),
    "bad-time": (header(captured_at="yesterday"), "InvalidHeader", ["captured_at: Input should be a valid datetime"]),
    "extra-field": (header(extra=1), "InvalidHeader", ["extra: Extra inputs are not permitted"]),
    "missing-fields-are-all-named": ([(FRAME_HEADER, b'{"frame_id": "x"}')], "InvalidHeader", MISSING),
}


@pytest.mark.parametrize("headers, error_type, says", BAD_HEADERS.values(), ids=BAD_HEADERS.keys())
def test_a_bad_header_is_refused_with_its_reason(headers, error_type, says):
    error = rejected_header(headers)
    assert error.error_type == error_type
    for fragment in says:
        assert fragment in error.message, (fragment, error.message)


def test_a_good_header_still_parses():
    assert parse_meta(header()) == meta()
    assert parse_meta(header()).captured_at == datetime(2024, 5, 1, 12, tzinfo=timezone.utc)
