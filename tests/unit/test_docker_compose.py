"""Static checks of docker/ (no Docker engine here): the compose file, the Dockerfiles, the
collector config. Every LINEWATCH_* variable must be a real settings field, every command
must parse with the real entry point's argument parser."""

from __future__ import annotations

import argparse
import importlib
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from common.settings import LinewatchSettings

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
COMPOSE = DOCKER / "compose.yaml"
OUR_DOCKERFILES = {"docker/worker.Dockerfile", "docker/producer.Dockerfile"}

_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


class Unresolved(Exception):
    pass


def interpolate(value: Any) -> Any:
    """Compose-style `${VAR:-default}` with an empty environment: defaults only."""
    if not isinstance(value, str):
        return value

    def sub(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        if match.group(2) in (":-", "-"):
            return match.group(3)
        raise Unresolved(match.group(0))

    return _VAR.sub(sub, value)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


def environment(service: dict[str, Any]) -> dict[str, Any]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return {str(k): v for k, v in env.items()}


def parse_dockerfile(path: Path) -> list[tuple[str, str]]:
    lines: list[str] = []
    buffer = ""
    for raw in path.read_text().splitlines():
        stripped = raw.strip()
        if not buffer and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            buffer += stripped[:-1] + " "
            continue
        lines.append(buffer + stripped)
        buffer = ""
    out = []
    for line in lines:
        instruction, _, rest = line.partition(" ")
        out.append((instruction.upper(), rest.strip()))
    return out


def exec_form(value: str) -> list[str]:
    parsed = json.loads(value)
    assert isinstance(parsed, list) and all(isinstance(v, str) for v in parsed), value
    return parsed


def final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last_from = max(i for i, (ins, _) in enumerate(instructions) if ins == "FROM")
    return instructions[last_from:]


def global_args(instructions: list[tuple[str, str]]) -> dict[str, str]:
    args = {}
    for ins, rest in instructions:
        if ins == "FROM":
            break
        if ins == "ARG" and "=" in rest:
            name, _, default = rest.partition("=")
            args[name] = default
    return args


def dockerfile_of(service: dict[str, Any]) -> Path | None:
    build = service.get("build")
    if build is None:
        return None
    if isinstance(build, str):
        build = {"context": build}
    context = (DOCKER / build.get("context", ".")).resolve()
    return (context / build.get("dockerfile", "Dockerfile")).resolve()


# --------------------------------------------------------------------------- structure


def test_compose_has_the_deployment_services(compose: dict[str, Any]) -> None:
    assert {"kafka", "redis", "otel-collector", "worker", "producer", "alarms"} <= set(compose["services"])


def test_every_service_has_an_image_or_a_build_whose_dockerfile_exists(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        assert "image" in service or "build" in service, f"{name}: neither image nor build"
        dockerfile = dockerfile_of(service)
        if dockerfile is not None:
            build = service["build"]
            context = (DOCKER / (build if isinstance(build, str) else build.get("context", "."))).resolve()
            assert context.is_dir(), f"{name}: build context {context} missing"
            assert dockerfile.is_file(), f"{name}: {dockerfile} missing"
            assert str(dockerfile.relative_to(REPO)) in OUR_DOCKERFILES
            assert context == REPO, f"{name}: build from the repository root (pyproject.toml is there)"
        else:
            image = interpolate(service["image"])
            assert ":" in image and not image.endswith(":latest"), f"{name}: pin the image tag ({image})"


def test_third_party_images(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert interpolate(services["kafka"]["image"]).startswith("apache/kafka:")
    env = environment(services["kafka"])
    assert "broker" in env["KAFKA_PROCESS_ROLES"] and "controller" in env["KAFKA_PROCESS_ROLES"]  # KRaft
    assert "ZOOKEEPER" not in " ".join(env)
    cluster_id = interpolate(env["CLUSTER_ID"])
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", cluster_id), "CLUSTER_ID is a base64url UUID (22 chars)"
    assert interpolate(services["redis"]["image"]).startswith("redis:")
    assert "opentelemetry-collector" in interpolate(services["otel-collector"]["image"])


def test_depends_on_names_real_services_with_healthchecks(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        depends = service.get("depends_on") or {}
        if isinstance(depends, list):
            depends = {d: {"condition": "service_started"} for d in depends}
        for other, spec in depends.items():
            assert other in services, f"{name} depends on unknown {other}"
            if spec.get("condition") == "service_healthy":
                assert "healthcheck" in services[other], (
                    f"{name} waits for {other} to be healthy: it has no healthcheck"
                )


def test_workers_reserve_a_gpu_and_mount_models_read_only(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices)
    assert int(interpolate(str(worker["deploy"]["replicas"]))) >= 1
    assert "container_name" not in worker, "a fixed container name prevents scaling"
    assert not worker.get("ports"), "published ports clash between replicas (use expose)"
    mounts = [interpolate(v) for v in worker["volumes"]]
    assert any(m.endswith(":/models:ro") for m in mounts)
    assert environment(worker)["LINEWATCH_MODELS__MODELS_DIR"] == "/models"


def test_bind_mounted_files_exist(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = interpolate(volume).split(":")[0]
            if source.startswith((".", "/")) and Path(source).suffix in (".yaml", ".yml"):
                assert (DOCKER / source).is_file(), f"{name}: {source} missing"


def test_otel_collector_config_is_consistent(compose: dict[str, Any]) -> None:
    config = yaml.safe_load((DOCKER / "otel-collector.yaml").read_text())
    for pipeline, spec in config["service"]["pipelines"].items():
        for kind in ("receivers", "processors", "exporters"):
            for component in spec.get(kind, []):
                assert component in (config.get(kind) or {}), f"{pipeline}: {kind} {component} undefined"
    assert {"traces", "metrics"} <= set(config["service"]["pipelines"])
    http = config["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
    for name in ("worker", "producer", "alarms"):
        endpoint = environment(compose["services"][name])["OTEL_EXPORTER_OTLP_ENDPOINT"]
        assert endpoint.startswith("http://otel-collector:") and endpoint.endswith(http.rsplit(":", 1)[1])


def test_the_default_alarm_rules_validate(compose: dict[str, Any]) -> None:
    from worker.alarms.config import load_rules

    mounts = [interpolate(v) for v in compose["services"]["alarms"]["volumes"]]
    rules = [m.split(":")[0] for m in mounts if ":/etc/linewatch/alarms.yaml" in m]
    assert rules, "the alarm service mounts its rules file"
    assert load_rules(DOCKER / rules[0]).rules


# --------------------------------------------------------------------------- settings


def _settings_field(path: list[str]) -> tuple[bool, str]:
    model: type[BaseModel] = LinewatchSettings
    for i, part in enumerate(path):
        fields = model.model_fields
        if part not in fields:
            return False, f"{'.'.join(path[: i + 1])} is not a field (choose from {', '.join(fields)})"
        annotation = fields[part].annotation
        if i < len(path) - 1:
            if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
                return False, f"{'.'.join(path[: i + 1])} is not a section"
            model = annotation
    return True, ""


def test_every_linewatch_variable_is_a_real_setting(compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    seen = 0
    for name, service in compose["services"].items():
        env = environment(service)
        ours = {k: v for k, v in env.items() if k.startswith("LINEWATCH_") and k != "LINEWATCH_CONFIG"}
        for key in ours:
            ok, why = _settings_field(key[len("LINEWATCH_") :].lower().split("__"))
            assert ok, f"service {name}: {key}: {why}"
            seen += 1
        # and pydantic-settings accepts the values (defaults of ${...} interpolations)
        for key in [k for k in os.environ if k.startswith("LINEWATCH_")]:
            monkeypatch.delenv(key)
        for key, value in ours.items():
            monkeypatch.setenv(key, "" if value is None else str(interpolate(value)))
        LinewatchSettings()
    assert seen >= 10


def test_the_checker_catches_a_typo() -> None:
    assert not _settings_field(["kafka", "bootstrap_server"])[0]
    assert not _settings_field(["worker", "health_port", "x"])[0]
    assert _settings_field(["alarms", "webhook_secret"])[0]


# --------------------------------------------------------------------------- entry points


def _scripts() -> dict[str, str]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]


def _check_command(where: str, argv: list[str]) -> None:
    if argv[:2] == ["tini", "--"]:
        argv = argv[2:]
    scripts = _scripts()
    assert argv and argv[0] in scripts, (
        f"{where}: {argv[:1]} is not a console script of pyproject.toml ({list(scripts)})"
    )
    module_name, _, func = scripts[argv[0]].partition(":")
    module = importlib.import_module(module_name)
    assert callable(getattr(module, func, None)), f"{where}: {scripts[argv[0]]} does not exist"
    build_parser = getattr(module, "build_parser", None)
    if build_parser is None:
        return
    parser: argparse.ArgumentParser = build_parser()
    try:
        parser.parse_args(argv[1:])
    except SystemExit as exc:  # argparse's way of refusing
        pytest.fail(f"{where}: `{' '.join(argv)}` is refused by {module_name}.build_parser() (exit {exc.code})")


def test_commands_reference_real_entry_points(compose: dict[str, Any]) -> None:
    checked = 0
    for name, service in compose["services"].items():
        dockerfile = dockerfile_of(service)
        if dockerfile is None:
            # the alarms service reuses the producer image by name
            same = [s for s in compose["services"].values() if s.get("image") == service.get("image") and "build" in s]
            if not same:
                continue
            dockerfile = dockerfile_of(same[0])
        assert dockerfile is not None
        stage = final_stage(parse_dockerfile(dockerfile))
        image_entry = [exec_form(rest) for ins, rest in stage if ins == "ENTRYPOINT"][-1]
        image_cmd = [exec_form(rest) for ins, rest in stage if ins == "CMD"][-1]
        entrypoint = service.get("entrypoint", image_entry)
        if isinstance(entrypoint, str):
            entrypoint = entrypoint.split()
        command = service.get("command", image_cmd if "entrypoint" not in service else [])
        if isinstance(command, str):
            command = command.split()
        _check_command(f"service {name}", [interpolate(a) for a in [*entrypoint, *command]])
        checked += 1
    # and each image's own default command
    for dockerfile in OUR_DOCKERFILES:
        stage = final_stage(parse_dockerfile(REPO / dockerfile))
        entry = [exec_form(rest) for ins, rest in stage if ins == "ENTRYPOINT"][-1]
        cmd = [exec_form(rest) for ins, rest in stage if ins == "CMD"][-1]
        _check_command(dockerfile, [*entry, *cmd])
    assert checked >= 3


# --------------------------------------------------------------------------- Dockerfiles


def project_installs(instructions: list[tuple[str, str]]) -> list[set[str]]:
    """The extras of every `pip install .` / `pip install '.[a,b]'` of the project in RUN instructions."""
    found = []
    for ins, rest in instructions:
        if ins != "RUN":
            continue
        for step in re.split(r"&&|;", rest):
            words = shlex.split(step)
            if words[:2] != ["pip", "install"]:
                continue
            for word in words[2:]:
                match = re.fullmatch(r"\.(?:\[([\w,-]*)\])?", word)
                if match:
                    found.append({e for e in (match.group(1) or "").split(",") if e})
    return found


def pip_installed_names(instructions: list[tuple[str, str]]) -> set[str]:
    """Every requirement name given to `pip install` in RUN instructions (options and the project left out)."""
    names = set()
    for ins, rest in instructions:
        if ins != "RUN":
            continue
        for step in re.split(r"&&|;", rest):
            words = shlex.split(step)
            if words[:2] == ["pip", "install"]:
                names |= {
                    re.split(r"[<>=\[]", w)[0].lower()
                    for w in words[2:]
                    if not w.startswith(("-", ".", "$", '"')) and "://" not in w
                }
    return names


def _extras() -> dict[str, list[str]]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def _requirement_name(requirement: str) -> str:
    return re.split(r"[<>=~!\[; ]", requirement, maxsplit=1)[0].lower()


def test_the_checkers_read_pip_installs() -> None:
    run = [("RUN", "pip install --upgrade pip setuptools && pip install '.[worker,test]'"), ("RUN", "pip install .")]
    assert project_installs(run) == [{"worker", "test"}, set()]
    assert pip_installed_names(run) == {"pip", "setuptools"}


def test_worker_dockerfile() -> None:
    instructions = parse_dockerfile(DOCKER / "worker.Dockerfile")
    args = global_args(instructions)
    stage = final_stage(instructions)
    base = stage[0][1].split(" AS ")[0]
    base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base)
    assert base.startswith("nvidia/cuda:") and "runtime" in base
    users = [rest for ins, rest in stage if ins == "USER"]
    assert users and users[-1] not in ("root", "0"), "the worker runs as a non-root user"
    volumes = " ".join(rest for ins, rest in stage if ins == "VOLUME")
    assert "/models" in volumes
    copies = [rest for ins, rest in instructions if ins in ("COPY", "ADD")]
    assert not any("models" in c.split()[0] for c in copies if not c.startswith("--from")), "no weights in the image"
    # the project with the worker extra (the torch stack), and nothing of the test extra
    assert project_installs(instructions) == [{"worker", "gpu"}], "installs the project once, as .[worker,gpu]"
    assert "worker" in _extras() and "onnxruntime-gpu" in {_requirement_name(r) for r in _extras()["gpu"]}
    # IS-Net on the GPU: the CPU build of onnxruntime is removed and onnxruntime-gpu is what stays
    runs = " && ".join(rest for ins, rest in instructions if ins == "RUN")
    steps = [shlex.split(step) for step in re.split(r"&&|;", runs)]
    uninstall = next(i for i, w in enumerate(steps) if w[:3] == ["pip", "uninstall", "-y"] and "onnxruntime" in w)
    assert any(
        w[:2] == ["pip", "install"] and any(x.startswith("onnxruntime-gpu") for x in w) for w in steps[uninstall:]
    )
    # the health check polls the worker's own health port and /healthz
    checks = [rest for ins, rest in stage if ins == "HEALTHCHECK"]
    assert len(checks) == 1 and "/healthz" in checks[0] and "LINEWATCH_WORKER__HEALTH_PORT" in checks[0]
    env = " ".join(rest for ins, rest in stage if ins == "ENV")
    port = re.search(r"LINEWATCH_WORKER__HEALTH_PORT=(\d+)", env)
    assert port and port.group(1) in " ".join(rest for ins, rest in stage if ins == "EXPOSE")


def test_producer_dockerfile() -> None:
    instructions = parse_dockerfile(DOCKER / "producer.Dockerfile")
    args = global_args(instructions)
    base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], final_stage(instructions)[0][1])
    assert base.startswith("python:") and "slim" in base
    users = [rest for ins, rest in final_stage(instructions) if ins == "USER"]
    assert users and users[-1] not in ("root", "0")
    # the base dependencies only: no extra, and no package of the worker extra installed by hand
    assert project_installs(instructions) == [set()]
    worker_extra = {_requirement_name(r) for r in _extras()["worker"]}
    assert not pip_installed_names(instructions) & worker_extra


CPU_IMAGE_PACKAGES = ("common", "producer", "worker.alarms")  # what the producer image's commands run

_BLOCK_AND_IMPORT = """
import importlib, importlib.abc, json, pkgutil, sys
blocked = set(json.loads(sys.argv[1]))
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.partition(".")[0] in blocked:
            raise ImportError(f"{name} is not installed in the CPU image")
sys.meta_path.insert(0, Block())
for package in json.loads(sys.argv[2]):
    module = importlib.import_module(package)
    for info in pkgutil.walk_packages(module.__path__, package + "."):
        if not info.name.endswith(".__main__"):  # runs the command
            importlib.import_module(info.name)
"""


def test_the_cpu_image_commands_import_nothing_of_the_worker_extra(compose: dict[str, Any]) -> None:
    """The producer image installs no `worker` extra: every module its commands (linewatch-producer,
    linewatch-alarms) can load must import without the torch stack, Redis client and tqdm."""
    from importlib.metadata import packages_distributions

    image = compose["services"]["producer"]["image"]
    cpu_services = [s for s in compose["services"].values() if s.get("image") == image]
    assert len(cpu_services) >= 2  # producer and alarms
    stage = final_stage(parse_dockerfile(DOCKER / "producer.Dockerfile"))
    image_entry = [exec_form(rest) for ins, rest in stage if ins == "ENTRYPOINT"][-1]
    for service in cpu_services:
        entry = [a for a in service.get("entrypoint", image_entry) if a not in ("tini", "--")]
        module = _scripts()[entry[0]].partition(":")[0]
        assert module.startswith(CPU_IMAGE_PACKAGES), f"{entry[0]} ({module}) runs code outside {CPU_IMAGE_PACKAGES}"

    worker_extra = {_requirement_name(r).replace("_", "-") for r in _extras()["worker"]}
    modules = sorted(
        module
        for module, dists in packages_distributions().items()
        if any(d.lower().replace("_", "-") in worker_extra for d in dists)
    )
    assert {"torch", "transformers", "onnxruntime"} <= set(modules)
    probe = subprocess.run(
        [sys.executable, "-c", _BLOCK_AND_IMPORT, json.dumps(modules), json.dumps(list(CPU_IMAGE_PACKAGES))],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert probe.returncode == 0, probe.stderr[-3000:]


@pytest.mark.parametrize("dockerfile", sorted(OUR_DOCKERFILES))
def test_build_context_ignores_models_and_venv(dockerfile: str) -> None:
    lines = (REPO / f"{dockerfile}.dockerignore").read_text().splitlines()
    ignore = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    assert ignore[0] == "*", "an allow-list: ignore everything, then re-include the sources"
    assert "!models/" not in ignore and "!.venv/" not in ignore
    # everything the Dockerfile copies is allowed in
    for ins, rest in parse_dockerfile(REPO / dockerfile):
        if ins == "COPY" and not rest.startswith("--from"):
            for source in rest.split()[:-1]:
                assert f"!{source.rstrip('/')}/" in ignore or f"!{source}" in ignore, f"{source} is ignored"


def test_only_the_workers_and_the_references_service_get_redis_credentials_or_the_signing_key(
    compose: dict[str, Any],
) -> None:
    dashboard = yaml.safe_load((COMPOSE.parent / "compose.dashboard.yaml").read_text())
    services = compose["services"] | dashboard["services"]
    secret = ("LINEWATCH_REDIS__PASSWORD", "LINEWATCH_REDIS__SIGNING_KEY", "LINEWATCH_REDIS__URL")
    holders = {name for name, service in services.items() if set(secret) & set(environment(service))}
    assert holders == {"worker", "references"}
    for name in holders:
        env = environment(services[name])
        assert env["LINEWATCH_REDIS__USERNAME"] == f"linewatch-{name}"
        assert interpolate(env["LINEWATCH_REDIS__ALLOW_UNSIGNED"]) == "false"  # a worker without a key stops
    assert "REDIS" not in str(compose.get("x-linewatch-env"))
