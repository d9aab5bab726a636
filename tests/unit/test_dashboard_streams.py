"""An open live-update (SSE) stream ends as soon as its login no longer holds: logout, a revoked
session, a user removed from the settings, a token taken away. Against a real uvicorn server."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from pydantic import SecretStr

from tests.unit.test_dashboard_security import make_backend
from worker.dashboard.app import build_app
from worker.dashboard.auth import parse_credentials
from worker.dashboard.server import server_for
from worker.dashboard.web import Backend


@contextmanager
def serving(b: Backend) -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = server_for(build_app(b), b.settings, "127.0.0.1", port)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def logged_in(base: str, user: str, password: str) -> httpx.Client:
    client = httpx.Client(base_url=base, timeout=10)
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text).group(1)
    assert client.post("/login", data={"user": user, "password": password, "csrf": csrf}).status_code == 303
    return client


class Listener:
    """Reads one event stream in a thread: `lines` as they come, `closed` once the server ended it."""

    def __init__(self, client: httpx.Client, **headers: str) -> None:
        self.lines: list[str] = []
        self.opened, self.closed = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._read, args=(client, headers), daemon=True)
        self.thread.start()
        assert self.opened.wait(10), "the stream did not open"

    def _read(self, client: httpx.Client, headers: dict[str, str]) -> None:
        with client.stream("GET", "/api/events", headers=headers, timeout=30) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                self.lines.append(line)
                if line.startswith("data:"):
                    self.opened.set()
        self.closed.set()


@pytest.mark.parametrize("how", ["logout", "revoked", "user removed"])
def test_an_open_stream_ends_when_its_session_does(how):
    b = make_backend(push_interval_ms=50)
    with serving(b) as base:
        client = logged_in(base, "vic", "view-pass")
        listener = Listener(client)
        time.sleep(0.3)
        assert not listener.closed.is_set() and b.event_streams == 1  # it stays open while the login holds
        if how == "logout":
            assert client.post("/logout").status_code == 303
        elif how == "revoked":
            assert b.sessions.revoke_user("vic") == 1
        else:
            b.credentials = parse_credentials(SecretStr("olga:x:operator"), None)
        assert listener.closed.wait(5), f"the stream outlived the session ({how})"
        assert "event: ended" in listener.lines
        deadline = time.monotonic() + 5
        while b.event_streams and time.monotonic() < deadline:
            time.sleep(0.05)
        assert b.event_streams == 0  # its slot is free again


def test_an_open_stream_on_a_token_ends_when_the_token_is_taken_away():
    b = make_backend(push_interval_ms=50)
    with serving(b) as base:
        listener = Listener(httpx.Client(base_url=base, timeout=10), authorization="Bearer tok-123")
        time.sleep(0.3)
        assert not listener.closed.is_set()
        b.credentials = parse_credentials(b.settings.dashboard.users, None)  # the kiosk's token is gone
        assert listener.closed.wait(5) and "event: ended" in listener.lines
