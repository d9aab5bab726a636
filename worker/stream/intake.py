"""What the service does to one message, as pure functions over bytes and models.

- `parse_meta` / `decode_frame`: untrusted record -> (FrameMeta, RGB array), or
  `Rejected` with the stage and reason that go into the dead letter.
- `is_stale`: the stale-frame policy.
- `fit_result`: a result serialised within the topic's size limit, shrunk if it
  must be (heatmap first, then regions), or `ResultTooLarge`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Sequence

import numpy as np

from common.codecs import ImageDecodeError, decode_image
from common.messages import FrameHeaderError, estimate_record_size, parse_frame_meta
from common.schemas import FrameMeta, InspectionResult, SourceRef

Headers = list[tuple[str, bytes]]



@dataclass(frozen=True)
class Consumed:
    """The parts of a consumed Kafka record the service needs."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers = field(default_factory=list)
    timestamp_ms: int | None = None

    @classmethod
    def from_record(cls, record: Any) -> Consumed:
        return cls(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            value=record.value,
            headers=[(k, v if v is not None else b"") for k, v in (record.headers or [])],
            timestamp_ms=record.timestamp,
        )

    @property
    def source(self) -> SourceRef:
        return SourceRef(topic=self.topic, partition=self.partition, offset=self.offset)


class Rejected(Exception):
    """A message that cannot be scored; it goes to the dead-letter topic.

    `stage` and `error_type` as `parse_meta` and `decode_frame` set them:
    `header`/`MissingHeader`, `header`/`InvalidHeader` (duplicated, not UTF-8, not
    JSON, not a valid FrameMeta), `decode`/`ImageDecodeError.<reason>` (see
    ImageDecodeError) and `decode`/`SizeMismatch`. `message` says what is wrong.
    """

    def __init__(self, stage: str, error_type: str, message: str):
        super().__init__(message)
        self.stage = stage
        self.error_type = error_type
        self.message = message


def parse_meta(headers: Sequence[tuple[str, bytes]]) -> FrameMeta:
    """The record's one `lw-frame` header as FrameMeta; raises Rejected (only) otherwise."""
    try:
        return parse_frame_meta(headers)
    except FrameHeaderError as exc:
        raise Rejected("header", exc.error_type, exc.message) from exc


def decode_frame(meta: FrameMeta, value: bytes | None, *, max_bytes: int, max_pixels: int) -> np.ndarray:
    """The frame's RGB pixels, checked against the size its header announces; raises Rejected (only) otherwise."""
    try:
        rgb = decode_image(value or b"", meta.content_type, max_bytes=max_bytes, max_pixels=max_pixels)
    except ImageDecodeError as exc:
        raise Rejected("decode", f"ImageDecodeError.{exc.reason}", str(exc)) from exc
    height, width = rgb.shape[:2]
    if (width, height) != (meta.width, meta.height):
        raise Rejected(
            "decode", "SizeMismatch", f"image is {width}x{height}, header says {meta.width}x{meta.height}"
        )
    return rgb


def frame_age_s(meta: FrameMeta, now: datetime) -> float:
    return (now - meta.captured_at).total_seconds()


def is_stale(meta: FrameMeta, now: datetime, max_age_s: float | None) -> bool:
    """Older than the policy allows (a frame stamped in the future is never stale)."""
    return max_age_s is not None and frame_age_s(meta, now) > max_age_s


def stale_note(meta: FrameMeta, now: datetime, max_age_s: float) -> str:
    return f"stale: frame is {frame_age_s(meta, now):.1f} s old, max_frame_age_s is {max_age_s:g}"


# --------------------------------------------------------------------------- sizes


class ResultTooLarge(Exception):
    """Even without heatmap and regions the result exceeds the message limit."""


def _with_note(result: InspectionResult, note: str, **update: Any) -> InspectionResult:
    return result.model_copy(update={**update, "note": f"{result.note}; {note}" if result.note else note})


def fit_result(
    result: InspectionResult,
    max_bytes: int,
    key: bytes | None = None,
    headers: Sequence[tuple[str, bytes]] = (),
) -> tuple[InspectionResult, bytes]:
    """The result and its JSON, within `max_bytes` once key and headers are counted.

    Shrinks in this order, saying so in `note`: drop the heatmap, then keep only the
    regions with the highest peak scores (halving their number until it fits).
    Raises ResultTooLarge when even that is not enough (the mask alone is too big).
    """

    def fits(candidate: InspectionResult) -> tuple[bool, bytes]:
        value = candidate.model_dump_json().encode("utf-8")
        return estimate_record_size(key, value, headers) <= max_bytes, value

    ok, value = fits(result)
    if ok:
        return result, value
    if result.heatmap is not None:
        result = _with_note(result, f"heatmap dropped to fit {max_bytes} bytes", heatmap=None)
        ok, value = fits(result)
        if ok:
            return result, value
    regions = sorted(result.regions, key=lambda r: r.peak_score, reverse=True)
    keep = len(regions)
    while keep > 0:
        keep //= 2
        candidate = _with_note(
            result, f"regions capped to {keep} of {len(regions)} to fit {max_bytes} bytes", regions=regions[:keep]
        )
        ok, value = fits(candidate)
        if ok:
            return candidate, value
    raise ResultTooLarge(
        f"result of frame {result.frame_id} is {len(value)} bytes without heatmap and regions; limit is {max_bytes}"
    )
