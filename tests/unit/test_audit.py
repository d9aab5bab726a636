"""Audit records without a broker: what changed, who, and the record a rollback publishes."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from common.audit import AuditRecord, audit_record, changed_fields, encode_audit
from common.control import ControlRecord, PromptOverrides
from common.control_topic import ControlTable
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


def test_rollback_restores_a_version_as_the_next_one_and_names_the_versions_it_knows():
    history = [
        audit_record(KafkaSettings(), "object:nut", "set", None, V1, by="ana"),
        audit_record(KafkaSettings(), "object:nut", "set", V1, V2, by="bo"),
    ]
    table = ControlTable()
    table.apply("object:nut", V2)
    restored = restored_record(history, 1, table, "object:nut", "eve")
    assert restored.version == 3 and restored.image_threshold == 0.7 and restored.prompts is None
    assert restored.updated_by == "eve" and restored.updated_at > V1.updated_at
    with pytest.raises(UsageError, match=r"no version 7 .*\[1, 2\]"):
        restored_record(history, 7, table, "object:nut", "eve")
