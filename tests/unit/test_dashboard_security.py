"""The dashboard's hardening: argon2 passwords, login throttling and lockout, revocable sessions,
secure cookies and TLS, security headers, caps on live-update connections and request bodies."""

from __future__ import annotations

import base64
import datetime
import hashlib
import io
import logging
import re
import socket
import ssl
import threading
import time
import urllib.request

import pytest
from pydantic import SecretStr
from starlette.testclient import TestClient

from common.settings import DashboardSettings, LinewatchSettings
from tests.unit.test_dashboard_app import ExpiredReader, Recorder
from worker.dashboard import app as dashboard_app
from worker.dashboard.app import build_app
from worker.dashboard.auth import (
    Principal,
    check_password,
    check_token,
    hash_password,
    parse_credentials,
    warn_about_plain_text,
)
from worker.dashboard.cli import main as dashboard_main
from worker.dashboard.server import server_for
from worker.dashboard.sessions import LoginThrottle
from worker.dashboard.state import LiveState
from worker.dashboard.web import Backend

OLGA_HASH = hash_password("op, pass")  # a comma in the password: the hash holds commas too


def make_backend(**dashboard) -> Backend:
    fields = {
        "users": SecretStr(f"olga:{OLGA_HASH}:operator,vic:view-pass:viewer"),
        "tokens": SecretStr("tok-123:kiosk:viewer"),
    } | dashboard
    settings = LinewatchSettings(dashboard=DashboardSettings(**fields))
    dash = settings.dashboard
    return Backend(settings, parse_credentials(dash.users, dash.tokens), LiveState(), Recorder(), ExpiredReader())


@pytest.fixture(autouse=True)
def no_failed_login_delay(monkeypatch):
    monkeypatch.setattr(dashboard_app, "FAILED_LOGIN_DELAY_S", 0.0)


def attempt(client: TestClient, user: str, password: str):
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text).group(1)
    return client.post("/login", data={"user": user, "password": password, "csrf": csrf}, follow_redirects=False)


def test_passwords_are_argon2_hashes_and_plain_text_is_accepted_with_a_deprecation_warning(caplog):
    b = make_backend()
    assert OLGA_HASH.startswith("$argon2id$") and "op, pass" not in OLGA_HASH
    assert set(b.credentials.users) == {"olga", "vic"} and b.credentials.plain_text_users == ["vic"]
    assert check_password(b.credentials, "olga", "op, pass").role == "operator"
    assert check_password(b.credentials, "olga", OLGA_HASH) is None  # the hash itself is not a password
    client = TestClient(build_app(b), base_url="http://dash.test")
    assert attempt(client, "olga", "op, pass").status_code == 303
    with caplog.at_level(logging.WARNING):
        warn_about_plain_text(b.credentials)
    assert "DEPRECATED" in caplog.text and "vic" in caplog.text and "view-pass" not in caplog.text


def test_hash_password_prints_a_hash_that_logs_in(monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("s3cret pass\n"))
    assert dashboard_main(["--hash-password"]) == 0
    printed = capsys.readouterr().out.strip()
    creds = parse_credentials(SecretStr(f"ana:{printed}:viewer"), None)
    assert check_password(creds, "ana", "s3cret pass") is not None and check_password(creds, "ana", "s3cret") is None
    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
    assert dashboard_main(["--hash-password"]) == 2


def test_tokens_may_be_stored_as_digests_and_plain_ones_are_warned_about(monkeypatch, capsys, caplog):
    token = "k" * 8 + "-kiosk-token-of-line-1"
    monkeypatch.setattr("sys.stdin", io.StringIO(token + "\n"))
    assert dashboard_main(["--hash-token"]) == 0
    digest = capsys.readouterr().out.strip()
    assert digest == "sha256-" + hashlib.sha256(token.encode()).hexdigest() and token not in digest
    b = make_backend(tokens=SecretStr(f"{digest}:kiosk:viewer,plain-token-of-ops:ops:operator"))
    assert b.credentials.plain_text_tokens == ["ops"]
    assert check_token(b.credentials, token) == Principal("kiosk", "viewer")
    assert check_token(b.credentials, digest) is None  # the digest itself is not a token
    assert check_token(b.credentials, "plain-token-of-ops") == Principal("ops", "operator")
    client = TestClient(build_app(b), base_url="http://dash.test")
    assert client.get("/api/me", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert client.get("/api/me", headers={"Authorization": f"Bearer {digest}"}).status_code == 401
    with caplog.at_level(logging.WARNING):
        warn_about_plain_text(b.credentials)
    assert "DEPRECATED" in caplog.text and "ops" in caplog.text and "plain-token-of-ops" not in caplog.text
    assert "kiosk" not in caplog.text
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))  # a short token is refused, not hashed
    assert dashboard_main(["--hash-token"]) == 2


def test_a_user_is_locked_out_after_repeated_failures_even_with_the_right_password():
    client = TestClient(build_app(make_backend(login_max_failures_per_user=3)), base_url="http://dash.test")
    assert [attempt(client, "olga", "guess").status_code for _ in range(3)] == [401, 401, 401]
    locked = attempt(client, "olga", "op, pass")
    assert locked.status_code == 429 and int(locked.headers["retry-after"]) > 0
    assert attempt(client, "vic", "view-pass").status_code == 303  # another user from this address still may


def test_an_address_is_locked_out_after_failures_spread_over_many_names():
    b = make_backend(login_max_failures_per_address=4, login_max_failures_per_user=100)
    client = TestClient(build_app(b), base_url="http://dash.test")
    assert [attempt(client, f"user{i}", "guess").status_code for i in range(4)] == [401] * 4
    assert attempt(client, "olga", "op, pass").status_code == 429
    assert b.throttle.retry_after("olga", "elsewhere") == 0  # the user name itself is not locked


def test_the_lockout_ends_and_failures_age_out_of_the_window():
    now = [1000.0]
    throttle = LoginThrottle(max_per_user=2, max_per_address=10, window_s=60, lockout_s=300, clock=lambda: now[0])
    throttle.failed("olga", "10.0.0.1")
    now[0] += 61  # the first failure left the window
    throttle.failed("olga", "10.0.0.1")
    assert throttle.retry_after("olga", "10.0.0.1") == 0
    throttle.failed("olga", "10.0.0.1")
    assert throttle.retry_after("olga", "10.0.0.2") == 300
    now[0] += 301
    assert throttle.retry_after("olga", "10.0.0.2") == 0


def test_logout_ends_the_session_server_side_even_if_the_cookie_is_replayed():
    client = TestClient(build_app(make_backend()), base_url="http://dash.test")
    assert attempt(client, "vic", "view-pass").status_code == 303
    stolen = client.cookies.get("linewatch_session")
    assert client.get("/api/me").json()["user"] == "vic"
    assert client.post("/logout", follow_redirects=False).status_code == 303
    client.cookies.set("linewatch_session", stolen)
    assert client.get("/api/me").status_code == 401


def test_a_removed_user_or_a_changed_role_ends_the_session():
    b = make_backend()
    client = TestClient(build_app(b), base_url="http://dash.test")
    assert attempt(client, "olga", "op, pass").status_code == 303
    assert client.get("/api/me").json()["role"] == "operator"
    b.credentials = parse_credentials(SecretStr(f"olga:{OLGA_HASH}:viewer"), None)  # demoted
    assert client.get("/api/me").status_code == 401 and len(b.sessions) == 0
    assert attempt(client, "vic", "view-pass").status_code == 401  # removed: no login either


def test_the_cookie_says_secure_and_httponly_when_tls_or_secure_cookie_is_set(tmp_path):
    for fields in ({"secure_cookie": True}, {}):
        client = TestClient(build_app(make_backend(**fields)), base_url="https://dash.test")
        cookie = client.get("/login").headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        assert ("secure" in cookie) == bool(fields)


def test_every_response_carries_the_security_headers_and_the_login_style_is_allowed_by_hash():
    client = TestClient(build_app(make_backend()), base_url="http://dash.test")
    for response in (client.get("/login"), client.get("/api/state"), client.get("/healthz")):
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["x-content-type-options"] == "nosniff"
        csp = response.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert "strict-transport-security" not in response.headers  # plain HTTP: no HSTS
    style = re.search(r"<style>(.*?)</style>", client.get("/login").text, re.S).group(1)
    digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
    assert f"'sha256-{digest}'" in client.get("/login").headers["content-security-policy"]


def test_live_update_connections_are_capped_and_released():
    b = make_backend(max_event_streams=2)
    b.stopping = threading.Event()
    b.stopping.set()  # each stream sends nothing and ends at once
    client = TestClient(build_app(b), base_url="http://dash.test")
    assert attempt(client, "vic", "view-pass").status_code == 303
    assert client.get("/api/events").status_code == 200 and b.event_streams == 0  # released at its end
    b.event_streams = 2  # two open elsewhere
    refused = client.get("/api/events")
    assert refused.status_code == 503 and refused.headers["retry-after"]


def test_request_bodies_over_the_cap_are_refused_declared_or_streamed():
    b = make_backend(max_body_bytes=2048)
    client = TestClient(build_app(b), base_url="http://dash.test")
    assert attempt(client, "olga", "op, pass").status_code == 303
    csrf = {"X-CSRF-Token": re.search(r'<meta name="csrf" content="([^"]+)"', client.get("/").text).group(1)}
    big = b'{"camera_id": "' + b"x" * 4096 + b'"}'
    assert client.post("/api/feedback", content=big, headers=csrf).status_code == 413
    assert client.post("/login", content=big).status_code == 413  # before any handler
    chunked = client.post("/api/feedback", content=iter([big[:1000], big[1000:]]), headers=csrf)  # no length
    assert chunked.status_code == 413 and "2048" in chunked.json()["error"]
    assert b.settings.dashboard.max_body_bytes == 2048


def _self_signed(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return certfile, keyfile


def test_with_a_certificate_the_dashboard_serves_https_only_with_hsts(tmp_path):
    certfile, keyfile = _self_signed(tmp_path)
    b = make_backend(tls_certfile=certfile, tls_keyfile=keyfile)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = server_for(build_app(b), b.settings, "127.0.0.1", port)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        context = ssl.create_default_context(cafile=str(certfile))
        with urllib.request.urlopen(f"https://localhost:{port}/login", context=context, timeout=5) as response:
            assert response.status == 200
            assert response.headers["strict-transport-security"].startswith("max-age=")
            assert "secure" in response.headers["set-cookie"].lower()
        with pytest.raises(OSError):  # no plain HTTP on that port
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5).read()
    finally:
        server.should_exit = True
        thread.join(10)
    with pytest.raises(ValueError, match="go together"):
        DashboardSettings(tls_certfile=certfile)
