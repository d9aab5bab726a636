"""Checkpoint: per partition, where the work not done begins, done-through and committed offsets."""

from __future__ import annotations

from kafka import TopicPartition

from common.kafka import BrokerReachability
from worker.stream.offsets import Checkpoint

P0, P1 = TopicPartition("frames", 0), TopicPartition("frames", 1)


class RecordingConsumer:
    def __init__(self) -> None:
        self.commits: list[dict] = []
        self.seeks: list[tuple] = []

    def commit(self, offsets, **_options) -> None:
        self.commits.append({tp: meta.offset for tp, meta in offsets.items()})

    def commit_async(self, offsets) -> None:
        self.commit(offsets)

    def seek(self, partition, offset) -> None:
        self.seeks.append((partition, offset))


def checkpoint_with_consumer() -> tuple[Checkpoint, RecordingConsumer]:
    checkpoint, consumer = Checkpoint(), RecordingConsumer()
    checkpoint.consumer = consumer
    return checkpoint, consumer


def test_done_through_is_committed_once_and_a_rewind_reads_from_the_first_message_not_done():
    checkpoint, consumer = checkpoint_with_consumer()
    checkpoint.assign({P0, P1})
    for offset in (10, 11, 12):
        checkpoint.consumed(P0, offset)
    checkpoint.consumed(P1, 5)
    checkpoint.done_through({P0: 11})  # 10 is done; 11 and 12 are still in the pipeline
    assert checkpoint.commit() == {P0: 11} and consumer.commits == [{P0: 11}]
    assert checkpoint.commit() == {}  # nothing new: no repeated commit
    assert checkpoint.rewind() == {P0: 11, P1: 5}
    assert set(consumer.seeks) == {(P0, 11), (P1, 5)}


def test_transaction_commits_move_the_resume_point_and_never_back():
    checkpoint, consumer = checkpoint_with_consumer()
    checkpoint.assign({P0})
    checkpoint.consumed(P0, 0)
    checkpoint.committed({P0: 4})  # a transaction committed results and offsets through 3
    checkpoint.committed({P0: 2})  # a late, older report changes nothing
    assert checkpoint.committed_offsets() == {P0: 4}
    assert checkpoint.commit() == {}  # exactly-once: nothing left for the consumer to commit
    assert checkpoint.rewind() == {P0: 4}


def test_a_revocation_commits_what_is_done_and_a_partition_coming_straight_back_resumes_there():
    checkpoint, consumer = checkpoint_with_consumer()
    checkpoint.assign({P0, P1})
    generation = checkpoint.generation
    checkpoint.consumed(P0, 10)
    checkpoint.done_through({P0: 12})
    checkpoint.consumed(P1, 5)
    assert checkpoint.revoke({P0, P1}, commit=True) == {P0: 12}
    assert consumer.commits == [{P0: 12}] and checkpoint.epoch(P0) == checkpoint.epoch(P1) == 1  # older work is stale
    assert checkpoint.generation == generation  # a revocation drops only the revoked partitions' work
    assert checkpoint.assigned() == set()
    assert checkpoint.assign({P1}) == {P1: 5}  # came back: read again from its first message not done
    assert checkpoint.assign({P0}) == {}  # once, on the assignment right after the revocation
    checkpoint.done_through({P0: 99})  # a late report for a partition that was away meanwhile
    assert checkpoint.commit([P0]) == {P0: 99}


def test_a_lost_partition_commits_nothing_and_a_join_means_the_broker_answered():
    reachability = BrokerReachability()
    checkpoint = Checkpoint(reachability=reachability)
    assert not reachability.reachable
    checkpoint.assign({P0})
    assert reachability.reachable
    checkpoint.consumed(P0, 0)
    checkpoint.done(P0, 0)
    assert checkpoint.revoke({P0}, commit=False) == {}
    assert checkpoint.committed_offsets() == {}
    assert checkpoint.commit() == {}  # nothing assigned, nothing to commit: no consumer needed
    checkpoint.done_through({P0: 1})  # not assigned: ignored
    assert checkpoint.commit([P0]) == {}
