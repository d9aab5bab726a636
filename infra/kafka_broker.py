"""A real single-node Apache Kafka broker (KRaft, combined broker+controller) for tests and demos.

The broker runs ``java -cp 'infra/kafka/target/lib/*' kafka.Kafka server.properties``
with the jars pinned in ``infra/kafka/pom.xml`` (fetched by ``scripts/kafka_jars.sh``).

    broker = KafkaBroker()          # temp data dir, free ports picked at first start
    broker.start()                  # returns once the broker answers Metadata requests
    broker.bootstrap                # "127.0.0.1:PORT"
    broker.restart(down_seconds=5)  # same port, same data dir: topics and data survive
    broker.kill()                   # SIGKILL (crash); start() recovers the logs
    broker.close()                  # stop and delete a temp data dir

Extra listeners (e.g. for a SASL/SCRAM test) get their own free ports::

    broker = KafkaBroker(
        extra_listeners={"SASL": "SASL_PLAINTEXT"},
        scram_credentials=["SCRAM-SHA-256=[name=alice,password=alice-secret]"],
        extra_properties={
            "sasl.enabled.mechanisms": "SCRAM-SHA-256",
            "listener.name.sasl.scram-sha-256.sasl.jaas.config":
                "org.apache.kafka.common.security.scram.ScramLoginModule required;",
        },
    )
    broker.start(); broker.listener_bootstrap("SASL")

``scram_listeners`` builds those keyword arguments: a ``SASL`` (SASL_PLAINTEXT) listener and,
given a self-signed keystore from ``make_self_signed_tls``, a ``SASL_TLS`` (SASL_SSL) one::

    tls = make_self_signed_tls(tmp_dir)          # keytool: PKCS12 keystore + PEM for ssl_cafile
    broker = KafkaBroker(**scram_listeners({"linewatch": "secret"}, tls=tls)).start()
    broker.listener_bootstrap(SASL_TLS_LISTENER)  # clients: SASL_SSL, SCRAM-SHA-256, ssl_cafile=tls.ca_file
"""

from __future__ import annotations

import base64
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from infra import _proc

log = logging.getLogger(__name__)

KAFKA_DIR = _proc.REPO_ROOT / "infra" / "kafka"
DEFAULT_LIB_DIR = KAFKA_DIR / "target" / "lib"
KAFKA_JARS_SCRIPT = _proc.REPO_ROOT / "scripts" / "kafka_jars.sh"

HOST = "127.0.0.1"
KAFKA_MIN_JAVA = 17
STARTED_LINE = "Kafka Server started"
# 10 MiB: room for full-resolution frames; clients must raise their own limits
# (producer max_request_size, consumer max_partition_fetch_bytes) to use it.
MESSAGE_MAX_BYTES = 10 * 1024 * 1024

LOG4J2_XML = """<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN" shutdownHook="disable">
  <Appenders>
    <Console name="STDOUT" target="SYSTEM_OUT">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
    </Console>
  </Appenders>
  <Loggers>
    <Root level="{level}"><AppenderRef ref="STDOUT"/></Root>
    <Logger name="kafka.request.logger" level="WARN"/>
    <Logger name="kafka.network.RequestChannel$" level="WARN"/>
    <Logger name="org.apache.kafka.storage.internals.log" level="WARN"/>
    <Logger name="kafka.log" level="WARN"/>
    <Logger name="state.change.logger" level="WARN"/>
    <Logger name="org.apache.kafka.common.config.AbstractConfig" level="WARN"/>
    <Logger name="org.apache.kafka.common.utils.AppInfoParser" level="WARN"/>
    <!-- keep the line the test harness waits for -->
    <Logger name="kafka.server.KafkaRaftServer" level="INFO"/>
  </Loggers>
</Configuration>
"""


class KafkaBrokerError(RuntimeError):
    pass


def random_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, base64url without padding (22 chars).

    Like ``org.apache.kafka.common.Uuid.randomUuid()``, ids starting with '-' are
    avoided (they look like a command-line option).
    """
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


def kafka_jars_present(lib_dir: Path = DEFAULT_LIB_DIR) -> bool:
    return lib_dir.is_dir() and any(lib_dir.glob("kafka_2.13-*.jar")) and any(lib_dir.glob(".complete-*"))


def ensure_kafka_jars(lib_dir: Path = DEFAULT_LIB_DIR) -> Path:
    """Run scripts/kafka_jars.sh if the broker jars are missing (needs java + mvn)."""
    if lib_dir == DEFAULT_LIB_DIR:
        # The script is idempotent and cheap when the jars are there; it also
        # notices a version bump in pom.xml.
        res = subprocess.run(["bash", str(KAFKA_JARS_SCRIPT)], capture_output=True, text=True)
        if res.returncode != 0:
            raise KafkaBrokerError(
                f"scripts/kafka_jars.sh failed (exit {res.returncode}); it needs java and mvn "
                f"(see scripts/install_system_deps.sh).\n{res.stdout}\n{res.stderr}"
            )
    if not kafka_jars_present(lib_dir):
        raise KafkaBrokerError(f"Kafka jars not found in {lib_dir}; run scripts/kafka_jars.sh")
    return lib_dir


def _prop_value(value: object) -> str:
    if isinstance(value, bool):
        value = "true" if value else "false"
    text = str(value)
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")


def _kafka_python_can_list_topics(bootstrap: str, timeout_s: float) -> tuple[bool, str]:
    """True when a kafka-python admin client can connect and list topics."""
    try:
        from kafka import KafkaAdminClient
    except ImportError as exc:  # pragma: no cover - kafka-python is a project dependency
        raise KafkaBrokerError("kafka-python is not installed") from exc
    admin = None
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap,
            client_id="linewatch-test-infra-probe",
            request_timeout_ms=max(1000, int(timeout_s * 1000)),
        )
        admin.list_topics()
        return True, ""
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet"
        return False, f"{type(exc).__name__}: {exc}"
    finally:
        if admin is not None:
            try:
                admin.close()
            except Exception:  # noqa: BLE001
                pass


SCRAM_MECHANISM = "SCRAM-SHA-256"
SASL_LISTENER = "SASL"  # SASL_PLAINTEXT
SASL_TLS_LISTENER = "SASL_TLS"  # SASL_SSL
_SCRAM_JAAS = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
# kafka-storage's --add-scram syntax ([name=...,password=...]) has no quoting: keep values plain.
_PLAIN_CREDENTIAL = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class SelfSignedTls:
    """A broker key pair for 127.0.0.1 whose certificate is its own CA."""

    keystore: Path  # PKCS12: the broker's key and certificate
    password: str  # of the keystore and the key
    ca_file: Path  # the certificate in PEM: what clients trust (kafka-python ssl_cafile)


def _jdk_tool(name: str) -> str:
    java_home = os.environ.get("JAVA_HOME")
    return str(Path(java_home) / "bin" / name) if java_home else name


def make_self_signed_tls(directory: str | os.PathLike, password: str = "linewatch-test") -> SelfSignedTls:
    """Write ``broker.p12`` and ``ca.pem`` into ``directory`` with the JDK's keytool (about 1 s)."""
    directory = Path(directory)
    tls = SelfSignedTls(directory / "broker.p12", password, directory / "ca.pem")
    keytool = _jdk_tool("keytool")
    store = ["-keystore", str(tls.keystore), "-storetype", "PKCS12", "-storepass", password]
    commands = [
        # CA:true so that OpenSSL accepts the certificate as the trust anchor of itself
        [
            keytool,
            "-genkeypair",
            "-alias",
            "broker",
            "-keyalg",
            "EC",
            "-groupname",
            "secp256r1",
            "-validity",
            "7",
            "-dname",
            f"CN={HOST}",
            "-ext",
            f"SAN=ip:{HOST},dns:localhost",
            "-ext",
            "BC:c=ca:true",
            "-keypass",
            password,
            *store,
        ],
        [keytool, "-exportcert", "-rfc", "-alias", "broker", "-file", str(tls.ca_file), *store],
    ]
    for argv in commands:
        res = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
        if res.returncode != 0:
            raise KafkaBrokerError(f"keytool failed (exit {res.returncode}):\n{res.stdout}\n{res.stderr}")
    return tls


def scram_listeners(users: Mapping[str, str], *, tls: SelfSignedTls | None = None) -> dict[str, object]:
    """KafkaBroker keyword arguments for SCRAM-SHA-256 logins of ``users`` (name -> password).

    Adds the listener ``SASL`` (SASL_PLAINTEXT) and, with ``tls``, ``SASL_TLS`` (SASL_SSL).
    The PLAINTEXT listener stays (the broker talks to itself and the readiness probe uses it).
    """
    for value in (*users, *users.values()):
        if not _PLAIN_CREDENTIAL.match(value):
            raise ValueError(f"SCRAM names and passwords here may hold only [A-Za-z0-9_.-], got {value!r}")
    listeners = {SASL_LISTENER: "SASL_PLAINTEXT"}
    properties: dict[str, object] = {"sasl.enabled.mechanisms": SCRAM_MECHANISM}
    if tls is not None:
        listeners[SASL_TLS_LISTENER] = "SASL_SSL"
        prefix = f"listener.name.{SASL_TLS_LISTENER.lower()}"
        properties |= {
            f"{prefix}.ssl.keystore.type": "PKCS12",
            f"{prefix}.ssl.keystore.location": str(tls.keystore),
            f"{prefix}.ssl.keystore.password": tls.password,
            f"{prefix}.ssl.key.password": tls.password,
        }
    for name in listeners:
        properties[f"listener.name.{name.lower()}.{SCRAM_MECHANISM.lower()}.sasl.jaas.config"] = _SCRAM_JAAS
    return {
        "extra_listeners": listeners,
        "scram_credentials": [f"{SCRAM_MECHANISM}=[name={n},password={p}]" for n, p in users.items()],
        "extra_properties": properties,
    }


class KafkaBroker(_proc.ServerProcess):
    """A single-node KRaft Kafka broker (``process.roles=broker,controller``) on loopback.

    Ports are picked (free) at the first :meth:`start` and kept for the lifetime of
    the object, so :meth:`restart` / :meth:`kill` + :meth:`start` come back on the same
    address with the same data dir.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike | None = None,
        *,
        port: int | None = None,
        controller_port: int | None = None,
        extra_properties: Mapping[str, object] | None = None,
        extra_listeners: Mapping[str, str] | None = None,
        scram_credentials: Iterable[str] = (),
        node_id: int = 1,
        cluster_id: str | None = None,
        heap: str = "512m",
        jvm_opts: Iterable[str] = (),
        lib_dir: str | os.PathLike | None = None,
        java: str | None = None,
        log_level: str = "INFO",
        die_with_parent: bool = True,
        startup_timeout: float = 120.0,
        stop_timeout: float = 30.0,
    ) -> None:
        self._owns_data_dir = data_dir is None
        self.data_dir = Path(data_dir) if data_dir is not None else Path(tempfile.mkdtemp(prefix="linewatch-kafka-"))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir = self.data_dir / "kraft-logs"
        self.config_path = self.data_dir / "server.properties"
        self.log4j_path = self.data_dir / "log4j2.xml"
        self.log_path = self.data_dir / "broker.log"

        self._fixed_ports = port is not None or controller_port is not None
        self._port = port
        self._controller_port = controller_port
        self.extra_listeners = {k.upper(): v.upper() for k, v in (extra_listeners or {}).items()}
        for name in self.extra_listeners:
            if name in ("PLAINTEXT", "CONTROLLER"):
                raise ValueError(f"listener name {name} is reserved")
        self._listener_ports: dict[str, int] = {}
        self.extra_properties = dict(extra_properties or {})
        self.scram_credentials = list(scram_credentials)
        self.node_id = node_id
        self.cluster_id = cluster_id
        self.heap = heap
        self.jvm_opts = list(jvm_opts)
        self.lib_dir = Path(lib_dir) if lib_dir is not None else DEFAULT_LIB_DIR
        self.java = java or _jdk_tool("java")
        self.log_level = log_level
        self.die_with_parent = die_with_parent
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout

        self._proc: subprocess.Popen | None = None
        self.start_durations: list[float] = []  # seconds each successful start() took

    # ------------------------------------------------------------------ addresses
    @property
    def port(self) -> int:
        if self._port is None:
            raise KafkaBrokerError("broker ports are picked at the first start()")
        return self._port

    @property
    def controller_port(self) -> int:
        if self._controller_port is None:
            raise KafkaBrokerError("broker ports are picked at the first start()")
        return self._controller_port

    @property
    def bootstrap(self) -> str:
        """``"127.0.0.1:PORT"`` of the PLAINTEXT listener."""
        return f"{HOST}:{self.port}"

    def listener_port(self, name: str) -> int:
        return self._listener_ports[name.upper()]

    def listener_bootstrap(self, name: str) -> str:
        return f"{HOST}:{self.listener_port(name)}"

    @property
    def last_start_seconds(self) -> float | None:
        return self.start_durations[-1] if self.start_durations else None

    # ------------------------------------------------------------------ config
    def _pick_ports(self) -> None:
        need = [n for n in self.extra_listeners if n not in self._listener_ports]
        picked = _proc.free_ports(2 + len(need))
        if self._port is None:
            self._port = picked[0]
        if self._controller_port is None:
            self._controller_port = picked[1]
        for name, p in zip(need, picked[2:]):
            self._listener_ports[name] = p

    def server_properties(self) -> dict[str, str]:
        listeners = [f"PLAINTEXT://{HOST}:{self.port}", f"CONTROLLER://{HOST}:{self.controller_port}"]
        advertised = [f"PLAINTEXT://{HOST}:{self.port}"]
        protocol_map = ["PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT"]
        for name, protocol in self.extra_listeners.items():
            listeners.append(f"{name}://{HOST}:{self._listener_ports[name]}")
            advertised.append(f"{name}://{HOST}:{self._listener_ports[name]}")
            protocol_map.append(f"{name}:{protocol}")
        props: dict[str, object] = {
            # KRaft, one combined node, static quorum
            "process.roles": "broker,controller",
            "node.id": self.node_id,
            "controller.quorum.voters": f"{self.node_id}@{HOST}:{self.controller_port}",
            "controller.listener.names": "CONTROLLER",
            "listeners": ",".join(listeners),
            "advertised.listeners": ",".join(advertised),
            "listener.security.protocol.map": ",".join(protocol_map),
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self.log_dir),
            "metadata.log.dir": str(self.log_dir),
            # single node: every internal topic has one replica
            "offsets.topic.replication.factor": 1,
            "offsets.topic.num.partitions": 5,
            "transaction.state.log.replication.factor": 1,
            "transaction.state.log.min.isr": 1,
            "transaction.state.log.num.partitions": 5,
            "share.coordinator.state.topic.replication.factor": 1,
            "share.coordinator.state.topic.min.isr": 1,
            "share.coordinator.state.topic.num.partitions": 5,
            "default.replication.factor": 1,
            "min.insync.replicas": 1,
            "num.partitions": 1,
            # after a crash (SIGKILL) the old registration must expire before the
            # restarted broker can register: keep that short (default 9 s)
            "broker.heartbeat.interval.ms": 500,
            "broker.session.timeout.ms": 3000,
            # tests want a group to form immediately
            "group.initial.rebalance.delay.ms": 0,
            # frames are big: 10 MiB per record batch
            "message.max.bytes": MESSAGE_MAX_BYTES,
            "replica.fetch.max.bytes": MESSAGE_MAX_BYTES,
            "socket.request.max.bytes": 104857600,
            # 2-core machine shared with torch: few threads
            "num.network.threads": 2,
            "num.io.threads": 4,
            "background.threads": 4,
            "num.recovery.threads.per.data.dir": 1,
            "num.replica.fetchers": 1,
            "log.cleaner.threads": 1,
            "log.cleaner.dedupe.buffer.size": 8 * 1024 * 1024,
            "log.segment.bytes": 64 * 1024 * 1024,
            "delete.topic.enable": True,
            "auto.create.topics.enable": True,
        }
        props.update(self.extra_properties)
        return {k: _prop_value(v) for k, v in props.items()}

    def _write_config(self) -> None:
        lines = ["# written by infra/kafka_broker.py"]
        lines += [f"{k}={v}" for k, v in self.server_properties().items()]
        self.config_path.write_text("\n".join(lines) + "\n")
        self.log4j_path.write_text(LOG4J2_XML.replace("{level}", self.log_level))

    def _classpath(self) -> str:
        return str(self.lib_dir / "*")

    def _java_base(self) -> list[str]:
        return [
            self.java,
            f"-Xmx{self.heap}",
            "-Xms64m",
            "-XX:+UseSerialGC",
            "-XX:+ExitOnOutOfMemoryError",
            "-XX:-UsePerfData",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.log4j_path}",
            f"-Dkafka.logs.dir={self.data_dir}",
            *self.jvm_opts,
            "-cp",
            self._classpath(),
        ]

    def _formatted(self) -> bool:
        return (self.log_dir / "meta.properties").is_file()

    def _read_cluster_id(self) -> str | None:
        meta = self.log_dir / "meta.properties"
        for line in meta.read_text().splitlines():
            if line.startswith("cluster.id="):
                return line.split("=", 1)[1].strip()
        return None

    def _format_storage(self) -> None:
        if self._formatted():
            existing = self._read_cluster_id()
            if self.cluster_id and existing and existing != self.cluster_id:
                raise KafkaBrokerError(f"{self.log_dir} is formatted for cluster {existing}, not {self.cluster_id}")
            self.cluster_id = existing
            return
        if not self.cluster_id:
            self.cluster_id = random_cluster_id()
        argv = [
            *self._java_base(),
            "kafka.tools.StorageTool",
            "format",
            "--cluster-id",
            self.cluster_id,
            "--config",
            str(self.config_path),
            "--ignore-formatted",
        ]
        for cred in self.scram_credentials:
            argv += ["--add-scram", cred]
        res = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)
        with open(self.log_path, "a") as f:
            f.write(
                f"\n=== linewatch test infra: kafka-storage format (exit {res.returncode})\n{res.stdout}{res.stderr}"
            )
        if res.returncode != 0 or not self._formatted():
            raise KafkaBrokerError(f"kafka-storage format failed (exit {res.returncode}):\n{res.stdout}\n{res.stderr}")

    # ------------------------------------------------------------------ lifecycle
    def start(self, timeout: float | None = None) -> KafkaBroker:
        """Start the broker and wait until it serves Metadata requests. No-op if running."""
        if self.is_running:
            return self
        timeout = self.startup_timeout if timeout is None else timeout
        if shutil.which(self.java) is None:
            raise KafkaBrokerError(
                f"java ({self.java}) not found: Kafka needs a JDK {KAFKA_MIN_JAVA}+ "
                "(apt-get install -y openjdk-17-jdk-headless, or scripts/install_system_deps.sh)"
            )
        ensure_kafka_jars(self.lib_dir)
        first_start = self._port is None or self._controller_port is None
        attempts = 3 if (first_start and not self._fixed_ports) else 1
        for attempt in range(1, attempts + 1):
            self._pick_ports()
            try:
                self._start_once(timeout)
                return self
            except _AddressInUse:
                if attempt == attempts:
                    raise KafkaBrokerError(
                        f"port {self._port}/{self._controller_port} in use; see {self.log_path}"
                    ) from None
                log.warning("kafka broker ports taken, retrying with new ones")
                self._port = self._controller_port = None
                self._listener_ports.clear()
        raise AssertionError("unreachable")

    def _start_once(self, timeout: float) -> None:
        t0 = time.monotonic()
        self._write_config()
        self._format_storage()
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        argv = [*self._java_base(), "kafka.Kafka", str(self.config_path)]
        self._proc = _proc.spawn(argv, log_path=self.log_path, cwd=self.data_dir, die_with_parent=self.die_with_parent)
        _proc.register_live(self)
        try:
            self._wait_ready(t0 + timeout, log_offset)
        except BaseException:
            _proc.kill(self._proc)
            self._proc = None
            _proc.unregister_live(self)
            raise
        self.start_durations.append(time.monotonic() - t0)
        log.info("kafka broker up at %s in %.1fs (pid %s)", self.bootstrap, self.start_durations[-1], self.pid)

    def _new_log(self, offset: int) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def _wait_ready(self, deadline: float, log_offset: int) -> None:
        started = False
        last_probe_error = ""
        while True:
            if self._proc.poll() is not None:
                text = self._new_log(log_offset)
                if "Address already in use" in text or "BindException" in text:
                    raise _AddressInUse()
                raise KafkaBrokerError(
                    f"kafka broker exited with {self._proc.returncode} during startup; log {self.log_path}:\n"
                    f"{_proc.log_tail(self.log_path, start=log_offset)}"
                )
            if not started:
                started = STARTED_LINE in self._new_log(log_offset)
            if started:
                ok, last_probe_error = _kafka_python_can_list_topics(self.bootstrap, 5.0)
                if ok:
                    return
            if time.monotonic() > deadline:
                raise KafkaBrokerError(
                    f"kafka broker not ready in time (saw '{STARTED_LINE}': {started}; "
                    f"last admin probe: {last_probe_error or '-'}); log {self.log_path}:\n"
                    f"{_proc.log_tail(self.log_path, start=log_offset)}"
                )
            time.sleep(0.25 if not started else 0.5)

    def pause(self) -> None:
        """SIGSTOP the JVM: the port stays open but nothing answers (a hung broker)."""
        if self.is_running:
            os.killpg(self._proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.is_running:
            os.killpg(self._proc.pid, signal.SIGCONT)

    def close(self) -> None:
        """Stop and delete the data dir if it was a temp dir made here."""
        self.stop()
        if self._owns_data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def log_text(self) -> str:
        return _proc.log_tail(self.log_path, max_bytes=10**9)

    def __repr__(self) -> str:
        addr = self.bootstrap if self._port else "not started"
        return f"<KafkaBroker {addr} running={self.is_running} data_dir={self.data_dir}>"


class _AddressInUse(Exception):
    pass
