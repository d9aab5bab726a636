"""The dashboard's outer edge (ASGI middleware): security headers on every response and a cap on
request bodies, declared (Content-Length) or streamed (chunked)."""

from __future__ import annotations

import base64
import hashlib
import json
import re

from worker.dashboard.web import STATIC


def _inline_style_hash() -> str:
    """The login page styles itself inline (its CSS cannot sit behind the login): allowed by hash."""
    html = (STATIC / "login.html").read_text(encoding="utf-8")
    style = re.search(r"<style>(.*?)</style>", html, re.S)
    digest = hashlib.sha256(style.group(1).encode() if style else b"").digest()
    return "'sha256-" + base64.b64encode(digest).decode() + "'"


CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' " + _inline_style_hash() + "; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
]
HSTS = (b"strict-transport-security", b"max-age=31536000")


class _BodyTooLarge(Exception):
    pass


class EdgeGuard:
    """Adds the security headers (and HSTS when served over TLS); answers 413 to a body over the cap."""

    def __init__(self, app, *, max_body_bytes: int, tls: bool) -> None:
        self.app, self.max_body_bytes = app, max_body_bytes
        self.headers = SECURITY_HEADERS + ([HSTS] if tls else [])

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_guarded(message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(name, value) for name, value in self.headers if name not in present]
                message = {**message, "headers": list(message.get("headers", [])) + extra}
            await send(message)

        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body_bytes):
            await self._too_large(send_guarded)
            return
        received = 0

        async def receive_capped():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise _BodyTooLarge
            return message

        try:
            await self.app(scope, receive_capped, send_guarded)
        except _BodyTooLarge:
            if not started:
                await self._too_large(send_guarded)

    async def _too_large(self, send) -> None:
        body = json.dumps({"error": f"request body over {self.max_body_bytes} bytes"}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})
