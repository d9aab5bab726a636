"""`bench --through-kafka` end to end against the real broker and Redis (tiny model profile)."""
from __future__ import annotations

import pytest
from pydantic import SecretStr

from common.settings import KafkaSettings, LinewatchSettings, ModelSettings, RedisSettings, TelemetrySettings
from worker.bench.kafka_path import run_kafka_bench

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]


def test_the_kafka_bench_gets_every_result_back_and_splits_the_cost(kafka_broker, redis_server):
    settings = LinewatchSettings(
        kafka=KafkaSettings(bootstrap_servers=kafka_broker.bootstrap),
        redis=RedisSettings(url=SecretStr(redis_server.url), key_prefix="test-bench"),
        models=ModelSettings(profile="tiny", foreground="none"),
        telemetry=TelemetrySettings(enabled=False),
    )
    report = run_kafka_bench(settings, frames=8, batch=4, width=64, height=64, rounds=2)

    rounds = report["kafka_backlog_rounds"]
    assert len(rounds) == 2 and len(report["in_process_runs"]) == 3  # in-process before, between and after
    for index, backlog in enumerate(rounds):  # each round's worker drained exactly that round's backlog
        assert backlog["complete"] and backlog["results"] == 8 and backlog["frames_per_s"] > 0
        around = (report["in_process_runs"][index]["ms_per_frame"] + report["in_process_runs"][index + 1]["ms_per_frame"]) / 2
        assert backlog["in_process_ms_per_frame_around"] == pytest.approx(around, abs=0.01)
        assert backlog["overhead_ms_per_frame"] == pytest.approx(backlog["ms_per_frame"] - around, abs=0.02)
        assert {"lw-inference", "lw-publish", "lw-bench-worker"} <= backlog["cpu_ms_per_frame_by_thread"].keys()
        # the fixed costs apart: the first result needs a whole batch inferred, the last one its way back
        assert backlog["fill_ms"] > 0 and backlog["drain_ms"] > 0 and backlog["steady_ms_per_frame"] > 0
        assert backlog["steady_overhead_ms_per_frame"] == pytest.approx(backlog["steady_ms_per_frame"] - around, abs=0.02)
    assert report["overhead_ms_per_frame_median"] == pytest.approx(
        sum(b["overhead_ms_per_frame"] for b in rounds) / 2, abs=0.01)  # the median of two is their mean
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
