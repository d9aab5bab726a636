"""Every linewatch metric instrument (OpenTelemetry), in one place; common/telemetry.py sets up the providers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from opentelemetry.metrics import Counter, Histogram, Meter

# Latency buckets in seconds: from a few milliseconds (one stage on a GPU) to half a minute
# (a frame stuck behind a rebalance).
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
# Clock skew in seconds, both signs: a camera's clock can run ahead of the broker's or behind it.
SKEW_BUCKETS_S = (-300.0, -60.0, -10.0, -2.0, -0.5, 0.0, 0.5, 2.0, 10.0, 60.0, 300.0)


@dataclass(frozen=True)
class Metrics:
    """Every linewatch instrument, created once; the processes only record.

    Attribute conventions (keep the cardinality low: never frame ids or offsets):
    - `frames_processed`: `outcome` = ok | anomalous | skipped | dead_letter
    - `frames_produced`: `outcome` = sent | refused | failed
    - `camera_frames_missed`: `camera` = camera id (frames the camera's counter skipped)
    - `stage_duration`: `stage` = decode | foreground | tiling | score | pixel_map | encode | publish | checkpoint ...
    - `dead_letters`: `stage`, `error_type`
    - `cache_hits` / `cache_misses`: `kind` = text | image ..., `layer` = lru | redis
    - `consumer_lag`: `topic`, `partition`
    - `control_records`: `outcome` = applied | deleted | refused, `reason` (refusals only)
    - `scope_above_threshold` / `scope_raw_score_p95`: `scope` = camera:<id>/object:<name>
    - `redis_values_refused`: `what` = embedding | bank | pool, `reason` = unsigned | bad_signature | too_large
      | corrupt | wrong_shape
    - `clock_skew`: seconds the camera's clock runs behind the broker's (negative: ahead)
    """

    frames_processed: Counter
    frames_produced: Counter
    camera_frames_missed: Counter
    end_to_end_latency: Histogram
    stage_duration: Histogram
    batch_size: Histogram
    dead_letters: Counter
    cache_hits: Counter
    cache_misses: Counter
    consumer_lag: Any  # synchronous Gauge from meter.create_gauge (its class is not public API yet)
    control_records: Counter
    scope_above_threshold: Any  # Gauge: fraction of the scope's recent frames at or above its threshold
    scope_raw_score_p95: Any  # Gauge: rolling p95 of the scope's recent raw scores (drift)
    few_shot_memory: Any  # Gauge: bytes the worker holds in reference banks and rolling pools
    redis_values_refused: Counter
    clock_skew: Histogram

    @classmethod
    def create(cls, meter: Meter) -> Metrics:
        return cls(
            frames_processed=meter.create_counter(
                "linewatch.frames.processed", unit="{frame}", description="Frames the worker finished, by outcome"
            ),
            frames_produced=meter.create_counter(
                "linewatch.frames.produced", unit="{frame}", description="Frames the producer handled, by outcome"
            ),
            camera_frames_missed=meter.create_counter(
                "linewatch.camera.frames.missed",
                unit="{frame}",
                description="Frames a camera's frame counter skipped (lost on the wire or in the camera)",
            ),
            end_to_end_latency=meter.create_histogram(
                "linewatch.frame.latency",
                unit="s",
                description="From frame capture to its result acknowledged by the broker",
                explicit_bucket_boundaries_advisory=LATENCY_BUCKETS_S,
            ),
            stage_duration=meter.create_histogram(
                "linewatch.stage.duration",
                unit="s",
                description="Time spent in one processing stage, per batch or frame",
                explicit_bucket_boundaries_advisory=LATENCY_BUCKETS_S,
            ),
            batch_size=meter.create_histogram(
                "linewatch.batch.size",
                unit="{frame}",
                description="Frames per inference micro-batch",
                explicit_bucket_boundaries_advisory=BATCH_SIZE_BUCKETS,
            ),
            dead_letters=meter.create_counter(
                "linewatch.dead_letters", unit="{message}", description="Messages sent to the dead-letter topic"
            ),
            cache_hits=meter.create_counter(
                "linewatch.cache.hits", unit="{lookup}", description="Embedding cache lookups answered from cache"
            ),
            cache_misses=meter.create_counter(
                "linewatch.cache.misses", unit="{lookup}", description="Embedding cache lookups that had to compute"
            ),
            consumer_lag=meter.create_gauge(
                "linewatch.consumer.lag",
                unit="{message}",
                description="End offset minus committed/position offset, per assigned partition",
            ),
            control_records=meter.create_counter(
                "linewatch.control.records", unit="{record}", description="Control records applied, deleted, refused"
            ),
            scope_above_threshold=meter.create_gauge(
                "linewatch.scope.above_threshold_rate",
                unit="1",
                description="Fraction of the scope's recent frames (rolling window) at or above its threshold",
            ),
            scope_raw_score_p95=meter.create_gauge(
                "linewatch.scope.raw_score_p95",
                unit="1",
                description="95th percentile of the scope's recent raw scores (rolling window)",
            ),
            few_shot_memory=meter.create_gauge(
                "linewatch.fewshot.memory",
                unit="By",
                description="Bytes held in memory by the worker's reference banks (kind=banks) and rolling pools (kind=pools)",
            ),
            redis_values_refused=meter.create_counter(
                "linewatch.redis.values_refused",
                unit="{value}",
                description="Values read from Redis and refused (unsigned, too large, wrong shape ...), by what and reason",
            ),
            clock_skew=meter.create_histogram(
                "linewatch.clock.skew",
                unit="s",
                description="Broker record time minus camera capture time of each frame (transit plus clock skew)",
                explicit_bucket_boundaries_advisory=SKEW_BUCKETS_S,
            ),
        )

    # Small conveniences so call sites stay one line.

    def frame_done(self, outcome: str, latency_s: float | None = None) -> None:
        self.frames_processed.add(1, {"outcome": outcome})
        if latency_s is not None and latency_s >= 0:
            self.end_to_end_latency.record(latency_s, {"outcome": outcome})

    def stage(self, stage: str, seconds: float) -> None:
        self.stage_duration.record(seconds, {"stage": stage})

    def dead_letter(self, stage: str, error_type: str) -> None:
        self.dead_letters.add(1, {"stage": stage, "error_type": error_type})

    def cache_lookup(self, hit: bool, kind: str, layer: str = "redis", count: int = 1) -> None:
        (self.cache_hits if hit else self.cache_misses).add(count, {"kind": kind, "layer": layer})

    def lag(self, topic: str, partition: int, lag: int) -> None:
        self.consumer_lag.set(max(0, int(lag)), {"topic": topic, "partition": str(partition)})

    def control_record(self, outcome: str, reason: str | None = None) -> None:
        self.control_records.add(1, {"outcome": outcome} | ({"reason": reason} if reason else {}))

    def scope_drift(self, scope: str, above_rate: float, raw_p95: float) -> None:
        self.scope_above_threshold.set(above_rate, {"scope": scope})
        self.scope_raw_score_p95.set(raw_p95, {"scope": scope})

    def redis_value_refused(self, what: str, reason: str) -> None:
        self.redis_values_refused.add(1, {"what": what, "reason": reason})

    def few_shot_held(self, held: dict[str, int]) -> None:
        for kind, nbytes in held.items():
            self.few_shot_memory.set(int(nbytes), {"kind": kind})
