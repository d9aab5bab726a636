"""The Helm chart, rendered for every values file and checked offline.

helm lint and helm template (helm built from the Go module proxy at a pinned version), then
Kubernetes kinds against the schemas kubernetes-validate ships, KEDA and Strimzi kinds with
kubeconform against the CRD schemas kept in deploy/helm/schemas (scripts/crd_schemas.py), then
the invariants a fleet depends on.
"""

from __future__ import annotations

import json
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from pydantic import SecretStr

from common.acl import ROLES, default_user
from common.settings import LinewatchSettings
from tests.support.helm import (
    CHART,
    IMAGES,
    KUBERNETES_VERSION,
    MODELS,
    by_kind,
    is_crd_kind,
    kubeconform,
    one,
    render,
    run,
    template,
    tool,
    values_args,
)
from worker.alarms.config import parse_rules_text

VALUES = [None, "values-cpu-trial.yaml", "values-gpu-fleet.yaml"]
IDS = ["defaults", "cpu-trial", "gpu-fleet"]
pytestmark = pytest.mark.timeout(900)  # the first run builds helm and kubeconform


@pytest.fixture(scope="module", params=VALUES, ids=IDS)
def chart(request) -> tuple[str | None, list[dict]]:
    return request.param, render(request.param)


def settings_file(docs: list[dict]) -> dict:
    return yaml.safe_load(one(docs, "ConfigMap", "-settings")["data"]["linewatch.yaml"])


def container(docs: list[dict], deployment: str) -> dict:
    return one(docs, "Deployment", deployment)["spec"]["template"]["spec"]["containers"][0]


def env(c: dict) -> dict[str, dict]:
    return {item["name"]: item for item in c.get("env", [])}


@pytest.mark.parametrize("values", VALUES, ids=IDS)
def test_helm_lint(values):
    sets = (IMAGES, MODELS) if values is None else (IMAGES,)
    result = run(tool("helm"), "lint", "--strict", CHART, *values_args(values, sets), check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_kubernetes_kinds_match_the_bundled_schemas(chart):
    _, docs = chart
    core = [doc for doc in docs if not is_crd_kind(doc)]
    assert {"Deployment", "ConfigMap", "Secret", "Service", "PodDisruptionBudget"} <= {d["kind"] for d in core}
    for doc in core:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_keda_and_strimzi_kinds_match_their_crd_schemas(chart, tmp_path):
    values, docs = chart
    crds = [doc for doc in docs if is_crd_kind(doc)]
    kinds = {doc["kind"] for doc in crds}
    assert {"Kafka", "KafkaNodePool", "KafkaTopic", "KafkaUser"} <= kinds
    if values == "values-gpu-fleet.yaml":
        assert {"ScaledObject", "TriggerAuthentication"} <= kinds
    assert all(doc["apiVersion"] == "kafka.strimzi.io/v1" for doc in crds if doc["apiVersion"].startswith("kafka."))
    result = kubeconform(crds, tmp_path)
    summary = json.loads(result.stdout)["summary"]
    assert result.returncode == 0, result.stdout + result.stderr
    assert summary["valid"] == len(crds) and summary["skipped"] == 0, summary


def test_kubeconform_rejects_what_the_crds_do_not_allow(tmp_path):
    docs = render("values-gpu-fleet.yaml")
    topic = dict(one(docs, "KafkaTopic", "frames"))
    topic["spec"] = dict(topic["spec"], partitionz=16)  # a misspelt field
    scaled = dict(one(docs, "ScaledObject", "-worker"))
    scaled["spec"] = dict(scaled["spec"], maxReplicaCount="eight")
    for bad in (topic, scaled):
        result = kubeconform([bad], tmp_path)
        assert result.returncode != 0 and json.loads(result.stdout)["summary"]["invalid"] == 1, result.stdout


def test_settings_file_is_valid_linewatch_settings(chart, tmp_path, monkeypatch):
    _, docs = chart
    path = tmp_path / "linewatch.yaml"
    path.write_text(one(docs, "ConfigMap", "-settings")["data"]["linewatch.yaml"])
    monkeypatch.setenv("LINEWATCH_CONFIG", str(path))
    settings = LinewatchSettings()  # extra="forbid": a misspelt key fails here
    assert settings.kafka.sasl_mechanism == "SCRAM-SHA-512"
    assert settings.kafka.assignor == "cooperative-sticky"


def test_alarm_rules_load(chart):
    _, docs = chart
    rules = parse_rules_text(one(docs, "ConfigMap", "-settings")["data"]["alarms.yaml"], "chart")
    assert [rule.name for rule in rules.rules] == ["defect-burst", "camera-silent"]


def test_no_secret_in_a_config_map(chart):
    _, docs = chart
    secret_fields = {
        f"{section}.{name}"
        for section, section_field in LinewatchSettings.model_fields.items()
        for name, field in section_field.annotation.model_fields.items()
        if SecretStr in getattr(field.annotation, "__args__", (field.annotation,))
    }
    assert {"kafka.sasl_password", "redis.url", "alarms.webhook_secret", "dashboard.session_secret"} <= secret_fields
    for config_map in by_kind(docs, "ConfigMap"):
        for key, text in config_map["data"].items():
            lowered = key.lower()
            assert not any(word in lowered for word in ("password", "secret", "token")), key
            if key == "linewatch.yaml":
                present = {f"{s}.{n}" for s, section in yaml.safe_load(text).items() for n in section}
                assert not present & secret_fields, present & secret_fields
    # ... and every secret setting a container gets comes from a Secret
    for deployment in by_kind(docs, "Deployment"):
        for c in deployment["spec"]["template"]["spec"]["containers"]:
            for name, item in env(c).items():
                setting = name.removeprefix("LINEWATCH_").lower().replace("__", ".", 1)
                if setting in secret_fields and setting != "redis.url":
                    assert "secretKeyRef" in item.get("valueFrom", {}), name
            if "LINEWATCH_REDIS__URL" in env(c):  # no password in the URL: it comes from the Secret
                assert "@" not in env(c)["LINEWATCH_REDIS__URL"]["value"]


def test_grace_period_outlasts_the_shutdown_budget(chart):
    _, docs = chart
    budget = settings_file(docs)["worker"]["shutdown_timeout_s"]
    pod = one(docs, "Deployment", "-worker")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] >= budget + 10


def test_a_grace_period_below_the_budget_is_refused():
    result = template(
        None, IMAGES, MODELS, "worker.terminationGracePeriodSeconds=25", "settings.worker.shutdown_timeout_s=20"
    )
    assert result.returncode != 0 and "terminationGracePeriodSeconds" in result.stderr


def test_probes_use_the_port_the_worker_serves(chart):
    _, docs = chart
    port = settings_file(docs)["worker"]["health_port"]
    c = container(docs, "-worker")
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["health"] == port
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    startup = c["startupProbe"]
    assert startup["httpGet"]["port"] == "health"
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300  # model load + warm-up
    alarms = container(docs, "-alarms")
    assert {p["name"]: p["containerPort"] for p in alarms["ports"]}["health"] == settings_file(docs)["alarms"][
        "health_port"
    ]


def test_cpu_threads_follow_the_request_and_logins_restart_the_dashboard():
    docs = render("values-cpu-trial.yaml")
    threads = env(container(docs, "-worker"))["OMP_NUM_THREADS"]["valueFrom"]["resourceFieldRef"]
    assert threads == {"containerName": "worker", "resource": "requests.cpu", "divisor": "1"}
    assert container(docs, "-worker")["resources"]["requests"]["cpu"]  # ceil(requests.cpu) threads, never 0

    def users_checksum(*sets):
        return one(render(None, *sets), "Deployment", "-dashboard")["spec"]["template"]["metadata"]["annotations"]

    assert users_checksum() != users_checksum("dashboard.users=olga:pw:operator")
    assert "checksum/dashboard-secret" not in users_checksum("dashboard.existingSecret=own")


def test_dashboard_and_alarm_limits_and_the_ingress_proxies(monkeypatch):
    def values(docs, deployment):
        return {name: item.get("value") for name, item in env(container(docs, deployment)).items()}

    trial = render("values-cpu-trial.yaml")  # no ingress: the peer is the client; the settings' own limits
    limits = {"LINEWATCH_DASHBOARD__TRUSTED_PROXIES", "LINEWATCH_DASHBOARD__MAX_CAMERAS"}
    assert not limits & values(trial, "-dashboard").keys()
    assert "LINEWATCH_ALARMS__MAX_STREAMS" not in values(trial, "-alarms")
    fleet = render("values-gpu-fleet.yaml", "dashboard.maxCameras=200", "alarms.maxStreams=500")
    for name, value in (values(fleet, "-dashboard") | values(fleet, "-alarms")).items():
        if name.startswith(("LINEWATCH_DASHBOARD__", "LINEWATCH_ALARMS__")) and value is not None:
            monkeypatch.setenv(name, value)
    settings = LinewatchSettings()
    assert (settings.dashboard.max_cameras, settings.alarms.max_streams) == (200, 500)
    assert "10.0.0.0/8" in settings.dashboard.trusted_proxies.split(",")  # where the ingress controller's pods are
    own = render("values-gpu-fleet.yaml", "dashboard.trustedProxies=10.42.0.0/16")
    assert values(own, "-dashboard")["LINEWATCH_DASHBOARD__TRUSTED_PROXIES"] == "10.42.0.0/16"
    assert "LINEWATCH_DASHBOARD__TRUSTED_PROXIES" not in values(
        render("values-gpu-fleet.yaml", "dashboard.trustedProxies="), "-dashboard"
    )


def test_gpu_limit_and_static_identity():
    gpu = container(render("values-gpu-fleet.yaml"), "-worker")
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert env(gpu)["LINEWATCH_KAFKA__GROUP_INSTANCE_ID"]["value"] == "$(POD_NAME)"
    assert env(gpu)["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    cpu = container(render("values-cpu-trial.yaml"), "-worker")
    assert "nvidia.com/gpu" not in cpu["resources"].get("limits", {})


def test_workers_spread_and_leave_one_at_a_time(chart):
    _, docs = chart
    deployment = one(docs, "Deployment", "-worker")
    pod = deployment["spec"]["template"]["spec"]
    anti = pod["affinity"]["podAntiAffinity"]
    terms = anti.get("requiredDuringSchedulingIgnoredDuringExecution") or [
        t["podAffinityTerm"] for t in anti["preferredDuringSchedulingIgnoredDuringExecution"]
    ]
    labels = deployment["spec"]["selector"]["matchLabels"]
    assert terms[0]["topologyKey"] == "kubernetes.io/hostname" and terms[0]["labelSelector"]["matchLabels"] == labels
    pdb = one(docs, "PodDisruptionBudget", "-worker")
    assert pdb["spec"]["selector"]["matchLabels"] == labels and pdb["spec"]["maxUnavailable"] == 1


def test_autoscaler_never_exceeds_the_partitions():
    docs = render("values-gpu-fleet.yaml")
    scaled = one(docs, "ScaledObject", "-worker")["spec"]
    frames = one(docs, "KafkaTopic", "linewatch-frames")["spec"]
    assert scaled["maxReplicaCount"] <= frames["partitions"]
    assert "replicas" not in one(docs, "Deployment", "-worker")["spec"]  # KEDA owns the count
    trigger = scaled["triggers"][0]
    assert trigger["metadata"]["consumerGroup"] == settings_file(docs)["kafka"].get("group_id", "linewatch")
    assert trigger["metadata"]["topic"] == frames["topicName"]
    behavior = scaled["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] >= 300
    auth = one(docs, "TriggerAuthentication", "-worker-kafka")["spec"]
    assert {"name": "linewatch-worker", "key": "password", "parameter": "password"} in auth["secretTargetRef"]
    too_many = template("values-gpu-fleet.yaml", IMAGES, "autoscaling.keda.maxReplicaCount=17")
    assert too_many.returncode != 0 and "must not exceed kafka.partitions" in too_many.stderr


def test_topics_cover_every_linewatch_topic(chart):
    _, docs = chart
    topics = {doc["spec"]["topicName"]: doc["spec"] for doc in by_kind(docs, "KafkaTopic")}
    settings = LinewatchSettings()
    wanted = {getattr(settings.kafka, f) for f in type(settings.kafka).model_fields if f.endswith("_topic")}
    wanted |= {settings.alarms.dlq_topic, settings.dashboard.state_topic, settings.kafka.learned_topic}
    assert wanted <= topics.keys(), wanted - topics.keys()
    partitions = settings_file(docs)["kafka"]["partitions"]
    assert topics[settings.kafka.frames_topic]["partitions"] == partitions
    for compacted in (settings.kafka.control_topic, settings.kafka.learned_topic, settings.dashboard.state_topic):
        assert topics[compacted]["config"]["cleanup.policy"] == "compact"
    assert int(topics[settings.kafka.frames_topic]["config"]["retention.ms"]) >= 3_600_000


def test_kafka_users_get_least_privilege(chart):
    _, docs = chart
    acls = {
        user["metadata"]["name"]: {
            (acl["resource"]["type"], acl["resource"]["name"], op)
            for acl in user["spec"]["authorization"]["acls"]
            for op in acl["operations"]
        }
        for user in by_kind(docs, "KafkaUser")
    }
    assert set(acls) == {default_user(role) for role in ROLES}
    assert all(u["spec"]["authentication"]["type"] == "scram-sha-512" for u in by_kind(docs, "KafkaUser"))
    s = LinewatchSettings()
    worker, camera = acls["linewatch-worker"], acls["linewatch-producer"]
    assert {
        ("topic", s.kafka.frames_topic, "Read"),
        ("topic", s.kafka.results_topic, "Write"),
        ("topic", s.kafka.dlq_topic, "Write"),
        ("group", s.kafka.group_id, "Read"),
    } <= worker
    assert ("topic", s.kafka.control_topic, "Write") not in worker  # only the operator changes control
    assert {name for _, name, _ in camera} == {s.kafka.frames_topic} and (
        "topic",
        s.kafka.frames_topic,
        "Read",
    ) not in camera
    assert ("topic", s.kafka.alarms_topic, "Write") in acls["linewatch-alarms"]
    assert ("topic", s.kafka.results_topic, "Write") not in acls["linewatch-alarms"]
    topics = {doc["spec"]["topicName"] for doc in by_kind(docs, "KafkaTopic")}
    for user, rules in acls.items():
        assert not {op for _, _, op in rules} & {"All", "Create", "Delete", "Alter", "AlterConfigs"}, user
        assert all(kind != "cluster" for kind, _, _ in rules), user
        assert {name for kind, name, _ in rules if kind == "topic"} <= topics, user  # no ACL on a topic nobody made
    # every user the pods log in as exists, and its Secret is the one Strimzi writes
    for deployment in by_kind(docs, "Deployment"):
        for c in deployment["spec"]["template"]["spec"]["containers"]:
            if "LINEWATCH_KAFKA__SASL_USERNAME" in env(c):
                user = env(c)["LINEWATCH_KAFKA__SASL_USERNAME"]["value"]
                assert user in acls
                assert env(c)["LINEWATCH_KAFKA__SASL_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
                    "name": user,
                    "key": "password",
                }


def test_crd_schemas_name_their_source():
    for path in (Path(CHART).parent / "schemas").rglob("*.json"):
        assert "scripts/crd_schemas.py" in json.loads(path.read_text())["$comment"], path


def test_values_schema_refuses_what_the_chart_cannot_use():
    for bad, message in (
        ("worker.gpus=1", "additional properties 'gpus' not allowed"),  # a misspelt key
        ("worker.image.digest=sha256:abc", "does not match pattern"),
        ("worker.models.accessMode=ReadWriteMany2", "value must be one of"),
        ("worker.strategy.type=Rolling", "value must be one of"),
        ("worker.resources.requests.cpu=null", "missing property 'cpu'"),  # it sets the worker's threads
    ):
        result = template(None, IMAGES, MODELS, bad)
        assert result.returncode != 0 and "schema" in result.stderr and message in result.stderr, (bad, result.stderr)


def test_platform_settings_reach_the_pods():
    spread = "worker.topologySpreadConstraints[0]"
    docs = render(
        "values-gpu-fleet.yaml",
        "worker.gpuResource=nvidia.com/mig-1g.10gb",
        "worker.runtimeClassName=nvidia",
        "worker.priorityClassName=linewatch-critical",
        f"{spread}.maxSkew=1",
        f"{spread}.topologyKey=topology.kubernetes.io/zone",
        f"{spread}.whenUnsatisfiable=ScheduleAnyway",
        f"{spread}.labelSelector.matchLabels.app\\.kubernetes\\.io/component=worker",
        "dashboard.nodeSelector.pool=cpu",
        "alarms.tolerations[0].key=dedicated",
        "alarms.tolerations[0].operator=Exists",
        "redis.priorityClassName=linewatch-state",
    )
    worker = one(docs, "Deployment", "-worker")["spec"]["template"]["spec"]
    assert worker["containers"][0]["resources"]["limits"] == {"memory": "24Gi", "nvidia.com/mig-1g.10gb": 1}
    assert (worker["runtimeClassName"], worker["priorityClassName"]) == ("nvidia", "linewatch-critical")
    assert worker["topologySpreadConstraints"][0]["topologyKey"] == "topology.kubernetes.io/zone"
    assert worker["nodeSelector"] == {"nvidia.com/gpu.present": "true"}  # the GPU values' own
    assert one(docs, "Deployment", "-dashboard")["spec"]["template"]["spec"]["nodeSelector"] == {"pool": "cpu"}
    alarms = one(docs, "Deployment", "-alarms")["spec"]["template"]["spec"]
    assert alarms["tolerations"] == [{"key": "dedicated", "operator": "Exists"}]
    assert one(docs, "Deployment", "-redis")["spec"]["template"]["spec"]["priorityClassName"] == "linewatch-state"
    for deployment in by_kind(docs, "Deployment"):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_notes_tell_where_kafka_and_the_dashboard_are():
    gpu = (
        "-f",
        str(CHART / "values-gpu-fleet.yaml"),
        "--set",
        IMAGES,
        "--set",
        "dashboard.ingress.host=lw.plant.example",
    )
    out = run(tool("helm"), "install", "linewatch", CHART, "-n", "linewatch", "--dry-run=client", *gpu).stdout
    notes = out[out.index("NOTES:") :]
    assert "linewatch-kafka-bootstrap.linewatch.svc:9093" in notes and "https://lw.plant.example/" in notes
    assert "kubectl -n linewatch get scaledobject linewatch-worker" in notes
    assert "The chart made the Secrets linewatch-redis, linewatch-dashboard-auth, linewatch-alarms-webhook." in notes
