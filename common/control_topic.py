"""The compacted control topic `linewatch.control` and its learned-records topic
`linewatch.control.learned`: decoding, the table of records in force, reading both to their end
and publishing. Shared by the worker and the operator CLIs.

Operators write the control topic; workers in learning mode write their calibrated records to the
learned topic (the broker's ACLs keep workers off the control topic, common/acl.py). A learned
record is in force only while it answers the scope's learning record (`answers_learning`): its
next version, only thresholds and calibration changed. So a worker principal can close a
learning session an operator opened, and change nothing else.

- `decode_control(key, value)`: one message -> (scope, record or None for a tombstone), or
  `RefusedRecord` with a short reason (`not_a_scope`, `not_json`, `invalid_record`, `out_of_bounds`).
- `ControlTable`: the records in force by scope, and the ordering rule: a record is applied only
  when its version is higher than the one in force (`not_newer` otherwise); a tombstone deletes.
  A learned record closes one learning session once (`replayed` after), answers it or is refused
  (`not_an_answer`, `out_of_bounds`); a learned tombstone is ignored.
- `control_consumer` / `read_control_topic`: every partition of both topics assigned (no group), from the start.
- `publish_control`: one record (or tombstone) sent and acknowledged (acks=all).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from pydantic import ValidationError

from common.control import ControlRecord, answers_learning, learned_out_of_bounds, parse_scope
from common.kafka import COMPACTED, build_producer, connection_options, ensure_topics
from common.settings import KafkaSettings

REFUSAL_REASONS = (
    "not_a_scope",
    "not_json",
    "invalid_record",
    "out_of_bounds",
    "not_newer",
    "replayed",
    "not_an_answer",
)
# Compacted, but every version is kept for 30 days at least: what `control rollback` may restore.
CONTROL_TOPIC_CONFIG = COMPACTED | {"min.compaction.lag.ms": str(30 * 86_400_000)}
MAX_HELD_LEARNED = 16  # learned records per scope waiting for the learning record they answer
MAX_HELD_LEARNED_IN_ALL = 4096  # and over all scopes (scopes are keys any writer of the learned topic picks)


class RefusedRecord(ValueError):
    """A control message that is not applied; `reason` is one of REFUSAL_REASONS."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


def decode_control(key: bytes | None, value: bytes | None) -> tuple[str, ControlRecord | None]:
    """(scope, record) of a control message; the record is None for a tombstone."""
    try:
        scope = (key or b"").decode("utf-8")
        parse_scope(scope)
    except (UnicodeDecodeError, ValueError) as exc:
        shown = key if key is None else key[:200]  # a refusal is logged: never a megabyte of key
        raise RefusedRecord("not_a_scope", f"key {shown!r} is not a control scope: {exc}") from exc
    if value is None:
        return scope, None
    try:
        data = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RefusedRecord("not_json", f"value of {scope} is not JSON: {exc}") from exc
    try:
        return scope, ControlRecord.model_validate(data)
    except ValidationError as exc:
        errors = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors())
        reason = "out_of_bounds" if any(_beyond_bounds(e) for e in exc.errors()) else "invalid_record"
        raise RefusedRecord(reason, f"value of {scope} is not a valid ControlRecord: {errors}") from exc


# Fields whose values the record bounds (common/control.py), and the pydantic errors that say a bound was crossed.
_BOUNDED_FIELDS = {
    "image_threshold",
    "pixel_threshold",
    "learning",
    "prompts",
    "calibration",
    "references",
    "updated_by",
}
_BOUND_ERRORS = {
    "greater_than",
    "greater_than_equal",
    "less_than",
    "less_than_equal",
    "too_long",
    "string_too_long",
    "string_pattern_mismatch",
    "value_error",
}


def _beyond_bounds(error: dict) -> bool:
    return bool(error["loc"]) and error["loc"][0] in _BOUNDED_FIELDS and error["type"] in _BOUND_ERRORS


def encode_control(record: ControlRecord) -> bytes:
    return record.model_dump_json(exclude_none=True).encode("utf-8")


class ControlTable:
    """The records in force by scope (not thread-safe: the worker's ControlState locks around it).

    Learned records: at most one per learning session (the learning record's version), remembered
    for good, so a replayed or second calibration of a session is refused (`replayed`); a learned
    tombstone changes nothing (`ignored`), so no worker account can send a scope back to learning.
    A learned record read before the learning record it answers waits for it (`held`, a few per scope)."""

    def __init__(self, *, keep_history: bool = False) -> None:
        self.records: dict[str, ControlRecord] = {}  # in force: the written record, or the learned one answering it
        # with keep_history: every record that was in force, by scope and version (what a rollback may restore)
        self.history: dict[str, dict[int, ControlRecord]] | None = {} if keep_history else None
        self._written: dict[str, ControlRecord] = {}  # the control topic's record per scope
        self._learned: dict[str, ControlRecord] = {}  # per scope, the learned record that closed the last session
        self._pending: dict[str, list[ControlRecord]] = {}  # learned records read before their learning record
        self._held = 0  # records in _pending, all scopes
        self._closed: dict[str, int] = {}  # per scope, the highest learning version closed; never forgotten
        self._highest: dict[str, int] = {}  # per scope, the highest version seen on either topic, tombstones or not

    def apply(self, scope: str, record: ControlRecord | None, *, learned: bool = False) -> str:
        """Apply one decoded message: "applied", "deleted", "ignored" (a learned tombstone) or "held"
        (a learned record whose learning record is not read yet); raises RefusedRecord."""
        if learned:
            return self._apply_learned(scope, record)
        if record is None:
            self._written.pop(scope, None)
            self._settle(scope)
            return "deleted"
        previous = (self._written.get(scope), self.records.get(scope))
        current = max((r.version for r in previous if r is not None), default=0)
        if record.version <= current:
            raise RefusedRecord(
                "not_newer", f"{scope}: version {record.version} is not higher than v{current} in force"
            )
        self._written[scope] = record
        self._note(scope, record.version)
        self._take_pending(scope, record)
        self._settle(scope)
        return "applied"

    def _apply_learned(self, scope: str, record: ControlRecord | None) -> str:
        if record is None:
            return "ignored"
        wrong = learned_out_of_bounds(record)
        if wrong is not None:
            raise RefusedRecord("out_of_bounds", f"{scope}: learned v{record.version}: {wrong}")
        session = record.version - 1
        if session <= self._closed.get(scope, 0):
            raise RefusedRecord("replayed", f"{scope}: the learning session v{session} already has its learned record")
        written = self._written.get(scope)
        if written is not None and written.version >= session:
            if written.version == session and answers_learning(written, record):
                self._close(scope, record)
                return "applied"
            raise RefusedRecord(
                "not_an_answer", f"{scope}: learned v{record.version} is no calibration of v{written.version}"
            )
        pending = self._pending.setdefault(scope, [])
        if len(pending) >= MAX_HELD_LEARNED or self._held >= MAX_HELD_LEARNED_IN_ALL:
            raise RefusedRecord("not_an_answer", f"{scope}: too many learned records wait for their learning record")
        pending.append(record)
        self._held += 1
        self._note(scope, record.version)
        return "held"

    def _take_pending(self, scope: str, written: ControlRecord) -> None:
        """The first held learned record that answers `written` closes its session; those for later
        versions wait on, the rest go."""
        waiting, held = [], self._pending.pop(scope, [])
        self._held -= len(held)
        for candidate in held:
            session = candidate.version - 1
            if session > written.version:
                waiting.append(candidate)
            elif session == written.version > self._closed.get(scope, 0) and answers_learning(written, candidate):
                self._close(scope, candidate)
        if waiting:
            self._pending[scope] = waiting
            self._held += len(waiting)

    def _close(self, scope: str, learned: ControlRecord) -> None:
        self._learned[scope] = learned
        self._closed[scope] = learned.version - 1
        self._note(scope, learned.version)
        self._settle(scope)

    def _note(self, scope: str, version: int) -> None:
        self._highest[scope] = max(self._highest.get(scope, 0), version)

    def _settle(self, scope: str) -> None:
        written, learned = self._written.get(scope), self._learned.get(scope)
        if written is None:
            self.records.pop(scope, None)
        else:
            in_force = learned if learned is not None and answers_learning(written, learned) else written
            self.records[scope] = in_force
            if self.history is not None:
                self.history.setdefault(scope, {})[in_force.version] = in_force

    def next_version(self, scope: str) -> int:
        """The version a new record of `scope` gets: above every version the scope had in the retained
        logs, even one a tombstone deleted since, so that a `threshold_version` never names two records."""
        return self._highest.get(scope, 0) + 1


# --------------------------------------------------------------------------- Kafka


def control_topics(settings: KafkaSettings) -> list[str]:
    return [settings.control_topic, settings.learned_topic]


def ensure_control_topic(settings: KafkaSettings, **admin_overrides: Any) -> None:
    """Create the control and learned topics (CONTROL_TOPIC_CONFIG) when they are missing."""
    topics = control_topics(settings)
    ensure_topics(settings, topics, dict.fromkeys(topics, CONTROL_TOPIC_CONFIG), **admin_overrides)


def control_consumer(settings: KafkaSettings, timeout_s: float = 30.0) -> tuple[KafkaConsumer, dict[Any, int]]:
    """A consumer outside any group with every partition of the control and learned topics assigned
    from the beginning, and the end offsets at this moment (caught up = every position at or past its end)."""
    consumer = KafkaConsumer(
        **connection_options(settings),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",  # never a record of an aborted transaction
        max_partition_fetch_bytes=settings.max_message_bytes,
    )
    try:
        deadline = time.monotonic() + timeout_s
        assigned = []
        for topic in control_topics(settings):
            partitions = consumer.partitions_for_topic(topic)
            while not partitions and time.monotonic() < deadline:  # metadata of a topic just created
                time.sleep(0.2)
                partitions = consumer.partitions_for_topic(topic)
            if not partitions:
                raise RuntimeError(f"topic {topic} has no partitions (does it exist?)")
            assigned += [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        consumer.seek_to_beginning(*assigned)
        return consumer, dict(consumer.end_offsets(assigned))
    except BaseException:
        consumer.close()
        raise


def caught_up(consumer: KafkaConsumer, end_offsets: dict[Any, int]) -> bool:
    return all(consumer.position(tp) >= end for tp, end in end_offsets.items())


@dataclass(frozen=True)
class ControlMessage:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def poll_control(consumer: KafkaConsumer, timeout_ms: int) -> Iterator[ControlMessage]:
    for batch in consumer.poll(timeout_ms=timeout_ms).values():
        for record in batch:
            yield ControlMessage(record.topic, record.partition, record.offset, record.key, record.value)


def read_control_topic(
    settings: KafkaSettings, timeout_s: float = 30.0, *, history: bool = False
) -> tuple[ControlTable, list[RefusedRecord]]:
    """The control and learned topics read to their ends, with the worker's rules; and what was refused.
    `history`: the table keeps every record that was in force in the retained logs (`ControlTable.history`)."""
    ensure_control_topic(settings)
    consumer, end = control_consumer(settings, timeout_s)
    table, refused = ControlTable(keep_history=history), []
    try:
        deadline = time.monotonic() + timeout_s
        while not caught_up(consumer, end):
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {settings.control_topic} to its end within {timeout_s:.0f} s")
            for message in poll_control(consumer, 200):
                try:
                    learned = message.topic == settings.learned_topic
                    table.apply(*decode_control(message.key, message.value), learned=learned)
                except RefusedRecord as exc:
                    refused.append(exc)
    finally:
        consumer.close()
    return table, refused


def publish_control(
    settings: KafkaSettings, scope: str, record: ControlRecord | None, timeout_s: float = 30.0
) -> tuple[int, int]:
    """Send one record (None: a tombstone) keyed by `scope`; returns (partition, offset) once acknowledged."""
    parse_scope(scope)
    ensure_control_topic(settings)
    producer = build_producer(settings)
    try:
        value = None if record is None else encode_control(record)
        metadata = producer.send(settings.control_topic, key=scope.encode("utf-8"), value=value).get(timeout_s)
        return metadata.partition, metadata.offset
    finally:
        producer.close(timeout=5)
