"""Running the dashboard: feeds + uvicorn, in the foreground (CLI) or in a thread (tests, benchmark)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from common.settings import LinewatchSettings
from worker.dashboard.app import build_app
from worker.dashboard.audit import read_trail
from worker.dashboard.auth import parse_credentials, warn_about_plain_text
from worker.dashboard.feeds import start_feeds
from worker.dashboard.kafka_io import TopicReader, Writer, ensure_state_topic
from worker.dashboard.state import LiveState
from worker.dashboard.web import Backend

log = logging.getLogger("linewatch.dashboard")


def build_backend(settings: LinewatchSettings, stopping: threading.Event) -> Backend:
    dash = settings.dashboard
    credentials = parse_credentials(dash.users, dash.tokens)
    if credentials.empty:
        log.warning("no dashboard users or tokens configured: nobody can log in (set LINEWATCH_DASHBOARD__USERS)")
    warn_about_plain_text(credentials)
    ensure_state_topic(settings)
    return Backend(
        settings=settings,
        credentials=credentials,
        state=LiveState(
            history_s=dash.history_s, results_per_camera=dash.results_per_camera, max_cameras=dash.max_cameras
        ),
        writer=Writer(settings),
        reader=TopicReader(settings, entries=dash.frame_cache_entries, ttl_s=dash.frame_cache_ttl_s),
        stopping=stopping,
        audit=lambda scope: read_trail(settings, scope),
    )


def server_for(app, settings: LinewatchSettings, host: str, port: int) -> uvicorn.Server:
    """uvicorn for the app: HTTPS when `dashboard.tls_certfile` is set."""
    dash = settings.dashboard
    tls = (
        {"ssl_certfile": str(dash.tls_certfile), "ssl_keyfile": str(dash.tls_keyfile)}
        if dash.tls_certfile is not None and dash.tls_keyfile is not None
        else {}
    )
    # proxy headers are the app's to judge (dashboard.trusted_proxies), not uvicorn's
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=3, proxy_headers=False, **tls
    )
    return uvicorn.Server(config)


def _server(b: Backend, host: str, port: int) -> uvicorn.Server:
    return server_for(build_app(b), b.settings, host, port)


def serve(settings: LinewatchSettings, host: str, port: int) -> None:
    """Until SIGINT/SIGTERM (uvicorn's handlers), then the feeds and the live streams stop."""
    stopping = threading.Event()
    b = build_backend(settings, stopping)
    start_feeds(settings, b.state, stopping)
    log.info("dashboard on %s://%s:%d/", "https" if settings.dashboard.tls else "http", host, port)
    try:
        _server(b, host, port).run()
    finally:
        stopping.set()
        b.writer.close()


@contextmanager
def dashboard_in_thread(settings: LinewatchSettings, host: str = "127.0.0.1", port: int = 8090) -> Iterator[Backend]:
    """A running dashboard for tests and the benchmark; stopped on exit."""
    stopping = threading.Event()
    b = build_backend(settings, stopping)
    start_feeds(settings, b.state, stopping)
    server = _server(b, host, port)
    thread = threading.Thread(target=server.run, name="dashboard-http", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    if not server.started:
        stopping.set()
        raise RuntimeError(f"the dashboard did not start on {host}:{port}")
    try:
        yield b
    finally:
        stopping.set()
        server.should_exit = True
        thread.join(10)
        b.writer.close()
