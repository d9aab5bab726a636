"""How the publish thread's records reach Kafka under each `kafka.processing_guarantee`.

Both deliveries send a checkpoint's records in order and then `settle` them:

- `AtLeastOnce` (idempotent, acks=all producer): `settle` waits for every acknowledgement;
  a refused record is sent again **with every record after it**, in order (per-key order is
  kept; what already went out is duplicated, never reordered), until the broker has them.
  The poll thread then commits the offsets. A record refused for its size with nothing smaller
  to send makes `settle` give up (False): the caller reads the messages again.
- `ExactlyOnce` (transactional producer, `transactional_id` = prefix + worker id): the records
  of a checkpoint go out in one transaction that also carries the consumed offsets
  (`send_offsets_to_transaction` with the consumer's group metadata: a member fenced by a
  rebalance cannot commit). Any failure aborts the transaction; the caller reads the
  messages again from the committed offsets.

A record refused for its size is replaced by its `smaller` form (a result by its dead letter,
a dead letter by a trimmed one) and the rest goes on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from kafka import KafkaProducer
from kafka.errors import KafkaError, MessageSizeTooLargeError, ProducerFencedError
from kafka.structs import OffsetAndMetadata

from common.kafka import BrokerReachability, build_producer
from common.settings import LinewatchSettings

log = logging.getLogger(__name__)

RETRY_BACKOFF_S = 1.0
SEND_TIMEOUT_S = 30.0  # one flush; a broker away for longer is waited for in further rounds


@dataclass
class Outgoing:
    """One record to send, what to do once it is on the broker, and its smaller form."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    on_acked: Callable[[], None] = lambda: None
    smaller: Callable[[], Outgoing | None] | None = None  # None: nothing smaller to send instead
    source: tuple[Any, int] | None = None  # (partition, offset) of the message it answers
    future: Any = field(default=None, repr=False)
    error: BaseException | None = field(default=None, repr=False)


def is_size_error(exc: BaseException | None) -> bool:
    # MessageSizeTooLargeError from the client or the broker, RecordTooLarge... from newer brokers
    return exc is not None and (isinstance(exc, MessageSizeTooLargeError) or "TooLarge" in type(exc).__name__)


def shrunk(item: Outgoing) -> Outgoing | None:
    smaller = item.smaller() if item.smaller is not None else None
    if smaller is None:
        log.error("a record for %s is refused for its size and has no smaller form", item.topic)
    return smaller


class Delivery(Protocol):
    transactional: bool
    errors: int  # sends refused (and retried) or transactions aborted

    def send(self, item: Outgoing) -> Outgoing: ...

    def settle(self, items: list[Outgoing], offsets: dict[Any, int], group: Any) -> bool: ...

    def abort(self) -> None: ...

    def close(self, timeout_s: float = 5.0) -> None: ...


class _Sender:
    def __init__(self, producer: KafkaProducer, reachability: BrokerReachability):
        self.producer = producer
        self.reachability = reachability
        self.errors = 0

    def send(self, item: Outgoing) -> Outgoing:
        """Send `item` (or its smaller form when the client refuses its size); returns what was sent."""
        while True:
            item.future, item.error = None, None
            try:
                item.future = self.producer.send(item.topic, key=item.key, value=item.value, headers=item.headers)
                return item
            except KafkaError as exc:  # raised before sending: size check, metadata timeout, full buffer
                if is_size_error(exc) and (smaller := shrunk(item)) is not None:
                    item = smaller
                    continue
                item.error = exc
                return item

    def wait(self, items: list[Outgoing]) -> int | None:
        """Flush; the index of the first item not acknowledged (None: all are)."""
        try:
            self.producer.flush(timeout=SEND_TIMEOUT_S)
        except KafkaError as exc:
            log.warning("not every record was acknowledged within %.0f s: %s", SEND_TIMEOUT_S, exc)
        first = None
        for index, item in enumerate(items):
            if item.error is None and item.future is not None:
                if not item.future.is_done:
                    item.error = KafkaError("not acknowledged in time")
                elif item.future.failed():
                    item.error = item.future.exception
            if item.error is not None and first is None:
                first = index
        if first is None:
            self.reachability.ok()
        elif not is_size_error(items[first].error):
            self.reachability.error()
        return first

    def acked(self, items: list[Outgoing]) -> None:
        for item in items:
            try:
                item.on_acked()
            except Exception:
                log.exception("error in acknowledgement bookkeeping for %s", item.topic)


class AtLeastOnce(_Sender):
    transactional = False

    def __init__(
        self,
        settings: LinewatchSettings,
        reachability: BrokerReachability,
        stop: Callable[[], bool],
        producer: KafkaProducer | None = None,
    ):
        super().__init__(producer or build_producer(settings.kafka), reachability)
        self._stop = stop  # give up waiting (shutdown abandoned): the messages stay uncommitted

    def settle(self, items: list[Outgoing], offsets: dict[Any, int], group: Any) -> bool:
        """Wait until every item is on the broker, sending again from the first refused one."""
        while (first := self.wait(items)) is not None:
            failed = items[first]
            self.errors += 1
            log.warning(
                "send to %s failed (%s: %s); sending it and the %d records after it again",
                failed.topic,
                type(failed.error).__name__,
                failed.error,
                len(items) - first - 1,
            )
            if self._stop():
                return False
            if is_size_error(failed.error):
                smaller = shrunk(failed)
                if smaller is None:  # read again later: the topic's limit may be raised meanwhile
                    time.sleep(RETRY_BACKOFF_S)
                    return False
                items[first] = smaller
            else:
                time.sleep(RETRY_BACKOFF_S)
            items[first:] = [self.send(item) for item in items[first:]]
        self.acked(items)
        return True

    def abort(self) -> None:
        """Nothing to take back: what was sent may be published (duplicates, never gaps)."""

    def close(self, timeout_s: float = 5.0) -> None:
        self.producer.close(timeout=timeout_s)


class ExactlyOnce(_Sender):
    transactional = True

    def __init__(self, settings: LinewatchSettings, reachability: BrokerReachability):
        ks = settings.kafka
        transactional_id = f"{ks.transactional_id_prefix}-{settings.worker.worker_id}"
        producer = build_producer(
            ks, transactional_id=transactional_id, transaction_timeout_ms=ks.transaction_timeout_ms
        )
        super().__init__(producer, reachability)
        try:  # fences an earlier process with the same id, aborting its open transaction
            producer.init_transactions()
        except KafkaError as exc:
            producer.close(timeout=1.0)
            raise RuntimeError(
                f"cannot start Kafka transactions as {transactional_id!r} ({type(exc).__name__}: {exc}); "
                f"kafka.transaction_timeout_ms ({ks.transaction_timeout_ms}) must not exceed the broker's "
                "transaction.max.timeout.ms"
            ) from exc
        self.transactional_id = transactional_id
        self.open = False

    def send(self, item: Outgoing) -> Outgoing:
        if not self.open:
            self.producer.begin_transaction()
            self.open = True
        return super().send(item)

    def settle(self, items: list[Outgoing], offsets: dict[Any, int], group: Any) -> bool:
        """Commit the transaction with `offsets`; False (aborted) when anything failed."""
        if not self.open:
            self.producer.begin_transaction()
            self.open = True
        if self.wait(items) is not None:
            self.errors += 1
            self.abort()
            return False
        try:
            if offsets:
                self.producer.send_offsets_to_transaction(
                    {tp: OffsetAndMetadata(offset, "", -1) for tp, offset in offsets.items()}, group
                )
            self.producer.commit_transaction()
        except ProducerFencedError:
            raise  # another process runs with this worker id: this one must stop
        except KafkaError as exc:
            log.warning("transaction not committed (%s: %s); aborting it", type(exc).__name__, exc)
            self.errors += 1
            self.abort()
            return False
        self.open = False
        self.acked(items)
        return True

    def abort(self) -> None:
        if not self.open:
            return
        self.open = False
        try:
            self.producer.abort_transaction()
        except ProducerFencedError:
            raise
        except KafkaError as exc:  # the broker aborts it after transaction_timeout_ms anyway
            log.warning("abort failed (%s: %s); the broker times the transaction out", type(exc).__name__, exc)

    def close(self, timeout_s: float = 5.0) -> None:
        try:
            self.abort()
        finally:
            self.producer.close(timeout=timeout_s)


def transaction_timeout_problem(settings: LinewatchSettings) -> str | None:
    """Why `kafka.transaction_timeout_ms` is too short for the worker's settings (None: it is fine).

    A transaction opens when a checkpoint's first record is sent; it stays open while later
    batches join it (up to `commit_interval_ms`, each filled for up to `batch_max_wait_ms`),
    while it flushes (up to SEND_TIMEOUT_S) and, on SIGTERM, while the shutdown finishes
    (`shutdown_timeout_s`). Inference never runs inside one: a batch is scored before its
    records open a transaction, so `inference_timeout_s` does not count -- except that a worker
    stopped by its watchdog still needs its shutdown time.
    """
    ks, ws = settings.kafka, settings.worker
    needed_ms = ws.commit_interval_ms + ws.batch_max_wait_ms + 1000 * (SEND_TIMEOUT_S + ws.shutdown_timeout_s)
    if ks.transaction_timeout_ms >= needed_ms:
        return None
    return (
        f"kafka.transaction_timeout_ms = {ks.transaction_timeout_ms} is too short for exactly-once: a transaction "
        f"may stay open for worker.commit_interval_ms ({ws.commit_interval_ms}) + worker.batch_max_wait_ms "
        f"({ws.batch_max_wait_ms}) + a flush ({SEND_TIMEOUT_S:.0f} s) + worker.shutdown_timeout_s "
        f"({ws.shutdown_timeout_s:g} s) = {needed_ms:.0f} ms; raise it (within the broker's "
        "transaction.max.timeout.ms) or lower those"
    )
