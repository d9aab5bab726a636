"""Fuzzing the frame decoder and the `lw-frame` header parser with hypothesis.

Property: whatever the bytes, only the documented exceptions escape -- `Rejected` from
`parse_meta` / `decode_frame` (what the worker calls), `ImageDecodeError` from
`decode_image` -- every rejection can be turned into a dead letter, and a success is
exactly what was announced (an RGB uint8 array of the header's size; a FrameMeta that
serialises again). Each test also checks that both outcomes were actually reached.

Runs are derandomized and use no example database, so CI sees the same cases every time.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from datetime import datetime, timezone

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from common.codecs import ImageDecodeError, decode_image, encode_image
from common.messages import dead_letter_error, dead_letter_record
from common.schemas import ERROR_HEADER, FRAME_HEADER, DeadLetterError, FrameMeta, utc_now
from tests.support.bad_inputs import jpeg_claiming, png_claiming
from worker.stream.intake import Consumed, Rejected, decode_frame, is_stale, parse_meta

# Not traced for coverage: 9,000 cases through the same few functions, which the example-based tests
# already cover; tracing them doubled the file's time.
pytestmark = pytest.mark.no_cover

EXAMPLES = 1500  # per test; six tests
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
MAX_BYTES = 1_000_000
PIXEL_LIMITS = [1, 64, 4096, 1_000_000]  # small enough that a lying header can never cost real memory
DECODE_ERRORS = {
    f"ImageDecodeError.{reason}" for reason in ("empty", "too_large", "content_type", "too_many_pixels", "undecodable")
} | {"SizeMismatch"}
HEADER_ERRORS = {"MissingHeader", "InvalidHeader"}


def _seed_images() -> list[tuple[bytes, str, tuple[int, int]]]:
    """(bytes, content type, (width, height)): small frames in several modes, and two whose header lies."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)

    def pil(mode: str, fmt: str) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(rgb).convert(mode).save(buffer, format=fmt)
        return buffer.getvalue()

    return [
        (encode_image(rgb, "image/jpeg"), "image/jpeg", (16, 12)),
        (encode_image(rgb, "image/png"), "image/png", (16, 12)),
        (pil("L", "JPEG"), "image/jpeg", (16, 12)),
        (pil("P", "PNG"), "image/png", (16, 12)),
        (pil("LA", "PNG"), "image/png", (16, 12)),
        (png_claiming(50_000, 50_000), "image/png", (50_000, 50_000)),
        (jpeg_claiming(300, 200), "image/jpeg", (300, 200)),
    ]


SEEDS = _seed_images()
VALID_META = dict(
    schema_version=1,
    frame_id="f-1",
    camera_id="cam-1",
    line_id="line-1",
    object_name="screw",
    captured_at="2024-05-01T12:00:00Z",
    content_type="image/jpeg",
    width=16,
    height=12,
)


# ----------------------------------------------------------------------------- strategies


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A seed with 1-4 byte-level mutations: flip, overwrite, insert, delete, truncate, splice."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, max(0, len(data) - 1)))
        operation = draw(st.sampled_from(["flip", "overwrite", "insert", "delete", "truncate", "splice"]))
        if operation == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif operation == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=8))
            data[at : at + len(chunk)] = chunk
        elif operation == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        elif operation == "delete":
            del data[at : at + draw(st.integers(1, 64))]
        elif operation == "truncate":
            del data[at:]
        elif operation == "splice":
            other = draw(st.sampled_from(seeds))
            data[at:] = other[draw(st.integers(0, len(other))) :]
    return bytes(data)


json_leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(
        [
            "",
            " ",
            "image/png",
            "image/jpeg",
            "2024-05-01T12:00:00Z",
            "0001-01-01T00:00:00+14:00",
            "9999-12-31T23:59:59-23:59",
            "x" * 10_000,
            65535,
            65536,
            0,
            -1,
            2**64,
            1.5,
            True,
        ]
    )
)
json_values = st.recursive(
    json_leaves,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=8,
)


@st.composite
def meta_like_json(draw: st.DrawFn) -> bytes:
    """A valid lw-frame with some fields dropped or replaced by arbitrary JSON, and maybe extra keys."""
    fields: dict = dict(VALID_META)
    for name in draw(st.sets(st.sampled_from(sorted(VALID_META)))):
        if draw(st.booleans()):
            del fields[name]
        else:
            fields[name] = draw(json_values)
    fields |= draw(st.dictionaries(st.text(max_size=12), json_values, max_size=2))
    return json.dumps(fields).encode()


header_keys = st.sampled_from([FRAME_HEADER, "traceparent", "LW-FRAME", "lw-frame ", ERROR_HEADER]) | st.text(
    max_size=12
)
random_headers = st.lists(st.tuples(header_keys, st.binary(max_size=300)), max_size=6)


@st.composite
def announced_meta(draw: st.DrawFn, true_size: tuple[int, int], true_type: str) -> FrameMeta:
    """A header for a payload: mostly its true size and type, sometimes anything valid."""
    width, height = draw(st.just(true_size) | st.tuples(st.integers(1, 65535), st.integers(1, 65535)))
    content_type = draw(st.just(true_type) | st.sampled_from(["image/jpeg", "image/png"]))
    return FrameMeta.model_validate(VALID_META | {"width": width, "height": height, "content_type": content_type})


@st.composite
def frames(draw: st.DrawFn) -> tuple[FrameMeta, bytes | None]:
    """(announced meta, payload): a mutated seed, a seed as is, or random bytes."""
    seed, content_type, size = draw(st.sampled_from(SEEDS))
    payload = draw(st.one_of(mutated([s for s, _, _ in SEEDS]), st.just(seed), st.binary(max_size=2048), st.none()))
    return draw(announced_meta(size, content_type)), payload


# ----------------------------------------------------------------------------- properties


def assert_dead_letterable(error: Rejected) -> None:
    """A rejection always becomes a dead letter whose lw-error says the same."""
    message = Consumed(topic="frames", partition=0, offset=7, key=b"cam-1", value=b"v", headers=[])
    lw_error = dead_letter_error(
        error.stage,
        error.error_type,
        error.message,
        worker_id="w",
        source=message.source,
        now=datetime(2024, 5, 1, tzinfo=timezone.utc),
    )
    _, _, headers = dead_letter_record(message.key, message.value, message.headers, lw_error, MAX_BYTES)
    parsed = DeadLetterError.model_validate_json(dict(headers)[ERROR_HEADER])
    assert (parsed.stage, parsed.error_type) == (error.stage, error.error_type) and parsed.message


def decode_outcome(meta: FrameMeta, payload: bytes | None, max_pixels: int) -> str:
    try:
        rgb = decode_frame(meta, payload, max_bytes=MAX_BYTES, max_pixels=max_pixels)
    except Rejected as error:
        assert error.stage == "decode" and error.error_type in DECODE_ERRORS and error.message, error
        assert_dead_letterable(error)
        return "rejected"
    assert rgb.shape == (meta.height, meta.width, 3) and rgb.dtype == np.uint8
    assert meta.width * meta.height <= max_pixels
    return "decoded"


def header_outcome(headers: list[tuple[str, bytes]]) -> str:
    try:
        meta = parse_meta(headers)
    except Rejected as error:
        assert error.stage == "header" and error.error_type in HEADER_ERRORS and error.message, error
        assert_dead_letterable(error)
        return "rejected"
    assert FrameMeta.model_validate_json(meta.model_dump_json()) == meta
    meta.camera_id.encode("utf-8")  # becomes the result's key
    is_stale(meta, utc_now(), 1.0)  # the worker's next step on a parsed header
    return "parsed"


# ----------------------------------------------------------------------------- frame decoder


def test_frame_decoder_on_random_and_mutated_payloads():
    outcomes: Counter = Counter()

    @FUZZ
    @given(frame=frames(), max_pixels=st.sampled_from(PIXEL_LIMITS))
    def check(frame: tuple[FrameMeta, bytes | None], max_pixels: int) -> None:
        outcomes[decode_outcome(*frame, max_pixels)] += 1

    check()
    assert outcomes["decoded"] > 0 and outcomes["rejected"] > 0, outcomes


def test_frame_decoder_on_mutated_images_announced_truthfully():
    outcomes: Counter = Counter()
    # the payload's own type and size in the header: mostly decodable, so mutations reach the pixel decoders
    seeds = [(data, content_type, size) for data, content_type, size in SEEDS if size[0] * size[1] <= 4096]

    @FUZZ
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        seed, content_type, (width, height) = data.draw(st.sampled_from(seeds))
        payload = data.draw(mutated([seed]))
        meta = FrameMeta.model_validate(VALID_META | {"width": width, "height": height, "content_type": content_type})
        outcomes[decode_outcome(meta, payload, 1_000_000)] += 1

    check()
    assert outcomes["decoded"] > 0 and outcomes["rejected"] > 0, outcomes


def test_decode_image_without_a_content_type():
    outcomes: Counter = Counter()

    @FUZZ
    @given(
        payload=mutated([s for s, _, _ in SEEDS]) | st.binary(max_size=1024), max_pixels=st.sampled_from(PIXEL_LIMITS)
    )
    def check(payload: bytes, max_pixels: int) -> None:
        try:
            rgb = decode_image(payload, max_bytes=MAX_BYTES, max_pixels=max_pixels)
        except ImageDecodeError as error:
            assert f"ImageDecodeError.{error.reason}" in DECODE_ERRORS and str(error)
            outcomes["rejected"] += 1
            return
        assert rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.dtype == np.uint8
        assert 0 < rgb.shape[0] * rgb.shape[1] <= max_pixels
        outcomes["decoded"] += 1

    check()
    assert outcomes["decoded"] > 0 and outcomes["rejected"] > 0, outcomes


# ----------------------------------------------------------------------------- header parser


def test_header_parser_on_random_header_lists():
    outcomes: Counter = Counter()
    valid = (FRAME_HEADER, json.dumps(VALID_META).encode())

    @FUZZ
    @given(headers=random_headers, with_valid=st.integers(0, 2), data=st.data())
    def check(headers: list, with_valid: int, data: st.DataObject) -> None:
        for _ in range(with_valid):  # 0, 1 or 2 good lw-frame headers among the noise
            headers.insert(data.draw(st.integers(0, len(headers))), valid)
        outcomes[header_outcome(headers)] += 1

    check()
    assert outcomes["parsed"] > 0 and outcomes["rejected"] > 0, outcomes


def test_header_parser_on_arbitrary_json():
    outcomes: Counter = Counter()

    @FUZZ
    @given(
        value=meta_like_json() | json_values.map(lambda v: json.dumps(v).encode()),
        noise=random_headers.map(lambda hs: [(k, v) for k, v in hs if k != FRAME_HEADER]),
    )
    def check(value: bytes, noise: list) -> None:
        outcomes[header_outcome([*noise, (FRAME_HEADER, value)])] += 1

    check()
    assert outcomes["parsed"] > 0 and outcomes["rejected"] > 0, outcomes


def test_header_parser_on_mutated_valid_json():
    outcomes: Counter = Counter()
    valid = json.dumps(VALID_META).encode()

    @FUZZ
    @given(value=mutated([valid]) | st.just(valid))
    def check(value: bytes) -> None:
        outcomes[header_outcome([(FRAME_HEADER, value)])] += 1

    check()
    assert outcomes["parsed"] > 0 and outcomes["rejected"] > 0, outcomes
