"""The worker's sending side: a thin adapter over the idempotent, acks=all Kafka producer.

Every record carries two callbacks: `on_acked` (the broker has it: the caller marks
the source message done) and `on_too_large` (the broker or client refused its
size: the caller shrinks or dead-letters it). Any other failure is kept and sent
again by `retry_failed`, so a record is acknowledged, re-routed or retried --
never silently dropped. Callbacks run on the producer's I/O thread.
"""
from __future__ import annotations

import logging
import queue
import time
from dataclasses import dataclass
from typing import Any, Callable

from kafka.errors import KafkaError, MessageSizeTooLargeError

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
            log.warning("send to %s failed (%s: %s); retrying every %.0f s", item.topic, type(exc).__name__, exc,
                        RETRY_BACKOFF_S)
        item.failed_at = self._clock()
        self._failed.put(item)
