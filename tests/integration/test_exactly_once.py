"""The stream worker under `kafka.processing_guarantee: exactly-once`, against the real broker.

Results are read twice: by a `read_committed` reader (what the MES and the alarm service see:
each frame once) and by a `read_uncommitted` one (which also sees the records of aborted
transactions, proving the failure happened after results were sent).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from common.kafka import connection_options, ensure_topics
from common.settings import LinewatchSettings
from tests.integration.test_worker_service import (
    PARTITIONS,
    REPO_ROOT,
    committed_total,
    good_frame,
    make_settings,
    publish_frames,
    running,
    wait_until,
)
from worker.stream.service import WorkerService

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]


def exactly_once(settings: LinewatchSettings) -> LinewatchSettings:
    kafka = settings.kafka.model_copy(update={"processing_guarantee": "exactly-once"})
    return settings.model_copy(update={"kafka": kafka})


def frame_ids(settings: LinewatchSettings, isolation_level: str) -> Counter:
    """frame_id -> how many results a reader with `isolation_level` sees, up to the topic's end now."""
    consumer = KafkaConsumer(
        **connection_options(settings.kafka), group_id=None, enable_auto_commit=False, isolation_level=isolation_level
    )
    try:
        partitions = [TopicPartition(settings.kafka.results_topic, p) for p in range(PARTITIONS)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        end = consumer.end_offsets(partitions)  # read_committed: the last stable offsets
        seen: Counter = Counter()
        deadline = time.monotonic() + 60
        while any(consumer.position(tp) < end[tp] for tp in partitions) and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=300).values():
                seen.update(json.loads(r.value)["frame_id"] for r in batch)
        return seen
    finally:
        consumer.close()


def test_an_aborted_transaction_is_read_again_and_each_result_is_seen_once(kafka_broker, redis_server, monkeypatch):
    settings = exactly_once(make_settings(kafka_broker, redis_server.url, batch_max_frames=4))
    real_commit, failures = KafkaProducer.commit_transaction, []

    def commit_failing_once(self):  # the first commit fails after its results were sent: abort, rewind
        if not failures:
            failures.append(time.monotonic())
            raise KafkaError("commit failed (test)")
        real_commit(self)

    monkeypatch.setattr(KafkaProducer, "commit_transaction", commit_failing_once)
    service = WorkerService(settings)
    with running(service):
        sent = publish_frames(settings, [good_frame(i) for i in range(8)])
        wait_until(lambda: committed_total(settings) == len(sent), 180, "all offsets committed")
        counters = service.status().counters
    assert failures and counters["aborted_transactions"] == 1 and counters["resyncs"] >= 1
    committed = frame_ids(settings, "read_committed")
    assert set(committed) == sent and set(committed.values()) == {1}  # every frame once
    written = frame_ids(settings, "read_uncommitted")
    assert sum(written.values()) > len(sent)  # the aborted transaction's results are on the broker, unseen


def test_a_worker_killed_mid_transaction_leaves_each_result_once(kafka_broker, redis_server, tmp_path):
    settings = exactly_once(make_settings(kafka_broker, redis_server.url, batch_max_frames=2, worker_id="eos-1"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINEWATCH_")} | {
        "PYTHONPATH": str(REPO_ROOT),
        "LINEWATCH_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "LINEWATCH_KAFKA__FRAMES_TOPIC": settings.kafka.frames_topic,
        "LINEWATCH_KAFKA__RESULTS_TOPIC": settings.kafka.results_topic,
        "LINEWATCH_KAFKA__DLQ_TOPIC": settings.kafka.dlq_topic,
        "LINEWATCH_KAFKA__GROUP_ID": settings.kafka.group_id,
        "LINEWATCH_KAFKA__PROCESSING_GUARANTEE": "exactly-once",
        "LINEWATCH_REDIS__URL": redis_server.url,
        "LINEWATCH_MODELS__PROFILE": "tiny",
        "LINEWATCH_MODELS__FOREGROUND": "none",
        "LINEWATCH_WORKER__WORKER_ID": "eos-1",
        "LINEWATCH_WORKER__BATCH_MAX_FRAMES": "2",
        "LINEWATCH_TELEMETRY__ENABLED": "false",
    }
    ensure_topics(settings.kafka, [settings.kafka.results_topic])  # read before the worker creates it
    log_path = tmp_path / "worker.log"
    command = [sys.executable, "-m", "infra.chaos.slow_worker", "--delay-s", "0.1", "--commit-delay-s", "5"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=log)
    try:
        sent = publish_frames(settings, [good_frame(i) for i in range(8)])
        wait_until(  # results sent in a transaction not committed yet: kill it now
            lambda: sum(frame_ids(settings, "read_uncommitted").values()) > 0 or proc.poll() is not None,
            180,
            "the worker to send results",
        )
        assert proc.poll() is None, log_path.read_text()[-3000:]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    # its successor takes the same worker id: starting, it fences the dead one and aborts its transaction
    with running(WorkerService(settings)):
        wait_until(lambda: committed_total(settings) == len(sent), 180, "all offsets committed")
    committed = frame_ids(settings, "read_committed")
    assert set(committed) == sent and set(committed.values()) == {1}, committed
    assert sum(frame_ids(settings, "read_uncommitted").values()) > len(sent)  # the kill left an open transaction
