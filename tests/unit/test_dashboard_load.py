"""The dashboard's login under attack: a bounded pool of argon2 checks, attempts counted before the
check, a lockout that spares the owner's known browser, client addresses behind trusted proxies only,
bearer-token guesses throttled. Concurrency is counted (a gate holds the checks), never timed."""

from __future__ import annotations

import re
import threading

import pytest
from argon2 import PasswordHasher
from starlette.testclient import TestClient

from tests.unit.test_dashboard_security import attempt, make_backend
from worker.dashboard import app as dashboard_app
from worker.dashboard import auth
from worker.dashboard.app import build_app
from worker.dashboard.server import server_for

MIB = 1024 * 1024


class GatedHasher(PasswordHasher):
    """The real argon2id verify, counted, each held at a gate until the test opens it."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.lock = threading.Lock()
        self.running = self.peak = self.calls = 0

    def verify(self, hash, password) -> bool:  # noqa: A002 (the library's own parameter name)
        with self.lock:
            self.running += 1
            self.calls += 1
            self.peak = max(self.peak, self.running)
        try:
            assert self.gate.wait(60), "the test never opened the gate"
            return super().verify(hash, password)
        finally:
            with self.lock:
                self.running -= 1


@pytest.fixture(autouse=True)
def no_failed_login_delay(monkeypatch):
    monkeypatch.setattr(dashboard_app, "FAILED_LOGIN_DELAY_S", 0.0)


@pytest.fixture
def hasher(monkeypatch) -> GatedHasher:
    gated = GatedHasher()
    monkeypatch.setattr(auth, "HASHER", gated)
    return gated


def storm(client: TestClient, hasher: GatedHasher, users: list[str], answered_before_gate: int) -> list[int]:
    """len(users) logins at once; the gate opens once `answered_before_gate` of them were answered."""
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text).group(1)
    statuses: list[int] = []
    answered = threading.Condition()
    start = threading.Barrier(len(users))

    def one(user: str) -> None:
        start.wait()
        response = client.post("/login", data={"user": user, "password": "guess", "csrf": csrf}, follow_redirects=False)
        with answered:
            statuses.append(response.status_code)
            answered.notify_all()

    threads = [threading.Thread(target=one, args=(user,)) for user in users]
    for thread in threads:
        thread.start()
    with answered:
        assert answered.wait_for(lambda: len(statuses) >= answered_before_gate, 60), statuses
    hasher.gate.set()
    for thread in threads:
        thread.join(60)
    return sorted(statuses)


def test_forty_concurrent_bad_logins_run_at_most_the_pool_size_of_argon2_checks(hasher):
    b = make_backend(
        login_checks=2, login_checks_queued=4, login_max_failures_per_user=100, login_max_failures_per_address=100
    )
    with TestClient(build_app(b), base_url="http://dash.test") as client:
        statuses = storm(client, hasher, [f"user{i}" for i in range(40)], answered_before_gate=34)
    assert statuses == [401] * 6 + [503] * 34  # 2 checked, 4 queued; the rest refused at once
    assert hasher.peak == 2 and hasher.calls == 6 and b.checks.admitted == 0
    assert hasher.peak * hasher.memory_cost * 1024 <= 2 * 64 * MIB  # argon2id's memory, bounded by the pool


def test_concurrent_guesses_of_one_name_pass_the_throttle_only_up_to_its_limit(hasher):
    b = make_backend(login_checks=2, login_checks_queued=8, login_max_failures_per_user=5)
    with TestClient(build_app(b), base_url="http://dash.test") as client:
        statuses = storm(client, hasher, ["olga"] * 40, answered_before_gate=35)
    assert statuses == [401] * 5 + [429] * 35 and hasher.calls == 5


def test_a_locked_name_still_logs_in_from_the_browser_its_owner_used_before():
    b = make_backend(login_max_failures_per_user=3)
    app = build_app(b)
    owner = TestClient(app, base_url="http://dash.test")
    assert attempt(owner, "olga", "op, pass").status_code == 303
    assert owner.cookies.get("linewatch_device")
    owner.post("/logout")
    attacker = TestClient(app, base_url="http://dash.test")
    assert [attempt(attacker, "olga", "guess").status_code for _ in range(4)] == [401, 401, 401, 429]
    assert attempt(attacker, "olga", "op, pass").status_code == 429  # the name is locked for unknown browsers
    assert attempt(owner, "olga", "op, pass").status_code == 303  # not for the owner's
    owner.post("/logout")
    # the known browser is throttled on its own count: a stolen device cookie gives 3 guesses, not more
    assert [attempt(owner, "olga", "guess").status_code for _ in range(4)] == [401, 401, 401, 429]
    forged = TestClient(
        app, base_url="http://dash.test", cookies={"linewatch_device": "x" + owner.cookies["linewatch_device"]}
    )
    assert attempt(forged, "olga", "op, pass").status_code == 429  # an unsigned cookie is no known device


def test_a_busy_pool_answers_503_and_does_not_count_the_attempt(hasher):
    b = make_backend(login_checks=1, login_checks_queued=0, login_max_failures_per_user=2)
    b.checks.admitted = 1  # one check running elsewhere
    client = TestClient(build_app(b), base_url="http://dash.test")
    busy = attempt(client, "olga", "op, pass")
    assert busy.status_code == 503 and busy.headers["retry-after"] == "1" and hasher.calls == 0
    assert attempt(client, "olga", "op, pass").status_code == 503
    b.checks.admitted = 0
    hasher.gate.set()
    assert attempt(client, "olga", "op, pass").status_code == 303  # the two refused attempts never counted


def test_x_forwarded_for_names_the_client_only_behind_a_trusted_proxy():
    app = build_app(make_backend(login_max_failures_per_address=3, trusted_proxies="10.0.0.0/8"))

    def client(peer: str, forwarded: str) -> TestClient:
        return TestClient(app, base_url="http://dash.test", client=(peer, 4000), headers={"X-Forwarded-For": forwarded})

    # from anywhere else the header is the attacker's own: each guess counts on the real peer
    spoofing = [client("203.0.113.9", f"198.51.100.{i}") for i in range(4)]
    assert [attempt(c, f"u{i}", "guess").status_code for i, c in enumerate(spoofing)] == [401, 401, 401, 429]
    # behind the ingress, each client has its own count: one locked address locks nobody else
    hidden = client("10.0.0.2", "198.51.100.7, 10.0.0.3")
    assert [attempt(hidden, f"v{i}", "guess").status_code for i in range(4)] == [401, 401, 401, 429]
    assert attempt(client("10.0.0.2", "198.51.100.8"), "vic", "view-pass").status_code == 303
    # a client cannot escape its count by prepending hops: the nearest untrusted one counts
    assert attempt(client("10.0.0.2", "1.2.3.4, 198.51.100.7"), "vic", "view-pass").status_code == 429


def test_bearer_token_guesses_are_throttled_per_address():
    app = build_app(make_backend(login_max_failures_per_address=3))
    guesser = TestClient(app, base_url="http://dash.test", client=("203.0.113.9", 4000))
    guesses = [guesser.get("/api/state", headers={"Authorization": f"Bearer guess-{i}"}) for i in range(4)]
    assert [r.status_code for r in guesses] == [401, 401, 401, 429] and guesses[-1].headers["retry-after"]
    assert guesser.get("/api/state", headers={"Authorization": "Bearer tok-123"}).status_code == 429
    kiosk = TestClient(app, base_url="http://dash.test", client=("198.51.100.4", 4000))
    assert kiosk.get("/api/state", headers={"Authorization": "Bearer tok-123"}).status_code == 200
    for _ in range(5):  # a right token does not count
        assert kiosk.get("/api/me", headers={"Authorization": "Bearer tok-123"}).status_code == 200


def test_uvicorn_leaves_proxy_headers_to_the_app():
    b = make_backend()
    assert server_for(build_app(b), b.settings, "127.0.0.1", 8090).config.proxy_headers is False
