"""The consumer-group settings reach kafka-python as meant (no broker needed: api_version is given,
so nothing is probed). Their behaviour on a real broker: tests/integration/test_group_membership.py."""

from __future__ import annotations

import pytest

from common.kafka import build_consumer, close_and_leave, static_membership
from common.settings import KafkaSettings

OFFLINE = {"api_version": (2, 6)}


def consumer(**settings):
    ks = KafkaSettings(bootstrap_servers="127.0.0.1:1", **settings)
    return build_consumer(ks, **OFFLINE, **static_membership(ks))


@pytest.mark.parametrize(
    ("assignor", "protocol"), [("range", "EAGER"), ("sticky", "EAGER"), ("cooperative-sticky", "COOPERATIVE")]
)
def test_assignor_setting_picks_the_rebalance_protocol(assignor, protocol):
    c = consumer(assignor=assignor)
    try:
        assert [a.name for a in c._coordinator._assignors.values()] == [assignor]
        assert c._coordinator._rebalance_protocol.name == protocol
    finally:
        c.close(autocommit=False)


def test_heartbeat_is_short_but_never_above_a_third_of_the_session():
    fast = consumer(session_timeout_ms=45_000)
    slow = consumer(session_timeout_ms=900, heartbeat_interval_ms=500)
    try:
        assert fast.config["heartbeat_interval_ms"] == 500  # a rebalance is noticed within half a second
        assert slow.config["heartbeat_interval_ms"] == 300
    finally:
        fast.close(autocommit=False), slow.close(autocommit=False)


def test_static_membership_only_with_a_name():
    assert static_membership(KafkaSettings()) == {}
    assert static_membership(KafkaSettings(group_instance_id="worker-7f9c")) == {"group_instance_id": "worker-7f9c"}
    named = consumer(group_instance_id="worker-7f9c")
    try:
        assert named._coordinator.group_instance_id == "worker-7f9c"
        assert not named._coordinator.is_dynamic_member()  # kafka-python would not send LeaveGroup...
    finally:
        close_and_leave(named)
    assert named._coordinator.is_dynamic_member()  # ...close_and_leave makes it send one


def test_close_and_leave_leaves_a_dynamic_member_as_it_was():
    dynamic = consumer()
    close_and_leave(dynamic)
    assert "is_dynamic_member" not in vars(dynamic._coordinator)


class _Coordinator:
    """What the patched poll reads of kafka-python's coordinator."""

    def __init__(self, protocol: str, rejoin: bool, assigned: set):
        from kafka.coordinator.assignors.abstract import RebalanceProtocol

        self._rebalance_protocol = RebalanceProtocol[protocol]
        self._rejoin = rejoin
        self._subscription = type("Subscription", (), {"assigned_partitions": lambda _self: assigned})()
        self.polls: list = []

    def need_rejoin(self) -> bool:
        return self._rejoin


@pytest.mark.parametrize(
    ("protocol", "rejoin", "assigned", "fetches_through"),
    [
        ("COOPERATIVE", True, {"frames:0"}, True),  # a cooperative member with partitions keeps fetching them
        ("COOPERATIVE", True, set(), False),  # nothing to fetch: wait for the join as before
        ("EAGER", True, {"frames:0"}, False),  # eager members gave everything up: wait
        ("COOPERATIVE", False, {"frames:0"}, False),  # no rebalance: the library's poll, as is
    ],
)
def test_cooperative_members_fetch_through_a_rebalance(monkeypatch, protocol, rejoin, assigned, fetches_through):
    import common.kafka as kafka_module

    calls = []

    def library_poll(coordinator, timeout_ms=None):
        calls.append(timeout_ms)
        return False  # the join is not complete yet

    monkeypatch.setattr(kafka_module, "_library_poll", library_poll)
    answer = kafka_module._poll_fetching_through_cooperative_rebalance(_Coordinator(protocol, rejoin, assigned), 100)
    assert answer is fetches_through
    assert calls == ([0] if fetches_through else [100])  # the join is still driven, without waiting


def test_build_consumer_applies_the_fetch_fix():
    from kafka.coordinator.consumer import ConsumerCoordinator

    import common.kafka as kafka_module

    consumer(assignor="cooperative-sticky").close(autocommit=False)
    assert ConsumerCoordinator.poll is kafka_module._poll_fetching_through_cooperative_rebalance
