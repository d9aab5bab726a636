"""The scale bench's arithmetic: rebalance pauses, backlog rates, latency percentiles."""

from __future__ import annotations

import pytest

from worker.bench.scale.stats import Arrival, drain_rate, latency_ms, owners, pause, stall_s


def steady(partition: int, worker: str, start: float, end: float, every: float = 0.25, gap=None) -> list[Arrival]:
    """Results every `every` s, none inside `gap` = (from, to)."""
    out, t = [], start
    while t <= end:
        if gap is None or not gap[0] < t < gap[1]:
            out.append(Arrival(partition, worker, captured=t - 0.2, arrived=t))
        t = round(t + every, 6)
    return out


def test_stall_is_the_longest_gap_beyond_the_usual_cadence():
    times = [a.arrived for a in steady(0, "w0", 0.0, 20.0, gap=(10.0, 12.0))]
    assert stall_s(times, event_at=9.0, until=20.0) == pytest.approx(2.0 - 0.25, abs=1e-6)
    assert stall_s([a.arrived for a in steady(0, "w0", 0.0, 20.0)], 9.0, 20.0) == pytest.approx(0.0)


def test_a_partition_still_silent_counts_up_to_the_end():
    times = [a.arrived for a in steady(0, "w0", 0.0, 10.0)]
    assert stall_s(times, event_at=9.0, until=15.0) == pytest.approx(5.0 - 0.25, abs=1e-6)


def test_pause_separates_the_events_worker_from_the_others():
    arrivals = (
        steady(0, "w0", 0.0, 20.0)  # untouched
        + steady(1, "w1", 0.0, 20.0, gap=(10.0, 10.9))  # kept by w1, paused 0.9 s
        + steady(2, "w1", 0.0, 10.0)
        + steady(2, "w2", 13.0, 20.0)  # moved to the joining w2 after a 3 s gap
    )
    result = pause(sorted(arrivals, key=lambda a: a.arrived), partitions=3, worker="w2", event_at=9.5, until=20.0)
    assert result.moved == 1
    assert result.affected_max_s == pytest.approx(3.0 - 0.25, abs=0.01)
    assert result.others_max_s == pytest.approx(1.0 - 0.25, abs=0.01)
    assert owners(arrivals, 18.0, 20.0) == {0: "w0", 1: "w1", 2: "w2"}


def test_drain_rate_can_leave_out_the_fill_and_the_tail():
    body = [Arrival(0, "w0", 0.0, 1.0 + i / 100) for i in range(100)]  # 100/s
    tail = [Arrival(0, "w0", 0.0, 3.0 + i) for i in range(10)]  # a slow tail
    assert drain_rate(body) == pytest.approx(100.0, rel=0.02)
    assert drain_rate(body + tail) < 20.0
    assert drain_rate(body + tail, trim=0.1) == pytest.approx(100.0, rel=0.05)
    assert drain_rate([]) == 0.0


def test_latency_percentiles_in_milliseconds():
    arrivals = [Arrival(0, "w0", captured=0.0, arrived=0.1 * (i + 1)) for i in range(100)]
    result = latency_ms(arrivals)
    assert result["p50"] == pytest.approx(5050.0, rel=0.01) and result["p99"] == pytest.approx(9901.0, rel=0.01)
    assert latency_ms([]) == {"p50": None, "p99": None}
