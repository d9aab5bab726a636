"""Signed, idempotent, retried delivery of alarm events to an MES webhook (stdlib urllib).

Request: `POST <url>` with the alarm event JSON as the body (the exact bytes published on
`linewatch.alarms`) and the headers

    Content-Type: application/json
    Idempotency-Key: <alarm_id>              same on every retry and on redelivery
    X-Linewatch-Event: anomaly | silence
    X-Linewatch-Delivery-Attempt: 1, 2, ...
    X-Linewatch-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>

The signature covers the timestamp, a dot, then the raw body bytes; the timestamp is taken
at each attempt. A receiver recomputes the HMAC over the bytes it received, compares in
constant time and rejects timestamps older than a tolerance (5 minutes) against replays:
see `verify_signature`. More than one `v1=` may appear during a secret rotation.

Outcome of an attempt:
- 2xx: delivered.
- connection error, timeout, 429 or 5xx: retried after an exponential backoff with jitter
  (`base * 2**(n-1)` capped at `max`, half of it fixed and half random; a `Retry-After` in
  seconds is honoured up to the cap), at most `max_attempts` attempts in all.
- any other status (3xx redirects are not followed, 4xx): refused at once, no retry.
The caller dead-letters refused and exhausted events (`linewatch.alarms.dlq`).
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import logging
import random
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path

from pydantic import SecretStr

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Linewatch-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
EVENT_HEADER = "X-Linewatch-Event"
ATTEMPT_HEADER = "X-Linewatch-Delivery-Attempt"
USER_AGENT = "linewatch-alarms/1"
DEFAULT_TOLERANCE_S = 300


def _key(secret: SecretStr | str | bytes) -> bytes:
    if isinstance(secret, SecretStr):
        secret = secret.get_secret_value()
    return secret.encode("utf-8") if isinstance(secret, str) else secret


def signature(secret: SecretStr | str | bytes, timestamp: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of `"<timestamp>." + body`."""
    return hmac.new(_key(secret), str(int(timestamp)).encode("ascii") + b"." + body, hashlib.sha256).hexdigest()


def sign(secret: SecretStr | str | bytes, body: bytes, timestamp: int | None = None) -> str:
    """The `X-Linewatch-Signature` header value for `body`."""
    ts = int(time.time() if timestamp is None else timestamp)
    return f"t={ts},v1={signature(secret, ts, body)}"


def verify_signature(
    secret: SecretStr | str | bytes,
    body: bytes,
    header: str | None,
    *,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> bool:
    """What an MES receiver does: True when `header` signs `body` with `secret`, recently enough."""
    if not header:
        return False
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t":
            try:
                timestamp = int(value)
            except ValueError:
                return False
        elif name == "v1":
            candidates.append(value)
    if timestamp is None or not candidates:
        return False
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        return False
    expected = signature(secret, timestamp, body)
    return any(hmac.compare_digest(expected, candidate) for candidate in candidates)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 8
    base_s: float = 0.5
    max_s: float = 30.0

    def backoff(self, attempt: int, rng: random.Random | None = None, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt `attempt` (1-based): equal jitter, capped."""
        ceiling = min(self.max_s, self.base_s * (2 ** (attempt - 1)))
        delay = ceiling / 2 + (rng or random).uniform(0, ceiling / 2)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.max_s))
        return delay

    def worst_case_s(self, timeout_s: float) -> float:
        """Upper bound of one delivery: every attempt times out and every wait is the cap (Retry-After)."""
        return self.max_attempts * timeout_s + (self.max_attempts - 1) * self.max_s


@dataclass(frozen=True)
class DeliveryResult:
    delivered: bool
    attempts: int
    status: int | None = None  # last HTTP status, None after a connection error
    reason: str | None = None  # why it was not delivered (for the dead letter)
    error_type: str | None = None  # refused | retries_exhausted | aborted
    aborted: bool = False  # stopped while retrying: neither delivered nor refused

    @property
    def dead_letter(self) -> bool:
        return not self.delivered and not self.aborted


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        return None  # a 3xx surfaces as HTTPError: the MES must give the final URL


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


class WebhookClient:
    """POSTs alarm events to one MES endpoint. Thread-safe (no shared mutable state but the RNG)."""

    def __init__(
        self,
        url: str,
        secret: SecretStr | str,
        *,
        timeout_s: float = 5.0,
        policy: RetryPolicy | None = None,
        ca_file: str | Path | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        on_attempt: Callable[[int, int | None, str | None], None] | None = None,
    ) -> None:
        if not url.lower().startswith(("http://", "https://")):
            raise ValueError("webhook url must be http:// or https://")
        self.url = url
        self._secret = secret if isinstance(secret, SecretStr) else SecretStr(secret)
        self.timeout_s = timeout_s
        self.policy = policy or RetryPolicy()
        self._clock = clock
        self._rng = rng or random.Random()
        self._on_attempt = on_attempt
        handlers: list[urllib.request.BaseHandler] = [_NoRedirect()]
        if ca_file is not None:
            handlers.append(urllib.request.HTTPSHandler(context=ssl.create_default_context(cafile=str(ca_file))))
        self._opener = urllib.request.build_opener(*handlers)

    def _attempt(
        self, body: bytes, alarm_id: str, kind: str | None, attempt: int
    ) -> tuple[int | None, str, float | None]:
        """One POST: (status or None, description, Retry-After seconds)."""
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            IDEMPOTENCY_HEADER: alarm_id,
            ATTEMPT_HEADER: str(attempt),
            SIGNATURE_HEADER: sign(self._secret, body, int(self._clock())),
        }
        if kind:
            headers[EVENT_HEADER] = kind
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with self._opener.open(request, timeout=self.timeout_s) as response:
                response.read()
                return int(response.status), f"HTTP {response.status}", None
        except urllib.error.HTTPError as exc:
            try:
                detail = exc.read(512).decode("utf-8", "replace").strip()
            except Exception:  # noqa: BLE001 - the body is only decoration
                detail = ""
            finally:
                exc.close()
            text = f"HTTP {exc.code} {exc.reason}" + (f": {detail}" if detail else "")
            return int(exc.code), text, _retry_after(exc.headers.get("Retry-After") if exc.headers else None)
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            return None, f"connection error: {type(reason).__name__}: {reason}", None

    @staticmethod
    def retryable(status: int | None) -> bool:
        return status is None or status == 429 or status >= 500

    def deliver(
        self,
        body: bytes,
        alarm_id: str,
        *,
        kind: str | None = None,
        stop: threading.Event | None = None,
        on_attempt: Callable[[int, int | None, str | None], None] | None = None,
    ) -> DeliveryResult:
        """Deliver `body`, retrying as the policy says. Waits return early when `stop` is set.

        `on_attempt(attempt, status or None, description)` is called after every attempt.
        """
        stop = stop or threading.Event()
        on_attempt = on_attempt or self._on_attempt
        status: int | None = None
        text = ""
        for attempt in range(1, self.policy.max_attempts + 1):
            status, text, retry_after = self._attempt(body, alarm_id, kind, attempt)
            if on_attempt is not None:
                on_attempt(attempt, status, text)
            if status is not None and 200 <= status < 300:
                return DeliveryResult(True, attempt, status)
            if not self.retryable(status):
                log.warning("MES refused alarm %s: %s (no retry)", alarm_id, text)
                return DeliveryResult(False, attempt, status, f"refused: {text}", "refused")
            if attempt == self.policy.max_attempts:
                break
            delay = self.policy.backoff(attempt, self._rng, retry_after)
            log.info(
                "MES delivery of alarm %s failed (%s), attempt %d; retrying in %.2f s", alarm_id, text, attempt, delay
            )
            if stop.wait(delay):
                return DeliveryResult(
                    False, attempt, status, f"stopped while retrying: {text}", "aborted", aborted=True
                )
        log.error("MES delivery of alarm %s gave up after %d attempts: %s", alarm_id, self.policy.max_attempts, text)
        return DeliveryResult(
            False,
            self.policy.max_attempts,
            status,
            f"gave up after {self.policy.max_attempts} attempts: {text}",
            "retries_exhausted",
        )
