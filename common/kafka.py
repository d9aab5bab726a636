"""Construction of kafka-python clients from settings (security options pass through)."""
from __future__ import annotations

from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from common.settings import KafkaSettings


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
    }
    return KafkaConsumer(*topics, **(options | overrides))


def build_admin(settings: KafkaSettings) -> KafkaAdminClient:
    return KafkaAdminClient(**connection_options(settings))


def ensure_topics(settings: KafkaSettings, topics: list[str]) -> None:
    """Create the topics that do not exist yet, with the configured partitions."""
    admin = build_admin(settings)
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
