"""The Starlette application: login, pages, static assets and the API routes (api.py)."""

from __future__ import annotations

import asyncio
import secrets
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from worker.dashboard import api
from worker.dashboard.auth import check_password, check_token, new_csrf_token
from worker.dashboard.web import STATIC, Backend, backend, page, requires, safe_next

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
    credentials = backend(request).credentials
    if form.get("token"):
        who = check_token(credentials, form["token"])
    else:
        who = check_password(credentials, form.get("user", ""), form.get("password", ""))
    if who is None:
        await asyncio.sleep(FAILED_LOGIN_DELAY_S)
        return await login_page(request, "Unknown user, wrong password or wrong token.", 401)
    request.session.clear()  # a fresh session: no fixation
    request.session.update({"user": who.name, "role": who.role, "csrf": new_csrf_token()})
    return RedirectResponse(safe_next(form.get("next")), status_code=303)


async def logout(request: Request) -> Response:
    request.session.clear()
    return RedirectResponse("/login", status_code=303)


def _page(name: str):
    @requires("viewer", api=False)
    async def handler(request: Request) -> Response:
        who = request.state.principal
        csrf = request.session.get("csrf", "")
        return page(name, csrf=csrf, user=who.name, role=who.role, **request.path_params)

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
        Route("/static/{name}", static),
        Route("/api/me", api.me),
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
        Middleware(
            SessionMiddleware,
            secret_key=secret,
            session_cookie="linewatch_session",
            max_age=settings.session_max_age_s,
            same_site="strict",  # the cookie never rides along a request from another site
            https_only=settings.secure_cookie,
        )
    ]
    app = Starlette(routes=routes, middleware=middleware)
    app.state.backend = b
    return app
