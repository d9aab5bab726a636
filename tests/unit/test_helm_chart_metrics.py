"""The chart's monitoring: the workers' metrics Service, its ServiceMonitor and the fleet's alerts.

The alert expressions are checked against what a worker really exports (the Prometheus text of
common.telemetry) and by Prometheus's own rule-file and PromQL parsers (scripts/rules-check: what
`promtool check rules` runs, built by scripts/install_k8s_tools.sh).
"""

from __future__ import annotations

import copy
import json
import re

import pytest
import yaml

from common.telemetry import setup_telemetry
from tests.support.helm import one, render, run, tool

pytestmark = pytest.mark.timeout(900)  # the first run builds the tools
MONITORED = (
    "metrics.serviceMonitor.enabled=true",
    "metrics.prometheusRule.enabled=true",
    "metrics.grafanaDashboard.enabled=true",
)


@pytest.fixture(scope="module")
def docs() -> list[dict]:
    return render("values-gpu-fleet.yaml", *MONITORED)


def rules(docs: list[dict]) -> list[dict]:
    return [rule for group in one(docs, "PrometheusRule", "-worker")["spec"]["groups"] for rule in group["rules"]]


def exported_names() -> str:
    """The Prometheus text of a worker that inspected a batch, skipped a frame, dead-lettered one, lags."""
    telemetry = setup_telemetry("chart-test", set_global=False)
    try:
        telemetry.metrics.batch_size.record(8)
        telemetry.metrics.stage("tile_score", 0.05)
        telemetry.metrics.frame_done("skipped", latency_s=0.4)
        telemetry.metrics.dead_letter("decode", "ImageDecodeError")
        telemetry.metrics.lag("linewatch.frames", 0, 12)
        return telemetry.prometheus_text().decode()
    finally:
        telemetry.shutdown()


def test_the_service_monitor_scrapes_the_workers_health_port(docs):
    settings = yaml.safe_load(one(docs, "ConfigMap", "-settings")["data"]["linewatch.yaml"])
    assert settings["telemetry"]["enabled"] is True  # the GPU values serve /metrics
    service = one(docs, "Service", "-worker")
    pod = one(docs, "Deployment", "-worker")["spec"]["template"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    (port,) = service["spec"]["ports"]
    assert (port["port"], port["targetPort"]) == (settings["worker"]["health_port"], "health")
    monitor = one(docs, "ServiceMonitor", "-worker")["spec"]
    assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["endpoints"] == [{"port": port["name"], "path": "/metrics", "interval": "30s"}]
    assert monitor["namespaceSelector"] == {"matchNames": ["linewatch"]}


def panel_queries(docs: list[dict]) -> list[str]:
    board = json.loads(one(docs, "ConfigMap", "-grafana-dashboard")["data"]["linewatch-fleet.json"])
    return [target["expr"] for panel in board["panels"] for target in panel["targets"]]


def test_kafka_exports_its_metrics_and_lag_to_the_pod_monitor(docs):
    kafka = one(docs, "Kafka", "")
    assert kafka["spec"]["kafka"]["metricsConfig"] == {"type": "strimziMetricsReporter"}
    assert kafka["spec"]["kafkaExporter"]["groupRegex"] == ".*"
    monitor = one(docs, "PodMonitor", "-kafka")["spec"]
    assert monitor["selector"]["matchLabels"] == {"strimzi.io/cluster": kafka["metadata"]["name"]}
    assert monitor["podMetricsEndpoints"][0]["port"] == "tcp-prometheus"  # the port Strimzi gives both


def test_alerts_and_panels_use_the_metrics_a_worker_exports(docs):
    text = exported_names()
    exported = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}
    for queries in ([rule["expr"] for rule in rules(docs)], panel_queries(docs)):
        used = set(re.findall(r"\blinewatch_[a-z_]+", " ".join(queries)))
        assert used and used <= exported, used - exported
    assert 'outcome="skipped"' in text
    job = one(docs, "Service", "-worker")["metadata"]["name"]  # the Prometheus Operator's job label
    for rule in rules(docs):
        if "linewatch_" in rule["expr"] or "up{" in rule["expr"]:
            assert f'job="{job}"' in rule["expr"] and 'namespace="linewatch"' in rule["expr"], rule["alert"]
    names = {rule["alert"] for rule in rules(docs)}
    assert {"LinewatchConsumerLagGrowing", "LinewatchFramesSkipped", "LinewatchDeadLetters"} <= names
    assert {"LinewatchWorkerRestarting", "LinewatchLatencyHigh", "LinewatchWorkersDown"} <= names


def test_the_rules_and_panels_pass_prometheus_own_checks(docs, tmp_path):
    """scripts/rules-check: `promtool check rules` (rulefmt's validation, the PromQL parser) on the alerts,
    the PromQL parser on the dashboard's queries."""
    good = tmp_path / "rules.yaml"
    good.write_text(yaml.safe_dump({"groups": one(docs, "PrometheusRule", "-worker")["spec"]["groups"]}))
    result = run(tool("rules-check"), good, check=False)
    assert result.returncode == 0 and not result.stderr, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules(docs))} rules found" in result.stdout
    queries = panel_queries(docs)
    result = run(tool("rules-check"), "-expr", *queries, check=False)
    assert result.returncode == 0 and f"SUCCESS: {len(queries)} expressions parsed" in result.stdout, result.stderr


def test_rules_check_refuses_a_broken_expression_and_a_broken_rule_file(docs, tmp_path):
    groups = copy.deepcopy(one(docs, "PrometheusRule", "-worker")["spec"]["groups"])
    broken = tmp_path / "rules.yaml"
    groups[0]["rules"][0]["expr"] = "sum(rate(linewatch_consumer_lag[5m])"
    broken.write_text(yaml.safe_dump({"groups": groups}))
    result = run(tool("rules-check"), broken, check=False)
    assert result.returncode == 1 and "could not parse expression" in result.stderr, result.stdout + result.stderr
    result = run(tool("rules-check"), "-expr", "sum(up)", groups[0]["rules"][0]["expr"], check=False)
    assert result.returncode == 1 and "unclosed left parenthesis" in result.stderr, result.stdout + result.stderr
    groups[0]["rules"][0] = {"record": "linewatch:lag", "expr": "sum(linewatch_consumer_lag)", "for": "5m"}
    groups[0]["rules"][1]["annotations"]["summary"] = "{{ $labels.pod "
    broken.write_text(yaml.safe_dump({"groups": groups + groups}))
    result = run(tool("rules-check"), broken, check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    for error in ("invalid field 'for' in recording rule", "template: __alert_", "is repeated in the same file"):
        assert error in result.stderr, result.stderr


def test_monitoring_is_off_unless_asked():
    docs = render("values-gpu-fleet.yaml")
    assert not {doc["kind"] for doc in docs} & {"ServiceMonitor", "PodMonitor", "PrometheusRule"}  # operator CRDs
    assert not [doc for doc in docs if doc["metadata"]["name"].endswith("-grafana-dashboard")]


def test_helm_test_asks_a_worker_whether_it_is_ready(docs):
    (pod,) = [doc for doc in docs if doc["kind"] == "Pod"]
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    service = one(docs, "Service", "-worker")
    port = service["spec"]["ports"][0]["port"]
    script = pod["spec"]["containers"][0]["args"][0]
    assert f'"http://{service["metadata"]["name"]}.linewatch.svc:{port}/readyz"' in script
    compile(script, "readyz", "exec")  # the test pod's Python parses
