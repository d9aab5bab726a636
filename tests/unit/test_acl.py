"""The ACL table and what it becomes: kafka-acls lines, Strimzi KafkaUsers, the compose script."""

from __future__ import annotations

import shlex
from pathlib import Path

import yaml

from common.acl import ROLES, acl_bindings, default_user, kafka_acls_commands, role_grants, strimzi_acls
from common.settings import KafkaSettings, LinewatchSettings
from worker.acl_cli import run_acls, script
from worker.cli import build_parser

REPO = Path(__file__).resolve().parents[2]
USERS = {role: default_user(role) for role in ROLES}


def allowed(role: str, topic: str, settings: LinewatchSettings | None = None) -> set[str]:
    grants = role_grants(settings or LinewatchSettings())[role]
    return {op for g in grants if g.resource == "topic" and g.name == topic for op in g.operations}


def test_only_the_operator_writes_control_and_workers_write_the_learned_topic_only():
    k = LinewatchSettings().kafka
    writers = {role for role in ROLES if "Write" in allowed(role, k.control_topic)}
    assert writers == {"operator"}
    assert {role for role in ROLES if "Write" in allowed(role, k.learned_topic)} == {"worker"}
    assert {role for role in ROLES if "Write" in allowed(role, k.feedback_topic)} == {"dashboard", "operator"}
    assert {role for role in ROLES if "Write" in allowed(role, k.frames_topic)} == {"producer"}
    assert {role for role in ROLES if "Write" in allowed(role, k.audit_topic)} == {"worker", "operator"}
    assert "Read" not in allowed("producer", k.results_topic)


def test_the_names_follow_the_settings_and_no_create_drops_create():
    settings = LinewatchSettings(kafka=KafkaSettings(control_topic="line3.control", group_id="line3-workers"))
    grants = role_grants(settings, with_create=False)
    names = {g.name for g in grants["worker"]}
    assert {"line3.control", "line3.control.learned", "line3-workers"} <= names
    assert not any("Create" in g.operations for gs in grants.values() for g in gs)


def test_kafka_acls_lines_are_one_per_grant_and_parse_back():
    grants = role_grants(LinewatchSettings())
    lines = kafka_acls_commands(grants, USERS)
    assert len(lines) == sum(len(g) for g in grants.values())
    dashboard_group = [line for line in lines if "--group linewatch-dashboard" in line]
    assert dashboard_group and "--resource-pattern-type prefixed" in dashboard_group[0]
    argv = shlex.split(lines[0].replace("${KAFKA_BOOTSTRAP}", "b:9092").replace("${KAFKA_ADMIN_CONFIG}", "a"))
    assert argv[:6] == ["kafka-acls.sh", "--bootstrap-server", "b:9092", "--command-config", "a", "--add"]
    assert argv[argv.index("--allow-principal") + 1] == "User:linewatch-producer"


def test_strimzi_acls_and_kafka_users_have_the_v1_shape(capsys):
    acls = strimzi_acls(role_grants(LinewatchSettings())["dashboard"])
    feedback = next(a for a in acls if a["resource"].get("name") == "linewatch.feedback")
    assert feedback == {
        "resource": {"type": "topic", "name": "linewatch.feedback", "patternType": "literal"},
        "operations": ["Write", "Describe", "Create"],
        "host": "*",
    }
    args = build_parser().parse_args(["acls", "--format", "strimzi", "--user", "worker=line3-worker"])
    assert run_acls(args, LinewatchSettings()) == 0
    users = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [u["metadata"]["name"] for u in users] == [USERS[r] if r != "worker" else "line3-worker" for r in ROLES]
    assert all(u["apiVersion"] == "kafka.strimzi.io/v1" and u["kind"] == "KafkaUser" for u in users)
    assert all(u["spec"]["authorization"]["type"] == "simple" for u in users)


def test_a_bad_user_option_is_a_usage_error(capsys):
    args = build_parser().parse_args(["acls", "--user", "janitor=bob"])
    assert run_acls(args, LinewatchSettings()) == 2 and "ROLE=NAME" in capsys.readouterr().err


def test_kafka_python_bindings_cover_every_operation():
    grants = role_grants(LinewatchSettings())
    assert len(acl_bindings(grants, USERS)) == sum(len(g.operations) for gs in grants.values() for g in gs)


def test_the_compose_script_is_the_generated_one():
    committed = (REPO / "docker" / "kafka-acls.sh").read_text()
    assert committed == script(role_grants(LinewatchSettings()), USERS, "SCRAM-SHA-256"), (
        "regenerate it: linewatch-worker acls --format script > docker/kafka-acls.sh"
    )


def test_compose_runs_every_service_as_its_role_with_the_authorizer_on():
    compose = yaml.safe_load((REPO / "docker" / "compose.yaml").read_text())
    dashboard = yaml.safe_load((REPO / "docker" / "compose.dashboard.yaml").read_text())
    services = compose["services"] | dashboard["services"]
    for service, role in {
        "worker": "worker",
        "producer": "producer",
        "alarms": "alarms",
        "operator": "operator",
        "dashboard": "dashboard",
    }.items():
        env = services[service]["environment"]
        assert env["LINEWATCH_KAFKA__SECURITY_PROTOCOL"] == "SASL_PLAINTEXT", service
        assert env["LINEWATCH_KAFKA__SASL_USERNAME"] == default_user(role), service
        assert env["LINEWATCH_KAFKA__SASL_PASSWORD"] == f"${{KAFKA_{role.upper()}_PASSWORD:-}}", service
        assert services[service]["depends_on"]["kafka-init"]["condition"] == "service_completed_successfully"
    kafka = compose["services"]["kafka"]["environment"]
    assert kafka["KAFKA_AUTHORIZER_CLASS_NAME"].endswith("StandardAuthorizer")
    assert kafka["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false"
    protocols = dict(p.split(":") for p in kafka["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    for listener in kafka["KAFKA_LISTENERS"].split(","):
        name, address = listener.split("://")
        assert protocols[name] != "PLAINTEXT" or address.startswith("127.0.0.1:"), listener  # ANONYMOUS stays inside
    init = compose["services"]["kafka-init"]
    assert (
        init["network_mode"] == "service:kafka" and "./kafka-acls.sh:/etc/linewatch/kafka-acls.sh:ro" in init["volumes"]
    )
    assert {f"KAFKA_{role.upper()}_PASSWORD" for role in ROLES} <= set(init["environment"])
    example = (REPO / "docker" / ".env.example").read_text()
    assert all(f"\nKAFKA_{role.upper()}_PASSWORD=" in example for role in ROLES)


def test_exactly_once_grants_the_transactional_ids_of_workers_and_the_alarm_service():
    assert not any(g.resource == "transactional_id" for gs in role_grants(LinewatchSettings()).values() for g in gs)
    settings = LinewatchSettings(kafka=KafkaSettings(processing_guarantee="exactly-once", transactional_id_prefix="l3"))
    grants = role_grants(settings)
    holders = {role for role, gs in grants.items() for g in gs if g.resource == "transactional_id"}
    assert holders == {"worker", "alarms"}
    (worker_ids,) = [g for g in grants["worker"] if g.resource == "transactional_id"]
    assert (worker_ids.name, worker_ids.pattern, worker_ids.operations) == ("l3-", "prefixed", ("Write", "Describe"))
    line = next(
        line for line in kafka_acls_commands({"worker": grants["worker"]}, USERS) if "--transactional-id" in line
    )
    assert "--transactional-id l3- " in line and "--resource-pattern-type prefixed" in line
    strimzi = [a for a in strimzi_acls(grants["alarms"]) if a["resource"]["type"] == "transactionalId"]
    assert strimzi == [
        {
            "resource": {"type": "transactionalId", "name": "l3-", "patternType": "prefix"},
            "operations": ["Write", "Describe"],
            "host": "*",
        }
    ]
    assert any(b.resource_pattern.resource_name == "l3-" for b in acl_bindings(grants, USERS))
