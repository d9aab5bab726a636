"""Request plumbing shared by the pages and the API: who is asking, role checks, CSRF, templates."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from html import escape
from importlib import resources
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from common.control import FeedbackRecord
from common.settings import LinewatchSettings
from worker.dashboard.alarm_state import AlarmAck, Silence
from worker.dashboard.auth import Credentials, Principal, check_token, csrf_matches, still_valid
from worker.dashboard.clients import CheckPool, KnownDevices, client_address, proxy_networks
from worker.dashboard.kafka_io import FetchedRecord
from worker.dashboard.sessions import LoginThrottle, SessionStore
from worker.dashboard.state import LiveState

STATIC = resources.files("worker.dashboard") / "static"
CSRF_HEADER = "x-csrf-token"
Handler = Callable[[Request], Awaitable[Response]]


class RecordWriter(Protocol):
    def feedback(self, record: FeedbackRecord) -> None: ...
    def state(self, record: AlarmAck | Silence) -> None: ...
    def lift_silence(self, camera_id: str) -> None: ...


class RecordReader(Protocol):
    def read(self, topic: str, partition: int, offset: int) -> FetchedRecord: ...


# Overlays drawn at once, and waiting: each holds one decoded frame (up to worker.max_frame_pixels x 3 bytes).
OVERLAY_RENDERS, OVERLAY_RENDERS_QUEUED = 2, 32


@dataclass
class Backend:
    """Everything a request handler may touch."""

    settings: LinewatchSettings
    credentials: Credentials
    state: LiveState
    writer: RecordWriter
    reader: RecordReader
    stopping: Any = None  # a threading.Event set at shutdown (ends the live streams)
    overlays: dict = field(default_factory=dict)
    audit: Any = None  # (scope or None) -> the audit page's records, newest first (worker/dashboard/audit.py)
    sessions: SessionStore = field(init=False)
    throttle: LoginThrottle = field(init=False)
    checks: CheckPool = field(init=False)  # password checks: a bounded pool
    renders: CheckPool = field(init=False)  # overlays drawn at once (each holds a decoded frame)
    proxies: tuple = field(init=False)  # networks of the trusted reverse proxies
    devices: KnownDevices | None = None  # set by build_app (signed with the session key)
    event_streams: int = 0  # live-update connections open now (one event loop: no lock needed)

    def __post_init__(self) -> None:
        dash = self.settings.dashboard
        self.sessions = SessionStore(dash.session_max_age_s, dash.max_sessions)
        self.checks = CheckPool(dash.login_checks, dash.login_checks_queued)
        self.renders = CheckPool(OVERLAY_RENDERS, OVERLAY_RENDERS_QUEUED)
        self.proxies = proxy_networks(dash.trusted_proxies.split(","))
        self.throttle = LoginThrottle(
            max_per_user=dash.login_max_failures_per_user,
            max_per_address=dash.login_max_failures_per_address,
            window_s=dash.login_window_s,
            lockout_s=dash.login_lockout_s,
        )


def backend(request: Request) -> Backend:
    return request.app.state.backend


def address(request: Request) -> str:
    """The client's address (X-Forwarded-For only from a trusted proxy)."""
    return client_address(request, backend(request).proxies)


def principal(request: Request) -> tuple[Principal | None, bool]:
    """(who, by bearer token). A server-side session (its id in the cookie) or an `Authorization: Bearer`
    header. A session whose user is gone from the settings, or has another role now, is ended."""
    b = backend(request)
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return check_token(b.credentials, header[7:].strip()), True
    session_id = request.session.get("sid")
    session = b.sessions.get(session_id)
    if session is None:
        return None, False
    if not still_valid(b.credentials, session.principal):
        b.sessions.revoke(session_id)
        return None, False
    return session.principal, False


def session_csrf(request: Request) -> str:
    session = backend(request).sessions.get(request.session.get("sid"))
    return session.csrf if session is not None else ""


def _same_origin(request: Request) -> bool:
    """Browsers send Origin on cross-site POSTs; when present it must be this very host."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.headers.get("host")


def requires(role: str, *, api: bool = True) -> Callable[[Handler], Handler]:
    """Wrap a handler: anonymous -> 401 (API) or the login page; `operator` writes also need CSRF."""

    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def guarded(request: Request) -> Response:
            b, bearer = backend(request), request.headers.get("authorization", "").lower().startswith("bearer ")
            wait = b.throttle.retry_after(None, address(request)) if bearer else 0.0
            if wait > 0:  # token guesses from this address: locked for now
                headers = {"Retry-After": str(int(wait) + 1)}
                return JSONResponse({"error": "too many failed logins"}, status_code=429, headers=headers)
            who, by_token = principal(request)
            if who is None and by_token:
                b.throttle.failed(None, address(request))
            if who is None:
                if api:
                    return JSONResponse({"error": "login required"}, status_code=401)
                return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)
            if role == "operator":
                if not who.can_write:
                    return JSONResponse({"error": f"{who.name} has the viewer role: read only"}, status_code=403)
                csrf_ok = by_token or csrf_matches(session_csrf(request), request.headers.get(CSRF_HEADER))
                if not csrf_ok or not _same_origin(request):
                    return JSONResponse({"error": "cross-site request refused (CSRF token)"}, status_code=403)
            request.state.principal = who
            return await handler(request)

        return guarded

    return wrap


def page(name: str, **values: str) -> HTMLResponse:
    """A page of static/ with `{{name}}` placeholders filled (HTML-escaped)."""
    html = (STATIC / name).read_text(encoding="utf-8")
    for key, value in values.items():
        html = html.replace("{{" + key + "}}", escape(value))
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})


def safe_next(target: str | None) -> str:
    """Only a path of this site: never `//evil.example` or an absolute URL (open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target
