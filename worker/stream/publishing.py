"""The publish thread: each scored batch's records, in offset order, then a checkpoint.

It takes the inference thread's `Scored` batches one by one (FIFO), builds the record of
every message (`outputs.Records`: result, skipped result or dead letter) and sends it through
the `Delivery` of the processing guarantee. A checkpoint closes what it sent so far when
`commit_interval_ms` has passed or no scored batch is waiting: the delivery settles the
records (at-least-once: every one acknowledged; exactly-once: the transaction, offsets
included, committed) and the poll thread hears "done through offset N" per partition
(`Done`), or "read again from the committed offsets" (`Rewind`) when it was not settled (a
transaction aborted, a record the broker never took). Messages count in flight (backpressure)
until their checkpoint settled.

A message whose record cannot be built breaks its checkpoint: what was sent before it is
settled, and it is read again (`Rewind`). Failures are counted per (partition, offset); at
`worker.max_attempts` the message goes to the dead-letter topic instead (stage `publish`) and
the partition moves on.

Batches polled before a rewind (an older generation) are dropped: their messages are read
again. What this thread had open for them is settled first (at-least-once: what was sent is
acknowledged and reported) or aborted (exactly-once). The outputs of a partition revoked since
they were polled (a newer epoch) are dropped alone; an open transaction holding its records is
aborted, as its offsets are no longer this member's to commit.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kafka import TopicPartition

from common.schemas import Versions
from worker.stream.batching import STOP
from worker.stream.delivery import Delivery, Outgoing, is_size_error
from worker.stream.intake import DeadLetter
from worker.stream.offsets import Offsets
from worker.stream.outputs import Records
from worker.stream.stages import Output, Scored, StageContext

log = logging.getLogger(__name__)

PUBLISH_QUEUE_BATCHES = 2  # scored batches waiting for the publish thread: keeps it busy, bounds the memory
IDLE_S = 0.05


@dataclass(frozen=True)
class Done:
    """Messages done through these offsets; `committed`: a transaction already committed them."""

    generation: int
    offsets: Offsets
    committed: bool


@dataclass(frozen=True)
class Rewind:
    """A checkpoint of `generation` was not settled (a transaction aborted, a record the broker never
    took, a record that could not be built): read its messages again from the done offsets."""

    generation: int


Report = Done | Rewind


@dataclass
class Open:
    """What was sent since the last checkpoint."""

    generation: int = -1
    records: list[Outgoing] = field(default_factory=list)
    offsets: Offsets = field(default_factory=dict)
    epochs: dict[TopicPartition, int] = field(default_factory=dict)  # of the partitions with records here
    messages: int = 0
    since: float = 0.0

    broken: bool = False  # a message of it has no output: read it again

    def __bool__(self) -> bool:
        return self.messages > 0

    def clear(self) -> None:
        self.generation, self.records, self.offsets, self.messages, self.broken = -1, [], {}, 0, False
        self.epochs = {}


class Publisher:
    def __init__(
        self,
        context: StageContext,
        delivery: Delivery,
        versions: Callable[[], Versions],
        group_metadata: Callable[[], Any],
    ):
        self.context = context
        self.delivery = delivery
        self.records = Records(context, versions)
        self._group_metadata = group_metadata
        self.queue: queue.Queue[Scored | object] = queue.Queue(maxsize=PUBLISH_QUEUE_BATCHES)
        self.reports: queue.SimpleQueue[Report] = queue.SimpleQueue()  # read by the poll thread
        self.thread = threading.Thread(target=self._loop, name="lw-publish", daemon=True)
        self.settled = 0  # the generation from which on nothing older is open here
        self._aborted = -1  # the generation of the last aborted transaction: dropped until the rewind
        self._shrink: dict[tuple[TopicPartition, int], int] = {}  # refused for size: send smaller when read again
        self._failures: dict[tuple[TopicPartition, int], int] = {}  # records that could not be built, per message

    def _loop(self) -> None:
        pending = Open()
        while True:
            try:
                item = self.queue.get(timeout=IDLE_S)
            except queue.Empty:
                item = None
            if item is STOP or self.context.abandon.is_set():
                if not self.context.abandon.is_set():
                    self._checkpoint(pending)
                return
            generation = self.context.checkpoint.generation
            if pending and (pending.generation != generation or not self._kept(pending)):
                self._checkpoint(pending)  # a rewind, or a partition of it revoked: settle or abort what is open
            if isinstance(item, Scored):
                self._publish(item, pending)
            if pending and (item is None or self.queue.empty() or self._due(pending)):
                self._checkpoint(pending)
            if not pending or pending.generation == generation:
                self.settled = generation  # nothing of an older generation is open here

    def _kept(self, pending: Open) -> bool:
        """No partition with records in `pending` was revoked since they were polled."""
        return all(self.context.kept(pending.epochs, partition) for partition in pending.epochs)

    def _due(self, pending: Open) -> bool:
        return time.monotonic() - pending.since >= self.context.settings.worker.commit_interval_ms / 1000.0

    def _publish(self, scored: Scored, pending: Open) -> None:
        if not self.context.current(scored.generation) or scored.generation <= self._aborted:
            self.context.in_flight.finished(scored.size)  # read again after the rewind
            return
        if not pending:
            pending.generation, pending.since = scored.generation, time.monotonic()
        pending.messages += scored.size
        pending.broken = scored.failed
        for output in [] if pending.broken else scored.outputs:
            if not self.context.current(scored.generation):  # the rest is read again
                break
            if not self.context.kept(scored.epochs, output.partition):  # revoked: its next owner reads it
                self.context.counters.add("dropped_on_revocation")
                continue
            record: Outgoing | None
            try:
                record = self._record(output)
            except Exception as exc:  # keep the thread alive: read it again, or dead-letter it
                record = self._failed(output, exc)
            if record is None:  # the message stays undone, so nothing after it is committed
                pending.broken = True
                break
            pending.records.append(self.delivery.send(record))
            pending.offsets[output.partition] = output.message.offset + 1
            pending.epochs[output.partition] = scored.epochs.get(output.partition, 0)
        if pending.broken:
            self._checkpoint(pending)

    def _record(self, output: Output) -> Outgoing:
        record = self.records.build(output)
        self._failures.pop((output.partition, output.message.offset), None)
        for _ in range(self._shrink.pop((output.partition, output.message.offset), 0)):
            smaller = record.smaller() if record.smaller is not None else None
            record = smaller or record
        return record

    def _failed(self, output: Output, exc: Exception) -> Outgoing | None:
        """The record of `output` could not be built: None (read it again) until that happened
        `worker.max_attempts` times, then its dead letter."""
        source = (output.partition, output.message.offset)
        failures = self._failures[source] = self._failures.get(source, 0) + 1
        limit = self.context.settings.worker.max_attempts
        log.error(
            "cannot build the record of %s (%s: %s; failure %d of %d)",
            output.message.source,
            type(exc).__name__,
            exc,
            failures,
            limit,
            exc_info=exc,
        )
        if failures < limit:
            return None
        try:
            letter = DeadLetter(output.message, output.partition, "publish", type(exc).__name__, str(exc), output.span)
            record = self.records.dead_letter(letter)
        except Exception:
            log.exception("cannot dead-letter %s either; reading it again", output.message.source)
            return None
        del self._failures[source]
        return record

    def _checkpoint(self, pending: Open) -> None:
        if not pending:
            return
        transactional = self.delivery.transactional
        current = self.context.current(pending.generation)
        started = time.perf_counter()
        if transactional and (pending.broken or not current or not self._kept(pending)):
            self.delivery.abort()  # a rewind came in between, or a partition of it is another member's now
            ok = False
        else:
            group = self._group_metadata() if transactional else None
            ok = self.delivery.settle(pending.records, pending.offsets, group)
        settle_s = time.perf_counter() - started  # what the guarantee costs this thread per checkpoint
        self.context.telemetry.metrics.stage("checkpoint", settle_s)
        if ok:
            self.context.counters.add("checkpoints")
            self.context.counters.add("checkpoint_ms", round(1000 * settle_s))
            self.reports.put(Done(pending.generation, dict(pending.offsets), transactional))
        elif transactional:
            self.context.counters.add("aborted_transactions")
            for record in pending.records:
                if is_size_error(record.error) and record.source is not None:
                    self._shrink[record.source] = self._shrink.get(record.source, 0) + 1
        if (pending.broken or not ok) and current:  # nothing after what is not done may be committed
            self._aborted = pending.generation
            self.reports.put(Rewind(pending.generation))
        self.context.in_flight.finished(pending.messages)
        pending.clear()
