"""Offset bookkeeping for at-least-once delivery.

A consumed message is *open* until its result (or dead letter) is acknowledged
by the broker, then *done*. Per partition the worker may commit the offset after
the longest run of done messages at the head of what it consumed -- never past
an open one, whatever order the acknowledgements arrive in. Offsets are compared
in consumption order, not arithmetically, so gaps (compaction, transaction
markers) do not stall a partition.

Thread-safe: the poll thread adds and commits, producer callbacks mark done, the
rebalance listener forgets partitions.
"""
from __future__ import annotations

import threading
from collections import deque
from typing import Hashable, Iterable

Partition = Hashable  # kafka.TopicPartition in the service; anything hashable in tests


class OffsetTracker:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        # partition -> uncommitted offsets in consumption order, and which of them are done
        self._open: dict[Partition, deque[int]] = {}
        self._done: dict[Partition, set[int]] = {}

    def add(self, partition: Partition, offset: int) -> None:
        """A message was consumed; it stays open until `done`.

        An offset at or before the last one means consumption was rewound (a seek):
        what was tracked from that offset on is forgotten, since it comes again.
        """
        with self._lock:
            queue = self._open.setdefault(partition, deque())
            done = self._done.setdefault(partition, set())
            while queue and queue[-1] >= offset:
                done.discard(queue.pop())
            queue.append(offset)

    def done(self, partition: Partition, offset: int) -> None:
        """The message's output is on the broker. Unknown (forgotten) offsets are ignored."""
        with self._lock:
            queue = self._open.get(partition)
            if not queue or offset < queue[0]:
                return
            self._done.setdefault(partition, set()).add(offset)

    def committable(self, partitions: Iterable[Partition] | None = None) -> dict[Partition, int]:
        """Per partition, the offset to commit (last contiguous done + 1), where one advanced.

        Does not change state: call `committed` once the commit succeeded.
        """
        with self._lock:
            chosen = self._open.keys() if partitions is None else [p for p in partitions if p in self._open]
            result: dict[Partition, int] = {}
            for partition in chosen:
                queue, done = self._open[partition], self._done.get(partition, ())
                last = None
                for offset in queue:
                    if offset not in done:
                        break
                    last = offset
                if last is not None:
                    result[partition] = last + 1
            return result

    def first_open(self, partition: Partition) -> int | None:
        """The first consumed offset whose output is not acknowledged (None: all are)."""
        with self._lock:
            done = self._done.get(partition, ())
            return next((o for o in self._open.get(partition, ()) if o not in done), None)

    def committed(self, offsets: dict[Partition, int]) -> None:
        """Drop the bookkeeping below each committed offset."""
        with self._lock:
            for partition, next_offset in offsets.items():
                queue = self._open.get(partition)
                if queue is None:
                    continue
                done = self._done.get(partition, set())
                while queue and queue[0] < next_offset:
                    done.discard(queue.popleft())

    def forget(self, partitions: Iterable[Partition]) -> None:
        """The partitions were revoked: their open messages belong to the next owner now."""
        with self._lock:
            for partition in partitions:
                self._open.pop(partition, None)
                self._done.pop(partition, None)

    def open_count(self, partition: Partition | None = None) -> int:
        """Messages consumed and not yet committed (all partitions, or one)."""
        with self._lock:
            queues = self._open.values() if partition is None else [self._open.get(partition, ())]
            return sum(len(q) for q in queues)

    def pending_count(self) -> int:
        """Messages whose output is not acknowledged yet."""
        with self._lock:
            return sum(
                sum(1 for offset in q if offset not in self._done.get(p, ())) for p, q in self._open.items()
            )
