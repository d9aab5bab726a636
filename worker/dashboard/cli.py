"""`linewatch-worker dashboard [--port 8090]`: the operator dashboard (no torch needed)."""

from __future__ import annotations

import logging
import sys
import threading

from common.settings import LinewatchSettings

log = logging.getLogger("linewatch.dashboard")


def add_dashboard_parser(subparsers) -> None:
    parser = subparsers.add_parser("dashboard", help="serve the operator dashboard (live results, alarms, feedback)")
    parser.add_argument("--port", type=int, default=None, help="HTTP port (default: dashboard.port, 8090)")
    parser.add_argument("--host", default=None, help="listen address (default: dashboard.host)")


def build_backend(settings: LinewatchSettings, stopping: threading.Event):
    from worker.dashboard.auth import parse_credentials
    from worker.dashboard.kafka_io import TopicReader, Writer, ensure_state_topic
    from worker.dashboard.state import LiveState
    from worker.dashboard.web import Backend

    dash = settings.dashboard
    credentials = parse_credentials(dash.users, dash.tokens)
    ensure_state_topic(settings)
    return Backend(
        settings=settings,
        credentials=credentials,
        state=LiveState(history_s=dash.history_s, results_per_camera=dash.results_per_camera),
        writer=Writer(settings),
        reader=TopicReader(settings, entries=dash.frame_cache_entries, ttl_s=dash.frame_cache_ttl_s),
        stopping=stopping,
    )


def serve(settings: LinewatchSettings, host: str, port: int, *, ready: threading.Event | None = None) -> None:
    """Feeds in threads, uvicorn in this thread, until SIGINT/SIGTERM (or `server.should_exit`)."""
    import uvicorn

    from worker.dashboard.app import build_app
    from worker.dashboard.feeds import start_feeds

    stopping = threading.Event()
    b = build_backend(settings, stopping)
    if b.credentials.empty:
        log.warning("no dashboard users or tokens configured: nobody can log in (set LINEWATCH_DASHBOARD__USERS)")
    start_feeds(settings, b.state, stopping)
    config = uvicorn.Config(build_app(b), host=host, port=port, log_level="warning", timeout_graceful_shutdown=3)
    server = uvicorn.Server(config)
    log.info("dashboard on http://%s:%d/", host, port)
    try:
        server.run()
    finally:
        stopping.set()
        b.writer.close()


def run_dashboard(args, settings: LinewatchSettings) -> int:
    dash = settings.dashboard
    try:
        from worker.dashboard.auth import parse_credentials

        parse_credentials(dash.users, dash.tokens)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    serve(settings, args.host or dash.host, args.port or dash.port)
    return 0
