"""`linewatch-worker dashboard [--port 8090]`: the operator dashboard (no torch needed)."""

from __future__ import annotations

import sys

from common.settings import LinewatchSettings


def add_dashboard_parser(subparsers) -> None:
    parser = subparsers.add_parser("dashboard", help="serve the operator dashboard (live results, alarms, feedback)")
    parser.add_argument("--port", type=int, default=None, help="HTTP port (default: dashboard.port, 8090)")
    parser.add_argument("--host", default=None, help="listen address (default: dashboard.host)")


def run_dashboard(args, settings: LinewatchSettings) -> int:
    dash = settings.dashboard
    try:
        from worker.dashboard.auth import parse_credentials

        parse_credentials(dash.users, dash.tokens)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from worker.dashboard.server import serve

    serve(settings, args.host or dash.host, args.port or dash.port)
    return 0
