"""Offset bookkeeping for at-least-once delivery.

A consumed message is *open* until its result (or dead letter) is acknowledged
by the broker, then *done*. Per partition the worker may commit the offset after
the longest run of done messages at the head of what it consumed -- never past
an open one, whatever order the acknowledgements arrive in. Offsets are compared
in consumption order, not arithmetically, so gaps (compaction, transaction
markers) do not stall a partition.

Thread-safe: the poll thread adds and commits, producer callbacks mark done, the
rebalance listener forgets partitions.

`Checkpoint` puts an `OffsetTracker` together with a consumer: explicit commits of what
is done, and one rebalance listener (`RebalanceListener`, callbacks) for every service.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from typing import Any

from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from common.kafka import BrokerReachability

log = logging.getLogger(__name__)

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


# --------------------------------------------------------------------------- checkpoint

RevokedHook = Callable[[set, dict, int], None]  # (partitions, offsets committed, messages dropped)
AssignedHook = Callable[[set, dict], None]  # (partitions, offsets rewound to)


class RebalanceListener(ConsumerRebalanceListener):
    """kafka-python's listener as three callbacks: revoked (commit allowed), lost (evicted: a
    commit would fail) and assigned."""

    def __init__(self, on_revoked: Callable[[set, bool], None], on_assigned: Callable[[set], None]):
        self._on_revoked = on_revoked
        self._on_assigned = on_assigned

    def on_partitions_revoked(self, revoked: Any) -> None:
        self._on_revoked(set(revoked), True)

    def on_partitions_lost(self, lost: Any) -> None:  # kafka-python >= 3: evicted from the group
        self._on_revoked(set(lost), False)

    def on_partitions_assigned(self, assigned: Any) -> None:
        self._on_assigned(set(assigned))


class Checkpoint:
    """The consumer group's side of at-least-once: track what was consumed, commit what is done.

    Shared by the stream worker and the alarm services. `consumed` a message when it is
    polled, `done` it when its output is acknowledged, `commit` from the polling thread.
    On revocation it commits what is done (non-blocking: the listener may run on the
    consumer's IO thread), drops the rest uncommitted and remembers where it began, so a
    partition that comes straight back to this member is sought back there
    (kafka-python >= 3 keeps its fetch position): dropped work is done again, never skipped.
    Each revocation bumps the partition's generation, so work polled before it can be told
    apart (`current`). All state is behind one lock of its own.
    """

    def __init__(
        self,
        *,
        reachability: BrokerReachability | None = None,
        commit_timeout_ms: int | None = None,
        name: str = "consumer",
    ) -> None:
        self.tracker = OffsetTracker()
        self.reachability = reachability or BrokerReachability()
        self.consumer: Any = None  # set by `subscribe`
        self._commit_timeout_ms = commit_timeout_ms
        self._name = name
        self._lock = threading.Lock()
        self._assigned: set[Any] = set()
        self._generation: dict[Any, int] = {}
        self._committed: dict[Any, int] = {}
        self._rewind: dict[Any, int] = {}

    def subscribe(
        self,
        consumer: Any,
        topics: list[str],
        *,
        on_revoked: RevokedHook | None = None,
        on_assigned: AssignedHook | None = None,
    ) -> None:
        """Subscribe `consumer` with a listener that keeps this checkpoint (then the hooks) up to date."""
        self.consumer = consumer

        def revoked(partitions: set, commit: bool) -> None:
            offsets, dropped = self.revoke(partitions, commit)
            if on_revoked is not None:
                on_revoked(partitions, offsets, dropped)

        def assigned(partitions: set) -> None:
            rewound = self.assign(partitions)
            if on_assigned is not None:
                on_assigned(partitions, rewound)

        consumer.subscribe(topics, listener=RebalanceListener(revoked, assigned))

    # ------------------------------------------------------------------ polling thread

    def consumed(self, partition: Any, offset: int) -> int:
        """Track a polled message (open until `done`); returns its partition's generation."""
        self.tracker.add(partition, offset)
        with self._lock:
            return self._generation.get(partition, 0)

    def done(self, partition: Any, offset: int) -> None:
        self.tracker.done(partition, offset)

    def current(self, partition: Any, generation: int) -> bool:
        """The partition was not revoked since a message of `generation` was polled."""
        with self._lock:
            return self._generation.get(partition, 0) == generation

    def commit(self, partitions: Iterable[Any] | None = None) -> dict[Any, int]:
        """Commit (blocking) what is done on the assigned partitions (or these); returns the offsets.

        A KafkaError (e.g. a rebalance in progress: the listener commits instead) is raised
        after marking the broker unreachable; nothing is forgotten, so the next call retries.
        """
        with self._lock:
            chosen = set(self._assigned) if partitions is None else set(partitions)
        offsets = self.tracker.committable(chosen)
        if not offsets:
            return {}
        options = {} if self._commit_timeout_ms is None else {"timeout_ms": self._commit_timeout_ms}
        try:
            self.consumer.commit({tp: OffsetAndMetadata(off, "", -1) for tp, off in offsets.items()}, **options)
        except KafkaError:
            self.reachability.error()
            raise
        self.reachability.ok()
        self._committed_now(offsets)
        return offsets

    def seek_back(self, partition: Any, offset: int) -> None:
        """Read the partition again from `offset` (stopped before its work was done)."""
        self.consumer.seek(partition, offset)

    # ------------------------------------------------------------------ rebalance (listener)

    def revoke(self, partitions: set, commit: bool) -> tuple[dict[Any, int], int]:
        """Commit what is done (when `commit`), drop the rest; returns (offsets, messages dropped)."""
        with self._lock:
            for tp in partitions:
                self._generation[tp] = self._generation.get(tp, 0) + 1
            self._assigned -= partitions
        offsets = self.tracker.committable(partitions) if commit else {}
        if offsets:
            self.tracker.committed(offsets)
        dropped = sum(self.tracker.open_count(tp) for tp in partitions)
        rewind = {tp: first for tp in partitions if (first := self.tracker.first_open(tp)) is not None}
        self.tracker.forget(partitions)
        with self._lock:
            self._rewind.update(rewind)
        if offsets and self.consumer is not None:
            try:  # goes out before the re-join
                self.consumer.commit_async({tp: OffsetAndMetadata(off, "", -1) for tp, off in offsets.items()})
            except Exception as exc:
                log.warning("%s: commit on revocation failed (the next owner re-processes more): %s", self._name, exc)
            with self._lock:
                self._committed.update(offsets)
        log.info(
            "%s: partitions %s: %s; committing %s; %d uncommitted messages dropped (re-processed by the next owner)",
            self._name,
            "revoked" if commit else "lost",
            names(partitions),
            names(offsets),
            dropped,
        )
        return offsets, dropped

    def assign(self, partitions: set) -> dict[Any, int]:
        """Seek returning partitions back to their first dropped message; returns those offsets."""
        with self._lock:
            rewind = {tp: self._rewind.pop(tp) for tp in partitions if tp in self._rewind}
            self._rewind.clear()
            self._assigned |= partitions
        self.reachability.ok()  # the group coordinator answered
        for tp, offset in rewind.items() if self.consumer is not None else ():
            try:
                self.consumer.seek(tp, offset)
            except Exception as exc:  # pragma: no cover - it was just assigned
                log.warning("%s: cannot seek %s:%s back to %s: %s", self._name, tp.topic, tp.partition, offset, exc)
        log.info(
            "%s: partitions assigned: %s%s",
            self._name,
            names(partitions),
            f" (rewound {names(rewind)})" if rewind else "",
        )
        return rewind

    # ------------------------------------------------------------------ any thread

    def assigned(self) -> set[Any]:
        with self._lock:
            return set(self._assigned)

    def committed_offsets(self) -> dict[Any, int]:
        with self._lock:
            return dict(self._committed)

    def _committed_now(self, offsets: dict[Any, int]) -> None:
        self.tracker.committed(offsets)
        with self._lock:
            self._committed.update(offsets)


def names(partitions: Any) -> str:
    """`topic:partition[@offset], ...` of a set or dict of TopicPartitions, for log lines."""
    items = partitions.items() if isinstance(partitions, dict) else ((tp, None) for tp in partitions)
    return (
        ", ".join(
            f"{tp.topic}:{tp.partition}" + ("" if off is None else f"@{off}")
            for tp, off in sorted(items, key=lambda item: (item[0].topic, item[0].partition))
        )
        or "none"
    )
