"""The dashboard's image and compose service (static checks; no Docker engine here)."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import packages_distributions

import yaml

from common.settings import DashboardSettings
from tests.unit.test_docker_compose import (
    _BLOCK_AND_IMPORT,
    DOCKER,
    _extras,
    _requirement_name,
    exec_form,
    final_stage,
    parse_dockerfile,
    pip_installed_names,
    project_installs,
)


def test_the_dashboard_image_installs_the_dashboard_extra_only_and_runs_as_a_user():
    instructions = parse_dockerfile(DOCKER / "dashboard.Dockerfile")
    assert project_installs(instructions) == [{"dashboard"}]
    worker_extra = {_requirement_name(r) for r in _extras()["worker"]}
    assert not pip_installed_names(instructions) & worker_extra
    stage = final_stage(instructions)
    assert [rest for ins, rest in stage if ins == "USER"][-1] not in ("root", "0")
    assert exec_form([rest for ins, rest in stage if ins == "ENTRYPOINT"][-1]) == ["tini", "--", "linewatch-dashboard"]
    service = yaml.safe_load((DOCKER / "compose.dashboard.yaml").read_text())["services"]["dashboard"]
    assert service["build"]["dockerfile"] == "docker/dashboard.Dockerfile"
    assert "/healthz" in " ".join(service["healthcheck"]["test"])
    settings_env = {k: v for k, v in service["environment"].items() if k.startswith("LINEWATCH_DASHBOARD__")}
    assert set(settings_env) <= {f"LINEWATCH_DASHBOARD__{name.upper()}" for name in DashboardSettings.model_fields}
    assert service["depends_on"]["kafka-init"]["condition"] == "service_completed_successfully"  # users and ACLs made


def test_the_dashboard_imports_nothing_of_the_worker_extra():
    worker_extra = {_requirement_name(r).replace("_", "-") for r in _extras()["worker"]}
    modules = sorted(
        module
        for module, dists in packages_distributions().items()
        if any(d.lower().replace("_", "-") in worker_extra for d in dists)
    )
    assert "torch" in modules
    probe = subprocess.run(
        [sys.executable, "-c", _BLOCK_AND_IMPORT, json.dumps(modules), json.dumps(["worker.dashboard"])],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr[-2000:]


def test_blank_secrets_from_compose_mean_unset():
    settings = DashboardSettings(users="", tokens="  ", session_secret="")
    assert settings.users is None and settings.tokens is None and settings.session_secret is None
