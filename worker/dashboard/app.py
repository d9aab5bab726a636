"""The Starlette application: login, pages, static assets and the API routes (api.py)."""

from __future__ import annotations

import asyncio
import logging
import secrets
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from worker.dashboard import api, audit
from worker.dashboard.auth import check_password, check_token, new_csrf_token
from worker.dashboard.clients import KnownDevices, PoolFull
from worker.dashboard.guard import EdgeGuard
from worker.dashboard.web import STATIC, Backend, address, backend, page, requires, safe_next, session_csrf

log = logging.getLogger("linewatch.dashboard")

MAX_LOGIN_BODY = 8192
FAILED_LOGIN_DELAY_S = 1.0  # slows password guessing down
STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "alive"})


async def login_page(request: Request, message: str = "", status: int = 200) -> Response:
    token = request.session.get("login_csrf") or new_csrf_token()
    request.session["login_csrf"] = token
    response = page("login.html", csrf=token, message=message, next=safe_next(request.query_params.get("next")))
    response.status_code = status
    return response


async def login(request: Request) -> Response:
    body = await request.body()
    if len(body) > MAX_LOGIN_BODY:
        return JSONResponse({"error": "login form too large"}, status_code=413)
    form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
    expected = request.session.get("login_csrf")
    if not expected or not secrets.compare_digest(expected, form.get("csrf", "")):
        return await login_page(request, "Your login form expired: please try again.", 403)
    b = backend(request)
    # counted before the check (sessions.LoginThrottle); a token login on its address only
    name = None if form.get("token") else form.get("user", "")
    where = address(request)
    device = b.devices.device_of(request, name) if b.devices is not None and name is not None else None
    wait = b.throttle.begin(name, where, device)
    if wait > 0:
        response = await login_page(request, "Too many failed logins: try again later.", 429)
        response.headers["Retry-After"] = str(int(wait) + 1)
        return response
    if name is None:
        who = check_token(b.credentials, form["token"])
    else:  # argon2 takes tens of milliseconds and 64 MiB: in the bounded pool, off the event loop
        try:
            who = await b.checks.run(check_password, b.credentials, name, form.get("password", ""))
        except PoolFull:
            b.throttle.take_back(name, where, device)  # never checked
            response = await login_page(request, "The dashboard is busy: please try again in a moment.", 503)
            response.headers["Retry-After"] = "1"
            return response
    if who is None:
        log.warning("failed dashboard login for %r from %s", (name or "(token)")[:64], where)
        await asyncio.sleep(FAILED_LOGIN_DELAY_S)
        return await login_page(request, "Unknown user, wrong password or wrong token.", 401)
    b.throttle.succeeded(name, where, device)
    b.sessions.revoke(request.session.get("sid"))
    request.session.clear()  # a fresh session: no fixation
    request.session["sid"] = b.sessions.create(who, new_csrf_token())
    response = RedirectResponse(safe_next(form.get("next")), status_code=303)
    if name is not None and b.devices is not None:
        b.devices.remember(request, response, name)
    return response


async def logout(request: Request) -> Response:
    backend(request).sessions.revoke(request.session.get("sid"))  # ended here, whatever the cookie says
    request.session.clear()
    return RedirectResponse("/login", status_code=303)


def _page(name: str):
    @requires("viewer", api=False)
    async def handler(request: Request) -> Response:
        who = request.state.principal
        return page(name, csrf=session_csrf(request), user=who.name, role=who.role, **request.path_params)

    return handler


@requires("viewer", api=False)
async def static(request: Request) -> Response:
    name = request.path_params["name"]
    suffix = name[name.rfind(".") :] if "." in name else ""
    asset = STATIC / name
    if suffix not in STATIC_TYPES or "/" in name or not asset.is_file():
        return JSONResponse({"error": "not found"}, status_code=404)
    return FileResponse(str(asset), media_type=STATIC_TYPES[suffix], headers={"Cache-Control": "private, max-age=300"})


def build_app(b: Backend) -> Starlette:
    settings = b.settings.dashboard
    secret = settings.session_secret.get_secret_value() if settings.session_secret else secrets.token_urlsafe(32)
    routes = [
        Route("/healthz", healthz),
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/", _page("grid.html")),
        Route("/frame/{camera_id}/{frame_id}", _page("frame.html")),
        Route("/audit", _page("audit.html")),
        Route("/static/{name}", static),
        Route("/api/me", api.me),
        Route("/api/audit", audit.trail),
        Route("/api/state", api.snapshot),
        Route("/api/events", api.events),
        Route("/api/results/{camera_id}/{frame_id}", api.result_json),
        Route("/api/frames/{camera_id}/{frame_id}/overlay.jpg", api.overlay),
        Route("/api/feedback", api.feedback, methods=["POST"]),
        Route("/api/alarms/{alarm_id}/ack", api.acknowledge, methods=["POST"]),
        Route("/api/silences", api.silence, methods=["POST"]),
        Route("/api/silences/{camera_id}/lift", api.lift_silence, methods=["POST"]),
    ]
    middleware = [
        Middleware(EdgeGuard, max_body_bytes=settings.max_body_bytes, tls=settings.tls),
        Middleware(
            SessionMiddleware,
            secret_key=secret,
            session_cookie="linewatch_session",
            max_age=settings.session_max_age_s,
            same_site="strict",  # the cookie never rides along a request from another site
            https_only=settings.secure_cookie or settings.tls,
        ),
    ]
    app = Starlette(routes=routes, middleware=middleware)
    b.devices = KnownDevices(secret, secure=settings.secure_cookie or settings.tls)
    app.state.backend = b
    return app
