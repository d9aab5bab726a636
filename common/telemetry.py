"""OpenTelemetry setup shared by the producer and the worker.

`setup_telemetry(service_name)` builds one TracerProvider and one MeterProvider.
Which exporters they feed follows the standard OpenTelemetry environment variables;
the SDK and the exporters read everything else themselves:

- `OTEL_TRACES_EXPORTER`, `OTEL_METRICS_EXPORTER`: comma-separated list of
  `otlp`, `console`, `prometheus` (metrics only) or `none`. Both default to `none`
  here (the OpenTelemetry default is `otlp`) so tests and laptops stay quiet.
  Names are resolved through the exporters' registered entry points, exactly as
  `opentelemetry-instrument` does; `otlp` means OTLP over HTTP/protobuf (the one
  OTLP transport installed) unless `OTEL_EXPORTER_OTLP[_TRACES|_METRICS]_PROTOCOL`
  says `grpc`.
- `OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_HEADERS`, ... : read by the OTLP exporters.
- `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`: read by `Resource.create()`; an
  explicit `OTEL_SERVICE_NAME` wins over the name the code passes.
- `OTEL_TRACES_SAMPLER[_ARG]`, `OTEL_BSP_*`, `OTEL_METRIC_EXPORT_INTERVAL`,
  `OTEL_SDK_DISABLED`: read by the SDK.
- `OTEL_PROPAGATORS`: read by `opentelemetry.propagate` (default W3C tracecontext + baggage).
- `OTEL_EXPORTER_PROMETHEUS_HOST` / `_PORT`: with `OTEL_METRICS_EXPORTER=prometheus`
  the Prometheus exporter serves its own scrape endpoint there (default localhost:9464).

Independently of those variables every `Telemetry` also keeps a pull-only
`PrometheusMetricReader` on a private registry, so a process can serve `/metrics`
itself with `telemetry.prometheus_text()` (it costs nothing until scraped).

Trace context crosses Kafka in the record headers (`list[tuple[str, bytes]]`):
`inject_headers` on the producing side, `extract_context` on the consuming side.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, ClassVar

from opentelemetry import propagate
from opentelemetry import trace as trace_api
from opentelemetry.context import Context
from opentelemetry.metrics import Counter, Histogram, Meter
from opentelemetry.propagators.textmap import Getter, Setter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from common.schemas import TRACEPARENT_HEADER

try:  # pragma: no cover - import guard only
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
except ImportError:  # pragma: no cover
    PrometheusMetricReader = None  # type: ignore[assignment,misc]

HeaderList = list[tuple[str, bytes]]

INSTRUMENTATION_SCOPE = "linewatch"

_EXPORTER_ENV = {"traces": "OTEL_TRACES_EXPORTER", "metrics": "OTEL_METRICS_EXPORTER"}
_PROTOCOL_ENV = {"traces": "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "metrics": "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL"}
_ENTRY_POINT_GROUP = {"traces": "opentelemetry_traces_exporter", "metrics": "opentelemetry_metrics_exporter"}
_OTLP_BY_PROTOCOL = {"http/protobuf": "otlp_proto_http", "grpc": "otlp_proto_grpc"}

# Latency buckets in seconds: from a few milliseconds (one stage on a GPU) to half a minute
# (a frame stuck behind a rebalance).
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class TelemetryConfigError(ValueError):
    """An OTEL_*_EXPORTER value names an exporter that is not installed."""


# --------------------------------------------------------------------------- exporters


def exporter_names(signal: str) -> list[str]:
    """The exporters OTEL_TRACES_EXPORTER / OTEL_METRICS_EXPORTER ask for (empty = none)."""
    raw = os.environ.get(_EXPORTER_ENV[signal], "none")
    names = [name.strip().lower() for name in raw.split(",") if name.strip()]
    return [name for name in names if name != "none"]


def _entry_point_name(signal: str, name: str) -> str:
    if name != "otlp":
        return name
    protocol = os.environ.get(_PROTOCOL_ENV[signal]) or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf"
    return _OTLP_BY_PROTOCOL.get(protocol.strip().lower(), f"otlp ({protocol})")


def _load_exporter_class(signal: str, name: str) -> type:
    group = _ENTRY_POINT_GROUP[signal]
    wanted = _entry_point_name(signal, name)
    found = [ep for ep in entry_points(group=group) if ep.name == wanted]
    if not found:
        available = sorted({ep.name for ep in entry_points(group=group)} | {"none", "otlp"})
        raise TelemetryConfigError(
            f"{_EXPORTER_ENV[signal]}={name!r}: no installed exporter {wanted!r}; choose from {', '.join(available)}"
        )
    return found[0].load()


def _span_exporters() -> list[SpanExporter]:
    return [_load_exporter_class("traces", name)() for name in exporter_names("traces")]


def _metric_readers() -> list[MetricReader]:
    readers: list[MetricReader] = []
    for name in exporter_names("metrics"):
        cls = _load_exporter_class("metrics", name)
        if issubclass(cls, MetricReader):  # pull exporters (prometheus) are readers themselves
            readers.append(cls())
        elif issubclass(cls, MetricExporter):
            readers.append(PeriodicExportingMetricReader(cls()))  # reads OTEL_METRIC_EXPORT_INTERVAL
        else:  # pragma: no cover - a broken third-party entry point
            raise TelemetryConfigError(f"OTEL_METRICS_EXPORTER={name!r} is neither an exporter nor a reader")
    return readers


def _resource(service_name: str) -> Resource:
    resource = Resource.create()  # OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: service_name}))
    return resource


# --------------------------------------------------------------------------- metrics


@dataclass(frozen=True)
class Metrics:
    """Every linewatch instrument, created once; the processes only record.

    Attribute conventions (keep the cardinality low: never frame ids or offsets):
    - `frames_processed`: `outcome` = ok | anomalous | skipped | dead_letter
    - `frames_produced`: `outcome` = sent | refused | failed
    - `stage_duration`: `stage` = decode | foreground | tiling | score | pixel_map | encode | publish ...
    - `dead_letters`: `stage`, `error_type`
    - `cache_hits` / `cache_misses`: `kind` = text | image ..., `layer` = lru | redis
    - `consumer_lag`: `topic`, `partition`
    - `control_records`: `outcome` = applied | deleted | refused, `reason` (refusals only)
    - `scope_above_threshold` / `scope_raw_score_p95`: `scope` = camera:<id>/object:<name>
    """

    frames_processed: Counter
    frames_produced: Counter
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

    @classmethod
    def create(cls, meter: Meter) -> Metrics:
        return cls(
            frames_processed=meter.create_counter(
                "linewatch.frames.processed", unit="{frame}", description="Frames the worker finished, by outcome"
            ),
            frames_produced=meter.create_counter(
                "linewatch.frames.produced", unit="{frame}", description="Frames the producer handled, by outcome"
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


# --------------------------------------------------------------------------- setup


@dataclass
class Telemetry:
    service_name: str
    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    tracer: trace_api.Tracer
    meter: Meter
    metrics: Metrics
    prometheus_registry: CollectorRegistry | None = None
    trace_exporters: list[str] = field(default_factory=list)
    metric_exporters: list[str] = field(default_factory=list)
    span_processors: list[Any] = field(default_factory=list)
    metric_readers: list[MetricReader] = field(default_factory=list)
    _closed: bool = False

    prometheus_content_type: ClassVar[str] = CONTENT_TYPE_LATEST

    def prometheus_text(self) -> bytes:
        """Current metrics in the Prometheus text exposition format (for a /metrics handler)."""
        if self.prometheus_registry is None:
            return b""
        return generate_latest(self.prometheus_registry)

    def shutdown(self) -> None:
        """Flush and stop the exporters; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            self.tracer_provider.shutdown()
        finally:
            self.meter_provider.shutdown()


def setup_telemetry(service_name: str, *, prometheus: bool = True, set_global: bool = True) -> Telemetry:
    """Build tracer and meter providers for `service_name` with exporters chosen by OTEL_* variables.

    `prometheus=True` adds the in-process Prometheus reader behind `Telemetry.prometheus_text()`.
    `set_global=True` also installs the providers as the process-wide ones, when none was
    installed before (OpenTelemetry allows that once per process; later calls keep the first).
    Raises TelemetryConfigError when an OTEL_*_EXPORTER names an exporter that is not installed.
    """
    resource = _resource(service_name)
    span_exporters = _span_exporters()
    readers = _metric_readers()

    tracer_provider = TracerProvider(resource=resource)  # OTEL_TRACES_SAMPLER, OTEL_SDK_DISABLED
    processors = [BatchSpanProcessor(exporter) for exporter in span_exporters]  # OTEL_BSP_*
    for processor in processors:
        tracer_provider.add_span_processor(processor)

    registry: CollectorRegistry | None = None
    if prometheus and PrometheusMetricReader is not None:
        registry = CollectorRegistry(auto_describe=True)
        readers.append(PrometheusMetricReader(registry=registry))
    meter_provider = MeterProvider(resource=resource, metric_readers=readers)

    if set_global:
        _set_global_once(tracer_provider, meter_provider)

    tracer = tracer_provider.get_tracer(INSTRUMENTATION_SCOPE)
    meter = meter_provider.get_meter(INSTRUMENTATION_SCOPE)
    return Telemetry(
        service_name=str(resource.attributes.get(SERVICE_NAME, service_name)),
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        tracer=tracer,
        meter=meter,
        metrics=Metrics.create(meter),
        prometheus_registry=registry,
        trace_exporters=exporter_names("traces"),
        metric_exporters=exporter_names("metrics"),
        span_processors=processors,
        metric_readers=list(readers),
    )


_GLOBAL_SET = False


def _set_global_once(tracer_provider: TracerProvider, meter_provider: MeterProvider) -> None:
    global _GLOBAL_SET
    if _GLOBAL_SET:
        return
    from opentelemetry import metrics as metrics_api

    _GLOBAL_SET = True
    # Both setters warn and do nothing when a provider was already installed by someone else.
    if isinstance(trace_api.get_tracer_provider(), trace_api.ProxyTracerProvider):
        trace_api.set_tracer_provider(tracer_provider)
    if type(metrics_api.get_meter_provider()).__name__ == "_ProxyMeterProvider":
        metrics_api.set_meter_provider(meter_provider)


# --------------------------------------------------------------------------- Kafka header propagation


class _HeaderSetter(Setter[HeaderList]):
    def set(self, carrier: HeaderList, key: str, value: str) -> None:
        carrier[:] = [(k, v) for k, v in carrier if k.lower() != key.lower()]
        carrier.append((key, value.encode("utf-8")))


class _HeaderGetter(Getter[Sequence[tuple[str, bytes]]]):
    def get(self, carrier: Sequence[tuple[str, bytes]], key: str) -> list[str] | None:
        values = [_text(v) for k, v in carrier if isinstance(k, str) and k.lower() == key.lower()]
        values = [v for v in values if v is not None]
        return values or None

    def keys(self, carrier: Sequence[tuple[str, bytes]]) -> list[str]:
        return [k for k, _ in carrier if isinstance(k, str)]


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    try:
        return bytes(value).decode("utf-8")
    except (UnicodeDecodeError, TypeError):
        return None  # a garbled header is treated as absent, never as an error


_SETTER = _HeaderSetter()
_GETTER = _HeaderGetter()


def inject_headers(headers: Iterable[tuple[str, bytes]] | None = None, context: Context | None = None) -> HeaderList:
    """Kafka headers with the current (or given) trace context added as `traceparent` (and `tracestate`).

    Returns a new list; existing headers are kept, except stale propagation headers, which are replaced.
    Without an active, valid span nothing is added.
    """
    carrier: HeaderList = list(headers or [])
    propagate.inject(carrier, context=context, setter=_SETTER)
    return carrier


def extract_context(headers: Iterable[tuple[str, bytes]] | None, context: Context | None = None) -> Context:
    """The trace context carried by Kafka headers, to parent the consumer's spans.

    Missing or malformed `traceparent` gives a context without a remote parent (a new trace).
    """
    return propagate.extract(list(headers or []), context=context, getter=_GETTER)


def traceparent_of(headers: Iterable[tuple[str, bytes]] | None) -> str | None:
    """The raw `traceparent` header value, if any (for logs and tests)."""
    return (_GETTER.get(list(headers or []), TRACEPARENT_HEADER) or [None])[0]
