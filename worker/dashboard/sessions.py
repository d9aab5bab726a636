"""Server-side sessions and the login throttle (in memory, per dashboard process).

The session cookie carries only a random session id (signed); who the session belongs to lives
here, so a logout ends it at once and a user removed from the settings (or given another role)
is logged out on the next request. Several replicas behind one address need sticky sessions.

The throttle counts login attempts per user name (per known device) and per client address in a
sliding window; past the limit that key is locked out for a while, and even a right password is refused
from it.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

from worker.dashboard.auth import Principal

Clock = Callable[[], float]


@dataclass(frozen=True)
class Session:
    principal: Principal
    csrf: str
    expires_at: float


class SessionStore:
    """Session id -> Session; the oldest sessions go first past `max_sessions`."""

    def __init__(self, max_age_s: float, max_sessions: int = 10_000, clock: Clock = time.monotonic) -> None:
        self.max_age_s, self.max_sessions, self.clock = max_age_s, max_sessions, clock
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()

    def create(self, principal: Principal, csrf: str) -> str:
        session_id = secrets.token_urlsafe(32)
        with self._lock:
            self._sessions[session_id] = Session(principal, csrf, self.clock() + self.max_age_s)
            while len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)
        return session_id

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        with self._lock:
            session = self._sessions.get(session_id)
            if session is not None and session.expires_at <= self.clock():
                del self._sessions[session_id]
                return None
            return session

    def revoke(self, session_id: str | None) -> None:
        with self._lock:
            self._sessions.pop(session_id or "", None)

    def revoke_user(self, name: str) -> int:
        """End every session of `name`; returns how many."""
        with self._lock:
            ids = [sid for sid, session in self._sessions.items() if session.principal.name == name]
            for sid in ids:
                del self._sessions[sid]
        return len(ids)

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)


class LoginThrottle:
    """Login attempts per key in a sliding window, counted before the password is checked (so
    attempts made at once cannot all pass); past a key's limit it is locked for a while.

    Keys: "user:NAME" for a password login from an unknown browser, "device:ID:NAME" from a browser
    NAME logged in from before (clients.KnownDevices), so guessing a name's password does not lock its
    owner out of their usual device; "addr:IP" for every attempt. A token login counts on its address only.
    A successful login takes its attempt back and clears the user's count."""

    def __init__(
        self,
        *,
        max_per_user: int,
        max_per_address: int,
        window_s: float,
        lockout_s: float,
        clock: Clock = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        self.limits = {"user": max_per_user, "device": max_per_user, "addr": max_per_address}
        self.window_s, self.lockout_s, self.clock, self.max_keys = window_s, lockout_s, clock, max_keys
        self._attempts: OrderedDict[str, deque[float]] = OrderedDict()
        self._locked_until: dict[str, float] = {}
        self._lock = threading.Lock()

    @staticmethod
    def keys(user: str | None, address: str, device: str | None = None) -> tuple[str, ...]:
        if user is None:
            return (f"addr:{address}",)
        return (f"device:{device}:{user}" if device else f"user:{user}", f"addr:{address}")

    def retry_after(self, user: str | None, address: str, device: str | None = None) -> float:
        """Seconds until this user name and address may try again (0: now)."""
        now = self.clock()
        with self._lock:
            return self._wait(self.keys(user, address, device), now)

    def _wait(self, keys: tuple[str, ...], now: float) -> float:
        return max(0.0, *(self._locked_until.get(key, 0.0) - now for key in keys))

    def begin(self, user: str | None, address: str, device: str | None = None) -> float:
        """Count one attempt, unless a key is locked: then the seconds to wait (and nothing counted)."""
        now = self.clock()
        keys = self.keys(user, address, device)
        with self._lock:
            wait = self._wait(keys, now)
            if wait > 0:
                return wait
            for key in keys:
                times = self._attempts.setdefault(key, deque())
                self._attempts.move_to_end(key)
                times.append(now)
                while times and times[0] <= now - self.window_s:
                    times.popleft()
                if len(times) >= self.limits[key.split(":", 1)[0]]:
                    self._locked_until[key] = now + self.lockout_s  # this attempt still goes ahead
                    times.clear()
            while len(self._attempts) > self.max_keys:  # bounded memory under a spray of names
                old, _ = self._attempts.popitem(last=False)
                self._locked_until.pop(old, None)
        return 0.0

    def failed(self, user: str | None, address: str, device: str | None = None) -> None:
        """An attempt that failed without `begin` (a bearer token on an API request)."""
        self.begin(user, address, device)

    def succeeded(self, user: str | None, address: str, device: str | None = None) -> None:
        """A login: its attempt is taken back from the address, the user's (or device's) count cleared."""
        self.take_back(user, address, device, clear_user=True)

    def take_back(self, user: str | None, address: str, device: str | None = None, *, clear_user=False) -> None:
        """Take a counted attempt back (one that was never checked, or `succeeded`)."""
        with self._lock:
            for key in self.keys(user, address, device):
                times = self._attempts.get(key)
                if times and clear_user and not key.startswith("addr:"):
                    times.clear()
                elif times:
                    times.pop()
