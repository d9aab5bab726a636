"""Publishing frames to Kafka: `FramePublisher` (the only Kafka-aware part of the producer).

One message per frame (DESIGN.md, "Frame message"): key = camera id (UTF-8), value = the
encoded image bytes, headers `lw-frame` (FrameMeta JSON) and `traceparent` (W3C trace
context of a PRODUCER span that lasts until the broker acknowledged the frame).

A frame bigger than the topic accepts is refused up front with `FrameTooLargeError`,
naming the size and the limit, instead of failing later inside the Kafka client or broker.

Usable from Python (worker tests, the demo)::

    with FramePublisher(settings.kafka) as publisher:
        meta, future = publisher.publish_array(rgb, camera_id="cam-1", line_id="line-1", object_name="washer")
        publisher.flush()
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from common.codecs import encode_image
from common.kafka import FRAMES_TOPIC_CONFIG, build_admin, build_producer, ensure_topics
from common.messages import estimate_record_size, frame_headers
from common.partitions import CameraPartitioner
from common.schemas import TRACEPARENT_HEADER, ContentType, FrameMeta, Traceability, utc_now
from common.settings import KafkaSettings
from common.telemetry import INSTRUMENTATION_SCOPE, Telemetry, inject_headers

log = logging.getLogger(__name__)

TOPIC_MAX_MESSAGE_BYTES = "max.message.bytes"


class FrameTooLargeError(ValueError):
    """The frame message would exceed what the topic (or the producer) accepts."""

    def __init__(self, message: str, *, size: int, limit: int, frame_id: str | None = None):
        super().__init__(message)
        self.size = size
        self.limit = limit
        self.frame_id = frame_id


def new_frame_id() -> str:
    """A fresh, globally unique frame id (UUID4, 32 hex digits)."""
    return uuid.uuid4().hex


def build_frame_meta(
    *,
    camera_id: str,
    line_id: str,
    object_name: str,
    content_type: ContentType,
    width: int,
    height: int,
    captured_at: datetime | None = None,
    frame_id: str | None = None,
    traceability: Traceability | None = None,
) -> FrameMeta:
    """FrameMeta for one frame; a fresh frame id and `captured_at = now (UTC)` unless given."""
    return FrameMeta(
        traceability=None if traceability is None or traceability.is_empty() else traceability,
        frame_id=frame_id or new_frame_id(),
        camera_id=camera_id,
        line_id=line_id,
        object_name=object_name,
        captured_at=captured_at or utc_now(),
        content_type=content_type,
        width=width,
        height=height,
    )


def topic_max_message_bytes(settings: KafkaSettings, topic: str) -> int | None:
    """The topic's effective `max.message.bytes` (its own or the broker default), or None when
    the cluster cannot tell (no admin access, unreachable, old broker)."""
    try:
        from kafka.admin import ConfigResource, ConfigResourceType
    except ImportError:  # pragma: no cover
        return None
    admin = None
    try:
        admin = build_admin(settings)
        resource = ConfigResource(ConfigResourceType.TOPIC, topic, configs={TOPIC_MAX_MESSAGE_BYTES: None})
        try:  # kafka-python >= 3 filters to "modified" configs unless told otherwise
            answer = admin.describe_configs([resource], config_filter="all")
        except TypeError:  # kafka-python 2.x
            answer = admin.describe_configs([resource])
        value = _find_config_value(answer, topic, TOPIC_MAX_MESSAGE_BYTES)
        return int(value) if value is not None else None
    except Exception as exc:  # best effort: the settings' limit still applies
        log.debug("cannot read %s of topic %s: %s", TOPIC_MAX_MESSAGE_BYTES, topic, exc)
        return None
    finally:
        if admin is not None:
            try:
                admin.close()
            except Exception:  # pragma: no cover
                pass


def _find_config_value(answer: Any, topic: str, name: str) -> str | None:
    # kafka-python 3.x: {"topic": {topic: {name: {"value": ...}}}}
    if isinstance(answer, dict):
        for by_name in answer.values():
            config = (by_name or {}).get(topic, {}).get(name)
            if isinstance(config, dict) and config.get("value") is not None:
                return str(config["value"])
        return None
    # kafka-python 2.x: [DescribeConfigsResponse], resources = [(err, msg, type, name, [(key, value, ...)])]
    for response in answer or []:
        for resource in getattr(response, "resources", []) or []:
            if len(resource) >= 5 and resource[3] == topic and not resource[0]:
                for entry in resource[4]:
                    if entry[0] == name and entry[1] is not None:
                        return str(entry[1])
    return None


@dataclass
class PublishStats:
    """Counters of one publisher. `sent` and `failed` are known only once the broker answered."""

    submitted: int = 0
    sent: int = 0
    failed: int = 0
    refused: int = 0
    bytes_sent: int = 0
    started_at: float = field(default_factory=time.monotonic)
    last_error: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.started_at

    def summary(self) -> str:
        elapsed = max(self.elapsed_s, 1e-9)
        text = (
            f"frames sent: {self.sent}, refused: {self.refused}, failed: {self.failed}; "
            f"{self.sent / elapsed:.1f} frames/s, {self.bytes_sent / elapsed / 1e6:.2f} MB/s over {elapsed:.1f} s"
        )
        pending = self.submitted - self.sent - self.failed
        if pending:
            text += f"; {pending} not acknowledged"
        if self.last_error:
            text += f"; last error: {self.last_error}"
        return text


class FramePublisher:
    """Sends frame messages to the frames topic with an idempotent acks=all producer.

    `ensure_topic` creates the topic when missing; `check_topic_limit` reads the topic's
    `max.message.bytes` once so oversize frames are refused before they are sent.
    `producer` may be given (then it is not closed here); otherwise one is built from settings, whose
    partitioner follows `kafka.camera_partitions` (common/partitions.py).
    """

    def __init__(
        self,
        settings: KafkaSettings,
        *,
        topic: str | None = None,
        telemetry: Telemetry | None = None,
        producer: Any | None = None,
        ensure_topic: bool = True,
        check_topic_limit: bool = True,
    ):
        self.settings = settings
        self.topic = topic or settings.frames_topic
        self.telemetry = telemetry
        self._tracer = telemetry.tracer if telemetry is not None else trace.get_tracer(INSTRUMENTATION_SCOPE)
        self._metrics = telemetry.metrics if telemetry is not None else None
        if ensure_topic:
            ensure_topics(settings, [self.topic], {self.topic: FRAMES_TOPIC_CONFIG})
        self.topic_limit = topic_max_message_bytes(settings, self.topic) if check_topic_limit else None
        self.max_bytes = min(settings.max_message_bytes, self.topic_limit or settings.max_message_bytes)
        self._limit_source = (
            f"topic {self.topic!r} max.message.bytes"
            if self.topic_limit is not None and self.topic_limit <= settings.max_message_bytes
            else "LINEWATCH_KAFKA__MAX_MESSAGE_BYTES"
        )
        self._own_producer = producer is None
        if producer is None:
            producer = build_producer(settings, partitioner=CameraPartitioner(settings.camera_partitions))
        self.producer = producer
        self.stats = PublishStats()

    # -- context manager

    def __enter__(self) -> FramePublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- publishing

    def check_size(self, key: bytes, value: bytes, headers: Sequence[tuple[str, bytes]], meta: FrameMeta) -> int:
        """The record's estimated size; raises FrameTooLargeError above the limit."""
        size = estimate_record_size(key, value, headers)
        if size > self.max_bytes:
            raise FrameTooLargeError(
                f"frame {meta.frame_id} from camera {meta.camera_id!r} ({meta.width}x{meta.height} "
                f"{meta.content_type}) is {size:,} bytes as a Kafka record ({len(value):,} bytes of image), "
                f"but the limit is {self.max_bytes:,} bytes ({self._limit_source}); refusing it. "
                "Lower --quality, use --format jpeg or a smaller resolution, or raise the topic's "
                "max.message.bytes together with LINEWATCH_KAFKA__MAX_MESSAGE_BYTES.",
                size=size,
                limit=self.max_bytes,
                frame_id=meta.frame_id,
            )
        return size

    def publish(self, data: bytes, meta: FrameMeta, extra_headers: Sequence[tuple[str, bytes]] = ()) -> Any:
        """Send already-encoded image bytes with their FrameMeta (and `extra_headers`, e.g. the synthetic
        scene's ground truth). Returns the Kafka future.

        Raises FrameTooLargeError (nothing was sent). Delivery failures surface through the
        future and are counted in `stats.failed`.
        """
        key = meta.camera_id.encode("utf-8")
        base_headers = frame_headers(meta, extra_headers)
        # Size check before the span: a refused frame is not a message.
        try:
            self.check_size(key, data, base_headers + [(TRACEPARENT_HEADER, b"0" * 55)], meta)
        except FrameTooLargeError as exc:
            with self.stats._lock:
                self.stats.refused += 1
                self.stats.last_error = str(exc)
            if self._metrics is not None:
                self._metrics.frames_produced.add(1, {"outcome": "refused"})
            raise

        span = self._tracer.start_span(
            f"send {self.topic}",
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": "kafka",
                "messaging.operation.type": "send",
                "messaging.operation.name": "send",
                "messaging.destination.name": self.topic,
                "messaging.kafka.message.key": meta.camera_id,
                "messaging.message.id": meta.frame_id,
                "messaging.message.body.size": len(data),
                "linewatch.frame_id": meta.frame_id,
                "linewatch.camera_id": meta.camera_id,
                "linewatch.line_id": meta.line_id,
            },
        )
        headers = inject_headers(base_headers, context=trace.set_span_in_context(span))
        try:
            future = self.producer.send(self.topic, value=data, key=key, headers=headers)
        except Exception as exc:
            with self.stats._lock:
                self.stats.failed += 1
            self._failed(span, exc)
            raise
        with self.stats._lock:
            self.stats.submitted += 1
        size = len(data)
        future.add_callback(self._acked, span, size)
        future.add_errback(self._errored, span)
        return future

    def publish_array(
        self,
        rgb: np.ndarray,
        *,
        camera_id: str,
        line_id: str,
        object_name: str,
        content_type: ContentType = "image/jpeg",
        quality: int = 90,
        captured_at: datetime | None = None,
        frame_id: str | None = None,
    ) -> tuple[FrameMeta, Any]:
        """Encode an (H, W, 3) uint8 RGB frame and send it. Returns (meta, future)."""
        data = encode_image(np.ascontiguousarray(rgb), content_type, quality=quality)
        meta = build_frame_meta(
            camera_id=camera_id,
            line_id=line_id,
            object_name=object_name,
            content_type=content_type,
            width=int(rgb.shape[1]),
            height=int(rgb.shape[0]),
            captured_at=captured_at,
            frame_id=frame_id,
        )
        return meta, self.publish(data, meta)

    # -- delivery callbacks (run on the Kafka client's I/O thread)

    def _acked(self, span: trace.Span, size: int, metadata: Any) -> None:
        with self.stats._lock:
            self.stats.sent += 1
            self.stats.bytes_sent += size
        if self._metrics is not None:
            self._metrics.frames_produced.add(1, {"outcome": "sent"})
        span.set_attribute("messaging.destination.partition.id", str(getattr(metadata, "partition", "")))
        offset = getattr(metadata, "offset", None)
        if offset is not None:
            span.set_attribute("messaging.kafka.offset", int(offset))
        span.end()

    def _errored(self, span: trace.Span, exc: BaseException) -> None:
        with self.stats._lock:
            self.stats.failed += 1
        self._failed(span, exc)
        log.error("frame not delivered to %s: %s", self.topic, exc)

    def _failed(self, span: trace.Span, exc: BaseException) -> None:
        with self.stats._lock:
            self.stats.last_error = f"{type(exc).__name__}: {exc}"
        if self._metrics is not None:
            self._metrics.frames_produced.add(1, {"outcome": "failed"})
        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
        span.end()

    # -- lifecycle

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every sent frame was acknowledged or failed."""
        self.producer.flush(timeout=timeout)

    def close(self, timeout: float | None = 30.0) -> None:
        """Flush, then close the producer this publisher built."""
        try:
            self.flush(timeout)
        finally:
            if self._own_producer:
                self.producer.close(timeout=timeout)
