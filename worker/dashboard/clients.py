"""What the login knows about a client: its address (behind trusted proxies), whether it is a device a
user logged in from before, and the bounded pool its password check runs in.

- `client_address`: the TCP peer, or, when the peer is a trusted proxy (`dashboard.trusted_proxies`), the
  nearest address in `X-Forwarded-For` that is not a trusted proxy. A header from anyone else is ignored.
- Known devices: after a successful login the browser gets a signed cookie naming the users who logged in
  from it (and a random device id). A locked user name does not lock out those devices: their failures
  count under a key of their own (sessions.LoginThrottle).
- `CheckPool`: at most `size` password checks at once (argon2id holds 64 MiB while it runs), at most
  `waiting` more queued for a turn; past that an attempt is refused at once (`PoolFull`: 503).
"""

from __future__ import annotations

import ipaddress
import secrets
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

T = TypeVar("T")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

DEVICE_COOKIE = "linewatch_device"
DEVICE_MAX_AGE_S = 90 * 86_400
DEVICE_USERS = 8  # user names one device cookie remembers


def proxy_networks(entries: Sequence[str]) -> tuple[Network, ...]:
    """`10.0.0.5`, `10.0.0.0/8` or `fd00::/8` entries as networks; ValueError names a bad one."""
    return tuple(ipaddress.ip_network(entry.strip(), strict=False) for entry in entries if entry.strip())


def _trusted(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def client_address(request: Request, networks: tuple[Network, ...]) -> str:
    """The client's address: the peer, or behind trusted proxies the last untrusted X-Forwarded-For hop."""
    peer = request.client.host if request.client else "unknown"
    if not _trusted(peer, networks):
        return peer
    hops = [hop.strip() for value in request.headers.getlist("x-forwarded-for") for hop in value.split(",")]
    for hop in reversed([hop for hop in hops if hop]):
        if not _trusted(hop, networks):
            return hop[:64]
    return peer


class KnownDevices:
    """The signed device cookie: (device id, user names that logged in from it)."""

    def __init__(self, secret: str, *, secure: bool) -> None:
        self._serializer = URLSafeTimedSerializer(secret, salt="linewatch-device")
        self.secure = secure

    def read(self, request: Request) -> tuple[str, list[str]] | None:
        cookie = request.cookies.get(DEVICE_COOKIE)
        if not cookie or len(cookie) > 4096:
            return None
        try:
            device, users = self._serializer.loads(cookie, max_age=DEVICE_MAX_AGE_S)
        except (BadSignature, ValueError, TypeError):
            return None
        if not isinstance(device, str) or not isinstance(users, list):
            return None
        return device, [user for user in users if isinstance(user, str)]

    def device_of(self, request: Request, user: str) -> str | None:
        """The device id when this browser is one `user` logged in from before."""
        known = self.read(request)
        return known[0] if known is not None and user in known[1] else None

    def remember(self, request: Request, response: Response, user: str) -> None:
        device, users = self.read(request) or (secrets.token_urlsafe(16), [])
        users = ([u for u in users if u != user] + [user])[-DEVICE_USERS:]
        response.set_cookie(
            DEVICE_COOKIE,
            self._serializer.dumps([device, users]),
            max_age=DEVICE_MAX_AGE_S,
            httponly=True,
            samesite="strict",
            secure=self.secure,
        )


class PoolFull(RuntimeError):
    """Every slot of the check pool and of its queue is taken."""


class CheckPool:
    """Runs blocking checks (passwords, overlay drawing) in threads, `size` at once, `waiting` more queued;
    the rest refused (PoolFull)."""

    def __init__(self, size: int, waiting: int) -> None:
        self.size, self.waiting = size, waiting
        self._slots = threading.Semaphore(size)
        self._lock = threading.Lock()
        self.admitted = 0  # running or queued now
        self.running = 0
        self.peak = 0  # the most checks that ran at once
        self.refused = 0

    async def run(self, check: Callable[..., T], *args: object) -> T:
        with self._lock:
            if self.admitted >= self.size + self.waiting:
                self.refused += 1
                raise PoolFull(f"{self.admitted} password checks running or waiting")
            self.admitted += 1
        try:
            return await run_in_threadpool(self._in_slot, check, *args)
        finally:
            with self._lock:
                self.admitted -= 1

    def _in_slot(self, check: Callable[..., T], *args: object) -> T:
        with self._slots:
            with self._lock:
                self.running += 1
                self.peak = max(self.peak, self.running)
            try:
                return check(*args)
            finally:
                with self._lock:
                    self.running -= 1
