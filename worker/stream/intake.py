"""First stop of a frame: a consumed record becomes `Work`, a dead letter or a skipped result.

- `parse_meta` / `decode_frame`: untrusted record -> (FrameMeta, RGB array), or
  `Rejected` with the stage and reason that go into the dead letter (pure functions).
- `is_stale`: the stale-frame policy.
- `Intake`: one record -> `Work`, `DeadLetter` or `Skipped` (an `Item`), in the order polled.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from kafka import TopicPartition
from opentelemetry.trace import Span

from common.codecs import ImageDecodeError, decode_image
from common.messages import FrameHeaderError, parse_frame_meta
from common.schemas import FrameMeta, SourceRef, utc_now
from common.settings import WorkerSettings
from worker.stream.clock_skew import SkewBook
from worker.stream.control import Resolved
from worker.stream.offsets import Checkpoint
from worker.stream.telemetry import Counters, ServiceTelemetry

log = logging.getLogger(__name__)

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
    JSON, not a valid FrameMeta), `header`/`UnknownScope` (no control record applies, with
    `worker.known_scopes_only`), `decode`/`ImageDecodeError.<reason>` (see
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
        raise Rejected("decode", "SizeMismatch", f"image is {width}x{height}, header says {meta.width}x{meta.height}")
    return rgb


def frame_age_s(meta: FrameMeta, now: datetime, broker_ms: int | None = None) -> float:
    """The frame's age: by the camera's `captured_at`, or by the broker's record time when that says
    older. A camera clock running ahead cannot keep a backlog fresh, nor one running behind hide it."""
    camera = (now - meta.captured_at).total_seconds()
    if broker_ms is None or broker_ms < 0:  # -1: the record has no timestamp
        return camera
    return max(camera, now.timestamp() - broker_ms / 1000.0)


def clock_skew_s(captured_at: datetime, broker_ms: int | None) -> float | None:
    """Broker record time minus camera capture time: transit plus how far the camera's clock runs behind
    the broker's (negative: ahead). None without a record time."""
    if broker_ms is None or broker_ms < 0:
        return None
    return broker_ms / 1000.0 - captured_at.timestamp()


def is_stale(meta: FrameMeta, now: datetime, max_age_s: float | None, broker_ms: int | None = None) -> bool:
    """Older than the policy allows, by either clock (a frame stamped in the future is stale only when
    the broker's clock says so)."""
    return max_age_s is not None and frame_age_s(meta, now, broker_ms) > max_age_s


def stale_note(meta: FrameMeta, now: datetime, max_age_s: float, broker_ms: int | None = None) -> str:
    camera = (now - meta.captured_at).total_seconds()
    age = frame_age_s(meta, now, broker_ms)
    by = "by the camera's clock" if age == camera else f"by the broker's clock ({camera:.1f} s by the camera's)"
    return f"stale: frame is {age:.1f} s old {by}, max_frame_age_s is {max_age_s:g}"


# --------------------------------------------------------------------------- routing


@dataclass
class Work:
    """A decoded frame on its way through inference and publishing."""

    message: Consumed
    partition: TopicPartition
    meta: FrameMeta
    image: np.ndarray
    span: Span  # the frame's trace span
    control: Resolved | None = None  # the control record the frame is judged by (set by the inference thread)


@dataclass(frozen=True)
class DeadLetter:
    """A message that goes to the dead-letter topic, with the stage and reason."""

    message: Consumed
    partition: TopicPartition
    stage: str
    error_type: str
    text: str
    span: Span


@dataclass(frozen=True)
class Skipped:
    """A frame answered with a `skipped` result (too old to inspect)."""

    message: Consumed
    partition: TopicPartition
    meta: FrameMeta
    span: Span


Item = Work | DeadLetter | Skipped  # what one consumed message becomes; items keep their offset order


def header_bytes(headers: Headers) -> int:
    return sum(len(key.encode("utf-8")) + len(value) for key, value in headers)


class Intake:
    """record -> `Work` for the inference thread, or the dead letter / skipped result it ends as."""

    def __init__(
        self, settings: WorkerSettings, checkpoint: Checkpoint, telemetry: ServiceTelemetry, counters: Counters
    ):
        self.settings = settings
        self.checkpoint = checkpoint
        self.telemetry = telemetry
        self.counters = counters
        # with worker.known_scopes_only: (camera id, object name) -> whether a control record applies
        self.known_scope: Callable[[str, str], bool] | None = None
        self.skew: SkewBook | None = SkewBook()  # per camera, for the status

    def take(self, partition: TopicPartition, message: Consumed) -> Item:
        self.checkpoint.consumed(partition, message.offset)
        self.counters.add("consumed")
        ws = self.settings
        oversize = header_bytes(message.headers)
        if oversize > ws.max_header_bytes:  # its dead letter keeps only lw-frame and lw-error
            span = self.telemetry.start_frame([], self._attributes(message))
            text = f"headers are {oversize} bytes, max_header_bytes is {ws.max_header_bytes}"
            return DeadLetter(message, partition, "header", "HeadersTooLarge", text, span)
        span = self.telemetry.start_frame(message.headers, self._attributes(message))
        try:
            with self.telemetry.stage(span, "decode"):
                meta = parse_meta(message.headers)
                span.set_attribute("linewatch.frame_id", meta.frame_id)
                self._check_scope(meta)
                self._clock_skew(meta, message.timestamp_ms)
                if is_stale(meta, utc_now(), ws.max_frame_age_s, message.timestamp_ms):  # not even decoded
                    return Skipped(message, partition, meta, span)
                image = decode_frame(meta, message.value, max_bytes=ws.max_frame_bytes, max_pixels=ws.max_frame_pixels)
        except Rejected as exc:
            return DeadLetter(message, partition, exc.stage, exc.error_type, exc.message, span)
        except Exception as exc:  # never let one message stop the worker
            log.exception("unexpected error on %s:%s@%s", message.topic, message.partition, message.offset)
            return DeadLetter(message, partition, "decode", type(exc).__name__, str(exc), span)
        return Work(message, partition, meta, image, span)

    @staticmethod
    def _attributes(message: Consumed) -> dict[str, object]:
        return {
            "messaging.destination.name": message.topic,
            "messaging.kafka.partition": message.partition,
            "messaging.kafka.offset": message.offset,
        }

    def _clock_skew(self, meta: FrameMeta, broker_ms: int | None) -> None:
        skew = clock_skew_s(meta.captured_at, broker_ms)
        if skew is not None:
            self.telemetry.metrics.clock_skew.record(skew)
            if self.skew is not None:
                self.skew.observe(meta.camera_id, skew)

    def _check_scope(self, meta: FrameMeta) -> None:
        """With `worker.known_scopes_only`, a frame no control record applies to is refused before
        it costs models, pools or metric series (any camera id or object name can be in a header)."""
        if self.settings.known_scopes_only and self.known_scope is not None:
            if not self.known_scope(meta.camera_id, meta.object_name):
                raise Rejected(
                    "header",
                    "UnknownScope",
                    f"no control record applies to camera {meta.camera_id!r} and object {meta.object_name!r} "
                    "(worker.known_scopes_only)",
                )
