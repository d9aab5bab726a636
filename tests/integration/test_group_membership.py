"""Gentle rebalances on the real broker: cooperative-sticky moves only what changes hands, a static
member restarted within its session gets its partitions back with no rebalance, and a static member
that stops cleanly hands its partitions over at once."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from common.kafka import ensure_topics
from common.settings import KafkaSettings

REPO = Path(__file__).resolve().parents[2]
PARTITIONS = 6
pytestmark = pytest.mark.timeout(240)


class Member:
    """A `tests.support.group_member` process and the callbacks it printed."""

    def __init__(self, bootstrap: str, topic: str, group: str, assignor: str, session_ms: int, instance: str | None):
        args = [bootstrap, topic, group, assignor, str(session_ms)] + ([instance] if instance else [])
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.group_member", *args],
            cwd=REPO,
            env=os.environ | {"PYTHONPATH": str(REPO)},
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.events: queue.Queue = queue.Queue()
        self.log: list[dict] = []
        self.owned: set[int] = set()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.events.put(json.loads(line))

    def drain(self) -> None:
        while True:
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                return
            self.log.append(event)
            if event["event"] == "assigned":
                self.owned |= set(event["partitions"])
            elif event["event"] in ("revoked", "lost"):
                self.owned -= set(event["partitions"])

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(30)


def settle(members: list[Member], expect, timeout_s: float = 90.0) -> None:
    """Until `expect(owned sets)` holds and every partition has exactly one owner."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for member in members:
            member.drain()
        owned = [m.owned for m in members]
        if sum(map(len, owned)) == PARTITIONS and set().union(*owned) == set(range(PARTITIONS)) and expect(owned):
            return
        time.sleep(0.1)
    raise AssertionError(f"not settled: {[sorted(m.owned) for m in members]}")


@pytest.fixture
def group(kafka_broker):
    topic = f"membership-{uuid.uuid4().hex[:8]}"
    ensure_topics(KafkaSettings(bootstrap_servers=kafka_broker.bootstrap, partitions=PARTITIONS), [topic])
    members: list[Member] = []

    def start(assignor: str = "cooperative-sticky", session_ms: int = 10_000, instance: str | None = None) -> Member:
        member = Member(kafka_broker.bootstrap, topic, f"g-{topic}", assignor, session_ms, instance)
        members.append(member)
        return member

    yield start
    for member in members:
        member.stop()


def test_cooperative_join_revokes_only_what_moves(group):
    a, b = group(), group()
    settle([a, b], lambda owned: all(owned))
    before_a, before_b = set(a.owned), set(b.owned)
    a.log.clear(), b.log.clear()
    c = group()
    settle([a, b, c], lambda owned: all(owned))
    assert a.owned <= before_a and b.owned <= before_b  # sticky: nobody takes another's partitions but the newcomer
    for member, before in ((a, before_a), (b, before_b)):
        revoked = {p for e in member.log if e["event"] == "revoked" for p in e["partitions"]}
        assert revoked == before - member.owned  # only what moved to the newcomer, never the whole assignment
        assert all(e["event"] != "lost" for e in member.log)


def test_eager_join_revokes_everything(group):
    a, b = group("range"), group("range")
    settle([a, b], lambda owned: all(owned))
    before_a = set(a.owned)
    a.log.clear()
    c = group("range")
    settle([a, b, c], lambda owned: all(owned))
    revoked = {p for e in a.log if e["event"] == "revoked" for p in e["partitions"]}
    assert revoked == before_a  # the contrast: an eager member gives up all it had


def test_static_member_restarted_within_its_session_gets_its_partitions_back_without_rebalance(group):
    a, b = group(session_ms=30_000, instance="worker-a"), group(session_ms=30_000, instance="worker-b")
    settle([a, b], lambda owned: all(owned))
    mine, theirs = set(a.owned), set(b.owned)
    b.log.clear()
    a.kill()  # a crash: no LeaveGroup
    again = group(session_ms=30_000, instance="worker-a")
    settle([again, b], lambda owned: owned[0] == mine)
    time.sleep(2.0)
    b.drain()
    assert b.owned == theirs and b.log == []  # the other member never noticed


def test_static_member_that_stops_cleanly_hands_over_at_once(group):
    a, b = group(session_ms=60_000, instance="worker-a"), group(session_ms=60_000, instance="worker-b")
    settle([a, b], lambda owned: all(owned))
    stopped = time.monotonic()
    a.stop()  # SIGTERM: close_and_leave sends LeaveGroup with the instance id
    a.owned.clear()
    settle([b], lambda owned: True, timeout_s=30.0)
    assert time.monotonic() - stopped < 20.0  # far inside the 60 s session a silent static member would hold


def test_a_cooperative_member_cannot_join_an_eager_group(group):
    a = group("range")
    settle([a], lambda owned: True)
    b = group("cooperative-sticky")  # the broker answers InconsistentGroupProtocol
    time.sleep(15.0)
    a.drain(), b.drain()
    assert a.owned == set(range(PARTITIONS)) and not b.owned  # why a migration restarts the whole group


def test_partition_of_is_where_the_producer_sends_a_camera(kafka_broker):
    from common.kafka import build_producer
    from common.partitions import partition_of

    settings = KafkaSettings(bootstrap_servers=kafka_broker.bootstrap, partitions=16)
    topic = f"skew-{uuid.uuid4().hex[:8]}"
    ensure_topics(settings, [topic])
    producer = build_producer(settings)
    try:
        cameras = [f"cam-{i}" for i in range(1, 41)]
        sent = {c: producer.send(topic, key=c.encode(), value=b"x").get(30).partition for c in cameras}
    finally:
        producer.close()
    assert sent == {c: partition_of(c, 16) for c in cameras}
