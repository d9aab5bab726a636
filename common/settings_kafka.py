"""Settings of the Kafka connection and topics (`kafka.*`; common/settings.py assembles every section)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator

from common.settings_base import Section


class KafkaSettings(Section):
    bootstrap_servers: str = Field("127.0.0.1:9092", description="comma-separated host:port list of brokers")
    client_id: str = Field("linewatch", description="Kafka client id prefix")
    frames_topic: str = Field("linewatch.frames", description="topic the cameras publish frames to")
    results_topic: str = Field("linewatch.results", description="topic the worker publishes InspectionResult JSON to")
    dlq_topic: str = Field("linewatch.frames.dlq", description="dead-letter topic for frames that cannot be inspected")
    alarms_topic: str = Field("linewatch.alarms", description="topic the alarm service publishes alarm events to")
    control_topic: str = Field(
        "linewatch.control", description="compacted topic of ControlRecords (thresholds, prompts, references) by scope"
    )
    feedback_topic: str = Field(
        "linewatch.feedback", description="topic of operators' labels on results (false alarm, defect, good reference)"
    )
    audit_topic: str = Field(
        "linewatch.audit",
        description="append-only topic (never compacted, kept forever by default) of every control change: who, when, scope, before -> after, reason",
    )
    group_id: str = Field("linewatch", description="consumer group shared by all workers")
    partitions: int = Field(4, ge=1, description="partition count for topics created when missing")
    camera_partitions: dict[str, int] = Field(
        {},
        description="producers: the frames partition of each listed camera, e.g. {cam-1: 0, cam-2: 1} (`linewatch-producer assign-partitions` prints an even table); other cameras go where murmur2 of their id puts them",
    )
    replication_factor: int = Field(1, ge=1)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"
    )
    sasl_username: str | None = Field(None, description="SASL user")
    sasl_password: SecretStr | None = Field(None, description="SASL password (secret, never logged)")
    ssl_cafile: str | None = Field(None, description="CA bundle for TLS")
    ssl_certfile: str | None = Field(None, description="client certificate for TLS")
    ssl_keyfile: str | None = Field(None, description="client key for TLS")
    ssl_password: SecretStr | None = Field(None, description="password of the client key (secret)")
    max_message_bytes: int = Field(1_048_576, description="largest message the topics accept")

    @field_validator("camera_partitions")
    @classmethod
    def _partitions_not_negative(cls, table: dict[str, int]) -> dict[str, int]:
        if any(p < 0 for p in table.values()):
            raise ValueError("a camera's partition is 0 or more")
        return table

    @property
    def learned_topic(self) -> str:
        """Compacted topic of the records workers calibrate in learning mode: the control topic's
        name plus `.learned`, so that an ACL can let workers write it and not the control topic."""
        return f"{self.control_topic}.learned"

    session_timeout_ms: int = Field(
        10_000,
        ge=1,
        description="a consumer that stops heartbeating (killed, hung) loses its partitions after this long; within the broker's group.min/max.session.timeout.ms",
    )
    heartbeat_interval_ms: int = Field(
        500,
        ge=1,
        description="how often a group member heartbeats (at most a third of session_timeout_ms is used); members learn of a rebalance on their next heartbeat, so this bounds how long a rebalance takes (an eager member fetches nothing until it is over)",
    )
    max_poll_interval_ms: int = Field(
        300_000,
        ge=1,
        description="consumer rebalance timeout; the worker polls while it infers, so slow inference does not count against it",
    )
    processing_guarantee: Literal["at-least-once", "exactly-once"] = Field(
        "at-least-once",
        description="at-least-once: a crash may publish a frame's result twice; exactly-once: results, dead letters and consumed offsets commit in one Kafka transaction (readers use read_committed)",
    )
    transactional_id_prefix: str = Field(
        "linewatch", description="exactly-once: transactional.id = prefix + worker id (keep worker ids stable)"
    )
    transaction_timeout_ms: int = Field(
        60_000,
        ge=1000,
        description="exactly-once: the broker aborts a transaction left open this long (a dead worker's); at most the broker's transaction.max.timeout.ms",
    )
    assignor: Literal["range", "roundrobin", "sticky", "cooperative-sticky"] = Field(
        "range",
        description="partition assignor of the workers' group: range, roundrobin and sticky rebalance eagerly (every member stops), cooperative-sticky moves only the partitions that change owner; every member of a group must use the same protocol",
    )
    group_instance_id: str | None = Field(
        None,
        description="static membership: a stable name per worker (a pod name); a worker restarted under the same name within session_timeout_ms gets its partitions back with no rebalance; on a clean stop it still leaves the group at once; None: a dynamic member",
    )
