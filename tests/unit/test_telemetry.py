"""common.telemetry: exporter selection from OTEL_* variables, Kafka header propagation, metrics."""

from __future__ import annotations

import pytest
from opentelemetry import trace

from common.metrics import Metrics
from common.telemetry import (
    TelemetryConfigError,
    exporter_names,
    extract_context,
    inject_headers,
    setup_telemetry,
    traceparent_of,
)

OTEL_VARS = [
    "OTEL_TRACES_EXPORTER",
    "OTEL_METRICS_EXPORTER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TIMEOUT",
    "OTEL_METRIC_EXPORT_INTERVAL",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_PROPAGATORS",
    "OTEL_SDK_DISABLED",
]


@pytest.fixture(autouse=True)
def clean_otel_env(monkeypatch):
    for name in OTEL_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def telemetry():
    t = setup_telemetry("test-service", set_global=False)
    yield t
    t.shutdown()


def test_default_is_quiet(telemetry):
    assert exporter_names("traces") == [] and exporter_names("metrics") == []
    assert telemetry.trace_exporters == [] and telemetry.metric_exporters == []
    assert telemetry.span_processors == []
    assert telemetry.service_name == "test-service"


def test_console_exporters_are_chosen_by_env(monkeypatch):
    from opentelemetry.sdk.metrics.export import ConsoleMetricExporter
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter

    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "console")
    t = setup_telemetry("console-service", set_global=False)
    try:
        assert t.trace_exporters == ["console"] and t.metric_exporters == ["console"]
        (processor,) = t.span_processors
        assert isinstance(processor.span_exporter, ConsoleSpanExporter)
        assert any(isinstance(getattr(r, "_exporter", None), ConsoleMetricExporter) for r in t.metric_readers)
    finally:
        t.shutdown()


def test_otlp_uses_the_http_exporter_and_its_env_endpoint(monkeypatch):
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
    t = setup_telemetry("otlp-service", set_global=False)
    try:
        (processor,) = t.span_processors
        exporter = processor.span_exporter
        assert isinstance(exporter, OTLPSpanExporter)
        assert exporter._endpoint == "http://127.0.0.1:9/v1/traces"  # the exporter read the env itself
        assert any(isinstance(getattr(r, "_exporter", None), OTLPMetricExporter) for r in t.metric_readers)
    finally:
        t.shutdown()  # one failed export attempt at most (OTEL_EXPORTER_OTLP_TIMEOUT)


def test_unknown_or_unavailable_exporter_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "jaeger_thrift")
    with pytest.raises(TelemetryConfigError, match="OTEL_TRACES_EXPORTER='jaeger_thrift'.*console"):
        setup_telemetry("x", set_global=False)
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")  # grpc exporter is not installed
    with pytest.raises(TelemetryConfigError, match="otlp_proto_grpc"):
        setup_telemetry("x", set_global=False)


def test_none_in_a_list_is_ignored(monkeypatch):
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none, ")
    assert exporter_names("metrics") == []


def test_service_name_env_wins(monkeypatch):
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
    t = setup_telemetry("from-code", set_global=False)
    assert t.service_name == "from-env"
    t.shutdown()


# --------------------------------------------------------------------------- propagation


def test_inject_extract_round_trip(telemetry):
    with telemetry.tracer.start_as_current_span("produce") as span:
        headers = inject_headers([("lw-frame", b"{}")])
        expected = span.get_span_context()
    assert headers[0] == ("lw-frame", b"{}")
    value = traceparent_of(headers)
    assert value == f"00-{expected.trace_id:032x}-{expected.span_id:016x}-{expected.trace_flags:02x}"
    assert all(isinstance(k, str) and isinstance(v, bytes) for k, v in headers)

    # The consumer continues the same trace.
    parent = extract_context(headers)
    remote = trace.get_current_span(parent).get_span_context()
    assert remote.is_remote and remote.trace_id == expected.trace_id and remote.span_id == expected.span_id
    with telemetry.tracer.start_as_current_span("consume", context=parent) as child:
        assert child.get_span_context().trace_id == expected.trace_id
        assert child.parent.span_id == expected.span_id


def test_inject_replaces_a_stale_traceparent(telemetry):
    stale = [("traceparent", b"00-" + b"1" * 32 + b"-" + b"2" * 16 + b"-01")]
    with telemetry.tracer.start_as_current_span("p"):
        headers = inject_headers(stale)
    assert [k for k, _ in headers].count("traceparent") == 1
    assert traceparent_of(headers) != stale[0][1].decode()


def test_inject_with_explicit_context_and_without_span(telemetry):
    span = telemetry.tracer.start_span("not-current")
    headers = inject_headers(None, context=trace.set_span_in_context(span))
    span.end()
    assert traceparent_of(headers).split("-")[2] == f"{span.get_span_context().span_id:016x}"
    assert inject_headers([]) == []  # no active span: nothing to propagate


@pytest.mark.parametrize(
    "headers",
    [
        None,
        [],
        [("traceparent", b"\xff\xfe garbage")],
        [("traceparent", b"not-a-traceparent")],
        [("traceparent", None)],
    ],
)
def test_extract_tolerates_missing_or_garbled_headers(headers):
    context = extract_context(headers)
    assert not trace.get_current_span(context).get_span_context().is_valid


# --------------------------------------------------------------------------- metrics


def test_metrics_reach_the_prometheus_text(telemetry):
    m = telemetry.metrics
    assert isinstance(m, Metrics)
    m.frame_done("ok", latency_s=0.2)
    m.frame_done("anomalous", latency_s=1.5)
    m.frame_done("dead_letter")
    m.stage("decode", 0.001)
    m.stage("score", 0.05)
    m.batch_size.record(8)
    m.dead_letter("decode", "ImageDecodeError")
    m.cache_lookup(True, "text")
    m.cache_lookup(False, "text", layer="lru")
    m.lag("linewatch.frames", 3, 42)
    m.frames_produced.add(2, {"outcome": "sent"})
    text = telemetry.prometheus_text().decode()
    for expected in [
        "linewatch_frames_processed_total{",
        'outcome="anomalous"',
        'outcome="dead_letter"',
        "linewatch_frame_latency_seconds_bucket{",
        "linewatch_frame_latency_seconds_count{",
        'stage="decode"',
        'stage="score"',
        "linewatch_batch_size_bucket{",
        'linewatch_dead_letters_total{error_type="ImageDecodeError"',
        "linewatch_cache_hits_total{",
        "linewatch_cache_misses_total{",
        'layer="lru"',
        "linewatch_frames_produced_total{",
    ]:
        assert expected in text, expected
    lag_lines = [line for line in text.splitlines() if line.startswith("linewatch_consumer_lag{")]
    assert len(lag_lines) == 1 and 'partition="3"' in lag_lines[0] and lag_lines[0].endswith(" 42.0")
    m.few_shot_held({"banks": 2_048_000, "pools": 512})
    held = {
        line.split('kind="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
        for line in telemetry.prometheus_text().decode().splitlines()
        if line.startswith("linewatch_fewshot_memory")
    }
    assert held == {"banks": 2_048_000.0, "pools": 512.0}
    assert telemetry.prometheus_content_type.startswith("text/plain")


def test_two_setups_do_not_clash(telemetry):
    other = setup_telemetry("second", set_global=False)
    try:
        telemetry.metrics.frame_done("ok")
        other.metrics.frame_done("skipped")
        assert 'outcome="skipped"' not in telemetry.prometheus_text().decode()
        assert 'outcome="skipped"' in other.prometheus_text().decode()
    finally:
        other.shutdown()
        other.shutdown()  # idempotent


def test_without_prometheus_reader(telemetry):
    t = setup_telemetry("no-prom", prometheus=False, set_global=False)
    t.metrics.frame_done("ok")
    assert t.prometheus_text() == b""
    t.shutdown()
