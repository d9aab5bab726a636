"""`bench --through-kafka` end to end against the real broker and Redis (tiny model profile)."""
from __future__ import annotations

import pytest
from pydantic import SecretStr

from common.settings import KafkaSettings, LinewatchSettings, ModelSettings, RedisSettings, TelemetrySettings
from worker.bench_kafka import run_kafka_bench

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]


def test_the_kafka_bench_gets_every_result_back_and_splits_the_cost(kafka_broker, redis_server):
    settings = LinewatchSettings(
        kafka=KafkaSettings(bootstrap_servers=kafka_broker.bootstrap),
        redis=RedisSettings(url=SecretStr(redis_server.url), key_prefix="test-bench"),
        models=ModelSettings(profile="tiny", foreground="none"),
        telemetry=TelemetrySettings(enabled=False),
    )
    report = run_kafka_bench(settings, frames=8, batch=4, width=64, height=64)

    backlog = report["kafka_backlog"]
    assert backlog["complete"] and backlog["results"] == 8 and backlog["frames_per_s"] > 0
    assert report["in_process"]["frames"] == report["in_process_after_kafka"]["frames"] == 8
    assert backlog["overhead_ms_per_frame"] == pytest.approx(
        backlog["ms_per_frame"] - backlog["in_process_ms_per_frame_mean"], abs=0.01)
    assert {"lw-inference", "lw-bench-worker"} <= backlog["cpu_ms_per_frame_by_thread"].keys()
    assert set(report["kafka_only_steps_cpu_ms"]) == {"parse_and_decode", "build_result", "serialise_and_fit"}
    assert all(ms > 0 for ms in report["kafka_only_steps_cpu_ms"].values())
    paced = report["kafka_paced_one_in_flight"]
    assert paced["results"] == paced["frames"] == 8
    assert report["worker_counters"]["results_ok"] + report["worker_counters"].get("results_anomalous", 0) == 16
    assert report["worker_stopped_cleanly"]
    assert report["embedding_cache"] == "RedisEmbeddingCache"
