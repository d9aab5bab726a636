"""Server-side sessions and the login throttle (in memory, per dashboard process).

The session cookie carries only a random session id (signed); who the session belongs to lives
here, so a logout ends it at once and a user removed from the settings (or given another role)
is logged out on the next request. Several replicas behind one address need sticky sessions.

The throttle counts failed logins per user name and per client address in a sliding window; past
the limit that name or address is locked out for a while, and even a right password is refused.
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
    """Failed logins per key ("user:NAME", "addr:IP") in a sliding window; locked past the limit."""

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
        self.limits = {"user": max_per_user, "addr": max_per_address}
        self.window_s, self.lockout_s, self.clock, self.max_keys = window_s, lockout_s, clock, max_keys
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._locked_until: dict[str, float] = {}
        self._lock = threading.Lock()

    @staticmethod
    def keys(user: str, address: str) -> tuple[str, str]:
        return f"user:{user}", f"addr:{address}"

    def retry_after(self, user: str, address: str) -> float:
        """Seconds until this user name and address may try again (0: now)."""
        now = self.clock()
        with self._lock:
            waits = [self._locked_until.get(key, 0.0) - now for key in self.keys(user, address)]
        return max(0.0, *waits)

    def failed(self, user: str, address: str) -> None:
        now = self.clock()
        with self._lock:
            for key in self.keys(user, address):
                times = self._failures.setdefault(key, deque())
                self._failures.move_to_end(key)
                times.append(now)
                while times and times[0] <= now - self.window_s:
                    times.popleft()
                if len(times) >= self.limits[key.split(":", 1)[0]]:
                    self._locked_until[key] = now + self.lockout_s
                    times.clear()
            while len(self._failures) > self.max_keys:  # bounded memory under a spray of names
                old, _ = self._failures.popitem(last=False)
                self._locked_until.pop(old, None)

    def succeeded(self, user: str) -> None:
        with self._lock:
            self._failures.pop(f"user:{user}", None)
