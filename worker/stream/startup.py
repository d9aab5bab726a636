"""The stream worker's start-up and status helpers: topics, models, lag."""

from __future__ import annotations

import logging
import threading

from kafka import KafkaConsumer, TopicPartition

from common.audit import AUDIT_TOPIC_CONFIG
from common.control_topic import CONTROL_TOPIC_CONFIG, control_topics
from common.kafka import FRAMES_TOPIC_CONFIG, BrokerReachability, connection_hint, ensure_topics
from common.settings import KafkaSettings, LinewatchSettings
from worker.inspection.embedding_cache import EmbeddingCache
from worker.inspection.types import InspectorProtocol
from worker.stream.offsets import Checkpoint
from worker.stream.telemetry import ServiceTelemetry

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_MS = 10_000  # one start-up attempt; a stop request waits for at most this


def build_service_inspector(
    settings: LinewatchSettings, cache: EmbeddingCache | None, telemetry: ServiceTelemetry
) -> tuple[EmbeddingCache, InspectorProtocol]:
    """The shared embedding cache (unless given) and the Inspector on it."""
    from worker.inspection.inspector import build_inspector  # heavy (torch): only when serving
    from worker.inspection.redis_cache import build_embedding_cache

    if cache is None:
        cache = build_embedding_cache(settings.redis, metrics=telemetry.metrics)
    return cache, build_inspector(settings.models, cache=cache)


def partition_lag(consumer: KafkaConsumer | None, checkpoint: Checkpoint) -> dict[TopicPartition, int]:
    """Messages behind the committed offset, per assigned partition with a known end."""
    committed = checkpoint.committed_offsets()
    lag = {}
    for tp in checkpoint.assigned():
        try:
            end = consumer.highwater(tp) if consumer is not None else None
        except Exception:  # partition moved between the snapshot and the call
            continue
        if end is not None and tp in committed:
            lag[tp] = max(0, end - committed[tp])
    return lag


def ensure_worker_topics(ks: KafkaSettings) -> None:
    """The topics a worker reads and writes, created when missing (control topics compacted, audit kept)."""
    configs = dict.fromkeys(control_topics(ks), CONTROL_TOPIC_CONFIG) | {ks.audit_topic: AUDIT_TOPIC_CONFIG}
    configs[ks.frames_topic] = FRAMES_TOPIC_CONFIG  # record time = the broker's clock
    topics = [ks.results_topic, ks.dlq_topic, *configs]
    ensure_topics(ks, topics, configs, bootstrap_timeout_ms=CONNECT_TIMEOUT_MS)


def wait_for_topics(ks: KafkaSettings, stop_event: threading.Event, broker: BrokerReachability) -> bool:
    """Create the worker's missing topics, waiting for the broker (False: stopped first)."""
    while True:
        try:
            ensure_worker_topics(ks)
            broker.ok()
            return True
        except Exception as exc:  # broker not up yet: wait for it rather than crash-loop
            broker.error()
            log.warning(
                "cannot reach Kafka at %s (%s: %s); %s; retrying in 5 s",
                ks.bootstrap_servers,
                type(exc).__name__,
                exc,
                connection_hint(ks),
            )
            if stop_event.wait(5.0):
                return False
