"""The real-broker test infrastructure itself, against a real Kafka broker and redis-server.

These also pin down what the project needs from kafka-python against the pinned broker:
topic creation through KafkaAdminClient, keyed produce with headers, group consumption
with manual commits, committed offsets and end offsets (ListOffsets).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict

import pytest
import redis
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from infra._proc import REPO_ROOT
from infra.kafka_broker import KafkaBroker
from infra.redis_server import ping

pytestmark = pytest.mark.integration

N_PARTITIONS = 4
N_MESSAGES = 20


def create_topic(bootstrap: str, name: str, partitions: int = N_PARTITIONS) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="test-infra-admin")
    try:
        admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
        deadline = time.monotonic() + 30
        while True:  # wait until every partition has a leader
            desc = admin.describe_topics([name])[0]
            leaders = [p.get("leader_id", p.get("leader", -1)) for p in desc["partitions"]]  # 3.x names it leader_id
            if desc["error_code"] == 0 and len(leaders) == partitions and all(leader >= 0 for leader in leaders):
                return
            assert time.monotonic() < deadline, f"topic {name} not ready: {desc}"
            time.sleep(0.2)
    finally:
        admin.close()


def produce_keyed(bootstrap: str, topic: str, count: int, start: int = 0) -> list:
    """Send ``count`` keyed messages with headers; returns their RecordMetadata."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, client_id="test-infra-producer")
    try:
        futures = [
            producer.send(
                topic,
                key=f"line-{i % 7}".encode(),
                value=f"frame-{i}".encode(),
                headers=[("trace-id", f"trace-{i}".encode()), ("schema", b"v1")],
            )
            for i in range(start, start + count)
        ]
        producer.flush(timeout=30)
        return [f.get(timeout=30) for f in futures]
    finally:
        producer.close(timeout=10)


def consume_exactly(consumer: KafkaConsumer, count: int, timeout: float = 60.0) -> list:
    records = []
    deadline = time.monotonic() + timeout
    while len(records) < count:
        assert time.monotonic() < deadline, f"consumed {len(records)} of {count}"
        for batch in consumer.poll(timeout_ms=500).values():
            records.extend(batch)
    return records


def poll_until_assigned(consumer: KafkaConsumer, timeout: float = 30.0) -> list:
    """Poll until the group has assigned partitions; returns what those polls delivered."""
    records = []
    deadline = time.monotonic() + timeout
    while not consumer.assignment():
        assert time.monotonic() < deadline, "no partitions assigned"
        for batch in consumer.poll(timeout_ms=200).values():
            records.extend(batch)
    return records


def drain(consumer: KafkaConsumer, seconds: float) -> list:
    records = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=200).values():
            records.extend(batch)
    return records


def group_consumer(bootstrap: str, topic: str, group: str, **kwargs) -> KafkaConsumer:
    return KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        client_id="test-infra-consumer",
        **kwargs,
    )


def per_partition_counts(metas) -> dict[int, int]:
    counts: dict[int, int] = Counter(m.partition for m in metas)
    return {p: counts.get(p, 0) for p in range(N_PARTITIONS)}


# --------------------------------------------------------------------------- kafka


def test_broker_addresses(kafka_broker: KafkaBroker) -> None:
    host, port = kafka_broker.bootstrap.split(":")
    assert host == "127.0.0.1" and int(port) == kafka_broker.port
    assert kafka_broker.is_running
    props = kafka_broker.server_properties()
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == f"1@127.0.0.1:{kafka_broker.controller_port}"
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["group.initial.rebalance.delay.ms"] == "0"


def test_produce_and_consume_in_group_with_manual_commit(kafka_broker: KafkaBroker, topic_names) -> None:
    topic, group = topic_names("frames"), topic_names("group")
    bs = kafka_broker.bootstrap
    create_topic(bs, topic)

    metas = produce_keyed(bs, topic, N_MESSAGES)
    expected_end = per_partition_counts(metas)
    assert sum(expected_end.values()) == N_MESSAGES
    # keyed: one key always lands on one partition
    key_partitions = defaultdict(set)
    for i, m in enumerate(metas):
        key_partitions[i % 7].add(m.partition)
    assert all(len(ps) == 1 for ps in key_partitions.values())

    consumer = group_consumer(bs, topic, group)
    try:
        records = consume_exactly(consumer, N_MESSAGES)
        by_value = {r.value.decode(): r for r in records}
        assert sorted(by_value) == sorted(f"frame-{i}" for i in range(N_MESSAGES))
        for i in range(N_MESSAGES):
            r = by_value[f"frame-{i}"]
            assert r.key == f"line-{i % 7}".encode()
            assert dict(r.headers) == {"trace-id": f"trace-{i}".encode(), "schema": b"v1"}
            assert (r.partition, r.offset) == (metas[i].partition, metas[i].offset)
        # within a partition the records come in offset order
        for p in range(N_PARTITIONS):
            offsets = [r.offset for r in records if r.partition == p]
            assert offsets == sorted(offsets) == list(range(expected_end[p]))

        tps = [TopicPartition(topic, p) for p in range(N_PARTITIONS)]
        assert all(consumer.committed(tp) is None for tp in tps)  # nothing committed yet

        # manual commit of explicit offsets: next offset to read per partition
        to_commit = {}
        for r in records:
            tp = TopicPartition(r.topic, r.partition)
            to_commit[tp] = max(to_commit.get(tp, 0), r.offset + 1)
        consumer.commit({tp: OffsetAndMetadata(off, "", -1) for tp, off in to_commit.items()})

        end = consumer.end_offsets(tps)
        assert {tp.partition: off for tp, off in end.items()} == expected_end
        assert consumer.beginning_offsets(tps) == {tp: 0 for tp in tps}
        committed = {tp.partition: consumer.committed(tp) for tp in tps}
        assert committed == {p: (n if n else None) for p, n in expected_end.items()}
    finally:
        consumer.close(autocommit=False)

    # A new member of the same group resumes at the committed offsets: nothing is
    # re-delivered, and one new message is delivered exactly once.
    consumer = group_consumer(bs, topic, group)
    try:
        assert poll_until_assigned(consumer) == []
        assert drain(consumer, seconds=1.0) == []
        extra = produce_keyed(bs, topic, 1, start=N_MESSAGES)[0]
        got = consume_exactly(consumer, 1)
        assert drain(consumer, seconds=1.0) == []
        assert [(r.value, r.partition, r.offset) for r in got] == [
            (f"frame-{N_MESSAGES}".encode(), extra.partition, extra.offset)
        ]
        consumer.commit()
        tp = TopicPartition(topic, extra.partition)
        assert consumer.committed(tp) == extra.offset + 1 == consumer.end_offsets([tp])[tp]
    finally:
        consumer.close(autocommit=False)


def test_end_offsets_right_after_topic_creation(kafka_broker: KafkaBroker, topic_names) -> None:
    """kafka-python <2.2.19 / 2.3.0 crash here (AttributeError in the ListOffsets retry path)."""
    admin = KafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap)
    consumer = KafkaConsumer(bootstrap_servers=kafka_broker.bootstrap)
    try:
        for _ in range(3):
            topic = topic_names("fresh")
            admin.create_topics([NewTopic(topic, num_partitions=8, replication_factor=1)])
            tps = [TopicPartition(topic, p) for p in range(8)]
            assert consumer.end_offsets(tps) == {tp: 0 for tp in tps}
    finally:
        consumer.close()
        admin.close()


@pytest.mark.slow
def test_broker_restart_keeps_port_topics_and_data(kafka_broker_factory, topic_names) -> None:
    broker: KafkaBroker = kafka_broker_factory()
    bs, port = broker.bootstrap, broker.port
    topic = topic_names("durable")
    create_topic(bs, topic)
    first = produce_keyed(bs, topic, 10)

    # A producer that lives across the outage. kafka-python's default
    # reconnect_backoff_max_ms (30 s) would let it wait up to 30 s after the broker is back.
    producer = KafkaProducer(
        bootstrap_servers=bs,
        acks="all",
        retries=100,
        retry_backoff_ms=200,
        request_timeout_ms=5000,
        reconnect_backoff_max_ms=1000,
    )
    try:
        producer.send(topic, key=b"line-0", value=b"before").get(timeout=30)

        # Clean stop, several seconds down, restart, done from another thread
        # (as a chaos test does): the broker must survive that thread ending.
        pid_before = broker.pid
        t = threading.Thread(target=broker.restart, kwargs={"down_seconds": 3})
        t.start()
        t.join(timeout=180)
        assert not t.is_alive()
        assert broker.is_running and broker.pid != pid_before
        assert broker.port == port and broker.bootstrap == bs
        pid_restarted = broker.pid

        # Served after the restarting thread ended (a parent-death signal would have come when it did),
        # and still the same process.
        producer.send(topic, key=b"line-0", value=b"after-restart").get(timeout=60)
        assert broker.is_running and broker.pid == pid_restarted

        # Crash (SIGKILL) and start again: the acked data is still there.
        broker.kill()
        assert not broker.is_running
        broker.start()
        assert broker.bootstrap == bs
        producer.send(topic, key=b"line-0", value=b"after-crash").get(timeout=60)
    finally:
        producer.close(timeout=10)

    admin = KafkaAdminClient(bootstrap_servers=bs)
    try:
        assert topic in admin.list_topics()
    finally:
        admin.close()

    expected = per_partition_counts(first)
    p0 = first[0].partition  # key line-0 -> same partition as message 0
    expected[p0] += 3
    consumer = group_consumer(bs, topic, topic_names("group"))
    try:
        records = consume_exactly(consumer, 13)
        tps = [TopicPartition(topic, p) for p in range(N_PARTITIONS)]
        assert {tp.partition: o for tp, o in consumer.end_offsets(tps).items()} == expected
    finally:
        consumer.close(autocommit=False)
    values = [r.value for r in records if r.partition == p0]
    assert values[-3:] == [b"before", b"after-restart", b"after-crash"]
    assert sorted(r.value for r in records if not r.value.startswith(b"frame-")) == sorted(
        [b"before", b"after-restart", b"after-crash"]
    )


@pytest.mark.slow
def test_extra_sasl_scram_listener(kafka_broker_factory, topic_names) -> None:
    """The hooks a SASL/SCRAM test uses: an extra listener, SCRAM users added at format time."""
    broker: KafkaBroker = kafka_broker_factory(
        extra_listeners={"SASL": "SASL_PLAINTEXT"},
        scram_credentials=["SCRAM-SHA-256=[name=alice,password=alice-secret]"],
        extra_properties={
            "sasl.enabled.mechanisms": "SCRAM-SHA-256",
            "listener.name.sasl.scram-sha-256.sasl.jaas.config": "org.apache.kafka.common.security.scram.ScramLoginModule required;",
        },
    )
    assert broker.listener_port("SASL") not in (broker.port, broker.controller_port)
    sasl = dict(
        bootstrap_servers=broker.listener_bootstrap("SASL"),
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-256",
        sasl_plain_username="alice",
    )
    topic = topic_names("secure")
    admin = KafkaAdminClient(sasl_plain_password="alice-secret", **sasl)
    try:
        admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        admin.close()
    producer = KafkaProducer(sasl_plain_password="alice-secret", **sasl)
    try:
        assert producer.send(topic, b"hello").get(timeout=30).offset == 0
    finally:
        producer.close(timeout=10)
    # the PLAINTEXT listener still works alongside
    consumer = KafkaConsumer(topic, bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest")
    try:
        assert [m.value for m in consume_exactly(consumer, 1)] == [b"hello"]
    finally:
        consumer.close()
    with pytest.raises(KafkaError):  # kafka-python reports a failed SCRAM login as a timeout
        bad = KafkaProducer(sasl_plain_password="wrong", max_block_ms=3000, **sasl)
        try:
            bad.send(topic, b"x").get(timeout=5)
        finally:
            bad.close(timeout=1)


# --------------------------------------------------------------------------- redis


def test_redis_set_get(redis_server) -> None:
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
    client = redis.Redis.from_url(redis_server.url)
    try:
        assert client.ping()
        client.set("linewatch:test:k", b"v", ex=60)
        assert client.get("linewatch:test:k") == b"v"
        assert client.config_get("save") == {"save": ""}
        assert client.config_get("appendonly") == {"appendonly": "no"}
    finally:
        client.close()


def test_redis_kill_and_restart_same_port(redis_server_factory) -> None:
    server = redis_server_factory(password="s3cret/pw")
    port, url = server.port, server.url
    assert url == f"redis://:s3cret%2Fpw@127.0.0.1:{port}/0"
    assert not ping("127.0.0.1", port)  # NOAUTH without the password
    assert ping("127.0.0.1", port, password="s3cret/pw")

    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        client.set("k", "1")
        assert client.get("k") == b"1"

        server.kill()
        assert not server.is_running
        with pytest.raises(redis.ConnectionError):
            client.get("k")

        server.restart()
        assert server.port == port and server.url == url
        assert client.get("k") is None  # no persistence: the crash lost the data
        client.set("k", "2")
        assert client.get("k") == b"2"

        server.restart(down_seconds=0.5)  # clean stop + start
        assert client.ping()
    finally:
        client.close()


# --------------------------------------------------------------------------- CLI (make demo)


@pytest.mark.slow
def test_servers_cli_start_stop(tmp_path) -> None:
    state = tmp_path / "state"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    run = lambda *args: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "infra.servers", *args, "--state-dir", str(state)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    res = run("start")
    try:
        assert res.returncode == 0, res.stderr + res.stdout
        values = dict(line.split("=", 1) for line in (state / "env").read_text().splitlines())
        assert set(values) == {"LINEWATCH_KAFKA__BOOTSTRAP_SERVERS", "LINEWATCH_REDIS__URL"}
        assert values["LINEWATCH_REDIS__URL"].startswith("redis://127.0.0.1:")
        assert redis.Redis.from_url(values["LINEWATCH_REDIS__URL"]).ping()
        admin = KafkaAdminClient(bootstrap_servers=values["LINEWATCH_KAFKA__BOOTSTRAP_SERVERS"])
        admin.list_topics()
        admin.close()
        # shell-sourceable
        out = subprocess.run(
            ["bash", "-c", f'set -a; . "{state}/env"; echo "$LINEWATCH_REDIS__URL"'],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert out == values["LINEWATCH_REDIS__URL"]
        assert run("status").returncode == 0
    finally:
        stop = run("stop")
    assert stop.returncode == 0, stop.stderr
    assert run("status").returncode == 1
    assert not (state / "env").exists()
