"""`linewatch-worker alarms --rules rules.yaml`: the MES alarm service.

Wiring in worker/cli.py:

    from worker.alarms.cli import add_alarms_parser
    add_alarms_parser(subparsers)          # sets func=run_alarms
    ...
    return args.func(args)

Standalone (same arguments): `python -m worker.alarms.cli --rules rules.yaml`.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger("linewatch.alarms")


def _configure(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument(
        "--rules",
        type=Path,
        default=None,
        help="alarm rules YAML (default: settings alarms.rules_file, env LINEWATCH_ALARMS__RULES_FILE)",
    )
    parser.add_argument("--check", action="store_true", help="validate the rules file, print a summary and exit")
    parser.add_argument(
        "--health-port",
        type=int,
        default=None,
        help="serve /healthz /readyz /metrics here (overrides alarms.health_port)",
    )
    # SUPPRESS: does not override a `--log-level` given to the parent `linewatch-worker` parser
    parser.add_argument("--log-level", default=argparse.SUPPRESS, help="DEBUG, INFO, WARNING ... (default INFO)")
    parser.set_defaults(func=run_alarms)
    return parser


def add_alarms_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `alarms` sub-command to a `parser.add_subparsers()` object."""
    parser = subparsers.add_parser(
        "alarms",
        help="raise MES alarms from inspection results (rules YAML, Kafka, signed webhook)",
        description=(
            "Consume the results topic, apply the alarm rules, publish alarm events to the alarms topic "
            "and deliver them to the MES webhook (alarms.webhook_url, signed with alarms.webhook_secret)."
        ),
    )
    return _configure(parser)


def run_alarms(args: argparse.Namespace) -> int:
    """Run the alarm service until SIGINT/SIGTERM. Exit codes: 0 stopped, 1 failed, 2 bad configuration."""
    from common.redis_acl import warn_if_given_redis_secrets
    from common.settings import LinewatchSettings
    from worker.alarms.config import RulesFileError, load_rules

    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=getattr(logging, str(getattr(args, "log_level", "INFO")).upper(), logging.INFO),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
    try:
        settings = LinewatchSettings()
    except Exception as exc:  # noqa: BLE001 - pydantic ValidationError, missing LINEWATCH_CONFIG ...
        print(f"invalid settings: {exc}", file=sys.stderr)
        return 2
    warn_if_given_redis_secrets(settings.redis, "the alarm service")
    if args.health_port is not None:
        settings = settings.model_copy(
            update={"alarms": settings.alarms.model_copy(update={"health_port": args.health_port})}
        )
    rules_path = args.rules or settings.alarms.rules_file
    if rules_path is None:
        print("no rules file: pass --rules FILE or set LINEWATCH_ALARMS__RULES_FILE", file=sys.stderr)
        return 2
    try:
        rules = load_rules(rules_path)
    except RulesFileError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    if args.check:
        for index, rule in enumerate(rules.rules):
            print(f"rules[{index}] {rule.kind:8} {rule.name}")
        print(f"{rules_path}: {len(rules.rules)} rules OK")
        return 0

    from common.signals import StopOnSignals
    from common.telemetry import TelemetryConfigError, setup_telemetry
    from worker.alarms.service import AlarmService
    from worker.stream.health import start_health_server

    try:
        telemetry = setup_telemetry(settings.telemetry.service_name + "-alarms") if settings.telemetry.enabled else None
    except TelemetryConfigError as exc:
        print(f"invalid telemetry configuration: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()

    log.info(
        "alarm service: %d rules from %s; %s -> %s; MES webhook %s",
        len(rules.rules),
        rules_path,
        settings.kafka.results_topic,
        settings.kafka.alarms_topic,
        settings.alarms.webhook_url or "not configured (Kafka only)",
    )
    health = None
    try:
        service = AlarmService(settings, rules, meter=telemetry.meter if telemetry else None)
        health = start_health_server(
            settings.alarms.health_port, service.readiness, telemetry.prometheus_text if telemetry else None
        )
        with StopOnSignals(stop, "stopping the alarm service"):
            service.run(stop)
    except Exception:
        log.exception("alarm service failed")
        return 1
    finally:
        if health is not None:
            health.stop()
        if telemetry is not None:
            telemetry.shutdown()
    return 0


def build_parser() -> argparse.ArgumentParser:
    return _configure(argparse.ArgumentParser(prog="linewatch-alarms", description=__doc__.splitlines()[0]))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
