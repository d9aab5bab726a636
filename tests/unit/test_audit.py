"""Audit records without a broker: what changed, who, and the record a rollback publishes."""

from __future__ import annotations

from datetime import datetime

import pytest
from pydantic import SecretStr

from common.audit import AuditEntry, AuditRecord, audit_record, broker_order, changed_fields, encode_audit
from common.control import Calibration, ControlRecord, Learning, PromptOverrides
from common.control_topic import ControlTable, RefusedRecord
from common.settings import KafkaSettings
from worker.stream.control_cli import UsageError, restored_record

V1 = ControlRecord(version=1, image_threshold=0.7, updated_by="ana")
V2 = ControlRecord(version=2, image_threshold=0.7, prompts=PromptOverrides(object_name="hex nut"), updated_by="bo")


def test_changed_fields_leave_bookkeeping_out():
    assert changed_fields(None, V1) == ("image_threshold",)
    assert changed_fields(V1, V2) == ("prompts",)
    assert changed_fields(V2, None) == ("image_threshold", "prompts")
    assert changed_fields(V1, V1.model_copy(update={"version": 5, "updated_by": "eve"})) == ()


def test_the_principal_is_the_sasl_user_and_none_without_sasl():
    plain = audit_record(KafkaSettings(), "object:nut", "set", None, V1, by="ana", reason="first batch")
    sasl = KafkaSettings(
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="line3-op",
        sasl_password=SecretStr("s"),
    )
    signed = audit_record(sasl, "object:nut", "set", V1, V2, by="bo", where=("linewatch.control", 2, 41))
    assert plain.principal is None and plain.version == 1 and plain.reason == "first batch"
    assert signed.principal == "User:line3-op" and (signed.topic, signed.partition, signed.offset) == (
        "linewatch.control",
        2,
        41,
    )
    assert AuditRecord.model_validate_json(encode_audit(signed)) == signed
    assert b'"s"' not in encode_audit(signed)  # no password anywhere


def test_rollback_restores_a_version_that_was_in_force_as_the_next_one():
    table = ControlTable(keep_history=True)
    table.apply("object:nut", V1)
    table.apply("object:nut", V2)
    restored = restored_record(table, 1, "object:nut", "eve")
    assert restored.version == 3 and restored.image_threshold == 0.7 and restored.prompts is None
    assert restored.updated_by == "eve" and restored.updated_at > V1.updated_at
    with pytest.raises(UsageError, match=r"no version 7 .*\[1, 2\]"):
        restored_record(table, 7, "object:nut", "eve")


def test_rollback_never_restores_a_version_only_the_audit_trail_names():
    """A forged audit record (any writer of the audit topic) names a v2 with thresholds of 1.0: the table
    read from the control topics has no such version, so nothing is restored from it."""
    table = ControlTable(keep_history=True)
    table.apply("object:nut", V1)
    with pytest.raises(UsageError, match=r"no version 2 .*\[1\]"):
        restored_record(table, 2, "object:nut", "eve")


def test_a_learned_record_that_was_in_force_can_be_restored_and_a_refused_one_cannot():
    learning = ControlRecord(version=1, learning=Learning(frames=10, target_fpr=0.1), updated_by="ana")
    learned = learning.model_copy(
        update=dict(version=2, image_threshold=0.4, calibration=Calibration(n=10, target_fpr=0.1, by="worker:w"))
    )
    table = ControlTable(keep_history=True)
    table.apply("object:nut", learning)
    table.apply("object:nut", learned, learned=True)
    with pytest.raises(RefusedRecord):
        table.apply("object:nut", learned.model_copy(update={"image_threshold": 0.9}), learned=True)
    table.apply("object:nut", V1.model_copy(update={"version": 3}))
    assert restored_record(table, 2, "object:nut", "eve").image_threshold == 0.4


def entry(partition: int, offset: int, logged_ms: int, at: str) -> AuditEntry:
    record = audit_record(KafkaSettings(), "object:nut", "set", None, V1, by="x").model_copy(
        update={"at": datetime.fromisoformat(at)}
    )
    return AuditEntry(record, partition, offset, logged_ms)


def test_audit_records_are_ordered_as_the_broker_logged_them_never_by_their_own_date():
    entries = [
        entry(0, 5, 3_000, "2020-01-01T00:00:00+00:00"),  # appended last, dated 2020
        entry(0, 3, 1_000, "2099-01-01T00:00:00+00:00"),  # dated in the future
        entry(1, 0, 2_000, "2026-01-01T00:00:00+00:00"),
        entry(0, 4, 500, "2026-01-01T00:00:00+00:00"),  # a producer-set timestamp cannot move it up its partition
    ]
    ordered = [(e.partition, e.offset) for e in broker_order(entries)]
    assert ordered == [(0, 3), (0, 4), (1, 0), (0, 5)]
