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
