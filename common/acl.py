"""Who may do what on the broker: one table of role -> grants, and what it becomes.

Each linewatch process logs in as the principal of its role (a SCRAM user, by default
`linewatch-<role>`), and the broker's authorizer allows exactly the grants below:

| role      | what it is                               | may write                                 |
|-----------|------------------------------------------|-------------------------------------------|
| producer  | a camera / frame source                  | frames                                    |
| worker    | the inspection workers                   | results, dead letters, learned records, audit |
| alarms    | the alarm service                        | alarms, alarm dead letters                |
| dashboard | the operator dashboard                   | feedback, alarm acknowledgements          |
| operator  | `control`, `references`, `calibrate`... | control, feedback, audit                  |

Nobody but the operator writes the control topic. A worker in learning mode writes its
calibrated record to `<control topic>.learned` instead (see common/control_topic.py): the
authorizer keeps it off the control topic, and workers accept a learned record only as the
answer to a learning record in force, so that a worker can close a learning session an
operator opened and change nothing else.

A role may also create the topics it creates today when they are missing (`Create`); where
topics are managed elsewhere (Strimzi `KafkaTopic`s), drop those grants with `with_create=False`.

The same table gives `kafka-acls` command lines (`kafka_acls_commands`, `kafka_acls_args`), Strimzi `KafkaUser`
ACL lists (`strimzi_acls`, `strimzi_kafka_user`) and kafka-python ACL objects (`acl_bindings`).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any, Literal

from common.settings import LinewatchSettings

ROLES: dict[str, str] = {
    "producer": "a camera or frame source: writes frames",
    "worker": "an inspection worker: reads frames and control, writes results, dead letters, learned records, audit",
    "alarms": "the alarm service: reads results, writes alarms and alarm dead letters",
    "dashboard": "the operator dashboard: reads results, alarms, frames, audit; writes feedback and acknowledgements",
    "operator": "the operator's commands (control, references, calibrate, feedback): writes control, feedback, audit",
}

ResourceType = Literal["topic", "group", "cluster", "transactional_id"]
PatternType = Literal["literal", "prefixed"]

READ = ("Read", "Describe")
WRITE = ("Write", "Describe")


@dataclass(frozen=True)
class Grant:
    """Operations allowed on one resource (a topic or group name, or a name prefix)."""

    resource: ResourceType
    name: str
    operations: tuple[str, ...]
    pattern: PatternType = "literal"


def default_user(role: str) -> str:
    return f"linewatch-{role}"


def role_grants(settings: LinewatchSettings, *, with_create: bool = True) -> dict[str, tuple[Grant, ...]]:
    """Every role's grants, with the topic and group names of `settings`."""
    k, alarms, dash = settings.kafka, settings.alarms, settings.dashboard

    def topic(name: str, *operations: str, create: bool = True) -> Grant:
        ops = tuple(dict.fromkeys(operations + (("Create",) if create and with_create else ())))
        return Grant("topic", name, ops)

    def group(name: str, pattern: PatternType = "literal") -> Grant:
        return Grant("group", name, ("Read",), pattern)

    # exactly-once: the transactional ids the workers (prefix-<worker id>) and the alarm service use
    transactions = (
        (Grant("transactional_id", f"{k.transactional_id_prefix}-", WRITE, "prefixed"),)
        if k.processing_guarantee == "exactly-once"
        else ()
    )
    return {
        "producer": (topic(k.frames_topic, *WRITE, "DescribeConfigs"),),
        "worker": (
            topic(k.frames_topic, *READ),
            group(k.group_id),
            topic(k.results_topic, *WRITE),
            topic(k.dlq_topic, *WRITE),
            topic(k.control_topic, *READ),
            topic(k.learned_topic, *READ, "Write"),
            topic(k.audit_topic, *WRITE),
            *transactions,
        ),
        "alarms": (
            topic(k.results_topic, *READ),
            group(alarms.group_id),
            group(alarms.webhook_group_id),
            topic(k.alarms_topic, *READ, "Write"),
            topic(alarms.dlq_topic, *WRITE),
            *transactions,
        ),
        "dashboard": (
            topic(k.results_topic, *READ),
            group(dash.group_id, "prefixed"),  # each replica's group is `<group_id>-<instance id>`
            topic(k.alarms_topic, *READ),
            topic(dash.state_topic, *READ, "Write"),
            topic(k.frames_topic, *READ, create=False),
            topic(k.feedback_topic, *WRITE),
            topic(k.audit_topic, *READ, create=False),
        ),
        "operator": (
            topic(k.control_topic, *READ, "Write"),
            topic(k.learned_topic, *READ),
            topic(k.audit_topic, *READ, "Write"),
            topic(k.feedback_topic, *READ, "Write"),
            topic(k.frames_topic, *READ, create=False),
            topic(k.results_topic, *READ, create=False),
        ),
    }


# --------------------------------------------------------------------------- kafka-acls


def kafka_acls_args(grants: dict[str, tuple[Grant, ...]], users: dict[str, str]) -> list[list[str]]:
    """The `--add ...` arguments of one `kafka-acls` call per grant (without the tool and the broker)."""
    calls = []
    for role, role_grants_ in grants.items():
        for grant in role_grants_:
            argv = ["--add", "--allow-principal", f"User:{users[role]}"]
            for operation in grant.operations:
                argv += ["--operation", operation]
            flag = "--" + grant.resource.replace("_", "-")  # --topic, --group, --transactional-id
            argv += ["--cluster"] if grant.resource == "cluster" else [flag, grant.name]
            if grant.pattern != "literal":
                argv += ["--resource-pattern-type", grant.pattern]
            calls.append(argv)
    return calls


def kafka_acls_commands(
    grants: dict[str, tuple[Grant, ...]],
    users: dict[str, str],
    *,
    bootstrap: str = "${KAFKA_BOOTSTRAP}",
    command_config: str | None = "${KAFKA_ADMIN_CONFIG}",
    tool: str = "kafka-acls.sh",
) -> list[str]:
    """One `kafka-acls --add` line per grant (they are idempotent: run them again after a change)."""
    connection = ["--bootstrap-server", bootstrap] + (["--command-config", command_config] if command_config else [])
    return [" ".join(_quote(a) for a in [tool, *connection, *argv]) for argv in kafka_acls_args(grants, users)]


def _quote(arg: str) -> str:
    # keep ${VAR} and "$VAR" references expandable by the shell that runs the lines
    expandable = (arg.startswith("${") and arg.endswith("}")) or (arg.startswith('"$') and arg.endswith('"'))
    return arg if expandable else shlex.quote(arg)


# --------------------------------------------------------------------------- Strimzi


STRIMZI_PATTERNS = {"literal": "literal", "prefixed": "prefix"}  # the KafkaUser CRD spells it `prefix`


def strimzi_acls(grants: tuple[Grant, ...]) -> list[dict[str, Any]]:
    """`spec.authorization.acls` of a Strimzi `KafkaUser` (kafka.strimzi.io/v1) for one role."""
    acls = []
    for grant in grants:
        resource: dict[str, Any] = {
            "type": "transactionalId" if grant.resource == "transactional_id" else grant.resource
        }
        if grant.resource != "cluster":
            resource |= {"name": grant.name, "patternType": STRIMZI_PATTERNS[grant.pattern]}
        acls.append({"resource": resource, "operations": list(grant.operations), "host": "*"})
    return acls


def strimzi_kafka_user(role: str, user: str, grants: tuple[Grant, ...], *, cluster: str = "linewatch") -> dict:
    """A whole `KafkaUser` resource: SCRAM-SHA-512 login (Strimzi makes the password Secret) and the ACLs."""
    return {
        "apiVersion": "kafka.strimzi.io/v1",
        "kind": "KafkaUser",
        "metadata": {"name": user, "labels": {"strimzi.io/cluster": cluster, "app.kubernetes.io/component": role}},
        "spec": {
            "authentication": {"type": "scram-sha-512"},
            "authorization": {"type": "simple", "acls": strimzi_acls(grants)},
        },
    }


# --------------------------------------------------------------------------- kafka-python


def acl_bindings(grants: dict[str, tuple[Grant, ...]], users: dict[str, str]) -> list:
    """kafka-python `ACL` objects for `KafkaAdminClient.create_acls` (one per grant and operation)."""
    from kafka.admin import ACL, ACLOperation, ACLPermissionType, ACLResourcePatternType, ResourcePattern, ResourceType

    kinds = {
        "topic": ResourceType.TOPIC,
        "group": ResourceType.GROUP,
        "cluster": ResourceType.CLUSTER,
        "transactional_id": ResourceType.TRANSACTIONAL_ID,
    }
    patterns = {"literal": ACLResourcePatternType.LITERAL, "prefixed": ACLResourcePatternType.PREFIXED}
    operations = {
        "Read": ACLOperation.READ,
        "Write": ACLOperation.WRITE,
        "Create": ACLOperation.CREATE,
        "Describe": ACLOperation.DESCRIBE,
        "DescribeConfigs": ACLOperation.DESCRIBE_CONFIGS,
    }
    bindings = []
    for role, role_grants_ in grants.items():
        for grant in role_grants_:
            name = "kafka-cluster" if grant.resource == "cluster" else grant.name
            pattern = ResourcePattern(kinds[grant.resource], name, patterns[grant.pattern])
            for operation in grant.operations:
                bindings.append(
                    ACL(f"User:{users[role]}", "*", operations[operation], ACLPermissionType.ALLOW, pattern)
                )
    return bindings
