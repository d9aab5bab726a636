"""`linewatch-worker dashboard [--port 8090]`: the operator dashboard (no torch needed)."""

from __future__ import annotations

import sys

from common.redis_acl import warn_if_given_redis_secrets
from common.settings import LinewatchSettings


def add_dashboard_parser(subparsers) -> None:
    parser = subparsers.add_parser("dashboard", help="serve the operator dashboard (live results, alarms, feedback)")
    parser.add_argument("--port", type=int, default=None, help="HTTP port (default: dashboard.port, 8090)")
    parser.add_argument("--host", default=None, help="listen address (default: dashboard.host)")
    _add_hashing(parser)


def _add_hashing(parser) -> None:
    hashing = parser.add_mutually_exclusive_group()
    hashing.add_argument(
        "--hash-password",
        action="store_true",
        help="read a password (prompted, or one line on stdin) and print its argon2 hash for dashboard.users",
    )
    hashing.add_argument(
        "--hash-token",
        action="store_true",
        help="read a token (prompted, or one line on stdin) and print its SHA-256 digest for dashboard.tokens",
    )


def print_hash(args) -> int | None:
    """`--hash-password` / `--hash-token`: print what goes in the settings (None: neither was asked for)."""
    import getpass

    from worker.dashboard.auth import hash_password, hash_token

    if getattr(args, "hash_password", False):
        what, hasher = "password", hash_password
    elif getattr(args, "hash_token", False):
        what, hasher = "token", hash_token
    else:
        return None
    secret = getpass.getpass(f"{what}: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\r\n")
    try:
        print(hasher(secret))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def run_dashboard(args, settings: LinewatchSettings) -> int:
    if (hashed := print_hash(args)) is not None:
        return hashed
    warn_if_given_redis_secrets(settings.redis, "the dashboard")
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


def build_parser():
    import argparse

    parser = argparse.ArgumentParser(prog="linewatch-dashboard", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--port", type=int, default=None, help="HTTP port (default: dashboard.port, 8090)")
    parser.add_argument("--host", default=None, help="listen address (default: dashboard.host)")
    _add_hashing(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """`linewatch-dashboard`: the same as `linewatch-worker dashboard`, for the torch-less image."""
    import logging

    args = build_parser().parse_args(argv)
    if (hashed := print_hash(args)) is not None:  # needs no settings
        return hashed
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = LinewatchSettings()
    except Exception as exc:
        print(f"error: invalid settings: {exc}", file=sys.stderr)
        return 2
    return run_dashboard(args, settings)


if __name__ == "__main__":
    sys.exit(main())
