"""The dashboard's audit page and its API, without a broker (the audit reader is a stand-in list)."""

from __future__ import annotations

import json

import pytest
from pydantic import SecretStr
from starlette.testclient import TestClient

from common.audit import audit_record
from common.control import ControlRecord
from common.settings import DashboardSettings, LinewatchSettings
from tests.unit.test_dashboard_app import ExpiredReader, Recorder, login
from worker.dashboard.app import build_app
from worker.dashboard.auth import parse_credentials
from worker.dashboard.state import LiveState
from worker.dashboard.web import Backend

V1 = ControlRecord(version=1, image_threshold=0.7, updated_by="ana")
V2 = ControlRecord(version=2, image_threshold=0.9, updated_by="bo")


@pytest.fixture
def client():
    settings = LinewatchSettings(dashboard=DashboardSettings(users=SecretStr("vic:view-pass:viewer")))
    trail = [
        audit_record(settings.kafka, "object:nut", "set", None, V1, by="ana", reason="first batch"),
        audit_record(settings.kafka, "object:nut", "set", V1, V2, by="bo"),
        audit_record(settings.kafka, "object:bolt", "set", None, V1, by="ana"),
    ]
    asked = []

    def audit(scope):
        asked.append(scope)
        found = [r for r in trail if scope is None or r.scope == scope]
        return [json.loads(r.model_dump_json(exclude_none=True)) for r in reversed(found)]

    credentials = parse_credentials(settings.dashboard.users, settings.dashboard.tokens)
    b = Backend(settings, credentials, LiveState(), Recorder(), ExpiredReader(), audit=audit)
    return TestClient(build_app(b), base_url="http://dash.test"), asked


def test_the_audit_page_and_api_need_a_login_and_show_the_trail_newest_first(client):
    http, asked = client
    assert http.get("/api/audit").status_code == 401
    assert http.get("/audit", follow_redirects=False).status_code == 303
    login(http, "vic", "view-pass")
    assert 'src="/static/audit.js"' in http.get("/audit").text
    everything = http.get("/api/audit").json()["records"]
    assert [(r["scope"], r["version"]) for r in everything] == [
        ("object:bolt", 1),
        ("object:nut", 2),
        ("object:nut", 1),
    ]
    nut = http.get("/api/audit", params={"scope": "object:nut"}).json()["records"]
    assert [r["before"]["image_threshold"] if "before" in r else None for r in nut] == [0.7, None]
    assert nut[1]["reason"] == "first batch" and nut[0]["changed"] == ["image_threshold"]
    refused = http.get("/api/audit", params={"scope": "object:nut/evil"})
    assert refused.status_code == 400 and asked == [None, "object:nut"]


def test_the_trail_pages_back_so_appended_records_cannot_push_real_ones_out_of_reach(client, monkeypatch):
    from worker.dashboard import audit as audit_page

    monkeypatch.setattr(audit_page, "PAGE", 2)
    http, _ = client
    login(http, "vic", "view-pass")
    first = http.get("/api/audit").json()
    assert [r["version"] for r in first["records"]] == [1, 2] and first["total"] == 3
    older = http.get("/api/audit", params={"skip": 2}).json()
    assert [(r["scope"], r["version"]) for r in older["records"]] == [("object:nut", 1)]
    assert http.get("/api/audit", params={"skip": "-1"}).status_code == 400
