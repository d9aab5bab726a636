"""Shared pytest fixtures: a real Kafka broker and a real redis-server, started lazily.

* ``kafka_broker`` / ``redis_server`` (session scope): one of each for the whole run,
  started only when the first test that asks for them runs, so unit tests never start
  Java. If a test stops or kills one of them, it is started again (same address)
  before the next test.
* ``kafka_broker_factory`` / ``redis_server_factory`` (function scope): private servers
  for tests that restart, kill or reconfigure them (chaos, SASL); stopped after the test.
* ``topic_names`` (function scope): ``topic_names("frames")`` gives a topic name unique
  to this test and call.
* ``--auto-precision=fp32|bf16`` (or ``LINEWATCH_TEST_AUTO_PRECISION``): what
  ``models.precision=auto`` resolves to in this process, whatever the CPU says, so that
  both answers are tested on any machine (bf16 only where the CPU has bf16 kernels).
  Tests that rely on one precision pin it; subprocess workers follow the hardware.

Tests using any of these are marked ``integration`` automatically.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from infra.kafka_broker import KafkaBroker, KafkaBrokerError, ensure_kafka_jars
from infra.line_devices import FakeGigECamera, LineDeviceError, MosquittoBroker
from infra.redis_server import INSTALL_HINT, RedisServer, RedisServerError, find_redis_server
from tests.support.extras import ensure_camera_extra
from tests.support.topics import TopicNames

_INFRA_FIXTURES = {
    "kafka_broker",
    "redis_server",
    "kafka_broker_factory",
    "redis_server_factory",
    "fake_camera_factory",
    "mosquitto_broker",
}

# The session servers, once started (read by the autouse keep-alive fixture without
# requesting them, so that fixture never starts anything by itself).
_session: dict[str, object] = {}
# Kept after teardown, for the terminal summary.
_started: dict[str, object] = {}


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist, share the cores between the processes: torch's and onnxruntime's thread pools
    (and the workers these tests start) take OMP_NUM_THREADS. Two processes of two spinning OpenMP threads
    each on two cores ran some model tests 20x slower."""
    processes = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if processes > 1:
        os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // processes)))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--auto-precision",
        choices=("hardware", "fp32", "bf16"),
        default=os.environ.get("LINEWATCH_TEST_AUTO_PRECISION", "hardware"),
        help="what models.precision=auto resolves to in-process (default: what this CPU is fast at)",
    )


@pytest.fixture(scope="session", autouse=True)
def _forced_auto_precision(request: pytest.FixtureRequest) -> Iterator[None]:
    """Make `auto` answer as a CPU with (bf16: AMX) or without (fp32: no bf16 flags) fast bf16 would."""
    forced = request.config.getoption("--auto-precision")
    if forced == "hardware":
        yield
        return
    from worker.inspection.models import precision

    if forced == "bf16" and not precision.cpu_has_bf16_kernels():
        pytest.exit("--auto-precision=bf16 needs a CPU with oneDNN bf16 kernels (AVX512-BW/VL/DQ)", returncode=4)
    flags = frozenset({"amx_bf16"}) if forced == "bf16" else frozenset()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(precision, "cpu_flags", lambda *_: flags)
        yield


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Files with slow tests first (pytest-randomly has shuffled already; the order within each group stays).
    # Under `--dist loadfile` pytest-xdist reorders files by test count, so there this is a tie-break.
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)
    for item in items:
        if _INFRA_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


def _require_redis_server() -> None:
    if find_redis_server() is None:
        pytest.fail(INSTALL_HINT, pytrace=False)


def _require_kafka_jars() -> None:
    try:
        ensure_kafka_jars()
    except KafkaBrokerError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """A single-node KRaft broker shared by the session; ``.bootstrap`` is "127.0.0.1:PORT"."""
    _require_kafka_jars()
    broker = KafkaBroker(tmp_path_factory.mktemp("kafka-broker"))
    try:
        broker.start()
    except KafkaBrokerError as exc:
        pytest.fail(str(exc), pytrace=False)
    _session["kafka_broker"] = _started["kafka_broker"] = broker
    yield broker
    _session.pop("kafka_broker", None)
    broker.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server shared by the session; ``.url`` is "redis://127.0.0.1:PORT/0"."""
    _require_redis_server()
    server = RedisServer(work_dir=tmp_path_factory.mktemp("redis-server"))
    try:
        server.start()
    except RedisServerError as exc:
        pytest.fail(str(exc), pytrace=False)
    _session["redis_server"] = server
    yield server
    _session.pop("redis_server", None)
    server.stop()


@pytest.fixture(autouse=True)
def _keep_session_servers_alive() -> None:
    """Restart a session server that an earlier test left stopped (same port and data)."""
    for server in list(_session.values()):
        if not server.is_running:  # type: ignore[attr-defined]
            server.start()  # type: ignore[attr-defined]


@pytest.fixture
def kafka_broker_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., KafkaBroker]]:
    """``kafka_broker_factory(**KafkaBroker kwargs)`` -> a started private broker, closed after the test."""
    _require_kafka_jars()
    brokers: list[KafkaBroker] = []

    def make(**kwargs) -> KafkaBroker:
        kwargs.setdefault("data_dir", tmp_path_factory.mktemp("kafka-private"))
        data_dir = kwargs.pop("data_dir")
        broker = KafkaBroker(data_dir, **kwargs)
        brokers.append(broker)
        broker.start()
        return broker

    yield make
    for broker in brokers:
        broker.stop()


@pytest.fixture
def redis_server_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., RedisServer]]:
    """``redis_server_factory(**RedisServer kwargs)`` -> a started private redis-server, stopped after the test."""
    _require_redis_server()
    servers: list[RedisServer] = []

    def make(**kwargs) -> RedisServer:
        kwargs.setdefault("work_dir", tmp_path_factory.mktemp("redis-private"))
        server = RedisServer(**kwargs)
        servers.append(server)
        server.start()
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def fake_camera_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., FakeGigECamera]]:
    """``fake_camera_factory(**FakeGigECamera kwargs)`` -> the GigE Vision simulator on 127.0.0.1, stopped after the test."""
    ensure_camera_extra()  # PyGObject, built here the first time rather than before every run
    cameras: list[FakeGigECamera] = []

    def make(**kwargs) -> FakeGigECamera:
        kwargs.setdefault("work_dir", tmp_path_factory.mktemp("fake-camera"))
        try:
            camera = FakeGigECamera(**kwargs)
            cameras.append(camera)
            return camera.start()
        except LineDeviceError as exc:
            pytest.fail(str(exc), pytrace=False)

    yield make
    for camera in cameras:
        camera.stop()


@pytest.fixture
def mosquitto_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    """A private Mosquitto (anonymous) on a free port, stopped after the test."""
    try:
        broker = MosquittoBroker(work_dir=tmp_path_factory.mktemp("mosquitto"))
        broker.start()
    except LineDeviceError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield broker
    broker.close()


@pytest.fixture
def topic_names(request: pytest.FixtureRequest) -> TopicNames:
    return TopicNames(request.node.name)


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ARG001
    broker = _started.get("kafka_broker")
    if isinstance(broker, KafkaBroker) and broker.start_durations:
        times = ", ".join(f"{t:.1f}s" for t in broker.start_durations)
        terminalreporter.write_line(f"session kafka broker {broker.bootstrap}: start took {times}")
