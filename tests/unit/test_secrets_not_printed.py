"""Secrets never reach a log line or the terminal.

Distinctive secret values are set through the environment for every secret setting;
then the start-up print of `linewatch-worker serve` (the real CLI in a subprocess, at
DEBUG level, against a closed port so it stops at "cannot reach Kafka"), the alarm
service's start-up, `python -m common.settings` and the invalid-settings error must
show the masked form and never the values. No broker or Redis is needed.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import typing
from pathlib import Path

import pytest
from pydantic import SecretStr

from common.settings import LinewatchSettings

REPO_ROOT = Path(__file__).resolve().parents[2]
MASK = "**********"
SECRETS = {  # setting -> a value that appears nowhere else
    "kafka.sasl_password": "kafka-sasl-pw-Qx7e",
    "kafka.ssl_password": "kafka-ssl-pw-Vb3r",
    "redis.url": "redis-url-pw-Lm9k",  # the password part of the URL
    "redis.password": "redis-pw-Kd2w",
    "redis.signing_key": "redis-signing-key-Pe2s",
    "alarms.webhook_secret": "webhook-secret-Tz5p",
    "dashboard.users": "olga:dash-user-pw-Hq4n:operator",
    "dashboard.tokens": "dash-token-Wr8c:screen:viewer",
    "dashboard.session_secret": "dash-session-key-Ja6m",
}


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def secret_env(port: int) -> dict[str, str]:
    """The environment of a worker with every secret set, pointing at nothing that listens."""
    values = dict(SECRETS)
    values["redis.url"] = f"redis://:{SECRETS['redis.url']}@127.0.0.1:{port}/0"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINEWATCH_")}
    env |= {f"LINEWATCH_{name.replace('.', '__').upper()}": value for name, value in values.items()}
    return env | {
        "LINEWATCH_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{port}",
        "LINEWATCH_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",  # both Kafka passwords go to the client
        "LINEWATCH_KAFKA__SASL_MECHANISM": "SCRAM-SHA-256",
        "LINEWATCH_KAFKA__SASL_USERNAME": "linewatch-user",
        "LINEWATCH_ALARMS__WEBHOOK_URL": "https://mes.invalid/alarms",
        "LINEWATCH_MODELS__PROFILE": "tiny",
        "LINEWATCH_MODELS__FOREGROUND": "none",
        "LINEWATCH_TELEMETRY__ENABLED": "false",
    }


def assert_no_secret(text: str) -> None:
    leaked = [name for name, value in SECRETS.items() if value in text]
    assert not leaked, f"secret values of {leaked} were printed"


def run_until(args: list[str], env: dict[str, str], log: Path, marker: str, timeout_s: float) -> str:
    """Run a CLI until `marker` appears in its output (or it exits), then kill it; its output."""
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, *args], cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout_s
        while marker not in log.read_text(errors="replace") and proc.poll() is None:
            assert time.monotonic() < deadline, f"no {marker!r} within {timeout_s:.0f} s:\n{log.read_text()[-3000:]}"
            time.sleep(0.2)
    finally:
        proc.kill()
        proc.wait(10)
    return log.read_text(errors="replace")


# ----------------------------------------------------------------------------- the settings model


def secret_fields() -> set[str]:
    return {
        f"{section}.{name}"
        for section, section_field in LinewatchSettings.model_fields.items()
        for name, field in section_field.annotation.model_fields.items()
        if SecretStr in (field.annotation, *typing.get_args(field.annotation))
    }


def test_every_secret_setting_is_a_secretstr():
    assert secret_fields() == set(SECRETS)
    for section, section_field in LinewatchSettings.model_fields.items():
        for name in section_field.annotation.model_fields:
            if any(word in name for word in ("password", "secret", "token")):
                assert f"{section}.{name}" in secret_fields(), f"{section}.{name} looks secret but is not SecretStr"


def test_redacted_repr_and_json_never_hold_a_secret(monkeypatch):
    for name, value in secret_env(closed_port()).items():
        monkeypatch.setenv(name, value)
    settings = LinewatchSettings()
    assert settings.kafka.sasl_password.get_secret_value() == SECRETS["kafka.sasl_password"]  # really set
    assert SECRETS["redis.url"] in settings.redis.url.get_secret_value()
    redacted = settings.redacted()
    for name in SECRETS:
        section, field = name.split(".")
        assert redacted[section][field] == MASK, name
    assert_no_secret(json.dumps(redacted) + repr(settings) + str(settings) + settings.model_dump_json())


# ----------------------------------------------------------------------------- what the processes print


@pytest.mark.slow
def test_serve_start_up_print_masks_every_secret(tmp_path):
    output = run_until(
        ["-m", "worker.cli", "--log-level", "DEBUG", "serve"],
        secret_env(closed_port()),
        tmp_path / "serve.log",
        "cannot reach Kafka",
        timeout_s=180,
    )
    settings_line = next(line for line in output.splitlines() if "linewatch worker settings:" in line)
    printed = json.loads(settings_line.split("linewatch worker settings: ", 1)[1])
    for name in SECRETS:
        section, field = name.split(".")
        assert printed[section][field] == MASK, name
    assert printed["kafka"]["sasl_username"] == "linewatch-user"  # the print is the real settings
    assert_no_secret(output)  # nor anywhere else, kafka-python's DEBUG lines included


@pytest.mark.slow
def test_alarm_service_start_up_prints_no_secret(tmp_path):
    rules = REPO_ROOT / "docker" / "alarms.example.yaml"
    output = run_until(
        ["-m", "worker.cli", "--log-level", "DEBUG", "alarms", "--rules", str(rules)],
        secret_env(closed_port()),
        tmp_path / "alarms.log",
        "ECONNREFUSED",
        timeout_s=120,
    )
    assert "alarm service: 5 rules" in output and "https://mes.invalid/alarms" in output
    assert_no_secret(output)


def test_settings_table_prints_no_secret():
    env = secret_env(closed_port())
    output = subprocess.run(
        [sys.executable, "-m", "common.settings"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "`LINEWATCH_KAFKA__SASL_PASSWORD`" in output and "`(secret)`" in output
    assert_no_secret(output)


@pytest.mark.parametrize("misspelt", ["LINEWATCH_KAFKA__SASL_PASWORD", "LINEWATCH_ALARMS__WEBHOOK_SECRT"])
def test_a_misspelt_secret_variable_is_named_but_its_value_not_printed(misspelt, monkeypatch, capsys):
    from worker.cli import main

    for name in [n for n in os.environ if n.startswith("LINEWATCH_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv(misspelt, SECRETS["kafka.sasl_password"])
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert "invalid settings" in err and misspelt.removeprefix("LINEWATCH_").replace("__", ".").lower() in err
    assert_no_secret(err)
