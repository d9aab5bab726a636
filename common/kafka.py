"""Construction of kafka-python clients from settings (security options pass through)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from kafka.coordinator.assignors.sticky.sticky_assignor import StickyPartitionAssignor
from kafka.coordinator.consumer import ConsumerCoordinator
from kafka.errors import TopicAlreadyExistsError

from common.settings import KafkaSettings

# kafka-python's admin client logs its whole configuration, passwords included, at DEBUG.
logging.getLogger("kafka.admin.client").setLevel(logging.INFO)

# the library's own method, even if this module is imported again after the fix was applied
_library_need_rejoin = getattr(ConsumerCoordinator.need_rejoin, "library_need_rejoin", ConsumerCoordinator.need_rejoin)


def _rejoin_needed_or_pending(coordinator: ConsumerCoordinator) -> bool:
    return bool(getattr(coordinator, "rejoining", False)) or _library_need_rejoin(coordinator)


_rejoin_needed_or_pending.library_need_rejoin = _library_need_rejoin  # type: ignore[attr-defined]


def apply_rejoin_fix() -> None:
    """Work around kafka-python 3.0.12's `ConsumerCoordinator.need_rejoin` dropping a join in progress.

    Upstream behaviour: a group leader that rejoins because the subscribed topics' metadata
    changed (a worker starting while its topic is new) stops awaiting its JoinGroup/SyncGroup
    once its own assignment made the metadata current again: `need_rejoin()` turns False
    mid-join (the coordinator's `rejoining` flag is still set), `poll()` never completes the
    join, the member is evicted and then stays without partitions for good. As the Java client
    does, a join in progress counts as a rejoin still needed.

    Patches the class once (idempotent); `build_consumer` applies it, so every group consumer
    the project builds has it.
    """
    ConsumerCoordinator.need_rejoin = _rejoin_needed_or_pending


class BrokerReachability:
    """Whether the broker answered last: clients report each success and failure they see
    (acknowledged sends, commits, start-up) and readiness reads the latest. Unlike a TCP probe
    it also sees a refused login or TLS handshake. Thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._last_ok = 0.0
        self._last_error = 0.0

    def ok(self) -> None:
        with self._lock:
            self._last_ok = self._clock()

    def error(self) -> None:
        with self._lock:
            self._last_error = self._clock()

    @property
    def reachable(self) -> bool:
        """True once a success came and no failure after it."""
        with self._lock:
            return self._last_ok > 0 and self._last_ok >= self._last_error


def connection_options(settings: KafkaSettings) -> dict[str, Any]:
    """Options every client shares: bootstrap servers, client id, TLS and SASL."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers.split(","),
        "client_id": settings.client_id,
        "security_protocol": settings.security_protocol,
    }
    if settings.security_protocol.startswith("SASL"):
        options["sasl_mechanism"] = settings.sasl_mechanism or "PLAIN"
        options["sasl_plain_username"] = settings.sasl_username
        options["sasl_plain_password"] = settings.sasl_password.get_secret_value() if settings.sasl_password else None
    if settings.security_protocol.endswith("SSL"):
        options["ssl_cafile"] = settings.ssl_cafile
        options["ssl_certfile"] = settings.ssl_certfile
        options["ssl_keyfile"] = settings.ssl_keyfile
        if settings.ssl_password:
            options["ssl_password"] = settings.ssl_password.get_secret_value()
    return options


def build_producer(settings: KafkaSettings, **overrides: Any) -> KafkaProducer:
    """An idempotent, acks=all producer: a result is either on the broker or we know it is not."""
    options = connection_options(settings) | {
        "acks": "all",
        "enable_idempotence": True,
        "max_request_size": settings.max_message_bytes,
        "linger_ms": 5,
    }
    return KafkaProducer(**(options | overrides))


def build_consumer(settings: KafkaSettings, *topics: str, **overrides: Any) -> KafkaConsumer:
    """A group consumer with manual commits (offsets are committed after results are acked).

    It reads committed records only (`read_committed`: records of an aborted or open transaction
    are never seen; harmless for records written without one), and its committed-offset fetch
    waits for a transaction that is still committing offsets (KIP-447)."""
    apply_rejoin_fix()
    options = connection_options(settings) | {
        "group_id": settings.group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "isolation_level": "read_committed",
        "max_partition_fetch_bytes": settings.max_message_bytes,
        "session_timeout_ms": settings.session_timeout_ms,
        # a missed heartbeat or two is no eviction; a short one makes every member rejoin a rebalance soon
        "heartbeat_interval_ms": max(1, min(settings.heartbeat_interval_ms, settings.session_timeout_ms // 3)),
        "max_poll_interval_ms": settings.max_poll_interval_ms,
        "partition_assignment_strategy": (ASSIGNORS[settings.assignor],),
    }
    return KafkaConsumer(*topics, **(options | overrides))


ASSIGNORS = {
    "range": RangePartitionAssignor,
    "roundrobin": RoundRobinPartitionAssignor,
    "sticky": StickyPartitionAssignor,
    "cooperative-sticky": CooperativeStickyAssignor,
}


def static_membership(settings: KafkaSettings) -> dict[str, Any]:
    """`build_consumer` overrides that make the consumer a static member (when a name is set).

    Only the workers' group uses it: a name must be unique within its group.
    """
    return {} if not settings.group_instance_id else {"group_instance_id": settings.group_instance_id}


def close_and_leave(consumer: KafkaConsumer) -> None:
    """Close a group consumer and leave its group at once, static members too.

    kafka-python, like the Java client before `CloseOptions`, never sends LeaveGroup for a
    static member: its partitions would wait out the session timeout. A clean stop (a scale-down,
    a rolling update) should hand them over now; a crash still keeps them for the same name.
    """
    coordinator = getattr(consumer, "_coordinator", None)
    if coordinator is not None and coordinator.group_instance_id is not None:
        coordinator.is_dynamic_member = lambda: True  # the LeaveGroup names the instance id (KIP-345)
    consumer.close(autocommit=False)


def build_admin(settings: KafkaSettings, **overrides: Any) -> KafkaAdminClient:
    return KafkaAdminClient(**(connection_options(settings) | overrides))


def kafka_failure(settings: KafkaSettings, exc: BaseException) -> str:
    """One line for a command-line tool whose broker call failed: the error and the likely causes."""
    return f"Kafka at {settings.bootstrap_servers}: {type(exc).__name__}: {exc}; {connection_hint(settings)}"


def connection_hint(settings: KafkaSettings) -> str:
    """The likely causes when the broker cannot be reached, given how we connect (never a secret).

    kafka-python reports a refused SASL login, a failed TLS handshake and a PLAINTEXT
    client on a secured listener all alike, as "Unable to bootstrap" after a timeout,
    so the configured security is the best clue to the cause.
    """
    protocol = settings.security_protocol
    causes = []
    if protocol.startswith("SASL"):
        causes.append(
            f"the broker refused the {settings.sasl_mechanism or 'PLAIN'} login of user "
            f"{settings.sasl_username!r} (check LINEWATCH_KAFKA__SASL_USERNAME, "
            "LINEWATCH_KAFKA__SASL_PASSWORD, LINEWATCH_KAFKA__SASL_MECHANISM)"
        )
    if protocol.endswith("SSL"):
        causes.append(
            "the broker certificate is not signed by a CA in LINEWATCH_KAFKA__SSL_CAFILE "
            f"({settings.ssl_cafile or 'unset: the system CAs'})"
        )
    causes.append(
        f"no {protocol} listener answers at {settings.bootstrap_servers} (the broker is down, or "
        "LINEWATCH_KAFKA__BOOTSTRAP_SERVERS / LINEWATCH_KAFKA__SECURITY_PROTOCOL do not match it)"
    )
    return "likely causes: " + "; ".join(causes)


COMPACTED = {"cleanup.policy": "compact"}  # topic config of a topic keyed by scope (latest value per key)
# Frames carry the broker's clock as their record timestamp: the worker judges staleness by it as well
# as by the camera's `captured_at`, and measures how far the two clocks are apart.
FRAMES_TOPIC_CONFIG = {"message.timestamp.type": "LogAppendTime"}


def ensure_topics(
    settings: KafkaSettings,
    topics: list[str],
    configs: Mapping[str, Mapping[str, str]] | None = None,
    **admin_overrides: Any,
) -> None:
    """Create the topics that do not exist yet, with the configured partitions.

    `configs` adds topic configs per topic name (e.g. `{control_topic: COMPACTED}`); an existing
    topic is left as it is.
    """
    configs = configs or {}
    admin = build_admin(settings, **admin_overrides)
    try:
        existing = set(admin.list_topics())
        missing = [
            NewTopic(
                name=topic,
                num_partitions=settings.partitions,
                replication_factor=settings.replication_factor,
                topic_configs={"max.message.bytes": str(settings.max_message_bytes), **configs.get(topic, {})},
            )
            for topic in topics
            if topic not in existing
        ]
        if missing:
            try:
                admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass  # another worker created it between our list and create
    finally:
        admin.close()
