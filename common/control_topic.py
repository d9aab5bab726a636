"""The compacted control topic `linewatch.control`: decoding, the table of records in force,
reading it to its end and publishing to it. Shared by the worker and the operator CLIs.

- `decode_control(key, value)`: one message -> (scope, record or None for a tombstone), or
  `RefusedRecord` with a short reason (`not_a_scope`, `not_json`, `invalid_record`).
- `ControlTable`: the records in force by scope, and the ordering rule: a record is applied only
  when its version is higher than the one in force (`not_newer` otherwise); a tombstone deletes.
- `control_consumer` / `read_control_topic`: every partition assigned (no group), from the start.
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

from common.control import ControlRecord, parse_scope
from common.kafka import COMPACTED, build_producer, connection_options, ensure_topics
from common.settings import KafkaSettings

REFUSAL_REASONS = ("not_a_scope", "not_json", "invalid_record", "not_newer")


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
        raise RefusedRecord("not_a_scope", f"key {key!r} is not a control scope: {exc}") from exc
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
        raise RefusedRecord("invalid_record", f"value of {scope} is not a valid ControlRecord: {errors}") from exc


def encode_control(record: ControlRecord) -> bytes:
    return record.model_dump_json(exclude_none=True).encode("utf-8")


class ControlTable:
    """The records in force by scope (not thread-safe: the worker's ControlState locks around it)."""

    def __init__(self) -> None:
        self.records: dict[str, ControlRecord] = {}
        self._highest: dict[str, int] = {}  # per scope, the highest version applied, tombstones or not

    def apply(self, scope: str, record: ControlRecord | None) -> str:
        """Apply one decoded message: returns "applied" or "deleted"; raises RefusedRecord("not_newer")."""
        if record is None:
            self.records.pop(scope, None)
            return "deleted"
        current = self.records.get(scope)
        if current is not None and record.version <= current.version:
            raise RefusedRecord(
                "not_newer", f"{scope}: version {record.version} is not higher than v{current.version} in force"
            )
        self.records[scope] = record
        self._highest[scope] = max(self._highest.get(scope, 0), record.version)
        return "applied"

    def next_version(self, scope: str) -> int:
        """The version a new record of `scope` gets: above every version the scope had in the retained
        log, even one a tombstone deleted since, so that a `threshold_version` never names two records."""
        return self._highest.get(scope, 0) + 1


# --------------------------------------------------------------------------- Kafka


def ensure_control_topic(settings: KafkaSettings, **admin_overrides: Any) -> None:
    """Create the control topic compacted when it is missing."""
    ensure_topics(settings, [settings.control_topic], {settings.control_topic: COMPACTED}, **admin_overrides)


def control_consumer(settings: KafkaSettings, timeout_s: float = 30.0) -> tuple[KafkaConsumer, dict[Any, int]]:
    """A consumer outside any group with every control partition assigned from the beginning,
    and the end offsets at this moment (caught up = every position at or past its end)."""
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
        partitions = consumer.partitions_for_topic(settings.control_topic)
        while not partitions and time.monotonic() < deadline:  # metadata of a topic just created
            time.sleep(0.2)
            partitions = consumer.partitions_for_topic(settings.control_topic)
        if not partitions:
            raise RuntimeError(f"topic {settings.control_topic} has no partitions (does it exist?)")
        assigned = [TopicPartition(settings.control_topic, p) for p in sorted(partitions)]
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
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def poll_control(consumer: KafkaConsumer, timeout_ms: int) -> Iterator[ControlMessage]:
    for batch in consumer.poll(timeout_ms=timeout_ms).values():
        for record in batch:
            yield ControlMessage(record.partition, record.offset, record.key, record.value)


def read_control_topic(settings: KafkaSettings, timeout_s: float = 30.0) -> tuple[ControlTable, list[RefusedRecord]]:
    """The whole control topic read to its end, with the worker's rules; and what was refused."""
    ensure_control_topic(settings)
    consumer, end = control_consumer(settings, timeout_s)
    table, refused = ControlTable(), []
    try:
        deadline = time.monotonic() + timeout_s
        while not caught_up(consumer, end):
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {settings.control_topic} to its end within {timeout_s:.0f} s")
            for message in poll_control(consumer, 200):
                try:
                    table.apply(*decode_control(message.key, message.value))
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
