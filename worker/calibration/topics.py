"""The Kafka edges of calibration: read frames by camera or by offset, write and read feedback.

Readers are assigned consumers without a group: they never join the workers' group and
never commit. The control topic is read and written through common/control_topic.py, the
same rules the workers apply.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from pydantic import ValidationError

from common.control import FeedbackRecord
from common.kafka import build_producer, connection_options, ensure_topics
from common.schemas import SourceRef
from common.settings import KafkaSettings

log = logging.getLogger("linewatch.calibration")

POLL_MS = 500


def open_reader(settings: KafkaSettings) -> KafkaConsumer:
    """An assigned consumer: no group, no commits."""
    return KafkaConsumer(
        **connection_options(settings),
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",  # never a record of an aborted transaction
        max_partition_fetch_bytes=settings.max_message_bytes,
    )


def partitions_of(reader: KafkaConsumer, topic: str) -> list[TopicPartition]:
    """The topic's partitions; empty when the topic does not exist."""
    return [TopicPartition(topic, p) for p in sorted(reader.partitions_for_topic(topic))]


def read_range(
    reader: KafkaConsumer,
    starts: dict[TopicPartition, int],
    ends: dict[TopicPartition, int],
    timeout_s: float,
    keep: Callable[[ConsumerRecord], bool] = lambda record: True,
) -> list[ConsumerRecord]:
    """The records from `starts` up to (not including) `ends` that `keep` accepts, per partition
    in offset order (only those are held in memory)."""
    todo = {tp for tp in starts if starts[tp] < ends[tp]}
    if not todo:
        return []
    reader.assign(sorted(todo))
    for tp in todo:
        reader.seek(tp, starts[tp])
    records: list[ConsumerRecord] = []
    deadline = time.monotonic() + timeout_s
    while todo:
        if time.monotonic() > deadline:
            raise TimeoutError(f"reading {sorted(str(tp) for tp in todo)} took more than {timeout_s:g} s")
        for tp, batch in reader.poll(timeout_ms=POLL_MS).items():
            records.extend(r for r in batch if r.offset < ends[tp] and keep(r))
        todo = {tp for tp in todo if reader.position(tp) < ends[tp]}
    return records


# --------------------------------------------------------------------------- frames


def last_frames_of_camera(
    settings: KafkaSettings, camera_id: str, count: int, timeout_s: float = 120.0
) -> list[ConsumerRecord]:
    """The newest `count` frame records keyed `camera_id` (fewer if the topic holds fewer), oldest first.

    Reads every partition backwards in growing windows, so it does not depend on how the
    producer partitioned; frames of one camera are ordered by their record timestamp.
    """
    key = camera_id.encode("utf-8")
    reader = open_reader(settings)
    try:
        tps = partitions_of(reader, settings.frames_topic)
        if not tps:
            return []
        begin, end = reader.beginning_offsets(tps), reader.end_offsets(tps)
        span = max(64, 2 * count)
        while True:
            starts = {tp: max(begin[tp], end[tp] - span) for tp in tps}
            mine = read_range(reader, starts, end, timeout_s, keep=lambda r: r.key == key)
            if len(mine) >= count or all(starts[tp] == begin[tp] for tp in tps):
                break
            span *= 4
    finally:
        reader.close()
    mine.sort(key=lambda r: (r.timestamp, r.partition, r.offset))
    return mine[-count:]


@dataclass
class FetchedFrames:
    """Records found at the asked positions, and the positions that are no longer on the topic."""

    found: dict[tuple[str, int, int], ConsumerRecord] = field(default_factory=dict)
    missing: dict[tuple[str, int, int], str] = field(default_factory=dict)  # position -> why


def fetch_frames_at(settings: KafkaSettings, refs: Iterable[SourceRef], timeout_s: float = 60.0) -> FetchedFrames:
    """The frame records at the given topic/partition/offset positions."""
    out = FetchedFrames()
    wanted = sorted({(r.topic, r.partition, r.offset) for r in refs})
    if not wanted:
        return out
    reader = open_reader(settings)
    try:
        for topic, partition, offset in wanted:
            tp = TopicPartition(topic, partition)
            if partition not in reader.partitions_for_topic(topic):
                out.missing[(topic, partition, offset)] = f"{topic} has no partition {partition}"
                continue
            begin, end = reader.beginning_offsets([tp])[tp], reader.end_offsets([tp])[tp]
            if offset < begin:
                out.missing[(topic, partition, offset)] = f"expired (partition {partition} now starts at {begin})"
                continue
            if offset >= end:
                out.missing[(topic, partition, offset)] = f"not written yet (partition {partition} ends at {end})"
                continue
            records = read_range(reader, {tp: offset}, {tp: offset + 1}, timeout_s)
            if records and records[0].offset == offset:
                out.found[(topic, partition, offset)] = records[0]
            else:
                out.missing[(topic, partition, offset)] = "no record at that offset (deleted)"
    finally:
        reader.close()
    return out


# --------------------------------------------------------------------------- feedback


def publish_feedback(settings: KafkaSettings, feedback: FeedbackRecord, timeout_s: float = 30.0):
    """Send one FeedbackRecord keyed by its camera id (acks=all); returns its RecordMetadata."""
    ensure_topics(settings, [settings.feedback_topic])
    return _send(settings, settings.feedback_topic, feedback.camera_id, feedback.model_dump_json().encode(), timeout_s)


@dataclass
class FeedbackLog:
    records: list[tuple[SourceRef, FeedbackRecord]] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)  # "topic/partition@offset: why"


def read_feedback(settings: KafkaSettings, timeout_s: float = 60.0) -> FeedbackLog:
    """Every feedback record on the topic, oldest first per partition; invalid ones listed, not fatal."""
    reader = open_reader(settings)
    try:
        tps = partitions_of(reader, settings.feedback_topic)
        records = read_range(reader, reader.beginning_offsets(tps), reader.end_offsets(tps), timeout_s) if tps else []
    finally:
        reader.close()
    out = FeedbackLog()
    for record in sorted(records, key=lambda r: (r.timestamp, r.partition, r.offset)):
        topic, partition, offset = _where(record)
        try:
            feedback = FeedbackRecord.model_validate_json(record.value or b"")
        except ValidationError as exc:
            out.invalid.append(
                f"{topic}/{partition}@{offset}: {exc.error_count()} problem(s): {exc.errors()[0]['msg']}"
            )
            continue
        out.records.append((SourceRef(topic=topic, partition=partition, offset=offset), feedback))
    return out


# --------------------------------------------------------------------------- helpers


def _send(settings: KafkaSettings, topic: str, key: str, value: bytes, timeout_s: float):
    producer = build_producer(settings)
    try:
        return producer.send(topic, key=key.encode("utf-8"), value=value).get(timeout=timeout_s)
    finally:
        producer.close(timeout=5)


def _where(record: ConsumerRecord) -> tuple[str, int, int]:
    return record.topic, record.partition, record.offset
