"""The dashboard's Kafka edges that answer a request: writes (feedback, acks, silences) and
reads of one record by partition and offset (a frame, an older result), cached briefly."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from kafka import KafkaConsumer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from common.control import FeedbackRecord
from common.kafka import build_admin, build_producer, connection_options
from common.settings import LinewatchSettings
from worker.dashboard.alarm_state import AlarmAck, Silence, silence_key

SEND_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 3.0


class RecordExpired(LookupError):
    """The offset is older than the topic's retention (or beyond its end)."""


@dataclass(frozen=True)
class FetchedRecord:
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


def ensure_state_topic(settings: LinewatchSettings) -> None:
    """The acknowledgement/silence topic, compacted: only the latest record per key matters."""
    admin = build_admin(settings.kafka)
    try:
        if settings.dashboard.state_topic in set(admin.list_topics()):
            return
        topic = NewTopic(
            name=settings.dashboard.state_topic,
            num_partitions=1,  # tiny, read whole at start: one partition keeps it in order
            replication_factor=settings.kafka.replication_factor,
            topic_configs={"cleanup.policy": "compact"},
        )
        try:
            admin.create_topics([topic])
        except TopicAlreadyExistsError:
            pass
    finally:
        admin.close()


class Writer:
    """Sends and waits for the broker's acknowledgement, so a 200 means the record is stored."""

    def __init__(self, settings: LinewatchSettings) -> None:
        self._settings = settings
        self._producer = build_producer(settings.kafka)

    def _send(self, topic: str, key: str, value: bytes | None) -> None:
        self._producer.send(topic, key=key.encode("utf-8"), value=value).get(timeout=SEND_TIMEOUT_S)

    def feedback(self, record: FeedbackRecord) -> None:
        self._send(self._settings.kafka.feedback_topic, record.camera_id, record.model_dump_json().encode())

    def state(self, record: AlarmAck | Silence) -> None:
        self._send(self._settings.dashboard.state_topic, record.key, record.model_dump_json().encode())

    def lift_silence(self, camera_id: str) -> None:
        self._send(self._settings.dashboard.state_topic, silence_key(camera_id), None)  # tombstone

    def close(self) -> None:
        self._producer.close(timeout=5)


class TopicReader:
    """One record by (topic, partition, offset), through one group-less consumer, with a TTL cache."""

    def __init__(self, settings: LinewatchSettings, *, entries: int = 256, ttl_s: float = 60.0, clock=time.monotonic):
        options = connection_options(settings.kafka)
        self._consumer = KafkaConsumer(
            **options,
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",  # never a record of an aborted transaction
            max_partition_fetch_bytes=settings.kafka.max_message_bytes,
            fetch_max_bytes=settings.kafka.max_message_bytes,
            max_poll_records=1,
        )
        self._lock = threading.Lock()  # a KafkaConsumer is not thread-safe
        self._cache: OrderedDict[tuple[str, int, int], tuple[float, FetchedRecord]] = OrderedDict()
        self._entries, self._ttl_s, self._clock = entries, ttl_s, clock

    def read(self, topic: str, partition: int, offset: int) -> FetchedRecord:
        """The record, or RecordExpired. Blocking (call it from a thread pool)."""
        key = (topic, partition, offset)
        with self._lock:
            cached = self._cache.get(key)
            if cached and self._clock() - cached[0] < self._ttl_s:
                return cached[1]
            record = self._fetch(TopicPartition(topic, partition), offset)
            self._cache[key] = (self._clock(), record)
            self._cache.move_to_end(key)
            while len(self._cache) > self._entries:
                self._cache.popitem(last=False)
            return record

    def _fetch(self, tp: TopicPartition, offset: int) -> FetchedRecord:
        self._consumer.assign([tp])
        start = self._consumer.beginning_offsets([tp])[tp]
        end = self._consumer.end_offsets([tp])[tp]
        if not start <= offset < end:
            raise RecordExpired(f"offset {offset} of {tp.topic}[{tp.partition}] is outside {start}..{end - 1}")
        self._consumer.seek(tp, offset)
        deadline = time.monotonic() + READ_TIMEOUT_S
        while time.monotonic() < deadline:
            for record in self._consumer.poll(timeout_ms=500, max_records=1).get(tp, []):
                if record.offset == offset:
                    return FetchedRecord(record.key, record.value, list(record.headers or []))
                if record.offset > offset:  # compacted away or a transaction marker
                    raise RecordExpired(f"offset {offset} of {tp.topic}[{tp.partition}] no longer exists")
        raise TimeoutError(f"no answer for {tp.topic}[{tp.partition}]@{offset} within {READ_TIMEOUT_S} s")

    def close(self) -> None:
        with self._lock:
            self._consumer.close()
