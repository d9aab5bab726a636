"""Where each partition stands: polled, done, committed -- the consumer group's side of delivery.

Every linewatch loop finishes its messages in offset order (the stream worker's batches go
through one FIFO inference thread and one FIFO publish thread; the alarm loops work one
record or one poll at a time), so a partition's progress is one number: "done through
offset N". `Checkpoint` keeps that number per partition and commits it:

- `consumed` a message when it is polled (the first one not done is where to resume);
- `done` it once its output is on the broker (at-least-once: the poll thread then `commit`s);
- `committed` offsets that a Kafka transaction already committed (exactly-once);
- `rewind`: seek back to where the work not done begins, after work was dropped (a
  rebalance, an aborted transaction).

One `RebalanceListener` serves every service. Its callbacks run inside `consumer.poll` on the
consumer's event loop: they only update this bookkeeping and send the revoked partitions'
done offsets with `commit_async` (a blocking call there would stall the heartbeats).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from kafka import TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from common.kafka import BrokerReachability

log = logging.getLogger(__name__)

Offsets = dict[TopicPartition, int]  # partition -> the next offset to read (what Kafka commits)
RevokedHook = Callable[[set[TopicPartition]], None]
AssignedHook = Callable[[set[TopicPartition]], None]


class RebalanceListener(ConsumerRebalanceListener):
    """kafka-python's listener as two callbacks: revoked (`commit`: False when the member was
    evicted, a commit would fail) and assigned."""

    def __init__(
        self,
        on_revoked: Callable[[set[TopicPartition], bool], None],
        on_assigned: Callable[[set[TopicPartition]], None],
    ):
        self._on_revoked = on_revoked
        self._on_assigned = on_assigned

    def on_partitions_revoked(self, revoked: Any) -> None:
        self._on_revoked(set(revoked), True)

    def on_partitions_lost(self, lost: Any) -> None:  # kafka-python >= 3: evicted from the group
        self._on_revoked(set(lost), False)

    def on_partitions_assigned(self, assigned: Any) -> None:
        self._on_assigned(set(assigned))


class Checkpoint:
    """Per partition: where the work not done yet begins (`resume`), done-through, committed.

    Thread-safe (one lock): the poll thread and the rebalance listener write, status reads.
    Each revocation bumps the `epoch` of the partitions revoked, and each rewind (`bump`) the
    `generation` of all, so work polled before either can be told apart.
    """

    def __init__(
        self,
        *,
        reachability: BrokerReachability | None = None,
        commit_timeout_ms: int | None = None,
        name: str = "consumer",
    ) -> None:
        self.reachability = reachability or BrokerReachability()
        self.consumer: Any = None  # set by `subscribe`
        self._commit_timeout_ms = commit_timeout_ms
        self._name = name
        self._lock = threading.Lock()
        self._assigned: set[TopicPartition] = set()
        self._resume: Offsets = {}  # the first offset whose work is not done (polled partitions)
        self._done: Offsets = {}  # done through (next offset), not committed yet
        self._committed: Offsets = {}
        self._returning: Offsets = {}  # revoked: where to resume if assigned straight back
        self._epochs: dict[TopicPartition, int] = {}  # per partition: how often it was revoked
        self.generation = 0

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

        def revoked(partitions: set[TopicPartition], commit: bool) -> None:
            self.revoke(partitions, commit)
            if on_revoked is not None:
                on_revoked(partitions)

        def assigned(partitions: set[TopicPartition]) -> None:
            self.assign(partitions)
            if on_assigned is not None:
                on_assigned(partitions)

        consumer.subscribe(topics, listener=RebalanceListener(revoked, assigned))

    # ------------------------------------------------------------------ the polling thread

    def consumed(self, partition: TopicPartition, offset: int) -> None:
        with self._lock:
            self._resume.setdefault(partition, offset)

    def done(self, partition: TopicPartition, offset: int) -> None:
        """The message at `offset` and every one polled before it on its partition are done."""
        self.done_through({partition: offset + 1})

    def done_through(self, offsets: Offsets) -> None:
        with self._lock:
            for tp, next_offset in offsets.items():
                if tp in self._assigned and next_offset > self._done.get(tp, -1):
                    self._done[tp] = next_offset
                    self._resume[tp] = max(next_offset, self._resume.get(tp, next_offset))

    def committed(self, offsets: Offsets) -> None:
        """These offsets are on the broker (a transaction committed them, or `commit` did)."""
        with self._lock:
            for tp, next_offset in offsets.items():
                self._committed[tp] = max(next_offset, self._committed.get(tp, -1))
                if self._done.get(tp, next_offset) <= next_offset:
                    self._done.pop(tp, None)
                for positions in (self._resume, self._returning):
                    if tp in positions:
                        positions[tp] = max(positions[tp], next_offset)

    def epoch(self, partition: TopicPartition) -> int:
        with self._lock:
            return self._epochs.get(partition, 0)

    def epochs(self) -> dict[TopicPartition, int]:
        with self._lock:
            return dict(self._epochs)

    def bump(self) -> int:
        """Start a new generation: work polled so far is dropped (and read again)."""
        with self._lock:
            self.generation += 1
            return self.generation

    def commit(self, partitions: Iterable[TopicPartition] | None = None) -> Offsets:
        """Commit (blocking) what is done on the assigned partitions (or these); returns the offsets.

        A KafkaError (e.g. a rebalance in progress) is raised after marking the broker
        unreachable; nothing is forgotten, so the next call retries.
        """
        with self._lock:
            chosen = self._assigned if partitions is None else set(partitions) & self._assigned
            offsets = {tp: self._done[tp] for tp in chosen if tp in self._done}
        if not offsets:
            return {}
        options = {} if self._commit_timeout_ms is None else {"timeout_ms": self._commit_timeout_ms}
        try:
            self.consumer.commit({tp: OffsetAndMetadata(off, "", -1) for tp, off in offsets.items()}, **options)
        except KafkaError:
            self.reachability.error()
            raise
        self.reachability.ok()
        self.committed(offsets)
        return offsets

    def rewind(self, partitions: Iterable[TopicPartition] | None = None) -> Offsets:
        """Seek every assigned partition (or these) that was polled back to where its work not done begins."""
        with self._lock:
            chosen = self._assigned if partitions is None else set(partitions) & self._assigned
            points = {tp: offset for tp, offset in self._resume.items() if tp in chosen}
        for tp, offset in points.items():
            self.seek_back(tp, offset)
        if points:
            log.info("%s: reading again from %s", self._name, names(points))
        return points

    def seek_back(self, partition: TopicPartition, offset: int) -> None:
        """Read the partition again from `offset` (stopped before its work was done)."""
        self.consumer.seek(partition, offset)

    # ------------------------------------------------------------------ rebalance (listener)

    def revoke(self, partitions: set[TopicPartition], commit: bool) -> Offsets:
        """Send the done offsets (when `commit`), drop the rest; returns the offsets sent."""
        with self._lock:
            offsets = {tp: self._done[tp] for tp in partitions if tp in self._done} if commit else {}
            for tp in partitions:
                self._epochs[tp] = self._epochs.get(tp, 0) + 1
                if tp in self._resume:
                    self._returning[tp] = self._resume.pop(tp)
                self._done.pop(tp, None)
            self._assigned -= partitions
        if offsets and self.consumer is not None:
            try:  # goes out before the re-join
                self.consumer.commit_async({tp: OffsetAndMetadata(off, "", -1) for tp, off in offsets.items()})
                with self._lock:
                    self._committed.update(offsets)
            except Exception as exc:
                log.warning("%s: commit on revocation failed (the next owner re-processes more): %s", self._name, exc)
        log.info(
            "%s: partitions %s: %s; committing %s",
            self._name,
            "revoked" if commit else "lost",
            names(partitions),
            names(offsets),
        )
        return offsets

    def assign(self, partitions: set[TopicPartition]) -> Offsets:
        """Seek partitions that come straight back to where their dropped work began; returns those offsets.

        (kafka-python keeps the fetch position of a partition that comes back.)"""
        with self._lock:
            rewind = {tp: self._returning[tp] for tp in partitions if tp in self._returning}
            self._returning.clear()
            self._resume = {tp: offset for tp, offset in self._resume.items() if tp in self._assigned} | rewind
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

    def assigned(self) -> set[TopicPartition]:
        with self._lock:
            return set(self._assigned)

    def committed_offsets(self) -> Offsets:
        with self._lock:
            return dict(self._committed)


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
