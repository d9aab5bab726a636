"""`bench --through-kafka` end to end against the real broker and Redis (tiny model profile)."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from common.settings import KafkaSettings, LinewatchSettings, ModelSettings, RedisSettings, TelemetrySettings
from worker.bench.guarantees import run_guarantee_bench
from worker.bench.kafka_path import run_kafka_bench

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]


def bench_settings(kafka_broker, redis_server, key_prefix: str) -> LinewatchSettings:
    return LinewatchSettings(
        kafka=KafkaSettings(bootstrap_servers=kafka_broker.bootstrap),
        redis=RedisSettings(url=SecretStr(redis_server.url), key_prefix=key_prefix),
        models=ModelSettings(profile="tiny", foreground="none"),
        telemetry=TelemetrySettings(enabled=False),
    )


def test_the_kafka_bench_gets_every_result_back_and_splits_the_cost(kafka_broker, redis_server):
    settings = bench_settings(kafka_broker, redis_server, "test-bench")
    report = run_kafka_bench(settings, frames=8, batch=4, width=64, height=64, rounds=2)

    rounds = report["kafka_backlog_rounds"]
    assert len(rounds) == 2 and len(report["in_process_runs"]) == 3  # in-process before, between and after
    for index, backlog in enumerate(rounds):  # each round's worker drained exactly that round's backlog
        assert backlog["complete"] and backlog["results"] == 8 and backlog["frames_per_s"] > 0
        assert sum(backlog["verdicts"].values()) == 8
        # the in-process reference of a round lies between the runs measured before and after it
        neighbours = [report["in_process_runs"][i]["ms_per_frame"] for i in (index, index + 1)]
        assert min(neighbours) - 0.01 <= backlog["in_process_ms_per_frame_around"] <= max(neighbours) + 0.01
        assert {"lw-inference", "lw-publish", "lw-bench-worker"} <= backlog["cpu_ms_per_frame_by_thread"].keys()
        # the fixed costs apart: the first result needs a whole batch inferred, the last one its way back;
        # fill, steady part and drain are consecutive stretches of the round, so they fit in its wall time
        assert backlog["fill_ms"] > 0 and backlog["drain_ms"] > 0 and backlog["steady_ms_per_frame"] > 0
        phases_ms = backlog["fill_ms"] + backlog["steady_ms_per_frame"] * (8 - 4) + backlog["drain_ms"]
        assert phases_ms <= backlog["wall_s"] * 1000 + 1.0, backlog
        # a result is built before it arrives: per-frame latencies are ordered the same way
        built, arrived = backlog["latency_ms_captured_to_processed"], backlog["latency_ms_captured_to_arrival"]
        assert 0 < built["p50"] <= arrived["p50"] and built["max"] <= arrived["max"]
    overheads = report["overhead_ms_per_frame_rounds"]
    assert len(overheads) == 2 and min(overheads) <= report["overhead_ms_per_frame_median"] <= max(overheads)
    kafka = [b["ms_per_frame"] for b in rounds]
    assert min(kafka) <= report["kafka_ms_per_frame_median"] <= max(kafka)
    assert all(run["frames"] == 8 for run in report["in_process_runs"])
    assert set(report["kafka_only_steps_cpu_ms"]) == {"parse_and_decode", "build_result", "serialise_and_fit"}
    assert all(ms > 0 for ms in report["kafka_only_steps_cpu_ms"].values())
    paced = report["kafka_paced_one_in_flight"]
    assert paced["results"] == paced["frames"] == 8
    # the last round's worker scored its backlog and the paced frames, nothing else
    counters = report["worker_counters_last_round"]
    assert counters["results_ok"] + counters.get("results_anomalous", 0) == 16
    assert report["worker_stopped_cleanly"]
    assert report["embedding_cache"] == "RedisEmbeddingCache"


def test_the_guarantee_bench_interleaves_both_guarantees_on_one_broker(kafka_broker, redis_server):
    settings = bench_settings(kafka_broker, redis_server, "test-bench-guarantees")
    report = run_guarantee_bench(settings, frames=8, batches=[4], width=64, height=64, rounds=1)

    at_least_once, exactly_once = report["rows"]
    assert (at_least_once["guarantee"], exactly_once["guarantee"]) == ("at-least-once", "exactly-once")
    assert "the first one unmeasured" in report["method"]
    for row in report["rows"]:  # one measured backlog round and one paced run each, every result back
        assert row["batch"] == 4 and row["complete"] and len(row["frames_per_s_rounds"]) == 1
        assert row["frames_per_s"] > 0 and 0 < row["paced_latency_ms_p50"] <= row["paced_latency_ms_p99"]
        # 8 backlog frames in 2 batches of 4, then 8 paced frames of 1: at most 10 checkpoints, each timed
        assert 0.8 <= row["frames_per_checkpoint"] <= 16 and row["checkpoint_ms_mean"] >= 0
    fast, slow = at_least_once["frames_per_s"], exactly_once["frames_per_s"]
    assert exactly_once["throughput_cost_pct"] == pytest.approx(100 * (fast - slow) / fast, abs=0.05)
    assert exactly_once["throughput_cost_pct_pairs"] == [exactly_once["throughput_cost_pct"]]
