"""Micro-batching and backpressure of the poll loop, and the hand-over between the threads.

`MicroBatcher` and `backpressure` are pure (clock passed in); `Batch` is the unit of delivery
(its items in offset order, stamped with the generation and partition epochs they were polled
at); `drop_revoked` drops the waiting work of revoked partitions; `InFlight` counts the messages
handed on whose outputs are not acknowledged yet, and pauses the consumer on them; `hand_over`
puts on a bounded queue for as long as the thread that takes from it runs.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from kafka import TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from worker.stream.intake import Item
from worker.stream.offsets import Checkpoint

log = logging.getLogger(__name__)

T = TypeVar("T")


class MicroBatcher(Generic[T]):
    """Collects items into batches of at most `max_items`, closed at the latest
    `max_wait_s` after their first item arrived."""

    def __init__(self, max_items: int, max_wait_s: float):
        if max_items < 1:
            raise ValueError("max_items must be at least 1")
        self.max_items = max_items
        self.max_wait_s = max(0.0, max_wait_s)
        self._items: list[T] = []
        self._opened_at: float | None = None

    def add(self, item: T, now: float) -> None:
        if not self._items:
            self._opened_at = now
        self._items.append(item)

    def ready(self, now: float) -> bool:
        """A batch should be handed over: it is full, or its first item waited long enough."""
        if not self._items:
            return False
        return len(self._items) >= self.max_items or now - (self._opened_at or now) >= self.max_wait_s

    def take(self) -> list[T]:
        """The next batch (at most `max_items`); the rest stays, its clock restarted."""
        batch, self._items = self._items[: self.max_items], self._items[self.max_items :]
        self._opened_at = self._opened_at if self._items else None
        return batch

    def take_all(self) -> list[T]:
        """Every item waiting (a shutdown's last batch, or work a rebalance drops)."""
        items, self._items, self._opened_at = self._items, [], None
        return items

    def drop(self, unwanted: Callable[[T], bool]) -> int:
        """Drop the waiting items `unwanted` says (those of revoked partitions); returns how many."""
        kept = [item for item in self._items if not unwanted(item)]
        dropped, self._items = len(self._items) - len(kept), kept
        self._opened_at = self._opened_at if kept else None
        return dropped

    def time_left(self, now: float) -> float | None:
        """Seconds until the open batch is due (0 when due now); None when empty."""
        if not self._items:
            return None
        if len(self._items) >= self.max_items:
            return 0.0
        return max(0.0, self.max_wait_s - (now - (self._opened_at or now)))

    def __len__(self) -> int:
        return len(self._items)


@dataclass(frozen=True)
class Batch:
    """Consumed messages in offset order: frames to score, and the dead letters and skipped results
    between them. `generation` and `epochs`: the checkpoint's when they were polled; work of an older
    generation (a rewind) or of a partition revoked since (a newer epoch) is dropped."""

    generation: int
    items: list[Item]
    epochs: dict[TopicPartition, int] = field(default_factory=dict)


BackpressureAction = Literal["pause", "resume"] | None


def backpressure(waiting: int, limit: int, paused: bool) -> BackpressureAction:
    """Pause fetching at `limit` waiting frames; resume once they drained to half of it.

    The gap between the two marks keeps the consumer from flapping between
    pause and resume on every batch.
    """
    if not paused and waiting >= limit:
        return "pause"
    if paused and waiting <= limit // 2:
        return "resume"
    return None


class InFlight:
    """Messages handed to the inference thread whose outputs are not acknowledged yet (sent and
    waiting, or refused and waiting to be sent again), and whether the consumer is paused on
    them. The poll thread adds and applies; the publish thread finishes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._waiting = 0
        self._paused = False

    def add(self, frames: int) -> None:
        with self._lock:
            self._waiting += frames

    def finished(self, frames: int) -> None:
        with self._lock:
            self._waiting -= frames

    @property
    def waiting(self) -> int:
        with self._lock:
            return self._waiting

    @property
    def paused(self) -> bool:
        with self._lock:
            return self._paused

    def apply(self, consumer: Any, held: int = 0) -> BackpressureAction:
        """Pause or resume the consumer's partitions as `backpressure` says, counting also the `held`
        messages polled and not handed on yet; returns the change."""
        with self._lock:
            waiting = self._waiting + held
            action = backpressure(waiting, self.limit, self._paused)
            if action is not None:
                self._paused = action == "pause"
            paused = self._paused
        if action is not None:
            log.info(
                "backpressure: %d frames waiting, %s partitions",
                waiting,
                "pausing" if action == "pause" else "resuming",
            )
        # Re-applied every time: a rebalance hands out partitions unpaused.
        assignment = consumer.assignment()
        if paused and assignment:
            consumer.pause(*assignment)
        elif not paused and consumer.paused():
            consumer.resume(*consumer.paused())
        return action


def drop_revoked(
    seen: dict[TopicPartition, int],
    epochs: dict[TopicPartition, int],
    records: dict[TopicPartition, list[ConsumerRecord]],
    batcher: MicroBatcher[Item],
    checkpoint: Checkpoint,
) -> tuple[dict[TopicPartition, list[ConsumerRecord]], int]:
    """Drop the waiting work of the partitions revoked since the epochs `seen` (the other threads drop
    what they hold of them); a partition assigned straight back is read again from its first message
    not done. Returns the polled records of the other partitions, and how many messages were dropped."""
    revoked = {tp for tp, epoch in epochs.items() if seen.get(tp, 0) != epoch}
    dropped = batcher.drop(lambda item: item.partition in revoked)
    for tp in revoked & records.keys():
        checkpoint.consumed(tp, records[tp][0].offset)
        dropped += len(records[tp])
    checkpoint.rewind(revoked)
    return {tp: batch for tp, batch in records.items() if tp not in revoked}, dropped


STOP = object()  # sentinel that ends the inference thread, which passes it on to the publish thread


def hand_over(
    target: queue.Queue, item: Any, receiver: threading.Thread | None, timeout_s: float | None = None
) -> bool:
    """Put `item` on the bounded `target`, waiting as long as `receiver` (who takes from it) runs,
    or at most `timeout_s`; False when that ran out."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:  # the queues are sized so that pausing keeps this from blocking long
        try:
            target.put(item, timeout=1.0 if deadline is None else max(0.01, min(1.0, deadline - time.monotonic())))
            return True
        except queue.Full:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            if receiver is None or not receiver.is_alive():
                raise RuntimeError(f"{receiver.name if receiver else 'the receiving thread'} is not running") from None
