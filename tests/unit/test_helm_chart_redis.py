"""The chart's Redis and Secrets as the Kubernetes guide installs them.

Redis runs the ACL users of common/redis_acl.py (the init container's ACL file is written here and
compared with `acl_file`), only the workers get a Redis login and the signing key, and every pod that
reads a Secret the chart makes carries that Secret's checksum, so a new value restarts it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess

import pytest

from common.redis_acl import REDIS_ROLES, acl_file, default_redis_user
from common.settings import LinewatchSettings
from tests.support.helm import CHART, IMAGES, by_kind, docs_installs, one, render, render_docs_install, run, tool
from tests.support.pss import containers

pytestmark = pytest.mark.timeout(900)  # the first run builds helm
INSTALLS = docs_installs()
REDIS_ENV = {
    "LINEWATCH_REDIS__URL",
    "LINEWATCH_REDIS__USERNAME",
    "LINEWATCH_REDIS__PASSWORD",
    "LINEWATCH_REDIS__SIGNING_KEY",
    "LINEWATCH_REDIS__ALLOW_UNSIGNED",
}


@pytest.fixture(scope="module", params=INSTALLS, ids=[w[w.index("-f") + 1].split("/")[-1] for w in INSTALLS])
def installed(request) -> list[dict]:
    return render_docs_install(request.param)[1]


def pod_templates(docs: list[dict]) -> dict[str, dict]:
    return {d["metadata"]["name"]: d["spec"]["template"] for d in docs if d["kind"] == "Deployment"}


def env(c: dict) -> dict[str, dict]:
    return {item["name"]: item for item in c.get("env", [])}


def secrets_read(pod: dict) -> set[str]:
    """The Secrets a pod reads: through its containers' environment or as volumes."""
    names = {v["secret"]["secretName"] for v in pod.get("volumes", []) if "secret" in v}
    for c in containers(pod):
        names |= {
            e["valueFrom"]["secretKeyRef"]["name"] for e in c.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})
        }
    return names


def acl_file_written(docs: list[dict], passwords: dict[str, str], tmp_path) -> str:
    """Run the Redis pod's init container script (sh) on the rendered Secret's mount and return its ACL file."""
    pod = one(docs, "Deployment", "-redis")["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    mounts = {m["name"]: m["mountPath"] for m in init["volumeMounts"]}
    (tmp_path / "secret").mkdir()
    (tmp_path / "data").mkdir()
    for role, password in passwords.items():
        (tmp_path / "secret" / f"{role}-password").write_text(password + "\n")  # as kubectl may store it
    script = init["args"][0].replace(mounts["passwords"], str(tmp_path / "secret"))
    script = script.replace(mounts["data"], str(tmp_path / "data"))
    variables = {e["name"]: e["value"] for e in init["env"]}
    subprocess.run([*init["command"], script], env=variables | {"PATH": "/usr/bin:/bin"}, check=True, timeout=30)
    redis = pod["containers"][0]
    aclfile = redis["args"][redis["args"].index("--aclfile") + 1]
    assert aclfile.startswith(mounts["data"] + "/") and "--user" not in redis["args"]  # no password in `ps`
    return (tmp_path / "data" / aclfile.removeprefix(mounts["data"] + "/")).read_text()


@pytest.mark.parametrize("prefix", [None, "plant7"])
def test_redis_runs_the_users_of_the_role_table(prefix, tmp_path):
    docs = render("values-gpu-fleet.yaml", *([f"settings.redis.key_prefix={prefix}"] if prefix else []))
    passwords = {role: f"{role}Pw0" for role in REDIS_ROLES}
    assert acl_file_written(docs, passwords, tmp_path) == acl_file(passwords, prefix or "linewatch")
    secret = one(docs, "Secret", "-redis")["data"]
    assert secret.keys() == {"worker-password", "references-password", "signing-key"}
    assert all(len(base64.b64decode(value)) == 32 for value in secret.values())
    probe = one(docs, "Deployment", "-redis")["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    assert f"--user {default_redis_user('worker')}" in probe["exec"]["command"][-1]  # ready as the workers log in


def test_only_the_workers_get_a_redis_login_and_the_signing_key(installed, monkeypatch):
    redis_secret = one(installed, "Secret", "-redis")["metadata"]["name"]
    for name, template in pod_templates(installed).items():
        pod = template["spec"]
        named = {n for c in containers(pod) for n in env(c) if "REDIS" in n}
        assert named == (REDIS_ENV if name.endswith("-worker") else set()), name
        assert (redis_secret in secrets_read(pod)) == name.endswith(("-worker", "-redis")), name
    worker = env(one(installed, "Deployment", "-worker")["spec"]["template"]["spec"]["containers"][0])
    assert worker["LINEWATCH_REDIS__USERNAME"]["value"] == default_redis_user("worker")
    assert worker["LINEWATCH_REDIS__PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": redis_secret,
        "key": "worker-password",
    }
    assert worker["LINEWATCH_REDIS__SIGNING_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": redis_secret,
        "key": "signing-key",
    }  # not optional: without the key the pod does not start
    for item in (worker["LINEWATCH_REDIS__URL"], worker["LINEWATCH_REDIS__ALLOW_UNSIGNED"]):
        monkeypatch.setenv(item["name"], item["value"])
    settings = LinewatchSettings().redis
    assert settings.allow_unsigned is False and "@" not in settings.url.get_secret_value()
    assert settings.url.get_secret_value() == f"redis://{redis_secret}:6379/0"  # the Service of the same name
    one(installed, "Service", "-redis")


def test_unsigned_values_only_when_asked():
    sets = ("secrets.generate=false", "redis.existingSecret=own-redis", "dashboard.enabled=false")
    for allow, optional in (("false", None), ("true", True)):
        docs = render("values-cpu-trial.yaml", *sets, "alarms.enabled=false", f"redis.allowUnsigned={allow}")
        worker = env(one(docs, "Deployment", "-worker")["spec"]["template"]["spec"]["containers"][0])
        assert worker["LINEWATCH_REDIS__ALLOW_UNSIGNED"]["value"] == allow
        ref = worker["LINEWATCH_REDIS__SIGNING_KEY"]["valueFrom"]["secretKeyRef"]
        assert (ref["name"], ref.get("optional")) == ("own-redis", optional)
        assert by_kind(docs, "Secret") == []


@pytest.mark.parametrize(
    ("keys", "allow", "missing"),
    [
        (("worker-password", "references-password"), "false", "signing-key"),
        (("worker-password", "references-password"), "true", None),
        (("worker-password", "signing-key"), "true", "references-password"),
    ],
)
def test_a_secret_of_your_own_without_the_signing_key_is_refused(keys, allow, missing, tmp_path):
    """The check helm install and helm upgrade run on the Secret they read (helm template cannot read one)."""
    chart = shutil.copytree(CHART, tmp_path / "linewatch")
    found = "(dict " + " ".join(f'"{key}" "eA=="' for key in keys) + ")"
    secret = f'(dict "metadata" (dict "name" "own-redis") "data" {found})'
    (chart / "templates" / "found.yaml").write_text(
        f'{{{{- include "linewatch.redisSecretKeys" (dict "root" . "secret" {secret}) }}}}\n'
    )
    sets = ("--set", IMAGES, "--set", f"redis.allowUnsigned={allow}")
    result = run(
        tool("helm"), "template", "linewatch", chart, "-f", chart / "values-cpu-trial.yaml", *sets, check=False
    )
    if missing is None:
        assert result.returncode == 0, result.stderr
    else:
        assert f"redis.existingSecret own-redis has no key {missing}" in result.stderr
        assert ("redis.allowUnsigned=true" in result.stderr) == (missing == "signing-key")


def checksum(secret: dict) -> str:
    return hashlib.sha256(json.dumps(secret["data"], sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def test_every_pod_carries_the_checksums_of_the_chart_secrets_it_reads(installed):
    made = {s["metadata"]["name"]: s for s in by_kind(installed, "Secret")}
    assert len(made) >= 2
    readers = set()
    for name, template in pod_templates(installed).items():
        annotations = template["metadata"].get("annotations", {})
        sums = {v for k, v in annotations.items() if k.startswith("checksum/") and k.endswith("-secret")}
        read = secrets_read(template["spec"]) & made.keys()
        assert sums == {checksum(made[s]) for s in read}, name  # a new value in any of them restarts the pod
        readers |= {name} if read else set()
    assert {"linewatch-worker", "linewatch-redis"} <= readers
