"""The worker's sending side: the publish thread and what it sends through the Outbox.

`Publisher` runs the publish thread: it builds each scored frame's result and sends it
(results, skipped results and dead letters all go through `Publisher.send_*`), and marks
the source message done in the `Checkpoint` once the broker acknowledged the output.

`Outbox` is a thin adapter over the idempotent, acks=all Kafka producer. Every record carries two callbacks: `on_acked` (the broker has it: the caller marks
the source message done) and `on_too_large` (the broker or client refused its
size: the caller shrinks or dead-letters it). Any other failure is kept and sent
again by `retry_failed`, so a record is acknowledged, re-routed or retried --
never silently dropped. Callbacks run on the producer's I/O thread.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kafka.errors import KafkaError, MessageSizeTooLargeError

from common.messages import dead_letter_error, dead_letter_record
from common.schemas import FrameMeta, InspectionResult, Versions, utc_now
from common.settings import LinewatchSettings
from worker.inspection.types import Inspection
from worker.stream.batching import STOP, InFlight
from worker.stream.intake import Consumed, Work, stale_note
from worker.stream.judging import Judge
from worker.stream.offsets import Checkpoint
from worker.stream.results import ResultTooLarge, build_result, fit_result, skipped_result
from worker.stream.telemetry import Counters, ServiceTelemetry

log = logging.getLogger(__name__)

RETRY_BACKOFF_S = 1.0


@dataclass
class Outgoing:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    on_acked: Callable[[], None]
    on_too_large: Callable[[], None] | None = None
    attempts: int = 0
    failed_at: float = 0.0


def _is_size_error(exc: BaseException) -> bool:
    # MessageSizeTooLargeError from the client or the broker, RecordTooLarge... from newer brokers
    return isinstance(exc, MessageSizeTooLargeError) or "TooLarge" in type(exc).__name__


class Outbox:
    def __init__(
        self,
        producer: Any,
        *,
        on_broker_ok: Callable[[], None] = lambda: None,
        on_broker_error: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.producer = producer
        self._on_broker_ok = on_broker_ok
        self._on_broker_error = on_broker_error
        self._clock = clock
        self._failed: queue.SimpleQueue[Outgoing] = queue.SimpleQueue()
        self.errors = 0

    def send(self, item: Outgoing) -> None:
        item.attempts += 1
        try:
            future = self.producer.send(item.topic, key=item.key, value=item.value, headers=item.headers)
        except KafkaError as exc:  # raised before sending: size check, metadata timeout, full buffer
            self._failed_send(item, exc)
            return
        future.add_callback(lambda _metadata: self._acked(item))
        future.add_errback(lambda exc: self._failed_send(item, exc))

    def retry_failed(self, force: bool = False) -> None:
        """Send again what failed at least RETRY_BACKOFF_S ago (everything with `force`)."""
        later = []
        while True:
            try:
                item = self._failed.get_nowait()
            except queue.Empty:
                break
            if force or self._clock() - item.failed_at >= RETRY_BACKOFF_S:
                self.send(item)
            else:
                later.append(item)
        for item in later:
            self._failed.put(item)

    def flush(self, timeout_s: float) -> None:
        try:
            self.producer.flush(timeout=timeout_s)
        except KafkaError as exc:
            log.warning("not every record was acknowledged within %.0f s: %s", timeout_s, exc)

    def close(self, timeout_s: float = 5.0) -> None:
        self.producer.close(timeout=timeout_s)

    # ------------------------------------------------------------------ callbacks

    def _acked(self, item: Outgoing) -> None:
        self._on_broker_ok()
        try:
            item.on_acked()
        except Exception:
            log.exception("error in acknowledgement bookkeeping for %s", item.topic)

    def _failed_send(self, item: Outgoing, exc: BaseException) -> None:
        if _is_size_error(exc) and item.on_too_large is not None:
            try:
                item.on_too_large()
            except Exception:
                log.exception("error re-routing an oversize record for %s", item.topic)
            return
        self.errors += 1
        if _is_size_error(exc):
            log.error("record for %s is too large even after shrinking; it stays unacknowledged", item.topic)
        else:
            self._on_broker_error()
        if item.attempts == 1:
            log.warning(
                "send to %s failed (%s: %s); retrying every %.0f s",
                item.topic,
                type(exc).__name__,
                exc,
                RETRY_BACKOFF_S,
            )
        item.failed_at = self._clock()
        self._failed.put(item)


# --------------------------------------------------------------------------- publish thread

PUBLISH_QUEUE_BATCHES = 2  # scored batches waiting for the publish thread: keeps it busy, bounds the memory

Scored = tuple[int, list[tuple[Work, Inspection]]]  # (frames of the batch, the inspected ones)


class Publisher:
    """Results, skipped results and dead letters of consumed frames; the publish thread."""

    def __init__(
        self,
        settings: LinewatchSettings,
        outbox: Outbox,
        versions: Callable[[], Versions],
        *,
        checkpoint: Checkpoint,
        in_flight: InFlight,
        telemetry: ServiceTelemetry,
        counters: Counters,
        abandon: threading.Event,
        judge: Judge | None = None,
    ):
        self.settings = settings
        self.judge = judge  # the control records in force (None: the static thresholds)
        self.worker_id = settings.worker.worker_id
        self.outbox = outbox
        self._versions = versions
        self.checkpoint = checkpoint
        self.in_flight = in_flight
        self.telemetry = telemetry
        self.counters = counters
        self._abandon = abandon  # shutdown gave up: send nothing more
        self.queue: queue.Queue = queue.Queue(maxsize=PUBLISH_QUEUE_BATCHES)  # Scored items, then STOP
        self.thread = threading.Thread(target=self._loop, name="lw-publish", daemon=True)

    def _loop(self) -> None:
        while True:
            try:
                item = self.queue.get(timeout=0.5)
            except queue.Empty:
                if self._abandon.is_set():  # shutdown gave up on a stuck inference thread
                    return
                continue
            if item is STOP:
                return
            frames, scored = item
            try:
                for work, inspection in scored:
                    if self._abandon.is_set():
                        break
                    self.send_result(work, inspection)
            except Exception:  # keep the thread alive whatever happens to one batch
                log.exception("unexpected error while publishing a batch")
            finally:
                self.in_flight.finished(frames)

    # ------------------------------------------------------------------ sends (any thread)

    def send_result(self, work: Work, inspection: Inspection) -> None:
        try:
            thresholds, calibrating = None, False
            if self.judge is not None and work.control is not None:
                thresholds, calibrating = self.judge.judge(work.control, inspection)
            result = build_result(
                work.meta,
                inspection,
                versions=self._versions(),
                worker_settings=self.settings.worker,
                worker_id=self.worker_id,
                source=work.message.source,
                thresholds=thresholds,
                calibrating=calibrating,
                reference_bank=getattr(work.control.few_shot, "bank_label", None) if work.control else None,
            )
            self._publish_result(work.partition, work.message, result, work.span)
        except Exception as exc:  # a frame whose result cannot be built or sent goes to the DLQ alone
            log.exception("cannot publish the result of frame %s", work.meta.frame_id)
            self.send_dead_letter(work.partition, work.message, "encode", type(exc).__name__, str(exc), work.span)

    def send_skipped(self, partition: Any, message: Consumed, meta: FrameMeta, span: Any) -> None:
        note = stale_note(meta, utc_now(), self.settings.worker.max_frame_age_s or 0.0, message.timestamp_ms)
        result = skipped_result(
            meta,
            note,
            versions=self._versions(),
            worker_settings=self.settings.worker,
            worker_id=self.worker_id,
            source=message.source,
        )
        self._publish_result(partition, message, result, span)

    def _publish_result(self, partition: Any, message: Consumed, result: InspectionResult, span: Any) -> None:
        key = result.camera_id.encode("utf-8")
        headers = self.telemetry.headers_for(span)  # the result continues the frame's trace
        try:
            result, value = fit_result(result, self.settings.kafka.max_message_bytes, key, headers)
        except ResultTooLarge as exc:
            self.send_dead_letter(partition, message, "encode", "ResultTooLarge", str(exc), span)
            return
        if result.note and result.verdict != "skipped":
            self.counters.add("results_shrunk")
        publish_span = self.telemetry.child_span(span, "publish")

        def acked() -> None:
            publish_span.end()
            span.set_attribute("linewatch.verdict", result.verdict)
            span.end()
            self.checkpoint.done(partition, message.offset)
            self.counters.add(f"results_{result.verdict}")
            self.telemetry.metrics.frame_done(result.verdict, (utc_now() - result.captured_at).total_seconds())

        def too_large() -> None:  # the broker refused it after all (a lower topic limit)
            publish_span.end()
            self.send_dead_letter(
                partition,
                message,
                "encode",
                "MessageSizeTooLarge",
                f"result of {len(value)} bytes refused by the broker",
                span,
            )

        self.outbox.send(Outgoing(self.settings.kafka.results_topic, key, value, headers, acked, too_large))

    def send_dead_letter(
        self, partition: Any, message: Consumed, stage: str, error_type: str, text: str, span: Any
    ) -> None:
        error = dead_letter_error(
            stage, error_type, text, worker_id=self.worker_id, source=message.source, now=utc_now()
        )
        key, value, headers = dead_letter_record(
            message.key, message.value, message.headers, error, self.settings.kafka.max_message_bytes
        )
        log.info(
            "dead-lettering %s:%s@%s (%s/%s): %s",
            message.topic,
            message.partition,
            message.offset,
            stage,
            error_type,
            error.message,
        )
        span.set_attribute("linewatch.dead_letter", f"{stage}/{error_type}")

        def acked() -> None:
            span.end()
            self.checkpoint.done(partition, message.offset)
            self.counters.add("dead_letters")
            self.telemetry.metrics.frame_done("dead_letter", None)
            self.telemetry.metrics.dead_letter(stage, error_type)

        def without_value() -> None:  # keep the error and headers, leave the payload out
            self.outbox.send(Outgoing(self.settings.kafka.dlq_topic, key, None, headers, acked))

        self.outbox.send(Outgoing(self.settings.kafka.dlq_topic, key, value, headers, acked, without_value))
