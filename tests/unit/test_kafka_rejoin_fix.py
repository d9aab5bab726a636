"""common.kafka.apply_rejoin_fix on a real kafka-python ConsumerCoordinator (no broker needed)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kafka import KafkaConsumer
from kafka.coordinator.consumer import ConsumerCoordinator

from common.kafka import _library_need_rejoin, apply_rejoin_fix


@pytest.fixture
def coordinator() -> Iterator[ConsumerCoordinator]:
    """The coordinator of a subscribed consumer, caught mid-join the way kafka-python 3.0.12 leaves it:
    a JoinGroup in flight (`rejoining`), while its own assignment made the metadata current again."""
    consumer = KafkaConsumer(
        bootstrap_servers=["127.0.0.1:1"], group_id="g", api_version=(2, 5), enable_auto_commit=False
    )  # api_version given: nothing is sent anywhere
    try:
        consumer.subscribe(["frames"])
        coordinator = consumer._coordinator
        coordinator.rejoining = True
        coordinator.rejoin_needed = False
        coordinator._joined_subscription = set(coordinator._subscription.subscription)
        coordinator._assignment_snapshot = coordinator._metadata_snapshot
        yield coordinator
    finally:
        consumer.close(autocommit=False)


def test_the_library_drops_a_join_in_progress(coordinator: ConsumerCoordinator) -> None:
    assert _library_need_rejoin(coordinator) is False  # the upstream behaviour the fix is for


def test_the_fix_keeps_a_join_in_progress_needed_and_is_idempotent(coordinator: ConsumerCoordinator) -> None:
    apply_rejoin_fix()
    apply_rejoin_fix()
    assert coordinator.need_rejoin() is True
    coordinator.rejoining = False  # the join completed: the library decides again
    assert coordinator.need_rejoin() is False
    coordinator.rejoin_needed = True
    assert coordinator.need_rejoin() is True
    assert ConsumerCoordinator.need_rejoin.library_need_rejoin is _library_need_rejoin  # wraps the original once
