"""The worker service's traces and metrics, in one place.

Each frame continues the producer's trace (`traceparent` header): a `frame`
span covers the worker's part, with children `decode`, `inference` (and one
child per Inspector stage, laid end to end from `Inspection.timings_ms`) and
`publish`. Without a `Telemetry` (tests, telemetry disabled) everything is a no-op.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

from opentelemetry import metrics as metrics_api
from opentelemetry import trace
from opentelemetry.context import Context

from common.metrics import Metrics
from common.telemetry import Telemetry, extract_context, inject_headers


class ServiceTelemetry:
    def __init__(self, telemetry: Telemetry | None = None):
        self.telemetry = telemetry
        if telemetry is not None:
            self.tracer = telemetry.tracer
            self.metrics = telemetry.metrics
        else:
            self.tracer = trace.NoOpTracer()
            self.metrics = Metrics.create(metrics_api.NoOpMeter("linewatch"))

    # ------------------------------------------------------------------ traces

    def start_frame(self, headers: Sequence[tuple[str, bytes]], attributes: Mapping[str, object]) -> trace.Span:
        """The span of one frame's trip through the worker, child of the producer's span."""
        return self.tracer.start_span(
            "linewatch.worker.frame",
            context=extract_context(headers),
            kind=trace.SpanKind.CONSUMER,
            attributes=dict(attributes),
        )

    def child_span(self, parent: trace.Span, name: str) -> trace.Span:
        """A started child span of `parent`; the caller ends it (e.g. when the broker acknowledged)."""
        return self.tracer.start_span(name, context=trace.set_span_in_context(parent))

    @contextmanager
    def stage(self, parent: trace.Span, name: str) -> Iterator[trace.Span]:
        """A child span of `parent` around a block, also recorded as the stage's duration."""
        start = time.perf_counter()
        with self.tracer.start_as_current_span(name, context=trace.set_span_in_context(parent)) as span:
            try:
                yield span
            finally:
                self.metrics.stage(name, time.perf_counter() - start)

    def record_inference(
        self, parent: trace.Span, start_ns: int, end_ns: int, timings_ms: Mapping[str, float], batch_size: int
    ) -> None:
        """An `inference` span for the batch call, with the Inspector's per-stage timings as children."""
        span = self.tracer.start_span(
            "inference",
            context=trace.set_span_in_context(parent),
            start_time=start_ns,
            attributes={"linewatch.batch_size": batch_size},
        )
        child_context = trace.set_span_in_context(span)
        at = start_ns
        for stage, ms in timings_ms.items():
            duration = int(ms * 1e6)
            self.tracer.start_span(stage, context=child_context, start_time=at).end(end_time=at + duration)
            at += duration
        span.end(end_time=max(end_ns, at))

    def headers_for(self, span: trace.Span, headers: Sequence[tuple[str, bytes]] = ()) -> list[tuple[str, bytes]]:
        """Headers carrying `span` as the trace parent of whoever consumes the output."""
        return inject_headers(headers, context=trace.set_span_in_context(span, Context()))

    # ------------------------------------------------------------------ metrics

    def inference_stages(self, timings_ms: Mapping[str, float]) -> None:
        for stage, ms in timings_ms.items():
            self.metrics.stage(stage, ms / 1000.0)


class Counters:
    """The service's event counters (`ServiceStatus.counters`), behind a lock of their own."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] = self._counts.get(name, 0) + n

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)
