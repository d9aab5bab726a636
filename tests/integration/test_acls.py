"""Who may do what, enforced by the broker: KRaft's StandardAuthorizer, one SCRAM user per role,
the ACLs `linewatch-worker acls --apply` creates from the project's table (common/acl.py).

One private broker for the module: the shared session broker stays open (no authorizer). Its
PLAINTEXT listener (loopback) is the super user that sets things up, as an admin would; every
role logs in on the SASL listener with its own user.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone

import pytest
from kafka import TopicPartition
from kafka.errors import GroupAuthorizationFailedError, KafkaError, TopicAuthorizationFailedError
from pydantic import SecretStr

from common.acl import ROLES, default_user
from common.audit import audit_record, encode_audit, publish_change, read_audit
from common.control import Calibration, ControlRecord, FeedbackRecord, Learning
from common.control_topic import encode_control, ensure_control_topic, publish_control, read_control_topic
from common.kafka import build_consumer, build_producer, ensure_topics
from common.settings import LinewatchSettings
from infra.kafka_broker import SASL_LISTENER, SCRAM_MECHANISM, KafkaBroker, scram_listeners
from tests.integration.test_worker_service import (
    good_frame,
    make_settings,
    publish_frames,
    read_results,
    running,
    wait_until,
)
from worker.cli import build_parser
from worker.stream.service import WorkerService

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
SCOPE = "object:screw"
PROBE = "object:probe"  # a scope no test writes (the tests run in any order)


def password(role: str) -> str:
    return f"{role}-secret-{role[::-1]}"


@dataclass(frozen=True)
class AclBroker:
    broker: KafkaBroker
    admin: LinewatchSettings  # PLAINTEXT on loopback: the super user

    def as_role(self, role: str) -> LinewatchSettings:
        """The same topics and groups, logged in as the role's SCRAM user."""
        kafka = self.admin.kafka.model_copy(
            update=dict(
                bootstrap_servers=self.broker.listener_bootstrap(SASL_LISTENER),
                security_protocol="SASL_PLAINTEXT",
                sasl_mechanism=SCRAM_MECHANISM,
                sasl_username=default_user(role),
                sasl_password=SecretStr(password(role)),
            )
        )
        return self.admin.model_copy(update={"kafka": kafka})


@pytest.fixture(scope="module")
def acl_broker(tmp_path_factory: pytest.TempPathFactory, redis_server) -> Iterator[AclBroker]:
    options = scram_listeners({default_user(role): password(role) for role in ROLES})
    options["extra_properties"] |= {"authorizer.class.name": AUTHORIZER, "super.users": "User:ANONYMOUS"}
    broker = KafkaBroker(tmp_path_factory.mktemp("kafka-acl"), **options)
    broker.start()
    try:
        admin = make_settings(broker, redis_server.url)
        tag = uuid.uuid4().hex[:8]
        admin = admin.model_copy(
            update={"kafka": admin.kafka.model_copy(update={"control_topic": f"acl.control.{tag}"})}
        )
        args = build_parser().parse_args(["acls", "--apply"])
        from worker.acl_cli import run_acls

        assert run_acls(args, admin) == 0
        k = admin.kafka
        ensure_topics(k, [k.frames_topic, k.results_topic, k.dlq_topic, k.feedback_topic, k.audit_topic])
        ensure_control_topic(k)
        yield AclBroker(broker, admin)
    finally:
        broker.close()


def end_offset(settings: LinewatchSettings, topic: str) -> int:
    consumer = build_consumer(settings.kafka, group_id=None)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        return sum(consumer.end_offsets(partitions).values())
    finally:
        consumer.close()


def send(settings: LinewatchSettings, topic: str, value: bytes, key: bytes = b"k") -> None:
    """One record, acknowledged; raises what the broker answered."""
    producer = build_producer(settings.kafka, max_block_ms=10_000)
    try:
        producer.send(topic, key=key, value=value).get(timeout=15)
    finally:
        producer.close(timeout=5)


def refused(call) -> bool:
    """Whether the broker refused `call` for want of authorization."""
    with pytest.raises(KafkaError) as raised:
        call()
    assert isinstance(raised.value, TopicAuthorizationFailedError), repr(raised.value)
    return True


def a_record(version: int = 50, threshold: float = 1.0) -> ControlRecord:
    return ControlRecord(version=version, image_threshold=threshold, updated_by="intruder")


def test_a_producer_writes_frames_and_cannot_write_control(acl_broker):
    producer, k = acl_broker.as_role("producer"), acl_broker.admin.kafka
    before = end_offset(acl_broker.admin, k.control_topic)
    publish_frames(producer, [good_frame(1)])
    assert refused(lambda: publish_control(producer.kafka, PROBE, a_record(), timeout_s=15))
    for topic in (k.control_topic, k.learned_topic):
        assert refused(lambda t=topic: send(producer, t, a_record().model_dump_json().encode(), PROBE.encode()))
    assert end_offset(acl_broker.admin, k.control_topic) == before
    assert PROBE not in read_control_topic(k)[0].records


def test_the_dashboard_writes_feedback_but_not_control(acl_broker):
    from worker.dashboard.kafka_io import Writer

    dashboard, k = acl_broker.as_role("dashboard"), acl_broker.admin.kafka
    feedback = FeedbackRecord(frame_id="f-1", camera_id="cam-0", object_name="screw", label="false_alarm", by="ana")
    before = end_offset(acl_broker.admin, k.feedback_topic)
    writer = Writer(dashboard)
    try:
        writer.feedback(feedback)
    finally:
        writer.close()
    assert end_offset(acl_broker.admin, k.feedback_topic) == before + 1
    assert refused(lambda: publish_control(dashboard.kafka, PROBE, a_record(), timeout_s=15))
    assert refused(lambda: send(dashboard, k.control_topic, a_record().model_dump_json().encode(), PROBE.encode()))
    assert refused(lambda: send(dashboard, k.audit_topic, b"{}"))  # nor forge the audit trail
    assert PROBE not in read_control_topic(k)[0].records


def test_only_the_operator_writes_control_and_a_worker_only_answers_its_learning_record(acl_broker):
    """The worker principal may write the learned-records topic only; a learned record it writes is in
    force only as the calibration of the learning record the operator wrote."""
    operator, worker, k = acl_broker.as_role("operator"), acl_broker.as_role("worker"), acl_broker.admin.kafka
    assert refused(lambda: send(worker, k.control_topic, a_record().model_dump_json().encode(), SCOPE.encode()))
    # a forged "calibration" of a scope that is not learning stays out of force
    send(worker, k.learned_topic, a_record(version=2).model_dump_json().encode(), b"object:nut")
    nut = ControlRecord(version=1, image_threshold=0.4, updated_by="ana")
    publish_change(operator.kafka, "object:nut", None, nut, "set", by="ana", reason="first batch")
    learning = ControlRecord(version=1, learning=Learning(frames=10, target_fpr=0.1), updated_by="ana")
    publish_change(operator.kafka, SCOPE, None, learning, "set", by="ana", reason="new product")
    assert read_control_topic(k)[0].records["object:nut"].image_threshold == 0.4

    service = WorkerService(worker)
    with running(service):
        wait_until(lambda: service.status().control_caught_up, 120, "the control topics read")
        wait_until(lambda: service.control.state.resolve("cam-0", "screw").learning, 10, "learning in force")
        sent = publish_frames(acl_broker.as_role("producer"), [good_frame(i) for i in range(10)])
        read_results(acl_broker.admin, sent)
        wait_until(lambda: not service.control.state.resolve("cam-0", "screw").learning, 60, "the learned record")
    table, _ = read_control_topic(k)
    record = table.records[SCOPE]
    assert record.version == 2 and record.calibration is not None and record.calibration.by == "worker:worker-1"
    assert table.records["object:nut"].image_threshold == 0.4  # the forged record never took over
    trail, _ = read_audit(acl_broker.admin.kafka, SCOPE)
    assert [(a.action, a.version, a.by, a.principal) for a in trail] == [
        ("set", 1, "ana", "User:linewatch-operator"),
        ("learned", 2, "worker:worker-1", "User:linewatch-worker"),
    ]
    assert trail[1].before == learning and trail[1].after == record and "image_threshold" in trail[1].changed


def joined(settings: LinewatchSettings, topic: str, group: str) -> bool:
    """Whether a consumer of `group` gets partitions of `topic` and commits (False: the broker refused)."""
    consumer = build_consumer(settings.kafka, topic, group_id=group)
    try:
        deadline = time.monotonic() + 30
        while not consumer.assignment() and time.monotonic() < deadline:
            consumer.poll(timeout_ms=200)
        consumer.commit()
        return bool(consumer.assignment())
    except (GroupAuthorizationFailedError, TopicAuthorizationFailedError):
        return False
    finally:
        consumer.close()


def test_each_reader_uses_its_own_consumer_groups_only(acl_broker):
    k, alarms, dash = acl_broker.admin.kafka, acl_broker.admin.alarms, acl_broker.admin.dashboard
    assert joined(acl_broker.as_role("alarms"), k.results_topic, alarms.group_id)
    assert joined(acl_broker.as_role("dashboard"), k.results_topic, f"{dash.group_id}-replica-2")  # a prefix grant
    assert not joined(acl_broker.as_role("dashboard"), k.results_topic, alarms.group_id)
    assert not joined(acl_broker.as_role("alarms"), k.frames_topic, k.group_id)  # nor frames, as a worker


def test_a_worker_account_cannot_replay_a_closed_learning_session(acl_broker):
    """The attack with the worker's own credentials: tombstone the honest learned record on the learned
    topic, then write another calibration of the same session that switches the scope's verdicts off."""
    operator, worker, k = acl_broker.as_role("operator"), acl_broker.as_role("worker"), acl_broker.admin.kafka
    scope = "object:bolt"
    learning = ControlRecord(version=1, learning=Learning(frames=10, target_fpr=0.1), updated_by="ana")
    publish_change(operator.kafka, scope, None, learning, "set", by="ana", reason="new product")
    honest = learning.model_copy(
        update=dict(
            version=2,
            image_threshold=0.42,
            calibration=Calibration(n=10, target_fpr=0.1, by="worker:w1"),
            updated_by="worker:w1",
        )
    )
    send(worker, k.learned_topic, encode_control(honest), scope.encode())
    producer = build_producer(worker.kafka, max_block_ms=10_000)
    try:
        producer.send(k.learned_topic, key=scope.encode(), value=None).get(timeout=15)  # the tombstone
    finally:
        producer.close(timeout=5)
    for threshold in (1.0, 0.99):
        forged = honest.model_copy(update={"image_threshold": threshold, "updated_by": "worker:evil"})
        send(worker, k.learned_topic, encode_control(forged), scope.encode())
    table, refused = read_control_topic(k)
    assert table.records[scope] == honest
    assert sorted(r.reason for r in refused if scope in r.message) == ["out_of_bounds", "replayed"]


def test_a_forged_audit_record_is_neither_first_in_the_trail_nor_restored_by_a_rollback(acl_broker, capsys):
    """The attack with the worker's credentials: append audit records that claim an operator wrote a v2
    with thresholds of 1.0 back in 2020, and a v7 that never was, then let the operator roll back to them."""
    from worker.stream.control_cli import run_control

    operator, worker, k = acl_broker.as_role("operator"), acl_broker.as_role("worker"), acl_broker.admin.kafka
    scope = "object:gear"
    v1, v2 = (ControlRecord(version=v, image_threshold=t, updated_by="ana") for v, t in ((1, 0.5), (2, 0.6)))
    publish_change(operator.kafka, scope, None, v1, "set", by="ana", reason="first batch")
    publish_change(operator.kafka, scope, v1, v2, "set", by="ana", reason="second batch")
    dated = datetime(2020, 1, 1, tzinfo=timezone.utc)
    for version in (2, 7):
        forged = audit_record(operator.kafka, scope, "set", v1, a_record(version=version), by="ana")
        send(worker, k.audit_topic, encode_audit(forged.model_copy(update={"at": dated})), scope.encode())
    trail, _ = read_audit(k, scope)
    assert [(a.version, a.after.image_threshold) for a in trail] == [(1, 0.5), (2, 0.6), (2, 1.0), (7, 1.0)]

    def rollback(version: int) -> int:
        args = build_parser().parse_args(["control", "rollback", scope, "--to", str(version), "--by", "bo"])
        return run_control(args, operator)

    assert rollback(7) == 2 and "no version 7" in capsys.readouterr().err
    assert rollback(2) == 0
    restored = read_control_topic(k)[0].records[scope]
    assert restored.version == 3 and restored.image_threshold == 0.6  # the control topic's v2, not the forgery
