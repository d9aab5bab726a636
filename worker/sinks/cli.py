"""`linewatch-sinks mqtt | opcua-server | plc`: deliver verdicts to the plant, one consumer group each.

Kafka settings as for every linewatch process (LINEWATCH_KAFKA__*); the sink's own from
LINEWATCH_SINK__*, LINEWATCH_MQTT__*, LINEWATCH_OPCUA__*, LINEWATCH_PLC__* or the YAML file named
by LINEWATCH_SINKS_CONFIG. Exit status: 0 stopped, 1 failed, 2 bad configuration.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from collections.abc import Sequence

from common.redis_acl import warn_if_given_redis_secrets
from common.settings import LinewatchSettings
from common.signals import StopOnSignals
from worker.sinks.health import LineSignals, TopicGrowth, system_state
from worker.sinks.loop import SinkLoop
from worker.sinks.settings import SinkSettings

log = logging.getLogger("linewatch.sinks")

KINDS = {
    "mqtt": "verdicts (retained) and alarms to an MQTT broker",
    "opcua-server": "an OPC UA server with each camera's latest result, ResultReady events and the system state",
    "plc": "write each verdict into a PLC's OPC UA nodes with a result-ready / acknowledge handshake",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="linewatch-sinks", description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=sorted(KINDS), help="; ".join(f"{k}: {v}" for k, v in KINDS.items()))
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def build_loop(kind: str, settings: LinewatchSettings, sinks: SinkSettings) -> SinkLoop:
    """The sink of `kind` (connected / listening) inside its consumer loop."""
    if kind == "mqtt":
        from worker.sinks.mqtt import MqttSink

        return SinkLoop(settings, sinks.sink, MqttSink(sinks.mqtt), group_id=sinks.mqtt.group_id, alarms=True)
    if kind == "opcua-server":
        from worker.sinks.opcua_server import OpcUaServerSink

        return SinkLoop(settings, sinks.sink, OpcUaServerSink(sinks.opcua), group_id=sinks.opcua.group_id)
    from worker.sinks.plc import PlcSink

    return SinkLoop(settings, sinks.sink, PlcSink(sinks.plc), group_id=sinks.plc.group_id)


def watch_state(loop: SinkLoop, settings: LinewatchSettings, sinks: SinkSettings, stop: threading.Event) -> None:
    """Keep the OPC UA server's SystemState up to date (own thread, own group-less consumer)."""
    growth = TopicGrowth(settings.kafka)
    kafka, opcua = settings.kafka, sinks.opcua
    last = None
    try:
        while not stop.wait(opcua.state_interval_s):
            growth.poll()
            signals = LineSignals(
                now=time.monotonic(),
                last_result_at=loop.last_result_at,
                frames_grew_at=growth.grew_at.get(kafka.frames_topic),
                dead_letters_grew_at=growth.grew_at.get(kafka.dlq_topic),
                lag=loop.last_lag,
            )
            state = system_state(signals, degraded_lag=opcua.degraded_lag, faulted_after_s=opcua.faulted_after_s)
            if state != last:
                log.info("system state: %s (%s)", *state)
                loop.sink.set_state(*state)  # type: ignore[attr-defined]
                last = state
    finally:
        growth.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings, sinks = LinewatchSettings(), SinkSettings()
        loop = build_loop(args.kind, settings, sinks)
    except (ValueError, FileNotFoundError) as exc:
        print(f"linewatch-sinks: invalid settings: {exc}", file=sys.stderr)
        return 2
    warn_if_given_redis_secrets(settings.redis, f"the {args.kind} sink")
    stop = threading.Event()
    watcher = None
    if args.kind == "opcua-server":
        watcher = threading.Thread(target=watch_state, args=(loop, settings, sinks, stop), daemon=True)
        watcher.start()
    try:
        with StopOnSignals(stop, "stopping after the message in hand"):
            loop.run(stop)
    except Exception:
        log.exception("%s sink failed", args.kind)
        return 1
    finally:
        stop.set()
        loop.close()
        if watcher is not None:
            watcher.join(timeout=10)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
