"""Checkpoint's rebalance bookkeeping (no consumer attached: nothing is sent anywhere)."""

from __future__ import annotations

from kafka import TopicPartition

from common.kafka import BrokerReachability
from worker.stream.offsets import Checkpoint

P0, P1 = TopicPartition("frames", 0), TopicPartition("frames", 1)


def test_a_revocation_keeps_what_is_done_drops_the_rest_and_rewinds_a_returning_partition():
    checkpoint = Checkpoint()
    checkpoint.assign({P0, P1})
    generation = checkpoint.consumed(P0, 10)
    for offset in (11, 12):
        checkpoint.consumed(P0, offset)
    checkpoint.consumed(P1, 5)
    checkpoint.done(P0, 10)
    checkpoint.done(P0, 12)  # 11 is still open: 12 cannot be committed yet
    assert checkpoint.current(P0, generation)

    offsets, dropped = checkpoint.revoke({P0}, commit=True)

    assert offsets == {P0: 11} and dropped == 2  # 11 and 12 go to the next owner
    assert checkpoint.committed_offsets() == {}  # no consumer attached: no commit was sent
    assert not checkpoint.current(P0, generation)  # work polled before the revocation is stale
    assert checkpoint.current(P1, 0) and checkpoint.assigned() == {P1}
    assert checkpoint.tracker.open_count(P0) == 0 and checkpoint.tracker.open_count(P1) == 1
    assert checkpoint.assign({P0}) == {P0: 11}  # it came back: read again from the first dropped one
    assert checkpoint.assign({P0}) == {}  # once


def test_a_lost_partition_commits_nothing_and_a_join_means_the_broker_answered():
    reachability = BrokerReachability()
    checkpoint = Checkpoint(reachability=reachability)
    assert not reachability.reachable
    checkpoint.assign({P0})
    assert reachability.reachable
    checkpoint.consumed(P0, 0)
    checkpoint.done(P0, 0)
    assert checkpoint.revoke({P0}, commit=False) == ({}, 1)
    assert checkpoint.committed_offsets() == {}
    assert checkpoint.commit() == {}  # nothing assigned, nothing to commit: no consumer needed
    reachability.error()
    assert not reachability.reachable
