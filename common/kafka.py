"""Construction of kafka-python clients from settings (security options pass through)."""
from __future__ import annotations

import logging
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.coordinator.consumer import ConsumerCoordinator
from kafka.errors import TopicAlreadyExistsError

from common.settings import KafkaSettings

# kafka-python's admin client logs its whole configuration, passwords included, at DEBUG.
logging.getLogger("kafka.admin.client").setLevel(logging.INFO)

# kafka-python 3.0.12 bug: a group leader that rejoins because the topic metadata changed (a
# worker starting while its topic is new) stops awaiting its JoinGroup/SyncGroup once its own
# assignment made the metadata current again: need_rejoin() turns False mid-join, poll() never
# completes the join, the member is evicted and then stays without partitions for good. As the
# Java client does, treat a join in progress as a rejoin still needed.
_library_need_rejoin = ConsumerCoordinator.need_rejoin


def _rejoin_needed_or_pending(coordinator: ConsumerCoordinator) -> bool:
    return bool(getattr(coordinator, "rejoining", False)) or _library_need_rejoin(coordinator)


ConsumerCoordinator.need_rejoin = _rejoin_needed_or_pending


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
        options["sasl_plain_password"] = (
            settings.sasl_password.get_secret_value() if settings.sasl_password else None
        )
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
    """A group consumer with manual commits (offsets are committed after results are acked)."""
    options = connection_options(settings) | {
        "group_id": settings.group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "max_partition_fetch_bytes": settings.max_message_bytes,
        "session_timeout_ms": settings.session_timeout_ms,
        "heartbeat_interval_ms": max(1, settings.session_timeout_ms // 3),  # a missed heartbeat or two is no eviction
        "max_poll_interval_ms": settings.max_poll_interval_ms,
    }
    return KafkaConsumer(*topics, **(options | overrides))


def build_admin(settings: KafkaSettings, **overrides: Any) -> KafkaAdminClient:
    return KafkaAdminClient(**(connection_options(settings) | overrides))


def connection_hint(settings: KafkaSettings) -> str:
    """The likely causes when the broker cannot be reached, given how we connect (never a secret).

    kafka-python reports a refused SASL login, a failed TLS handshake and a PLAINTEXT
    client on a secured listener all alike, as "Unable to bootstrap" after a timeout,
    so the configured security is the best clue to the cause.
    """
    protocol = settings.security_protocol
    causes = []
    if protocol.startswith("SASL"):
        causes.append(f"the broker refused the {settings.sasl_mechanism or 'PLAIN'} login of user "
                      f"{settings.sasl_username!r} (check LINEWATCH_KAFKA__SASL_USERNAME, "
                      "LINEWATCH_KAFKA__SASL_PASSWORD, LINEWATCH_KAFKA__SASL_MECHANISM)")
    if protocol.endswith("SSL"):
        causes.append("the broker certificate is not signed by a CA in LINEWATCH_KAFKA__SSL_CAFILE "
                      f"({settings.ssl_cafile or 'unset: the system CAs'})")
    causes.append(f"no {protocol} listener answers at {settings.bootstrap_servers} (the broker is down, or "
                  "LINEWATCH_KAFKA__BOOTSTRAP_SERVERS / LINEWATCH_KAFKA__SECURITY_PROTOCOL do not match it)")
    return "likely causes: " + "; ".join(causes)


def ensure_topics(settings: KafkaSettings, topics: list[str], **admin_overrides: Any) -> None:
    """Create the topics that do not exist yet, with the configured partitions."""
    admin = build_admin(settings, **admin_overrides)
    try:
        existing = set(admin.list_topics())
        missing = [
            NewTopic(
                name=topic,
                num_partitions=settings.partitions,
                replication_factor=settings.replication_factor,
                topic_configs={"max.message.bytes": str(settings.max_message_bytes)},
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
