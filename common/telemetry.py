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
from opentelemetry.metrics import Meter
from opentelemetry.propagators.textmap import Getter, Setter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from common.metrics import Metrics
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
