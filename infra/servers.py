"""Start/stop a local Kafka broker and redis-server that outlive this command (for ``make demo``).

    python -m infra.servers start  --state-dir .demo
    set -a; . .demo/env; set +a          # LINEWATCH_KAFKA__BOOTSTRAP_SERVERS, LINEWATCH_REDIS__URL
    python -m infra.servers status --state-dir .demo
    python -m infra.servers stop   --state-dir .demo

``start`` writes into the state dir:

* ``env``: ``LINEWATCH_KAFKA__BOOTSTRAP_SERVERS=127.0.0.1:PORT`` and
  ``LINEWATCH_REDIS__URL=redis://127.0.0.1:PORT/0`` (plain ``KEY=value`` lines: source
  with ``set -a`` to export them, or read them as a dotenv file);
* ``kafka.pid`` / ``redis.pid``; the broker's data and log under ``kafka/`` and redis's under ``redis/``.

``start`` when both are already running only prints the env file. The Kafka data dir is kept
between runs (topics survive ``stop``/``start``); ``stop --purge`` deletes the state dir.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import sys
from pathlib import Path

from infra import _proc
from infra.kafka_broker import KafkaBroker, KafkaBrokerError
from infra.redis_server import RedisServer, RedisServerError

ENV_KAFKA = "LINEWATCH_KAFKA__BOOTSTRAP_SERVERS"
ENV_REDIS = "LINEWATCH_REDIS__URL"


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _read_ports(state: Path) -> dict[str, int]:
    ports: dict[str, int] = {}
    try:
        for line in (state / "ports").read_text().splitlines():
            key, _, value = line.partition("=")
            if value.strip().isdigit():
                ports[key.strip()] = int(value)
    except OSError:
        pass
    return ports


def _free_or_none(port: int | None) -> int | None:
    if not port:
        return None
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", port))
        return port
    except OSError:
        return None


def _running(pid: int | None, marker: str) -> bool:
    """The pid is alive AND still the server we started (pids get reused)."""
    if pid is None or not _proc.pid_alive(pid):
        return False
    return any(marker in arg for arg in _proc.pid_cmdline(pid))


def _status(state: Path) -> dict[str, bool]:
    return {
        "kafka": _running(_read_pid(state / "kafka.pid"), "kafka.Kafka"),
        "redis": _running(_read_pid(state / "redis.pid"), "redis-server"),
    }


def _stop(state: Path, timeout: float = 30.0) -> None:
    for name, marker in (("kafka", "kafka.Kafka"), ("redis", "redis-server")):
        pid_file = state / f"{name}.pid"
        pid = _read_pid(pid_file)
        if _running(pid, marker):
            _proc.terminate_pid(pid, timeout)
            print(f"stopped {name} (pid {pid})")
        pid_file.unlink(missing_ok=True)
    (state / "env").unlink(missing_ok=True)


def cmd_start(args: argparse.Namespace) -> int:
    state = Path(args.state_dir).resolve()
    state.mkdir(parents=True, exist_ok=True)
    env_file = state / "env"
    st = _status(state)
    if all(st.values()) and env_file.exists():
        print(f"already running; {env_file}:")
        print(env_file.read_text(), end="")
        return 0
    _stop(state)  # half-running from an earlier try: start both afresh

    # Come back on the ports of the previous run when they are free, so an env
    # file someone already sourced stays valid.
    prev = _read_ports(state)
    kafka_port = args.kafka_port or _free_or_none(prev.get("kafka"))
    controller_port = _free_or_none(prev.get("kafka_controller")) if kafka_port else None
    redis_port = args.redis_port or _free_or_none(prev.get("redis"))
    if kafka_port and not controller_port:
        controller_port = next(p for p in _proc.free_ports(2) if p != kafka_port)

    broker = KafkaBroker(
        state / "kafka",
        port=kafka_port,
        controller_port=controller_port,
        die_with_parent=False,
        heap=args.kafka_heap,
        log_level="INFO",
    )
    redis = RedisServer(port=redis_port, work_dir=state / "redis", die_with_parent=False)
    try:
        broker.start()
        redis.start()
    except (KafkaBrokerError, RedisServerError) as exc:
        broker.stop()
        redis.stop()
        print(f"error: {exc}", file=sys.stderr)
        return 1
    # Detach: these objects must not stop the servers when this process exits.
    _proc.unregister_live(broker)
    _proc.unregister_live(redis)

    (state / "ports").write_text(
        f"kafka={broker.port}\nkafka_controller={broker.controller_port}\nredis={redis.port}\n"
    )
    (state / "kafka.pid").write_text(f"{broker.pid}\n")
    (state / "redis.pid").write_text(f"{redis.pid}\n")
    env_file.write_text(f"{ENV_KAFKA}={broker.bootstrap}\n{ENV_REDIS}={redis.url}\n")
    print(
        f"kafka  {broker.bootstrap} (pid {broker.pid}, started in {broker.last_start_seconds:.1f}s, "
        f"log {broker.log_path})"
    )
    print(f"redis  {redis.url} (pid {redis.pid}, log {redis.log_path})")
    print(f"wrote {env_file}")
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    state = Path(args.state_dir).resolve()
    if state.exists():
        _stop(state)
        if args.purge:
            shutil.rmtree(state, ignore_errors=True)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    state = Path(args.state_dir).resolve()
    st = _status(state)
    for name, up in st.items():
        print(f"{name}: {'running' if up else 'stopped'}")
    if all(st.values()) and (state / "env").exists():
        print((state / "env").read_text(), end="")
    return 0 if all(st.values()) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.servers", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_start = sub.add_parser("start", help="start Kafka + Redis in the background, write STATE_DIR/env")
    p_start.add_argument("--state-dir", required=True)
    p_start.add_argument("--kafka-port", type=int, default=None, help="default: a free port")
    p_start.add_argument("--redis-port", type=int, default=None, help="default: a free port")
    p_start.add_argument("--kafka-heap", default="512m")
    p_start.set_defaults(func=cmd_start)
    p_stop = sub.add_parser("stop", help="stop what `start` started")
    p_stop.add_argument("--state-dir", required=True)
    p_stop.add_argument("--purge", action="store_true", help="also delete the state dir (Kafka data)")
    p_stop.set_defaults(func=cmd_stop)
    p_status = sub.add_parser("status", help="exit 0 when both run")
    p_status.add_argument("--state-dir", required=True)
    p_status.set_defaults(func=cmd_status)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
