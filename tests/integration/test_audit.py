"""The audit trail against the real broker: every change the control commands make is appended to
the audit topic once, `control history` shows them, `control rollback` restores a version as a new one."""

from __future__ import annotations

import json
import uuid

import pytest
from kafka.admin import ConfigResource, ConfigResourceType

from common.audit import read_audit
from common.control_topic import read_control_topic
from common.kafka import build_admin
from tests.integration.test_worker_service import make_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]

SCOPE = "camera:c1/object:nut"


@pytest.fixture
def cli(kafka_broker, redis_server, monkeypatch, capsys):
    """`linewatch-worker ...` in this process, on topics of the test's own: (exit code, stdout, stderr)."""
    from worker.cli import main

    settings = make_settings(kafka_broker, redis_server.url)
    tag = uuid.uuid4().hex[:8]
    settings = settings.model_copy(
        update={
            "kafka": settings.kafka.model_copy(
                update={"control_topic": f"test.control.{tag}", "audit_topic": f"test.audit.{tag}"}
            )
        }
    )
    for name in ("bootstrap_servers", "control_topic", "audit_topic"):
        monkeypatch.setenv(f"LINEWATCH_KAFKA__{name.upper()}", getattr(settings.kafka, name))

    def run(*argv: str) -> tuple[int, str, str]:
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    run.settings = settings
    return run


def test_every_change_is_audited_once_history_shows_it_and_rollback_restores_a_version(cli):
    k = cli.settings.kafka
    assert (
        cli("control", "set", "--scope", SCOPE, "--image-threshold", "0.7", "--by", "ana", "--reason", "new batch")[0]
        == 0
    )
    assert cli("control", "set", "--scope", SCOPE, "--extra-anomalous", "rusty {}", "--by", "bo")[0] == 0
    assert cli("control", "set", "--scope", SCOPE, "--image-threshold", "0.95", "--by", "eve")[0] == 0
    code, out, _ = cli("control", "rollback", SCOPE, "--to", "2", "--by", "ana", "--reason", "0.95 missed a crack")
    restored = json.loads(out)["record"]
    assert (
        code == 0
        and restored["version"] == 4
        and restored["image_threshold"] == 0.7
        and restored["updated_by"] == "ana"
    )
    assert restored["prompts"]["extra_anomalous_states"] == ["rusty {}"]
    assert read_control_topic(k)[0].records[SCOPE].version == 4
    assert cli("control", "delete", "--scope", SCOPE, "--by", "bo", "--reason", "line retired")[0] == 0

    trail, invalid = read_audit(k, SCOPE)
    assert not invalid
    assert [(a.action, a.version, a.by) for a in trail] == [
        ("set", 1, "ana"),
        ("set", 2, "bo"),
        ("set", 3, "eve"),
        ("rollback", 4, "ana"),
        ("delete", None, "bo"),
    ]
    assert trail[0].reason == "new batch" and trail[0].before is None and trail[0].changed == ("image_threshold",)
    assert trail[2].before.image_threshold == 0.7 and trail[2].after.image_threshold == 0.95
    assert trail[3].reason == "0.95 missed a crack" and trail[3].changed == ("image_threshold",)
    assert trail[4].after is None and trail[4].before.version == 4 and trail[4].reason == "line retired"
    assert all(a.principal is None and a.topic == k.control_topic and a.offset is not None for a in trail)

    code, out, _ = cli("control", "history", SCOPE)
    lines = out.splitlines()
    assert code == 0 and len(lines) == 5
    assert "v1" in lines[0] and "set" in lines[0] and "ana" in lines[0] and "(new batch)" in lines[0]
    assert "rollback" in lines[3] and "deleted" in lines[4]
    from worker.dashboard.audit import read_trail  # what the dashboard's audit page shows

    assert [r["action"] for r in read_trail(cli.settings, SCOPE)] == ["delete", "rollback", "set", "set", "set"]
    code, out, _ = cli("control", "history", SCOPE, "--json")
    assert [json.loads(line)["action"] for line in out.splitlines()][-1] == "delete"

    code, _, err = cli("control", "rollback", SCOPE, "--to", "9")
    assert code == 2 and "no version 9" in err and "[1, 2, 3, 4]" in err
    assert len(read_audit(k, SCOPE)[0]) == 5  # a refused command writes nothing


def topic_config(settings, topic: str) -> dict[str, str]:
    admin = build_admin(settings.kafka)
    try:
        described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        (configs,) = next(iter(described.values())).values()  # {type: {name: {key: data}}}
    finally:
        admin.close()
    return {key: data.get("value") if isinstance(data, dict) else data for key, data in configs.items()}


def test_the_audit_topic_is_never_compacted_and_kept_forever(cli):
    cli("control", "set", "--scope", "object:bolt", "--image-threshold", "0.5", "--by", "ana")
    audit = topic_config(cli.settings, cli.settings.kafka.audit_topic)
    assert (audit["cleanup.policy"], audit["retention.ms"], audit["retention.bytes"]) == ("delete", "-1", "-1")
    assert audit["message.timestamp.type"] == "LogAppendTime"  # readers order by the broker's clock
    for topic in (cli.settings.kafka.control_topic, cli.settings.kafka.learned_topic):  # rollback's window
        control = topic_config(cli.settings, topic)
        assert (control["cleanup.policy"], control["min.compaction.lag.ms"]) == ("compact", str(30 * 86_400_000))


def test_history_flags_a_record_in_force_written_without_the_commands(cli):
    from common.control import ControlRecord
    from common.control_topic import publish_control

    assert cli("control", "set", "--scope", "object:gear", "--image-threshold", "0.5", "--by", "ana")[0] == 0
    publish_control(cli.settings.kafka, "object:gear", ControlRecord(version=2, image_threshold=1.0, updated_by="x"))
    code, out, err = cli("control", "history", "object:gear")
    assert code == 0 and len(out.splitlines()) == 1
    assert "v2 in force has no audit record" in err
