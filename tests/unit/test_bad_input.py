"""Every kind of bad frame is refused with a clear reason, through the worker's own functions.

`parse_meta` and `decode_frame` are what the worker's poll thread calls; a `Rejected`
becomes the dead letter's `lw-error` (stage, error_type, message). Each case checks the
type and that the message names the problem.
"""
from __future__ import annotations

import json
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
META = dict(schema_version=1, frame_id="f-1", camera_id="cam-1", line_id="line-1", object_name="screw",
            captured_at="2024-05-01T12:00:00Z", content_type="image/jpeg", width=WIDTH, height=HEIGHT)


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


def test_truncated_jpeg():
    jpeg = encode_image(image())
    error = rejected_decode(jpeg[: len(jpeg) // 2])
    assert error.error_type == "ImageDecodeError.undecodable"
    assert "JPEG" in error.message and "truncated" in error.message


def test_truncated_png():
    png = encode_image(image(), "image/png")
    error = rejected_decode(png[: len(png) // 2], meta(content_type="image/png"))
    assert error.error_type == "ImageDecodeError.undecodable" and "truncated" in error.message


def test_jpeg_cut_inside_its_header():
    error = rejected_decode(encode_image(image())[:20])
    assert error.error_type == "ImageDecodeError.undecodable" and "JPEG header" in error.message


def test_random_bytes():
    noise = np.random.default_rng(1).bytes(4096)
    error = rejected_decode(noise)
    assert error.error_type == "ImageDecodeError.undecodable"
    assert "not a JPEG or PNG" in error.message and noise[:8].hex() in error.message


@pytest.mark.parametrize("value", [b"", None], ids=["empty", "tombstone"])
def test_empty_value(value):
    error = rejected_decode(value)
    assert error.error_type == "ImageDecodeError.empty" and "empty" in error.message


def test_png_decompression_bomb_is_refused_from_its_header(no_pixel_decoding):
    bomb = png_claiming(50_000, 50_000)
    assert len(bomb) < 200
    error = rejected_decode(bomb, meta(content_type="image/png", width=50_000, height=50_000))
    assert error.error_type == "ImageDecodeError.too_many_pixels"
    assert "50000x50000" in error.message and f"limit is {LIMITS.max_frame_pixels}" in error.message


def test_jpeg_whose_header_claims_huge_dimensions_is_refused_from_its_header(no_pixel_decoding):
    error = rejected_decode(jpeg_claiming(65_000, 60_000), meta(width=65_000, height=60_000))
    assert error.error_type == "ImageDecodeError.too_many_pixels"
    assert "65000x60000" in error.message and str(LIMITS.max_frame_pixels) in error.message


def test_the_configured_pixel_limit_is_the_limit_not_pils_own(no_pixel_decoding):
    # 100 M pixels: above PIL's built-in MAX_IMAGE_PIXELS (89 M) but the message still names ours
    error = rejected_decode(png_claiming(10_000, 10_000), meta(content_type="image/png"), max_pixels=50_000_000)
    assert "10000x10000" in error.message and "limit is 50000000" in error.message


def test_a_real_frame_over_the_configured_pixel_limit():
    error = rejected_decode(encode_image(image()), max_pixels=WIDTH * HEIGHT - 1)
    assert error.error_type == "ImageDecodeError.too_many_pixels"
    assert f"{WIDTH}x{HEIGHT}" in error.message and f"limit is {WIDTH * HEIGHT - 1}" in error.message


def test_a_frame_over_the_configured_byte_limit_is_refused_before_decoding(no_pixel_decoding):
    jpeg = encode_image(image())
    error = rejected_decode(jpeg, max_bytes=len(jpeg) - 1)
    assert error.error_type == "ImageDecodeError.too_large"
    assert f"{len(jpeg)} bytes" in error.message and f"limit is {len(jpeg) - 1}" in error.message


def test_payload_that_is_not_what_the_header_says():
    error = rejected_decode(encode_image(image(), "image/png"))  # header: image/jpeg
    assert error.error_type == "ImageDecodeError.content_type"
    assert "payload is PNG" in error.message and "image/jpeg" in error.message


def test_pixels_that_disagree_with_the_announced_size():
    error = rejected_decode(encode_image(image()), meta(width=WIDTH * 2))
    assert error.error_type == "SizeMismatch"
    assert f"image is {WIDTH}x{HEIGHT}" in error.message and f"header says {WIDTH * 2}x{HEIGHT}" in error.message


def test_unknown_content_type_in_the_codec():
    with pytest.raises(ImageDecodeError) as info:
        decode_image(encode_image(image()), "image/gif")
    assert info.value.reason == "content_type" and "image/gif" in str(info.value)


# ----------------------------------------------------------------------------- the lw-frame header


def test_missing_header():
    error = rejected_header([("traceparent", b"00-abc"), ("LW-FRAME", json.dumps(META).encode())])
    assert error.error_type == "MissingHeader" and FRAME_HEADER in error.message  # names are case-sensitive


def test_header_that_is_not_json():
    error = rejected_header([(FRAME_HEADER, b'{"frame_id": "x", "camera_id": ')])
    assert error.error_type == "InvalidHeader" and "Invalid JSON" in error.message


def test_header_that_is_not_utf8():
    error = rejected_header([(FRAME_HEADER, b'{"frame_id": "\xff\xfe"}')])
    assert error.error_type == "InvalidHeader" and "not UTF-8" in error.message and "byte 14" in error.message


@pytest.mark.parametrize("value, got", [(b"[1, 2]", "[1, 2]"), (b"42", "42"), (b"null", "None"), (b'"lw"', "'lw'")])
def test_header_json_that_is_not_an_object(value, got):
    error = rejected_header([(FRAME_HEADER, value)])
    assert error.error_type == "InvalidHeader" and "Input should be an object" in error.message
    assert f"(got {got})" in error.message


@pytest.mark.parametrize("value", [b"", b"   "])
def test_empty_header(value):
    error = rejected_header([(FRAME_HEADER, value)])
    assert error.error_type == "InvalidHeader" and "header is empty" in error.message


def test_wrong_schema_version():
    error = rejected_header(header(schema_version=2))
    assert error.error_type == "InvalidHeader"
    assert "schema_version: Input should be 1 (got 2)" in error.message


def test_duplicate_header_is_ambiguous():
    good = header()[0]
    error = rejected_header([good, ("traceparent", b"x"), good])
    assert error.error_type == "InvalidHeader" and f"2 {FRAME_HEADER} headers" in error.message


@pytest.mark.parametrize(
    "object_name, says",
    [
        ("", "object_name: String should have at least 1 character"),
        ("   ", "object_name: Value error, object_name must be printable text and not blank"),
        ("x" * 10_240, "object_name: String should have at most 100 characters"),
        ("screw\nINFO forged log line", "object_name must be printable"),
    ],
    ids=["empty", "blank", "10kB", "control-characters"],
)
def test_bad_object_name(object_name, says):
    error = rejected_header(header(object_name=object_name))
    assert error.error_type == "InvalidHeader" and says in error.message


def test_a_10kB_object_name_is_quoted_shortened():
    error = rejected_header(header(object_name="x" * 10_240))
    assert "(10242 chars)" in error.message  # repr() adds the quotes


@pytest.mark.parametrize("field", ["frame_id", "camera_id", "line_id"])
def test_ids_with_control_characters(field):
    error = rejected_header(header(**{field: "cam\r\n1"}))
    assert error.error_type == "InvalidHeader" and f"{field}: Value error, must be printable" in error.message


@pytest.mark.parametrize(
    "update, says",
    [
        ({"content_type": "image/gif"}, "content_type: Input should be 'image/jpeg' or 'image/png' (got 'image/gif')"),
        ({"width": 0}, "width: Input should be greater than 0 (got 0)"),
        ({"height": 70_000}, "height: Input should be less than or equal to 65535 (got 70000)"),
        ({"captured_at": "2024-05-01T12:00:00"}, "captured_at must carry a timezone"),
        ({"captured_at": "yesterday"}, "captured_at: Input should be a valid datetime"),
        ({"extra": 1}, "extra: Extra inputs are not permitted"),
    ],
    ids=["unknown-content-type", "zero-width", "huge-height", "naive-time", "bad-time", "extra-field"],
)
def test_bad_header_fields(update, says):
    error = rejected_header(header(**update))
    assert error.error_type == "InvalidHeader" and says in error.message


def test_missing_fields_are_all_named():
    error = rejected_header([(FRAME_HEADER, b'{"frame_id": "x"}')])
    for field in ("camera_id", "line_id", "object_name", "captured_at", "content_type", "width", "height"):
        assert f"{field}: Field required" in error.message


def test_a_good_header_still_parses():
    assert parse_meta(header()) == meta()
    assert parse_meta(header()).captured_at == datetime(2024, 5, 1, 12, tzinfo=timezone.utc)
