"""The dashboard web app without a broker: login, roles, CSRF, anonymous refusal, live state, feedback body.

The Kafka edges are replaced by in-memory recorders (this is a unit test of the web layer;
tests/integration/test_dashboard.py drives the real thing through a browser)."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from pydantic import SecretStr
from starlette.testclient import TestClient

from common.schemas import InspectionResult, SourceRef, Versions, utc_now
from common.settings import DashboardSettings, LinewatchSettings
from worker.alarms.events import AlarmEvent
from worker.dashboard.alarm_state import AlarmAck, Silence, parse_state_record
from worker.dashboard.app import build_app
from worker.dashboard.auth import Principal, check_password, check_token, parse_credentials
from worker.dashboard.kafka_io import RecordExpired
from worker.dashboard.state import LiveState, fps
from worker.dashboard.web import Backend, safe_next


class Recorder:
    def __init__(self) -> None:
        self.feedback_records, self.state_records, self.lifted = [], [], []

    def feedback(self, record) -> None:
        self.feedback_records.append(record)

    def state(self, record) -> None:
        self.state_records.append(record)

    def lift_silence(self, camera_id: str) -> None:
        self.lifted.append(camera_id)


class ExpiredReader:
    def read(self, topic, partition, offset):
        raise RecordExpired(f"{topic}[{partition}]@{offset}")


def result(camera: str = "cam-1", frame: str = "f-1", score: float = 0.7, verdict: str = "anomalous"):
    now = utc_now()
    return InspectionResult(
        frame_id=frame, camera_id=camera, line_id="line-1", object_name="screw", captured_at=now,
        processed_at=now, score=score, raw_score=score, threshold=0.5, verdict=verdict,
        versions=Versions(model_fingerprint="fp", profile="tiny", prompt_set="ps", threshold_version="static-0.5"),
        worker_id="w", source=SourceRef(topic="frames", partition=0, offset=3),
    )  # fmt: skip


@pytest.fixture
def app():
    settings = LinewatchSettings(
        dashboard=DashboardSettings(
            users=SecretStr("olga:op-pass:operator,vic:view-pass:viewer"), tokens=SecretStr("tok-123:kiosk:viewer")
        )
    )
    state = LiveState()
    recorder = Recorder()
    b = Backend(settings, parse_credentials(settings.dashboard.users, settings.dashboard.tokens), state, recorder,
                ExpiredReader())  # fmt: skip
    return TestClient(build_app(b), base_url="http://dash.test"), state, recorder


def login(client: TestClient, user: str, password: str) -> str:
    page = client.get("/login").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    response = client.post("/login", data={"user": user, "password": password, "csrf": csrf}, follow_redirects=False)
    assert response.status_code == 303, response.text
    grid = client.get("/").text
    return re.search(r'<meta name="csrf" content="([^"]+)"', grid).group(1)


def test_anonymous_clients_get_only_the_login_page_and_healthz(app):
    client, state, _ = app
    state.add_result(result())
    assert client.get("/healthz").json() == {"status": "alive"}
    assert client.get("/login").status_code == 200
    assert client.get("/", follow_redirects=False).headers["location"].startswith("/login")
    for path in ("/api/state", "/api/events", "/api/results/cam-1/f-1", "/api/frames/cam-1/f-1/overlay.jpg",
                 "/static/grid.js"):  # fmt: skip
        assert client.get(path, follow_redirects=False).status_code in (401, 303), path
    assert client.post("/api/feedback", json={}).status_code == 401


def test_wrong_password_and_missing_login_csrf_are_refused(app):
    client, _, _ = app
    page = client.get("/login").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    assert client.post("/login", data={"user": "olga", "password": "nope", "csrf": csrf}).status_code == 401
    assert client.post("/login", data={"user": "olga", "password": "op-pass", "csrf": "forged"}).status_code == 403
    assert client.get("/api/state").status_code == 401


def test_operator_feedback_needs_the_csrf_token_and_records_who(app):
    client, state, recorder = app
    state.add_result(result())
    csrf = login(client, "olga", "op-pass")
    body = {"camera_id": "cam-1", "frame_id": "f-1", "label": "false_alarm"}
    assert client.post("/api/feedback", json=body).status_code == 403  # no token header
    assert client.post("/api/feedback", json=body, headers={"X-CSRF-Token": "x" + csrf}).status_code == 403
    cross = {"X-CSRF-Token": csrf, "Origin": "http://evil.example"}
    assert client.post("/api/feedback", json=body, headers=cross).status_code == 403
    response = client.post("/api/feedback", json=body, headers={"X-CSRF-Token": csrf})
    assert response.status_code == 201, response.text
    (record,) = recorder.feedback_records
    assert (record.label, record.by, record.frame_id, record.object_name) == ("false_alarm", "olga", "f-1", "screw")
    assert record.source == SourceRef(topic="frames", partition=0, offset=3) and record.raw_score == 0.7
    bad = client.post("/api/feedback", json=body | {"label": "maybe"}, headers={"X-CSRF-Token": csrf})
    assert bad.status_code == 422 and "label" in bad.json()["error"]
    unknown = client.post("/api/feedback", json=body | {"frame_id": "nope"}, headers={"X-CSRF-Token": csrf})
    assert unknown.status_code == 404 and len(recorder.feedback_records) == 1


def test_viewers_read_but_cannot_write(app):
    client, state, recorder = app
    state.add_result(result())
    csrf = login(client, "vic", "view-pass")
    assert client.get("/api/state").json()["cameras"][0]["latest"]["frame_id"] == "f-1"
    body = {"camera_id": "cam-1", "frame_id": "f-1", "label": "defect"}
    assert client.post("/api/feedback", json=body, headers={"X-CSRF-Token": csrf}).status_code == 403
    assert client.post("/api/alarms/a-1/ack", json={}, headers={"X-CSRF-Token": csrf}).status_code == 403
    assert recorder.feedback_records == [] and recorder.state_records == []


def test_a_bearer_token_reads_the_api_and_an_expired_frame_gets_a_placeholder(app):
    client, state, _ = app
    state.add_result(result())
    headers = {"Authorization": "Bearer tok-123"}
    assert client.get("/api/me", headers=headers).json() == {"user": "kiosk", "role": "viewer", "can_write": False}
    picture = client.get("/api/frames/cam-1/f-1/overlay.jpg", headers=headers)
    assert picture.headers["content-type"].startswith("image/svg+xml") and b"frame expired" in picture.content
    assert client.get("/api/me", headers={"Authorization": "Bearer wrong"}).status_code == 401


def test_acknowledge_and_silence_are_recorded_with_who(app):
    client, _, recorder = app
    csrf = login(client, "olga", "op-pass")
    assert client.post("/api/alarms/a-1/ack", json={"note": "seen"}, headers={"X-CSRF-Token": csrf}).status_code == 201
    silence = client.post("/api/silences", json={"camera_id": "cam-2", "minutes": 30}, headers={"X-CSRF-Token": csrf})
    assert silence.status_code == 201
    ack, quiet = recorder.state_records
    assert isinstance(ack, AlarmAck) and (ack.alarm_id, ack.by, ack.key) == ("a-1", "olga", "ack:a-1")
    assert isinstance(quiet, Silence) and quiet.key == "silence:cam-2"
    assert timedelta(minutes=29) < quiet.until - quiet.at <= timedelta(minutes=30)
    assert parse_state_record(quiet.model_dump_json().encode()) == quiet


def test_state_deduplicates_and_reports_changes_since_a_version():
    state = LiveState()
    assert state.add_result(result(frame="a"), partition=1)
    assert not state.add_result(result(frame="a"), partition=1)  # redelivered
    v = state.version
    state.add_result(result(camera="cam-2", frame="b", score=0.2, verdict="ok"), partition=2)
    state.set_lag({1: 5, 2: 0})
    changed = state.changes_since(v)
    by_camera = {c["camera_id"]: c for c in changed["cameras"]}
    assert "latest" in by_camera["cam-2"] and "latest" not in by_camera["cam-1"]
    assert by_camera["cam-1"]["lag"] == 5 and changed["lag_total"] == 5 and "alarms" not in changed
    # increments carry only the trend points added since; a first payload carries them all
    state.add_result(result(camera="cam-2", frame="c", score=0.4, verdict="ok"), partition=2)
    later = {c["camera_id"]: c for c in state.changes_since(changed["version"])["cameras"]}
    assert [p[1] for p in later["cam-2"]["history"]] == [0.4]
    whole = state.changes_since(0)
    assert whole["full"] and [p[1] for p in {c["camera_id"]: c for c in whole["cameras"]}["cam-2"]["history"]] == [
        0.2,
        0.4,
    ]


def test_alarm_list_shows_acknowledgements_even_when_they_arrive_first():
    state = LiveState()
    state.apply_state("ack:a-1", AlarmAck(alarm_id="a-1", by="olga"))
    state.add_alarm(AlarmEvent(alarm_id="a-1", kind="anomaly", rule="burst", line_id="l", camera_id="cam-1"))
    state.add_alarm(AlarmEvent(alarm_id="a-2", kind="anomaly", rule="burst", line_id="l", camera_id="cam-2"))
    state.apply_state("silence:cam-2", Silence(camera_id="cam-2", until=utc_now() + timedelta(minutes=5), by="olga"))
    alarms = {a["alarm_id"]: a for a in state.changes_since(0)["alarms"]}
    assert alarms["a-1"]["acked_by"] == "olga" and alarms["a-2"]["acked_by"] is None
    assert alarms["a-2"]["silenced_until"] is not None
    state.apply_state("silence:cam-2", None)  # tombstone lifts it
    assert state.changes_since(0)["alarms"][0]["silenced_until"] is None


def test_fps_counts_the_last_ten_seconds():
    from collections import deque

    arrivals = deque(100.0 + i * 0.2 for i in range(50))  # 5 per second for 10 s
    assert fps(arrivals, 110.0) == pytest.approx(5.0, rel=0.05)
    assert fps(arrivals, 200.0) == 0.0


def test_credentials_parse_and_compare():
    creds = parse_credentials(SecretStr("a:b:c:operator"), SecretStr("t:kiosk:viewer"))
    assert check_password(creds, "a", "b:c") == Principal("a", "operator")  # a password may hold ':'
    assert check_password(creds, "a", "b") is None and check_password(creds, "nobody", "b:c") is None
    assert check_token(creds, "t").role == "viewer" and check_token(creds, "x") is None
    with pytest.raises(ValueError, match="entry 2") as info:
        parse_credentials(SecretStr("a:b:viewer,secret-pw:admin"), None)
    assert "secret-pw" not in str(info.value)
    assert safe_next("//evil.example/x") == "/" and safe_next("/frame/a/b") == "/frame/a/b"


def test_the_dashboard_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, worker.dashboard.server, worker.dashboard.bench; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "False"


def test_the_overlay_keeps_the_frame_size_and_colours_the_hot_area():
    import base64

    import numpy as np

    from common.codecs import decode_image, encode_image, heatmap_to_png, mask_to_rle
    from worker.dashboard.images import heatmap_array, placeholder_svg, render_overlay

    frame = np.full((60, 80, 3), 128, dtype=np.uint8)
    heat = np.zeros((60, 80), dtype=np.float32)
    heat[:, 40:] = 1.0
    mask = np.zeros((60, 80), dtype=bool)
    mask[20:40, 50:70] = True
    hot = result().model_copy(update={"heatmap": heatmap_to_png(heat, max_side=40), "mask": mask_to_rle(mask)})
    assert heatmap_array(hot).shape == (30, 40) and base64.b64decode(hot.heatmap.png_base64)[:4] == b"\x89PNG"
    drawn = decode_image(render_overlay(encode_image(frame, "image/png"), hot))
    assert drawn.shape == frame.shape
    cold_side, hot_side = drawn[5:15, 5:30].astype(int), drawn[5:15, 45:55].astype(int)
    # JET's dark red where the score is 1: green and blue drop, red stays (the frame is mid grey)
    assert hot_side[..., 1:].mean() < cold_side[..., 1:].mean() - 40 and hot_side[..., 0].mean() > 110
    assert np.abs(cold_side - 128).max() < 8  # grey where the score is 0: the frame's own colour, no blue wash
    assert drawn[20, 55:65].min() > 200  # the white outline of the mask
    plain = decode_image(render_overlay(encode_image(frame, "image/png"), result()))  # no heatmap, no mask
    assert np.abs(plain.astype(int) - 128).max() < 8
    assert b"expired" in placeholder_svg("frame expired", "<retention>") and b"&lt;retention&gt;" in placeholder_svg(
        "x", "<retention>"
    )


def test_the_dashboard_command_line(monkeypatch, capsys):
    from worker.cli import build_parser
    from worker.dashboard.cli import build_parser as dashboard_parser
    from worker.dashboard.cli import main

    assert build_parser().parse_args(["dashboard", "--port", "9001"]).port == 9001
    assert dashboard_parser().parse_args(["--host", "0.0.0.0"]).host == "0.0.0.0"
    monkeypatch.setenv("LINEWATCH_DASHBOARD__USERS", "olga:pw:admin")
    assert main([]) == 2
    assert "role viewer or operator" in capsys.readouterr().err
