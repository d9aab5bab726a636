"""MES webhook delivery against a real local HTTP server: signature, retries with backoff, refusals."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import socket
import threading
import time

import pytest
from pydantic import SecretStr

from tests.support.mes_server import MesServer
from worker.alarms.webhook import (
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    RetryPolicy,
    WebhookClient,
    sign,
    verify_signature,
)

SECRET = "s3cr3t-shared-with-the-mes"
BODY = json.dumps({"alarm_id": "a-1", "kind": "anomaly", "rule": "r"}).encode()


def client(url: str, **kw) -> WebhookClient:
    policy = kw.pop("policy", RetryPolicy(max_attempts=5, base_s=0.1, max_s=2.0))
    return WebhookClient(url, SecretStr(SECRET), timeout_s=2.0, policy=policy, rng=random.Random(7), **kw)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_delivery_is_signed_and_idempotent() -> None:
    with MesServer(SECRET) as mes:
        outcome = client(mes.url).deliver(BODY, "a-1", kind="anomaly")
        assert outcome.delivered and outcome.attempts == 1 and outcome.status == 200
        (got,) = mes.wait_for(1)
    assert got.body == BODY  # the exact bytes
    assert got.signature_ok
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers[IDEMPOTENCY_HEADER] == "a-1"
    assert got.headers["X-Linewatch-Event"] == "anomaly"
    # verify independently of our helper, exactly as docs/guides/alarms-and-mes.md tells an MES to
    header = got.headers[SIGNATURE_HEADER]
    fields = dict(part.split("=", 1) for part in header.split(","))
    assert abs(int(fields["t"]) - time.time()) < 60
    expected = hmac.new(SECRET.encode(), fields["t"].encode() + b"." + got.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(fields["v1"], expected)


def test_signature_rejects_tampering_wrong_secret_and_stale_timestamps() -> None:
    now = 1_700_000_000
    header = sign(SECRET, BODY, now)
    assert verify_signature(SECRET, BODY, header, now=now + 10)
    assert not verify_signature(SECRET, BODY + b" ", header, now=now)
    assert not verify_signature("other", BODY, header, now=now)
    assert not verify_signature(SECRET, BODY, header, now=now + 301)  # replayed later
    assert not verify_signature(SECRET, BODY, None)
    assert not verify_signature(SECRET, BODY, "t=abc,v1=00")
    # during a secret rotation the header may carry several v1 values
    rotated = header + "," + sign("old-secret", BODY, now).split(",")[1]
    assert verify_signature(SECRET, BODY, rotated, now=now)
    assert verify_signature("old-secret", BODY, rotated, now=now)


def test_fails_twice_then_accepts_with_backoff() -> None:
    attempts: list[tuple[int, int | None]] = []
    with MesServer(SECRET, script=[503, "drop"]) as mes:
        outcome = client(mes.url).deliver(BODY, "a-2", on_attempt=lambda n, status, _text: attempts.append((n, status)))
        got = mes.wait_for(3)
    assert outcome.delivered and outcome.attempts == 3
    assert attempts == [(1, 503), (2, None), (3, 200)]  # the dropped connection counts as a failure
    assert [r.status for r in got] == [503, None, 200]
    # the same request each time: same body, same idempotency key, each attempt freshly signed
    assert {r.body for r in got} == {BODY}
    assert {r.headers[IDEMPOTENCY_HEADER] for r in got} == {"a-2"}
    assert all(r.signature_ok for r in got)
    assert [r.headers["X-Linewatch-Delivery-Attempt"] for r in got] == ["1", "2", "3"]
    # backoff: base 0.1 s doubling, half fixed -> waits of at least 0.05 s then 0.1 s
    gap1, gap2 = got[1].at - got[0].at, got[2].at - got[1].at
    assert 0.05 <= gap1 < 1.0
    assert 0.1 <= gap2 < 1.5


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    policy = RetryPolicy(max_attempts=10, base_s=0.5, max_s=8.0)
    rng = random.Random(1)
    for attempt, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (9, 8.0)]:
        delays = {policy.backoff(attempt, rng) for _ in range(50)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(delays) > 40  # jittered: not all the same
    assert policy.backoff(1, rng, retry_after=5.0) == 5.0  # Retry-After wins when longer ...
    assert policy.backoff(1, rng, retry_after=60.0) == 8.0  # ... up to the cap


def test_429_is_retried_and_retry_after_honoured() -> None:
    with MesServer(SECRET, script=[(429, {"Retry-After": "1"})]) as mes:
        outcome = client(mes.url).deliver(BODY, "a-3")
        got = mes.wait_for(2)
    assert outcome.delivered and outcome.attempts == 2
    assert got[1].at - got[0].at >= 0.95


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
def test_other_4xx_is_refused_without_retry(status: int) -> None:
    with MesServer(SECRET, script=[status]) as mes:
        outcome = client(mes.url).deliver(BODY, "a-4")  # returns once it gave up: no retry can follow
        got = mes.wait_for(1)
    assert len(got) == 1
    assert not outcome.delivered and outcome.dead_letter and not outcome.aborted
    assert outcome.attempts == 1 and outcome.status == status and outcome.error_type == "refused"
    assert outcome.reason is not None and outcome.reason.startswith(f"refused: HTTP {status}")


def test_redirects_are_not_followed() -> None:
    with MesServer(SECRET, script=[(307, {"Location": "http://127.0.0.1:9/elsewhere"})]) as mes:
        outcome = client(mes.url).deliver(BODY, "a-5")
        assert len(mes.wait_for(1)) == 1
    assert outcome.error_type == "refused" and outcome.status == 307


def test_gives_up_after_max_attempts_when_nobody_listens() -> None:
    url = f"http://127.0.0.1:{free_port()}/mes"
    seen: list[int | None] = []
    outcome = client(url, policy=RetryPolicy(max_attempts=3, base_s=0.01, max_s=0.05)).deliver(
        BODY, "a-6", on_attempt=lambda _n, status, _t: seen.append(status)
    )
    assert seen == [None, None, None]
    assert not outcome.delivered and outcome.dead_letter
    assert outcome.error_type == "retries_exhausted" and outcome.attempts == 3
    assert "connection error" in (outcome.reason or "")


def test_stop_interrupts_the_backoff() -> None:
    stop = threading.Event()
    with MesServer(SECRET, default_status=503) as mes:
        webhook = client(mes.url, policy=RetryPolicy(max_attempts=5, base_s=30.0, max_s=30.0))
        timer = threading.Timer(0.3, stop.set)
        timer.start()
        started = time.monotonic()
        outcome = webhook.deliver(BODY, "a-7", stop=stop)
        assert time.monotonic() - started < 5
        timer.cancel()
    assert outcome.aborted and not outcome.delivered and not outcome.dead_letter
    assert outcome.attempts == 1


def test_rejects_non_http_urls() -> None:
    with pytest.raises(ValueError):
        WebhookClient("ftp://mes", SECRET)
