"""The audit trail: `linewatch.audit`, one `AuditRecord` per change of a scope's control record.

The control topic is compacted: it keeps only the latest record per scope. Every change the
project's tools make (`control set|delete|rollback`, `references add|delete`, `calibrate
--publish`, and a worker closing a learning session) is also appended here, by the one process
that makes it, at the moment it makes it: the audit topic is never compacted and kept without
a time limit, so it holds every version a scope ever had (`control history`). Readers order it as the
broker logged it (`read_audit_entries`), never by a record's own `at`; `control rollback` takes versions
from the control topics, not from here (a record here says what its writer chose).

Who: `by` is the person (the writer's `--by` or login name) or `worker:<id>`; `principal` is the
SASL user the writing process logged in as (`User:<name>`). The broker checked that login and
allowed the control write under it (ACLs, common/acl.py); Kafka does not hand a record's
producer principal to consumers, so the audit record states it and only principals allowed to
write the audit topic (operator and worker) can state anything at all.
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Literal

from kafka import KafkaConsumer, TopicPartition
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from common.control import ControlRecord, parse_scope
from common.control_topic import publish_control
from common.kafka import build_producer, connection_options, ensure_topics
from common.schemas import utc_now
from common.settings import KafkaSettings

AUDIT_SCHEMA_VERSION = 1
# Never compacted, never expired by age or size: a topic of a few hundred bytes per change. The broker
# stamps each record with its own clock (LogAppendTime): readers order by it, never by a record's `at`.
AUDIT_TOPIC_CONFIG = {
    "cleanup.policy": "delete",
    "retention.ms": "-1",
    "retention.bytes": "-1",
    "message.timestamp.type": "LogAppendTime",
}

AuditAction = Literal["set", "delete", "rollback", "references", "calibrate", "learned"]


class AuditRecord(BaseModel):
    """Value of a `linewatch.audit` message (key = scope)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = AUDIT_SCHEMA_VERSION
    scope: str
    action: AuditAction
    version: int | None = Field(None, description="the version written; None for a deletion")
    before: ControlRecord | None = Field(None, description="the record in force before the change")
    after: ControlRecord | None = Field(None, description="the record written (None: deleted)")
    changed: tuple[str, ...] = Field((), description="fields that differ between before and after")
    by: str = Field(min_length=1, max_length=128)
    principal: str | None = Field(None, description="User:<SASL user> the writer logged in as; None without SASL")
    host: str | None = Field(None, max_length=255)
    reason: str | None = Field(None, max_length=1000)
    at: datetime = Field(default_factory=utc_now)
    topic: str | None = Field(None, description="where the change itself was written")
    partition: int | None = None
    offset: int | None = None


BOOKKEEPING = {"schema_version", "version", "updated_at", "updated_by"}


def changed_fields(before: ControlRecord | None, after: ControlRecord | None) -> tuple[str, ...]:
    """The record fields a change touched (bookkeeping fields left out)."""
    old = before.model_dump(exclude_none=True) if before is not None else {}
    new = after.model_dump(exclude_none=True) if after is not None else {}
    names = (set(old) | set(new)) - BOOKKEEPING
    return tuple(sorted(name for name in names if old.get(name) != new.get(name)))


def principal_of(settings: KafkaSettings) -> str | None:
    """The principal the broker authenticates these settings as (SASL), or None."""
    if settings.security_protocol.startswith("SASL") and settings.sasl_username:
        return f"User:{settings.sasl_username}"
    return None


def audit_record(
    settings: KafkaSettings,
    scope: str,
    action: AuditAction,
    before: ControlRecord | None,
    after: ControlRecord | None,
    *,
    by: str,
    reason: str | None = None,
    where: tuple[str, int, int] | None = None,
) -> AuditRecord:
    topic, partition, offset = where if where is not None else (None, None, None)
    return AuditRecord(
        scope=scope,
        action=action,
        version=after.version if after is not None else None,
        before=before,
        after=after,
        changed=changed_fields(before, after),
        by=by[:128],
        principal=principal_of(settings),
        host=socket.gethostname()[:255],
        reason=reason,
        topic=topic,
        partition=partition,
        offset=offset,
    )


def encode_audit(record: AuditRecord) -> bytes:
    return record.model_dump_json(exclude_none=True).encode("utf-8")


def ensure_audit_topic(settings: KafkaSettings) -> None:
    ensure_topics(settings, [settings.audit_topic], {settings.audit_topic: AUDIT_TOPIC_CONFIG})


def append_audit(settings: KafkaSettings, record: AuditRecord, timeout_s: float = 30.0) -> tuple[int, int]:
    """Append one record (acks=all); returns (partition, offset)."""
    ensure_audit_topic(settings)
    producer = build_producer(settings)
    try:
        value = encode_audit(record)
        metadata = producer.send(settings.audit_topic, key=record.scope.encode("utf-8"), value=value).get(timeout_s)
        return metadata.partition, metadata.offset
    finally:
        producer.close(timeout=5)


class AuditNotWritten(RuntimeError):
    """The change is in force, but its audit record could not be appended."""


def publish_change(
    settings: KafkaSettings,
    scope: str,
    before: ControlRecord | None,
    after: ControlRecord | None,
    action: AuditAction,
    *,
    by: str,
    reason: str | None = None,
    timeout_s: float = 30.0,
) -> AuditRecord:
    """Write `after` (None: a tombstone) to the control topic, then its audit record."""
    partition, offset = publish_control(settings, scope, after, timeout_s)
    record = audit_record(
        settings, scope, action, before, after, by=by, reason=reason, where=(settings.control_topic, partition, offset)
    )
    try:
        append_audit(settings, record, timeout_s)
    except Exception as exc:
        raise AuditNotWritten(
            f"{scope} v{record.version} is written to {settings.control_topic} ({partition}@{offset}), but its "
            f"audit record could not be appended to {settings.audit_topic}: {type(exc).__name__}: {exc}"
        ) from exc
    return record


@dataclass(frozen=True)
class AuditEntry:
    """An audit record with where and when the broker logged it (what a writer cannot choose)."""

    record: AuditRecord
    partition: int
    offset: int
    logged_ms: int  # the broker's timestamp (LogAppendTime on a topic linewatch created), kept non-decreasing

    @property
    def logged_at(self) -> datetime:
        return datetime.fromtimestamp(self.logged_ms / 1000, tz=timezone.utc)


def broker_order(entries: list[AuditEntry]) -> list[AuditEntry]:
    """Oldest first as the broker logged them: offset order within a partition, partitions merged by the
    broker's timestamp (made non-decreasing along each partition, so no timestamp reorders a partition)."""
    ordered: list[AuditEntry] = []
    for partition in sorted({e.partition for e in entries}):
        floor = 0
        for entry in sorted((e for e in entries if e.partition == partition), key=lambda e: e.offset):
            floor = max(floor, entry.logged_ms)
            ordered.append(replace(entry, logged_ms=floor))
    return sorted(ordered, key=lambda e: (e.logged_ms, e.partition, e.offset))


def read_audit(
    settings: KafkaSettings, scope: str | None = None, timeout_s: float = 30.0
) -> tuple[list[AuditRecord], list[str]]:
    """Every audit record (of `scope`, when given), oldest first in the broker's order; and the unreadable ones."""
    entries, invalid = read_audit_entries(settings, scope, timeout_s)
    return [entry.record for entry in entries], invalid


def read_audit_entries(
    settings: KafkaSettings, scope: str | None = None, timeout_s: float = 30.0
) -> tuple[list[AuditEntry], list[str]]:
    """`read_audit` with each record's partition, offset and broker time. The records' own `at` orders nothing:
    a writer chooses it."""
    if scope is not None:
        parse_scope(scope)
    ensure_audit_topic(settings)
    consumer = KafkaConsumer(
        **connection_options(settings), group_id=None, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    entries: list[AuditEntry] = []
    invalid: list[str] = []
    try:
        deadline = time.monotonic() + timeout_s
        partitions = consumer.partitions_for_topic(settings.audit_topic)
        while not partitions and time.monotonic() < deadline:
            time.sleep(0.2)
            partitions = consumer.partitions_for_topic(settings.audit_topic)
        assigned = [TopicPartition(settings.audit_topic, p) for p in sorted(partitions or ())]
        consumer.assign(assigned)
        consumer.seek_to_beginning(*assigned)
        end = consumer.end_offsets(assigned)
        while any(consumer.position(tp) < n for tp, n in end.items()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {settings.audit_topic} to its end within {timeout_s:.0f} s")
            for batch in consumer.poll(timeout_ms=200).values():
                for message in batch:
                    if scope is not None and message.key != scope.encode("utf-8"):
                        continue
                    try:
                        record = AuditRecord.model_validate(json.loads(message.value))
                    except (ValueError, TypeError, ValidationError) as exc:
                        invalid.append(f"{message.partition}@{message.offset}: {str(exc)[:200]}")
                        continue
                    entries.append(AuditEntry(record, message.partition, message.offset, int(message.timestamp)))
    finally:
        consumer.close()
    return broker_order(entries), invalid
