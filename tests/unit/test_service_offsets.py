"""OffsetTracker: commits never pass an unacknowledged message, whatever the ack order."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from worker.stream.offsets import OffsetTracker


def test_commits_the_contiguous_done_prefix():
    tracker = OffsetTracker()
    for offset in (5, 6, 7, 8):
        tracker.add("p0", offset)
    assert tracker.committable() == {}
    tracker.done("p0", 6)
    tracker.done("p0", 8)
    assert tracker.committable() == {}  # 5 is still open
    tracker.done("p0", 5)
    assert tracker.committable() == {"p0": 7}
    tracker.committed({"p0": 7})
    assert tracker.open_count() == 2 and tracker.first_open("p0") == 7
    assert tracker.committable() == {}  # nothing new: no repeated commit
    tracker.done("p0", 7)
    assert tracker.committable() == {"p0": 9}


def test_gaps_in_offsets_do_not_stall_a_partition():
    tracker = OffsetTracker()
    for offset in (10, 12, 15):  # compaction / transaction markers leave holes
        tracker.add("p", offset)
        tracker.done("p", offset)
    assert tracker.committable() == {"p": 16}


def test_partitions_are_independent_and_can_be_selected():
    tracker = OffsetTracker()
    tracker.add("a", 0)
    tracker.add("b", 0)
    tracker.add("b", 1)
    tracker.done("a", 0)
    tracker.done("b", 1)
    assert tracker.committable() == {"a": 1}
    assert tracker.committable(["b"]) == {}
    assert tracker.committable(["a", "unknown"]) == {"a": 1}


def test_forget_drops_a_revoked_partition_and_late_acks_are_ignored():
    tracker = OffsetTracker()
    tracker.add("p", 0)
    tracker.add("p", 1)
    tracker.forget(["p"])
    tracker.done("p", 0)  # a result of the old owner acknowledged late
    assert tracker.committable() == {} and tracker.open_count() == 0
    tracker.add("p", 0)  # re-assigned: consumption starts again at the committed offset
    assert tracker.committable() == {}


def test_a_rewind_forgets_what_comes_again():
    tracker = OffsetTracker()
    for offset in (3, 4, 5, 6):
        tracker.add("p", offset)
    tracker.done("p", 3)
    tracker.done("p", 5)
    assert tracker.first_open("p") == 4
    tracker.add("p", 4)  # a seek back to 4: 4, 5 and 6 are consumed again
    assert tracker.open_count("p") == 2 and tracker.first_open("p") == 4
    tracker.add("p", 5)
    tracker.done("p", 4)
    assert tracker.committable() == {"p": 5}  # 5 is open again, its earlier ack is forgotten
    assert tracker.first_open("unknown") is None


@given(
    count=st.integers(min_value=1, max_value=40),
    data=st.data(),
)
def test_any_ack_order_never_commits_past_an_open_message(count, data):
    offsets = sorted(data.draw(st.sets(st.integers(0, 500), min_size=count, max_size=count)))
    acks = data.draw(st.permutations(offsets))
    commit_points = data.draw(st.sets(st.integers(0, len(acks))))
    tracker = OffsetTracker()
    for offset in offsets:
        tracker.add("p", offset)
    acked: set[int] = set()
    committed = None
    for step, offset in enumerate(acks, start=1):
        tracker.done("p", offset)
        acked.add(offset)
        if step in commit_points:
            ready = tracker.committable().get("p")
            if ready is not None:
                assert committed is None or ready > committed
                # every consumed offset below the commit point is acknowledged
                assert all(o in acked for o in offsets if o < ready)
                tracker.committed({"p": ready})
                committed = ready
    final = tracker.committable().get("p", committed)
    assert final == offsets[-1] + 1
