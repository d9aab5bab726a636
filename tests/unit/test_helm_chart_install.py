"""The Helm chart as the Kubernetes guide installs it: release `linewatch`, in a namespace.

Each `helm install` of docs/deploy/kubernetes.md is rendered as written, and the resources are
checked against each other the way a cluster would use them: Secret names against the KafkaUsers
Strimzi writes, the address KEDA dials from its own namespace, the rollout against GPUs and
partitions, ACLs against the settings, Pod Security "restricted" (by k8s.io/pod-security-admission,
through scripts/psa-check).
"""

from __future__ import annotations

import re

import pytest
import yaml

from common.acl import role_grants, strimzi_acls
from common.audit import AUDIT_TOPIC_CONFIG
from common.control_topic import CONTROL_TOPIC_CONFIG
from common.kafka import FRAMES_TOPIC_CONFIG
from common.settings import LinewatchSettings
from tests.support.helm import (
    CHART,
    DOCS,
    IMAGES,
    MODELS,
    by_kind,
    docs_installs,
    one,
    psa_check,
    render,
    render_docs_install,
    template,
)
from tests.support.pss import containers, restricted_violations

pytestmark = pytest.mark.timeout(900)  # the first run builds helm
INSTALLS = docs_installs()
POD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job")


@pytest.fixture(scope="module", params=INSTALLS, ids=[w[w.index("-f") + 1].split("/")[-1] for w in INSTALLS])
def installed(request) -> tuple[str, list[dict]]:
    return render_docs_install(request.param)


def pods(docs: list[dict]) -> dict[str, dict]:
    """Every pod spec the chart makes: workloads' templates and the `helm test` pods."""
    found = {d["metadata"]["name"]: d["spec"]["template"]["spec"] for d in docs if d["kind"] in POD_KINDS}
    return found | {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "Pod"}


def settings_of(docs: list[dict], tmp_path, monkeypatch) -> LinewatchSettings:
    path = tmp_path / "linewatch.yaml"
    path.write_text(one(docs, "ConfigMap", "-settings")["data"]["linewatch.yaml"])
    monkeypatch.setenv("LINEWATCH_CONFIG", str(path))
    return LinewatchSettings()


def refusal(*sets: str, values: str | None = None) -> str:
    """helm's error for a render that must fail (with a values file: the image registry set)."""
    result = template(values, *((IMAGES,) if values else ()), *sets)
    assert result.returncode != 0, "rendered, but should have been refused"
    return result.stderr


def test_the_guide_installs_both_values_files():
    files = {w[w.index("-f") + 1] for w in INSTALLS}
    assert files == {"deploy/helm/linewatch/values-gpu-fleet.yaml", "deploy/helm/linewatch/values-cpu-trial.yaml"}
    assert all(w[2] == "linewatch" and "-n" in w for w in INSTALLS)


def test_secret_references_resolve_and_never_meet_a_kafka_user(installed):
    namespace, docs = installed
    users = {u["metadata"]["name"] for u in by_kind(docs, "KafkaUser")}
    secrets = {s["metadata"]["name"]: s for s in by_kind(docs, "Secret")}
    assert users and not users & secrets.keys(), users & secrets.keys()  # Strimzi would rewrite those
    made_by_hand = set(re.findall(r"create secret \w+ ([\w.-]+)", DOCS.read_text()))
    for name, pod in pods(docs).items():
        for c in containers(pod):
            for item in c.get("env", []):
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if not ref:
                    continue
                if ref["name"] in users:
                    assert ref["key"] == "password", (name, ref)  # all a KafkaUser's Secret holds
                elif ref["name"] in secrets:
                    assert ref["key"] in secrets[ref["name"]]["data"], (name, ref)
                else:
                    assert ref["name"] in made_by_hand, (name, ref)


def test_a_user_named_like_a_secret_is_refused():
    err = refusal(IMAGES, MODELS, "kafka.users.dashboard=linewatch-dashboard-auth")
    assert "kafka.users.dashboard" in err and "Strimzi would overwrite it" in err


def test_keda_dials_kafka_by_its_fully_qualified_name():
    namespace, docs = render_docs_install(
        next(w for w in INSTALLS if any(a.endswith("values-gpu-fleet.yaml") for a in w))
    )
    kafka = one(docs, "Kafka", "")
    listener = kafka["spec"]["kafka"]["listeners"][0]
    address = f"{kafka['metadata']['name']}-kafka-bootstrap.{namespace}.svc:{listener['port']}"
    trigger = one(docs, "ScaledObject", "-worker")["spec"]["triggers"][0]["metadata"]
    assert trigger["bootstrapServers"] == address
    settings = yaml.safe_load(one(docs, "ConfigMap", "-settings")["data"]["linewatch.yaml"])
    assert settings["kafka"]["bootstrap_servers"] == address  # the pods dial the same listener
    elsewhere = render("values-gpu-fleet.yaml", "kafka.clusterName=plant7-kafka", namespace="plant7")
    trigger = one(elsewhere, "ScaledObject", "-worker")["spec"]["triggers"][0]["metadata"]
    assert trigger["bootstrapServers"] == "plant7-kafka-kafka-bootstrap.plant7.svc:9093"


def strategy(docs: list[dict]) -> dict:
    return one(docs, "Deployment", "-worker")["spec"]["strategy"]


def test_worker_rollout_never_waits_for_a_gpu_or_a_partition():
    gpu = render("values-gpu-fleet.yaml")
    assert strategy(gpu) == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}
    assert strategy(render(None)) == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    own = render("values-gpu-fleet.yaml", "worker.strategy.rollingUpdate.maxSurge=1")
    assert strategy(own)["rollingUpdate"]["maxSurge"] == 1  # 8 workers on 16 partitions: a surge pod gets one
    err = refusal(
        "worker.strategy.rollingUpdate.maxSurge=1",
        "autoscaling.keda.maxReplicaCount=16",
        values="values-gpu-fleet.yaml",
    )
    assert "worker.strategy" in err and "never becomes ready" in err
    assert "never becomes ready" in refusal(IMAGES, MODELS, "worker.replicas=16")  # defaults: 16 partitions


def test_pdb_lets_a_drain_evict_unready_workers(installed):
    _, docs = installed
    assert one(docs, "PodDisruptionBudget", "-worker")["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


def test_one_node_models_volume_means_one_worker_replaced_whole():
    docs = render("values-cpu-trial.yaml")
    claim = one(docs, "PersistentVolumeClaim", "-models")
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert strategy(docs) == {"type": "Recreate"}  # no second pod waiting to attach it on another node
    assert one(docs, "Deployment", "-worker")["spec"]["replicas"] == 1
    for extra in (("worker.replicas=2",), ("autoscaling.keda.enabled=true", "autoscaling.keda.maxReplicaCount=4")):
        assert "attaches the models volume to one node" in refusal(*extra, values="values-cpu-trial.yaml")
    err = refusal(
        "worker.strategy.type=RollingUpdate", "worker.strategy.rollingUpdate.maxSurge=1", values="values-cpu-trial.yaml"
    )
    assert "ReadWriteOnce" in err


def test_frames_topic_carries_the_brokers_append_time(installed):
    _, docs = installed
    frames = one(docs, "KafkaTopic", "linewatch-frames")["spec"]
    assert frames["topicName"] == LinewatchSettings().kafka.frames_topic
    assert FRAMES_TOPIC_CONFIG.items() <= frames["config"].items()  # what the worker sets on a topic it makes


def test_control_topics_keep_a_month_of_versions_and_audit_records_the_brokers_time(installed):
    _, docs = installed
    configs = {t["spec"]["topicName"]: t["spec"]["config"] for t in by_kind(docs, "KafkaTopic")}
    kafka = LinewatchSettings().kafka
    for name in (kafka.control_topic, kafka.learned_topic):  # rollback restores what compaction kept
        assert CONTROL_TOPIC_CONFIG.items() <= {k: str(v) for k, v in configs[name].items()}.items(), name
    audit = configs[kafka.audit_topic]
    assert audit["message.timestamp.type"] == AUDIT_TOPIC_CONFIG["message.timestamp.type"] == "LogAppendTime"


RENAMED = (
    "settings.kafka.frames_topic=plant7.frames",
    "settings.kafka.results_topic=plant7.results",
    "settings.kafka.control_topic=plant7.control",
    "settings.kafka.group_id=plant7-workers",
    "settings.alarms.group_id=plant7-alarms",
    "settings.dashboard.state_topic=plant7.alarm-state",
)
EXACTLY_ONCE = ("settings.kafka.processing_guarantee=exactly-once", "settings.kafka.transactional_id_prefix=plant7")


@pytest.mark.parametrize("sets", [(), RENAMED, EXACTLY_ONCE], ids=["defaults", "renamed", "exactly-once"])
def test_acls_follow_the_settings(sets, tmp_path, monkeypatch):
    docs = render("values-gpu-fleet.yaml", *sets)
    settings = settings_of(docs, tmp_path, monkeypatch)
    grants = role_grants(settings, with_create=False)
    users = {u["metadata"]["labels"]["app.kubernetes.io/component"]: u for u in by_kind(docs, "KafkaUser")}
    assert users.keys() == grants.keys()
    for role, user in users.items():
        assert user["spec"]["authorization"]["acls"] == strimzi_acls(grants[role]), role
    topics = {t["spec"]["topicName"] for t in by_kind(docs, "KafkaTopic")}
    for user in users.values():
        named = {
            a["resource"]["name"] for a in user["spec"]["authorization"]["acls"] if a["resource"]["type"] == "topic"
        }
        assert named <= topics, named - topics
    worker_acls = users["worker"]["spec"]["authorization"]["acls"]
    transactional = [a["resource"] for a in worker_acls if a["resource"]["type"] == "transactionalId"]
    if sets == EXACTLY_ONCE:
        assert transactional == [{"type": "transactionalId", "name": "plant7-", "patternType": "prefix"}]
    else:
        assert transactional == []
    trigger = one(docs, "ScaledObject", "-worker")["spec"]["triggers"][0]["metadata"]
    assert (trigger["topic"], trigger["consumerGroup"]) == (settings.kafka.frames_topic, settings.kafka.group_id)


def test_uninstall_keeps_the_topics_and_always_the_audit():
    settings = LinewatchSettings()
    for sets, kept in (((), "all"), (("kafka.keepTopics=false",), {settings.kafka.audit_topic})):
        topics = by_kind(render("values-gpu-fleet.yaml", *sets), "KafkaTopic")
        policy = {
            t["spec"]["topicName"]: t["metadata"].get("annotations", {}).get("helm.sh/resource-policy") for t in topics
        }
        expected = set(policy) if kept == "all" else kept
        assert {name for name, p in policy.items() if p == "keep"} == expected


GITOPS = (
    "secrets.generate=false",
    "redis.existingSecret=lw-redis",
    "dashboard.existingSecret=lw-dashboard",
    "alarms.existingWebhookSecret=lw-webhook",
)


def test_secrets_do_not_rotate_when_the_render_cannot_read_the_cluster():
    made = by_kind(render("values-gpu-fleet.yaml"), "Secret")
    assert made and all(s["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep" for s in made)
    for missing in range(1, len(GITOPS)):
        err = refusal(*GITOPS[:missing], *GITOPS[missing + 1 :], values="values-gpu-fleet.yaml")
        assert GITOPS[missing].split("=")[0] + " is required when secrets.generate is false" in err
    first, second = (template("values-gpu-fleet.yaml", IMAGES, *GITOPS) for _ in range(2))
    assert first.returncode == 0 and first.stdout == second.stdout  # nothing random: a sync changes nothing
    docs = [d for d in yaml.safe_load_all(first.stdout) if d]
    assert by_kind(docs, "Secret") == []
    refs = {
        item["valueFrom"]["secretKeyRef"]["name"]
        for pod in pods(docs).values()
        for c in containers(pod)
        for item in c.get("env", [])
        if "secretKeyRef" in item.get("valueFrom", {})
    }
    assert {"lw-redis", "lw-dashboard", "lw-webhook"} <= refs


def test_defaults_refuse_to_render_without_model_weights():
    err = refusal(IMAGES)
    assert "worker.models" in err and "existingClaim" in err
    mirror = "https://hf-mirror.plant.example"
    sets = ("worker.models.pull=true", "worker.models.requirePins=true", f"worker.models.hubEndpoint={mirror}")
    pod = pods(render(None, "worker.models.existingClaim=", *sets))["linewatch-worker"]
    pull, check = pod["initContainers"]  # the weights are fetched, then checked, before the worker starts
    assert pull["args"] == ["models", "pull", "--dest", "/models", "--require-pins"]
    env = {e["name"]: e["value"] for e in pull["env"]}
    assert (env["HF_HUB_OFFLINE"], env["HF_ENDPOINT"]) == ("0", mirror)  # online, through the mirror
    assert check["args"] == ["models", "check", "--no-load"]
    assert [m["readOnly"] for m in check["volumeMounts"] if m["name"] == "models"] == [True]
    err = refusal("worker.models.pull=true", values="values-gpu-fleet.yaml")  # 2-8 workers on one claim
    assert "their pulls would write the same files at once" in err
    gpu = pods(render("values-gpu-fleet.yaml"))["linewatch-worker"]  # a claim filled elsewhere: checked only
    assert [c["name"] for c in gpu["initContainers"]] == ["models-check"]


def test_images_need_a_registry_and_pin_by_digest():
    assert "image.registry is required" in refusal(MODELS)
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    images = {c["image"] for pod in pods(render(None)).values() for c in containers(pod)}
    assert f"registry.example.com/linewatch/linewatch/worker:{app_version}" in images
    digest = "sha256:" + "a" * 64
    sets = [f"{c}.image.digest={digest}" for c in ("worker", "alarms", "dashboard")]
    docs = render(None, *sets, "image.pullSecrets[0].name=regcred")
    for name, pod in pods(docs).items():
        assert pod["imagePullSecrets"] == [{"name": "regcred"}], name
        for c in containers(pod):
            if not name.endswith("-redis"):
                assert c["image"].startswith("registry.example.com/linewatch/") and c["image"].endswith("@" + digest)


def test_every_pod_meets_pod_security_restricted(installed):
    _, docs = installed
    for name, pod in pods(docs).items():
        assert restricted_violations(pod) == [], name
        assert pod["automountServiceAccountToken"] is False
        assert one(docs, "ServiceAccount", "")["metadata"]["name"] == pod["serviceAccountName"]
        scratch = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
        for c in containers(pod):
            assert c["securityContext"]["readOnlyRootFilesystem"] is True, (name, c["name"])
            writable = {m["mountPath"] for m in c.get("volumeMounts", []) if m["name"] in scratch}
            wanted = {"/data"} if name.endswith("-redis") else {"/tmp", "/home/linewatch"}
            assert wanted <= writable, (name, c["name"], writable)
    assert one(docs, "ServiceAccount", "")["automountServiceAccountToken"] is False


def matches(selector: dict, labels: dict) -> bool:
    return selector["matchLabels"].items() <= labels.items()


def test_only_workers_reach_redis_and_only_linewatch_reaches_kafka(installed):
    namespace, docs = installed
    labels = {
        d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"] for d in docs if d["kind"] in POD_KINDS
    }
    policy = one(docs, "NetworkPolicy", "-redis")["spec"]
    assert matches(policy["podSelector"], labels["linewatch-redis"]) and policy["policyTypes"] == ["Ingress"]
    (rule,) = policy["ingress"]
    admitted = {name for name, pod in labels.items() for peer in rule["from"] if matches(peer["podSelector"], pod)}
    assert admitted == {"linewatch-worker"}
    assert {"podSelector": {"matchLabels": {"linewatch.io/redis-client": "true"}}} in rule["from"]  # references
    peers = one(docs, "Kafka", "")["spec"]["kafka"]["listeners"][0]["networkPolicyPeers"]
    pod_peers = [p["podSelector"] for p in peers if "podSelector" in p]
    assert all(any(matches(p, pod) for p in pod_peers) for pod in labels.values())  # every linewatch pod
    assert {"matchLabels": {"linewatch.io/kafka-client": "true"}} in pod_peers  # cameras in the namespace
    keda = [p["namespaceSelector"]["matchLabels"] for p in peers if "namespaceSelector" in p]
    has_keda = bool(by_kind(docs, "ScaledObject"))
    assert keda == ([{"kubernetes.io/metadata.name": "keda"}] if has_keda else [])


def test_pod_security_admission_admits_every_pod_at_restricted(installed, tmp_path):
    _, docs = installed
    verdicts = psa_check(docs, tmp_path)
    assert {v["name"] for v in verdicts} == set(pods(docs))
    assert [v for v in verdicts if not v["allowed"]] == []


def test_the_restricted_checks_catch_what_they_should(tmp_path):
    pod = pods(render(None))["linewatch-worker"]
    for path, value in (
        (("securityContext", "seccompProfile"), {"type": "Unconfined"}),
        (("containers", 0, "securityContext", "allowPrivilegeEscalation"), True),
        (("containers", 0, "securityContext", "capabilities"), {"add": ["SYS_ADMIN"], "drop": ["ALL"]}),
        (("hostNetwork",), True),
    ):
        bad = yaml.safe_load(yaml.safe_dump(pod))
        target = bad
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        assert restricted_violations(bad), path
        deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "bad"}}
        deployment["spec"] = {"template": {"metadata": {}, "spec": bad}}
        (verdict,) = psa_check([deployment], tmp_path)  # the admission library refuses it too
        assert verdict["allowed"] is False, path
