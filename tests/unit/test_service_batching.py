"""Micro-batching and the pause/resume decision of the poll loop."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from worker.stream.batching import MicroBatcher, backpressure


def test_batch_closes_when_full():
    batcher = MicroBatcher(max_items=3, max_wait_s=10.0)
    for i in range(4):
        batcher.add(i, now=0.0)
    assert batcher.ready(0.0) and batcher.time_left(0.0) == 0.0
    assert batcher.take() == [0, 1, 2]
    assert len(batcher) == 1 and not batcher.ready(0.0)


def test_batch_closes_after_max_wait_from_its_first_item():
    batcher = MicroBatcher(max_items=8, max_wait_s=0.05)
    assert batcher.time_left(0.0) is None and not batcher.ready(0.0)
    batcher.add("a", now=1.00)
    batcher.add("b", now=1.04)
    assert not batcher.ready(1.04)
    assert abs(batcher.time_left(1.04) - 0.01) < 1e-9
    assert batcher.ready(1.05)
    assert batcher.take() == ["a", "b"]
    assert batcher.time_left(2.0) is None


def test_zero_wait_hands_over_at_once():
    batcher = MicroBatcher(max_items=8, max_wait_s=0)
    batcher.add(1, now=5.0)
    assert batcher.ready(5.0)


@given(st.lists(st.integers(), max_size=50), st.integers(1, 9))
def test_take_preserves_order_and_size_limit(items, size):
    batcher = MicroBatcher(max_items=size, max_wait_s=0.0)
    for item in items:
        batcher.add(item, now=0.0)
    out = []
    while len(batcher):
        batch = batcher.take()
        assert 1 <= len(batch) <= size
        out.extend(batch)
    assert out == items


def test_backpressure_has_hysteresis():
    assert backpressure(waiting=63, limit=64, paused=False) is None
    assert backpressure(waiting=64, limit=64, paused=False) == "pause"
    assert backpressure(waiting=40, limit=64, paused=True) is None  # still above half
    assert backpressure(waiting=32, limit=64, paused=True) == "resume"
    assert backpressure(waiting=0, limit=64, paused=False) is None
    assert backpressure(waiting=1, limit=1, paused=False) == "pause"
    assert backpressure(waiting=0, limit=1, paused=True) == "resume"
