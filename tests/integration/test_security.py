"""Authenticated Kafka (SASL/SCRAM-SHA-256, plain and over TLS) and password-protected Redis, end to end.

One broker for the module has two SCRAM listeners: ``SASL`` (SASL_PLAINTEXT) and ``SASL_TLS``
(SASL_SSL, a self-signed certificate made with keytool). Clients without the right
credentials or CA must be refused, the worker must say why it cannot connect, and no
secret may reach the logs.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import redis
from kafka import TopicPartition
from kafka.errors import KafkaTimeoutError
from pydantic import SecretStr

from common.kafka import build_admin, build_consumer, build_producer, ensure_topics
from common.messages import parse_frame_meta
from common.settings import (
    KafkaSettings,
    LinewatchSettings,
    ModelSettings,
    RedisSettings,
    TelemetrySettings,
    WorkerSettings,
)
from infra.kafka_broker import (
    SASL_LISTENER,
    SASL_TLS_LISTENER,
    SCRAM_MECHANISM,
    KafkaBroker,
    SelfSignedTls,
    make_self_signed_tls,
    scram_listeners,
)
from tests.integration.test_worker_service import read_results, read_topic, running, wait_until
from worker.inspection.redis_cache import RedisEmbeddingCache, build_embedding_cache
from worker.stream.service import CONNECT_TIMEOUT_MS, WorkerService, run_service

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

REPO_ROOT = Path(__file__).resolve().parents[2]
USER = "linewatch"
PASSWORD = "scram-secret-7f3a9c"  # distinctive, so a leak into the logs is found
WRONG_PASSWORD = "wrong-secret-51d0e2"
REDIS_PASSWORD = "redis-secret-c4e81b"
SECRETS = (PASSWORD, WRONG_PASSWORD, REDIS_PASSWORD)
FRAMES = 6


@dataclass(frozen=True)
class SecureKafka:
    broker: KafkaBroker
    tls: SelfSignedTls

    def settings(self, listener: str = SASL_TLS_LISTENER, password: str | None = PASSWORD, **fields) -> KafkaSettings:
        """Client settings for `listener` with topics and group of their own."""
        tag = uuid.uuid4().hex[:8]
        protocol = {SASL_LISTENER: "SASL_PLAINTEXT", SASL_TLS_LISTENER: "SASL_SSL"}[listener]
        base = dict(
            bootstrap_servers=self.broker.listener_bootstrap(listener),
            security_protocol=protocol,
            sasl_mechanism=SCRAM_MECHANISM,
            sasl_username=USER,
            sasl_password=SecretStr(password) if password is not None else None,
            ssl_cafile=str(self.tls.ca_file) if protocol == "SASL_SSL" else None,
            frames_topic=f"secure.frames.{tag}",
            results_topic=f"secure.results.{tag}",
            dlq_topic=f"secure.dlq.{tag}",
            group_id=f"secure-workers-{tag}",
            partitions=2,
        )
        return KafkaSettings(**(base | fields))


@pytest.fixture(scope="module")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureKafka]:
    """One SCRAM broker (SASL and SASL_TLS listeners) for the whole module: it takes ~5 s to start."""
    tls = make_self_signed_tls(tmp_path_factory.mktemp("kafka-tls"))
    broker = KafkaBroker(tmp_path_factory.mktemp("kafka-scram"), **scram_listeners({USER: PASSWORD}, tls=tls))
    broker.start()
    try:
        yield SecureKafka(broker, tls)
    finally:
        broker.close()


def worker_settings(kafka: KafkaSettings, redis_url: str | None) -> LinewatchSettings:
    return LinewatchSettings(
        kafka=kafka,
        # a generous socket timeout: a slow, shared test machine must not look like a Redis outage
        redis=RedisSettings(
            url=SecretStr(redis_url) if redis_url else None,
            key_prefix=f"sec-{uuid.uuid4().hex[:8]}",
            socket_timeout_s=5.0,
        ),
        models=ModelSettings(profile="tiny", foreground="none"),
        worker=WorkerSettings(worker_id="secure-worker", batch_max_frames=4, commit_interval_ms=200, heatmap_side=32),
        telemetry=TelemetrySettings(enabled=False),
    )


def producer_env(kafka: KafkaSettings) -> dict[str, str]:
    """The environment of a `linewatch-producer` that gets every Kafka setting from LINEWATCH_KAFKA__*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINEWATCH_")}
    env["LINEWATCH_TELEMETRY__ENABLED"] = "false"
    for name, value in kafka.model_dump().items():
        if value is not None:
            text = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
            env[f"LINEWATCH_KAFKA__{name.upper()}"] = text
    return env


def assert_no_secret(text: str) -> None:
    leaked = [secret for secret in SECRETS if secret in text]
    assert not leaked, f"secrets in the log: {leaked}"


def topic_size(kafka: KafkaSettings, topic: str) -> int:
    """Messages ever written to `topic` (created by `ensure_topics` with `kafka.partitions`)."""
    consumer = build_consumer(kafka, group_id=None)
    try:
        partitions = [TopicPartition(topic, p) for p in range(kafka.partitions)]
        return sum(consumer.end_offsets(partitions).values())
    finally:
        consumer.close()


# ----------------------------------------------------------------------------- Kafka


def test_producer_cli_and_worker_with_scram_over_tls_and_redis_password(secure_kafka, redis_server_factory, caplog):
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="worker")
    kafka = secure_kafka.settings(SASL_TLS_LISTENER)
    redis_server = redis_server_factory(password=REDIS_PASSWORD)
    settings = worker_settings(kafka, redis_server.url)  # the Redis password travels in the URL

    produced = subprocess.run(
        [
            sys.executable,
            "-m",
            "producer",
            "--source",
            "synthetic",
            "--limit",
            str(FRAMES),
            "--width",
            "96",
            "--height",
            "64",
            "--log-level",
            "INFO",
        ],
        cwd=REPO_ROOT,
        env=producer_env(kafka),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert produced.returncode == 0, produced.stdout + produced.stderr
    assert f"frames sent: {FRAMES}, refused: 0, failed: 0" in produced.stdout
    assert_no_secret(produced.stdout + produced.stderr)
    frames = read_topic(settings, kafka.frames_topic, lambda records: len(records) >= FRAMES, timeout_s=60)
    frame_ids = {parse_frame_meta(r.headers).frame_id for r in frames}
    assert len(frames) == len(frame_ids) == FRAMES

    stop = threading.Event()
    worker = threading.Thread(target=run_service, args=(settings,), kwargs={"stop_event": stop}, daemon=True)
    worker.start()
    try:
        results = read_results(settings, frame_ids, timeout_s=180)
    finally:
        stop.set()
        worker.join(60)
    assert not worker.is_alive(), "the worker did not stop within 60 s"
    assert sorted(r.frame_id for r in results) == sorted(frame_ids)
    assert "linewatch worker settings" in caplog.text  # the settings dump was logged, masked
    assert "authentication failed" not in caplog.text
    with redis.Redis.from_url(redis_server.url) as client:
        cached = client.keys(f"{settings.redis.key_prefix}:emb:*")
    assert cached  # the worker logged in to Redis with the URL's password and shared its prompt embeddings
    assert_no_secret(caplog.text)


# The broker drops a connection whose login failed; on a busy machine that close can overtake
# its error reply, so kafka-python logs either the SASL error or just the disconnect.
LOGIN_REFUSED = ("SaslAuthenticationFailedError", "socket disconnected")
REFUSED = {
    # case: (listener, client settings, what kafka-python logs about the refusal: any of these)
    "plaintext-on-sasl-port": (SASL_LISTENER, dict(security_protocol="PLAINTEXT"), ("socket disconnected",)),
    "wrong-password": (SASL_LISTENER, dict(sasl_password=SecretStr(WRONG_PASSWORD)), LOGIN_REFUSED),
    "wrong-password-tls": (SASL_TLS_LISTENER, dict(sasl_password=SecretStr(WRONG_PASSWORD)), LOGIN_REFUSED),
    "untrusted-certificate": (SASL_TLS_LISTENER, dict(ssl_cafile=None), ("CERTIFICATE_VERIFY_FAILED",)),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_client_without_valid_credentials_is_refused_and_writes_nothing(secure_kafka, case, caplog):
    listener, bad_fields, logged = REFUSED[case]
    good = secure_kafka.settings(SASL_LISTENER)
    ensure_topics(good, [good.frames_topic])
    bad = secure_kafka.settings(listener).model_copy(update={"frames_topic": good.frames_topic, **bad_fields})
    started = time.monotonic()
    refused = pytest.raises(KafkaTimeoutError, match="Unable to bootstrap")
    with caplog.at_level(logging.WARNING, logger="kafka"), refused:
        producer = build_producer(bad, bootstrap_timeout_ms=3000)
        try:
            producer.send(bad.frames_topic, b"intruder").get(timeout=5)
        finally:
            producer.close(timeout=1)
    assert time.monotonic() - started < 20
    assert any(clue in caplog.text for clue in logged), caplog.text  # refused, not e.g. a closed port
    assert topic_size(good, good.frames_topic) == 0


def test_a_worker_with_a_wrong_password_says_why_and_retries_until_stopped(secure_kafka, caplog):
    caplog.set_level(logging.WARNING, logger="worker.stream.startup")
    kafka = secure_kafka.settings(SASL_LISTENER, password=WRONG_PASSWORD)
    service = WorkerService(worker_settings(kafka, redis_url=None))

    def attempts() -> list[logging.LogRecord]:
        return [
            r for r in caplog.records if r.name == "worker.stream.startup" and "cannot reach Kafka" in r.getMessage()
        ]

    with running(service, join_timeout_s=CONNECT_TIMEOUT_MS / 1000 + 20) as stop:
        wait_until(lambda: len(attempts()) >= 2, 120, "two failed connection attempts")
        status = service.status()
        assert not status.running and not status.broker_reachable
        stopping = time.monotonic()
        stop()
    assert time.monotonic() - stopping < CONNECT_TIMEOUT_MS / 1000 + 10
    message = attempts()[0].getMessage()
    for clue in (
        kafka.bootstrap_servers,
        "SASL_PLAINTEXT",
        f"refused the {SCRAM_MECHANISM} login of user '{USER}'",
        "LINEWATCH_KAFKA__SASL_PASSWORD",
    ):
        assert clue in message, f"{clue!r} missing from: {message}"
    assert_no_secret(caplog.text)
    good = kafka.model_copy(update={"sasl_password": SecretStr(PASSWORD)})
    admin = build_admin(good)
    try:
        assert kafka.frames_topic not in admin.list_topics()  # the refused worker created nothing
    finally:
        admin.close()


# ----------------------------------------------------------------------------- Redis


@pytest.mark.parametrize("password_in", ["url", "setting"])
def test_the_embedding_cache_works_with_the_redis_password(redis_server_factory, password_in, caplog):
    caplog.set_level(logging.DEBUG, logger="worker.inspection.redis_cache")
    server = redis_server_factory(password=REDIS_PASSWORD)
    plain_url = f"redis://{server.host}:{server.port}/0"
    fields = (
        dict(url=SecretStr(server.url))
        if password_in == "url"
        else dict(url=SecretStr(plain_url), password=SecretStr(REDIS_PASSWORD))
    )
    settings = RedisSettings(key_prefix=f"sec-{uuid.uuid4().hex[:8]}", **fields)
    writer = build_embedding_cache(settings)
    assert isinstance(writer, RedisEmbeddingCache) and not writer.degraded
    value = np.arange(4, dtype=np.float32)
    writer.put_many({"fp:clip-text:k": value})
    reader = build_embedding_cache(settings)  # another worker: reads it from Redis, not its LRU
    assert np.array_equal(reader.get_many(["fp:clip-text:k"])[0], value)
    assert reader.stats().redis_hits == 1 and not reader.degraded
    assert "unavailable" not in caplog.text
    assert_no_secret(caplog.text)


REDIS_LOGINS = {  # login: (password in the URL, password setting)
    "no-password": ("", None),
    "wrong-password-setting": ("", WRONG_PASSWORD),
    "wrong-password-url": (f":{WRONG_PASSWORD}@", None),
}


@pytest.mark.parametrize("login", list(REDIS_LOGINS))
def test_a_refused_redis_login_degrades_with_one_clear_warning(redis_server_factory, login, caplog):
    caplog.set_level(logging.DEBUG, logger="worker.inspection.redis_cache")
    server = redis_server_factory(password=REDIS_PASSWORD)
    in_url, password = REDIS_LOGINS[login]
    settings = RedisSettings(
        url=SecretStr(f"redis://{in_url}{server.host}:{server.port}/0"),
        password=SecretStr(password) if password else None,
        key_prefix=f"sec-{uuid.uuid4().hex[:8]}",
        retry_after_s=0.1,
        signing_key=SecretStr("a signing key for this test"),  # signed: the login is the one thing wrong
    )
    cache = build_embedding_cache(settings)
    assert isinstance(cache, RedisEmbeddingCache) and cache.degraded
    value = np.ones(3, np.float32)
    for i in range(3):  # past retry_after_s each time: Redis is tried again, and refuses again
        time.sleep(0.15)
        cache.put_many({f"fp:clip-text:{i}": value})
    assert np.array_equal(cache.get_many(["fp:clip-text:0"])[0], value)  # the LRU in front still answers
    assert cache.stats().redis_errors >= 4 and cache.degraded
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "authentication failed" in warnings[0] and "LINEWATCH_REDIS__PASSWORD" in warnings[0]
    assert_no_secret(caplog.text)
