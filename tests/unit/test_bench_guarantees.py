"""The exactly-once vs at-least-once bench: round order and what the cost figures are made of."""

from __future__ import annotations

import pytest

from worker.bench.guarantees import AT_LEAST_ONCE, EXACTLY_ONCE, add_cost, interleaved, summary


def test_rounds_alternate_so_a_drifting_machine_weighs_on_both_guarantees():
    order = interleaved(3)
    assert order == [AT_LEAST_ONCE, EXACTLY_ONCE, EXACTLY_ONCE, AT_LEAST_ONCE, AT_LEAST_ONCE, EXACTLY_ONCE]
    # every guarantee runs as often, and each pair holds one of each
    assert order.count(AT_LEAST_ONCE) == order.count(EXACTLY_ONCE) == 3
    assert all({order[i], order[i + 1]} == {AT_LEAST_ONCE, EXACTLY_ONCE} for i in range(0, 6, 2))


def _round(guarantee: str, frames_per_s: float, paced: list[float]) -> dict:
    return {
        "guarantee": guarantee,
        "frames_per_s": frames_per_s,
        "complete": True,
        "worker_counters": {"checkpoints": 4, "checkpoint_ms": 40 * len(paced), "consumed": 24},
        "paced": {"frames": len(paced), "results": len(paced), "arrival_latencies_ms": paced},
    }


def test_cost_compares_medians_and_each_pair_of_neighbouring_rounds():
    rounds = [
        _round(AT_LEAST_ONCE, 10.0, [100.0, 110.0]),
        _round(EXACTLY_ONCE, 9.0, [120.0, 130.0]),
        _round(EXACTLY_ONCE, 8.0, [125.0, 500.0]),
        _round(AT_LEAST_ONCE, 8.0, [105.0, 115.0]),
        _round(AT_LEAST_ONCE, 12.0, [100.0, 100.0]),
        _round(EXACTLY_ONCE, 12.6, [120.0, 120.0]),
    ]
    alo, eo = summary(rounds, 8, AT_LEAST_ONCE), summary(rounds, 8, EXACTLY_ONCE)
    assert alo["frames_per_s"] == 10.0 and eo["frames_per_s"] == 9.0  # medians of 10, 8, 12 and 9, 8, 12.6
    assert eo["frames_per_s_rounds"] == [9.0, 8.0, 12.6]
    assert eo["checkpoint_ms_mean"] == 20.0 and eo["frames_per_checkpoint"] == 6.0  # 3 x 80 ms, 3 x 24 frames / 12
    assert alo["paced_latency_ms_p50"] == pytest.approx(102.5) and eo["paced_latency_ms_p50"] == pytest.approx(122.5)
    add_cost(eo, alo, rounds)
    assert eo["throughput_cost_pct"] == 10.0
    # pairs: (10 vs 9), (8 vs 8) and (12 vs 12.6): exactly-once came out faster in the last one
    assert eo["throughput_cost_pct_pairs"] == [10.0, 0.0, -5.0]
    assert eo["added_latency_ms_p50"] == pytest.approx(20.0)
    assert eo["added_latency_ms_p99"] > 300  # one slow paced frame shows in the tail, not the median


def test_a_round_with_a_paced_frame_missing_is_not_complete():
    rounds = [_round(AT_LEAST_ONCE, 10.0, [100.0])]
    rounds[0]["paced"]["results"] = 0
    assert not summary(rounds, 1, AT_LEAST_ONCE)["complete"]
