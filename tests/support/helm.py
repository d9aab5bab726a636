"""helm, kubeconform, rules-check and psa-check for the chart tests: built once (scripts/install_k8s_tools.sh),
then run."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "linewatch"
CRD_SCHEMAS = REPO / "deploy" / "helm" / "schemas"
TOOLS = Path(os.environ.get("LINEWATCH_TOOLS_DIR", REPO / ".state" / "tools")) / "bin"
KUBERNETES_VERSION = "1.34.0"  # the oldest Kubernetes the chart is checked against (kubeVersion >= 1.29)
CRD_GROUPS = ("keda.sh", "kafka.strimzi.io")


def tool(name: str) -> Path:
    path = TOOLS / name
    if not path.is_file():  # `make test` builds them first; a lone pytest run builds them here, and
        # pytest-xdist workers that all find one missing wait on the script's lock for a single build
        subprocess.run(["bash", str(REPO / "scripts" / "install_k8s_tools.sh")], check=True)
    return path


def run(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, check=check, timeout=300)


def values_args(values: str | None, sets: tuple[str, ...] = ()) -> list[str]:
    args = ["-f", str(CHART / values)] if values else []
    for item in sets:
        args += ["--set", item]
    return args


RELEASE = NAMESPACE = "linewatch"  # as the Kubernetes guide installs it
IMAGES = "image.registry=registry.example.com/linewatch"  # the chart refuses to render without a registry
MODELS = "worker.models.existingClaim=linewatch-models"  # ... and, with the defaults, without model weights
DOCS = REPO / "docs" / "deploy" / "kubernetes.md"


def template(values: str | None, *sets: str, release: str = RELEASE, namespace: str = NAMESPACE):
    """`helm template` as the docs install (release and namespace `linewatch`), not checked."""
    return run(
        tool("helm"), "template", release, CHART, "--namespace", namespace, *values_args(values, sets), check=False
    )


def render(values: str | None, *sets: str, release: str = RELEASE, namespace: str = NAMESPACE) -> list[dict[str, Any]]:
    """The documents of `helm template` with a values file (None: the defaults), an image registry set."""
    sets = (IMAGES, *((MODELS,) if values is None else ()), *sets)
    result = template(values, *sets, release=release, namespace=namespace)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def docs_installs() -> list[list[str]]:
    """Every `helm install` command of the Kubernetes guide, continuation lines joined, split into words."""
    text = DOCS.read_text().replace("\\\n", " ")
    commands = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("helm install "):
            commands.append(shlex.split(line))
    return commands


def render_docs_install(words: list[str], *sets: str) -> tuple[str, list[dict[str, Any]]]:
    """A guide's `helm install RELEASE CHART ...` as `helm template`: its namespace and documents."""
    release, chart, *flags = words[2:]
    assert (REPO / chart).resolve() == CHART, chart
    flags = [f for f in flags if f != "--create-namespace"]
    namespace = flags[flags.index("-n") + 1] if "-n" in flags else "default"
    flags = [str(REPO / f) if f.startswith("deploy/") else f for f in flags]
    sets_args = [a for s in sets for a in ("--set", s)]
    out = run(tool("helm"), "template", release, CHART, *flags, *sets_args).stdout
    return namespace, [doc for doc in yaml.safe_load_all(out) if doc]


def is_crd_kind(doc: dict[str, Any]) -> bool:
    return doc["apiVersion"].split("/")[0] in CRD_GROUPS


def kubeconform(docs: list[dict[str, Any]], tmp: Path) -> subprocess.CompletedProcess:
    """Strict kubeconform of `docs` against the CRD schemas kept in the repo (no other location)."""
    manifest = tmp / "crd-kinds.yaml"
    manifest.write_text(yaml.safe_dump_all(docs))
    location = f"{CRD_SCHEMAS}/{{{{ .Group }}}}/{{{{ .ResourceKind }}}}_{{{{ .ResourceAPIVersion }}}}.json"
    return run(
        tool("kubeconform"),
        "-strict",
        "-summary",
        "-output",
        "json",
        "-schema-location",
        location,
        manifest,
        check=False,
    )


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str, name_suffix: str = "") -> dict[str, Any]:
    found = [doc for doc in by_kind(docs, kind) if doc["metadata"]["name"].endswith(name_suffix)]
    assert len(found) == 1, f"expected one {kind} *{name_suffix}, found {[d['metadata']['name'] for d in found]}"
    return found[0]


def psa_check(docs: list[dict[str, Any]], tmp: Path, level: str = "restricted") -> list[dict[str, Any]]:
    """Every pod template of `docs` through k8s.io/pod-security-admission (scripts/psa-check): one
    {kind, name, allowed, forbidden} per template."""
    manifest = tmp / "pods.yaml"
    manifest.write_text(yaml.safe_dump_all(docs))
    result = run(tool("psa-check"), "-level", level, manifest, check=False)
    assert result.returncode in (0, 1), result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]
