"""The moving parts of the chaos scenarios: real servers, worker and producer subprocesses, counting.

- `running_infra` starts a private Kafka broker and redis-server (infra/) for all scenarios.
- `scenario_settings` gives each scenario topics, a consumer group and a Redis key prefix of its own.
- `WorkerProcess` is `linewatch-worker serve` in a subprocess, configured through `LINEWATCH_*`
  variables, with a health port of its own: `status()` is its `ServiceStatus` as /readyz reports it.
- `ProducerProcess` is `linewatch-producer` (synthetic frames at a steady --fps).
- `FrameSender` publishes frames with unique frame ids from this process, round-robin over the partitions.
- `collect_outputs` reads the results and dead-letter topics; `tally` counts lost frames and duplicates.

Every wait is bounded, and every process started here is killed by whoever started it
(`stopping(...)`); as a last resort the children get SIGTERM when this process dies
(infra/_proc.spawn).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
import redis
from kafka import TopicPartition
from pydantic import SecretStr

from common.codecs import encode_image
from common.kafka import build_consumer, build_producer, ensure_topics
from common.messages import frame_headers, parse_frame_meta
from common.settings import (
    KafkaSettings,
    LinewatchSettings,
    ModelSettings,
    RedisSettings,
    TelemetrySettings,
    WorkerSettings,
)
from infra import _proc
from infra.kafka_broker import KafkaBroker
from infra.redis_server import RedisServer
from producer.publisher import build_frame_meta

PARTITIONS = 4
# The broker's default group.min.session.timeout.ms: the quickest takeover of a killed worker's partitions.
SESSION_TIMEOUT_MS = 6_000
POLL_S = 0.2

T = TypeVar("T")


class ChaosError(AssertionError):
    """A scenario could not go on: a process died, or something did not happen in time."""


# ----------------------------------------------------------------------------- servers and settings


@dataclass(frozen=True)
class Infra:
    broker: KafkaBroker
    redis: RedisServer
    log_dir: Path  # worker and producer logs
    guarantee: str = "at-least-once"  # kafka.processing_guarantee of every scenario's workers


@contextmanager
def running_infra(work_dir: Path) -> Iterator[Infra]:
    """A private broker (scenario 3 restarts it) and redis-server (scenario 4 kills it) for all scenarios."""
    log_dir = work_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    broker = KafkaBroker(work_dir / "kafka")
    server = RedisServer(work_dir=work_dir / "redis")
    try:
        broker.start()
        server.start()
        yield Infra(broker, server, log_dir)
    finally:
        server.stop()
        broker.stop()


def scenario_settings(
    infra: Infra, name: str, *, max_poll_interval_ms: int = 300_000, **worker: Any
) -> LinewatchSettings:
    """Tiny models, foreground none, and topics, group and Redis prefix that no other scenario uses."""
    tag = f"{name}-{uuid.uuid4().hex[:6]}"
    return LinewatchSettings(
        kafka=KafkaSettings(
            bootstrap_servers=infra.broker.bootstrap,
            frames_topic=f"chaos.{tag}.frames",
            results_topic=f"chaos.{tag}.results",
            dlq_topic=f"chaos.{tag}.dlq",
            group_id=f"chaos-{tag}",
            partitions=PARTITIONS,
            session_timeout_ms=SESSION_TIMEOUT_MS,
            max_poll_interval_ms=max_poll_interval_ms,
            processing_guarantee=infra.guarantee,
        ),
        redis=RedisSettings(url=SecretStr(infra.redis.url), key_prefix=f"chaos-{tag}", retry_after_s=1.0),
        models=ModelSettings(profile="tiny", foreground="none"),
        worker=WorkerSettings(
            **({"worker_id": "unset", "batch_max_frames": 4, "commit_interval_ms": 200, "heatmap_side": 16} | worker)
        ),
        telemetry=TelemetrySettings(enabled=False),
    )


def settings_env(settings: LinewatchSettings) -> dict[str, str]:
    """The `LINEWATCH_*` variables that give a subprocess exactly `settings` (secrets in clear).

    None is left out: every None in the scenario settings is also the default.
    """
    env = {}
    for section_name in LinewatchSettings.model_fields:
        section = getattr(settings, section_name)
        for name in type(section).model_fields:
            value = getattr(section, name)
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            if isinstance(value, bool):
                text = str(value).lower()
            elif isinstance(value, (tuple, list, dict)):  # pydantic-settings reads complex values as JSON
                text = json.dumps(value)
            else:
                text = str(value)
            env[f"LINEWATCH_{section_name.upper()}__{name.upper()}"] = text
    return env


def _child_env(settings: LinewatchSettings) -> dict[str, str]:
    inherited = {key: value for key, value in os.environ.items() if not key.startswith("LINEWATCH_")}
    return inherited | settings_env(settings)


def wait_until(predicate: Callable[[], T], timeout_s: float, what: str) -> T:
    """Poll `predicate` until it returns something truthy (returned), or raise ChaosError."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise ChaosError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(POLL_S)


# ----------------------------------------------------------------------------- processes


class _Child:
    """A subprocess started with infra/_proc.spawn (own session, dies with this process)."""

    def __init__(self, name: str, log_dir: Path):
        self.name = name
        self.log_path = log_dir / f"{name}-{uuid.uuid4().hex[:6]}.log"
        self._proc = None

    def _spawn(self, argv: list[str], settings: LinewatchSettings) -> None:
        self._proc = _proc.spawn(argv, log_path=self.log_path, cwd=_proc.REPO_ROOT, env=_child_env(settings))

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, nothing is committed or flushed."""
        _proc.kill(self._proc)

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout_s`; the exit code."""
        return _proc.terminate(self._proc, timeout_s)

    def log_tail(self, max_bytes: int = 4000) -> str:
        return _proc.log_tail(self.log_path, max_bytes=max_bytes)


@contextmanager
def stopping(*children: _Child) -> Iterator[None]:
    """Kill whatever of `children` still runs when the block ends (the graceful stop is the block's job)."""
    try:
        yield
    finally:
        for child in children:
            child.kill()


class WorkerProcess(_Child):
    """`python -m worker.cli serve` (= `linewatch-worker serve`) with its own health port.

    With `delay_s` > 0 it is `python -m infra.chaos.slow_worker --delay-s DELAY` instead: the same
    service around the real Inspector, which then sleeps `delay_s` after every batch (slow inference).
    """

    def __init__(
        self,
        settings: LinewatchSettings,
        worker_id: str,
        log_dir: Path,
        *,
        name: str | None = None,
        delay_s: float = 0.0,
        commit_delay_s: float = 0.0,
    ):
        super().__init__(name or worker_id, log_dir)
        self.worker_id = worker_id
        self.delay_s = delay_s
        self.commit_delay_s = commit_delay_s  # exactly-once: each transaction waits this long before it commits
        self.health_port = _proc.free_ports(1)[0]
        self.settings = settings.model_copy(
            update={
                "worker": settings.worker.model_copy(update={"worker_id": worker_id, "health_port": self.health_port})
            }
        )
        self.started_at = 0.0

    def start(self) -> WorkerProcess:
        self.started_at = time.monotonic()
        if self.delay_s or self.commit_delay_s:
            argv = [sys.executable, "-m", "infra.chaos.slow_worker", "--delay-s", str(self.delay_s)]
            argv += ["--commit-delay-s", str(self.commit_delay_s)]
        else:
            argv = [sys.executable, "-m", "worker.cli", "serve"]
        self._spawn(argv, self.settings)
        return self

    def status(self) -> dict[str, Any] | None:
        """The worker's `ServiceStatus.as_dict()` from /readyz, or None while it does not answer."""
        url = f"http://127.0.0.1:{self.health_port}/readyz"
        try:
            with urllib.request.urlopen(url, timeout=2.0) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:  # 503 while not ready: the body holds the status all the same
            body = json.load(exc)
        except (OSError, ValueError):  # not listening yet, or gone
            return None
        return body.get("details", {}).get("partitions_assigned")

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout_s: float, what: str) -> dict[str, Any]:
        """The first status that satisfies `predicate`; ChaosError (with the log tail) if the worker dies first."""

        def check() -> dict[str, Any] | None:
            if not self.alive:
                raise ChaosError(
                    f"worker {self.name} exited with {self._proc.returncode} while waiting for "
                    f"{what}; log {self.log_path}:\n{self.log_tail()}"
                )
            status = self.status()
            return status if status is not None and predicate(status) else None

        try:
            return wait_until(check, timeout_s, f"{what} (worker {self.name})")
        except ChaosError as exc:
            raise ChaosError(f"{exc}\nlast status: {self.status()}\nlog {self.log_path}:\n{self.log_tail()}") from None

    def wait_assigned(self, count: int = PARTITIONS, timeout_s: float = 180.0) -> dict[str, Any]:
        """Until the worker owns `count` partitions (models loaded and group joined)."""
        return self.wait_for(
            lambda s: len(s["assigned_partitions"]) == count, timeout_s, f"{count} partitions assigned"
        )

    def memory_mb(self, field: str = "VmHWM") -> float:
        """From /proc/PID/status: VmHWM (peak resident set so far) or VmRSS (now), in MiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
        raise ChaosError(f"{field} missing from /proc/{self.pid}/status")

    def reset_peak_memory(self) -> None:
        """Set VmHWM back to the current RSS (Linux >= 4.0), so it measures the peak from now on."""
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")


class ProducerProcess(_Child):
    """`python -m producer` (= `linewatch-producer`): synthetic frames from one camera at a steady rate."""

    def __init__(
        self, settings: LinewatchSettings, log_dir: Path, *, count: int, fps: float, width: int = 96, height: int = 72
    ):  # the synthetic source draws at least 64x64
        super().__init__("producer", log_dir)
        self.settings = settings
        self.argv = [
            sys.executable,
            "-m",
            "producer",
            "--source",
            "synthetic",
            "--limit",
            str(count),
            "--fps",
            str(fps),
            "--width",
            str(width),
            "--height",
            str(height),
            "--camera",
            "cam-chaos",
            "--log-level",
            "WARNING",
        ]

    def start(self) -> ProducerProcess:
        self._spawn(self.argv, self.settings)
        return self

    def wait(self, timeout_s: float) -> int:
        """Its exit code (0: every frame acknowledged); ChaosError if it runs longer than `timeout_s`."""
        wait_until(lambda: not self.alive, timeout_s, "the producer to finish")
        return self._proc.returncode


class Background(Generic[T]):
    """`fn()` in a daemon thread; `result(timeout_s)` joins it and returns its value or raises its error."""

    def __init__(self, fn: Callable[[], T]):
        self._value: list[T] = []
        self._error: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[[], T]) -> None:
        try:
            self._value.append(fn())
        except BaseException as exc:  # re-raised by result()
            self._error.append(exc)

    def result(self, timeout_s: float) -> T:
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise ChaosError(f"background task still running after {timeout_s:.0f} s")
        if self._error:
            raise self._error[0]
        return self._value[0]


# ----------------------------------------------------------------------------- frames in, answers out


@dataclass(frozen=True)
class SentFrame:
    frame_id: str
    partition: int
    sent_at: float  # epoch seconds: when the producer created the message


@lru_cache(maxsize=4)
def _jpeg(height: int, width: int) -> bytes:
    """One smooth test picture per size (frames differ by frame id; decoding and inference are real).

    Little noise keeps the JPEG small (25 KB at 640x480): kafka-python checksums records in pure
    Python, so big messages would slow the sending side down more than the worker.
    """
    rng = np.random.default_rng(height * 10_000 + width)
    ramp = np.linspace(60, 200, width, dtype=np.float32)[None, :, None]
    return encode_image(np.clip(ramp + rng.normal(0, 2, (height, width, 3)), 0, 255).astype(np.uint8))


class FrameSender:
    """Publishes frames with unique frame ids round-robin over the partitions (so every worker gets some)."""

    def __init__(self, settings: LinewatchSettings, *, height: int = 48, width: int = 64):
        self.topic = settings.kafka.frames_topic
        self.size = (height, width)
        ensure_topics(settings.kafka, [self.topic])
        self._producer = build_producer(settings.kafka)
        self._next = 0

    def send(self, count: int, *, fps: float = 0.0, object_name: str = "washer") -> list[SentFrame]:
        """`count` frames at `fps` (0: as fast as possible), all acknowledged by the broker when it returns."""
        height, width = self.size
        data = _jpeg(height, width)
        sent, futures = [], []
        start = time.monotonic()
        for i in range(count):
            if fps:
                time.sleep(max(0.0, start + i / fps - time.monotonic()))
            meta = build_frame_meta(
                camera_id=f"cam-{self._next % 8}",
                line_id="line-chaos",
                object_name=object_name,
                content_type="image/jpeg",
                width=width,
                height=height,
            )
            partition = self._next % PARTITIONS
            self._next += 1
            futures.append(
                self._producer.send(
                    self.topic,
                    key=meta.camera_id.encode(),
                    value=data,
                    headers=frame_headers(meta),
                    partition=partition,
                )
            )
            sent.append(SentFrame(meta.frame_id, partition, time.time()))
        self._producer.flush(timeout=60)
        for future in futures:
            future.get(timeout=1)  # raises if the broker refused it
        return sent

    def __enter__(self) -> FrameSender:
        return self

    def __exit__(self, *exc: object) -> None:
        self._producer.close(timeout=10)


@dataclass(frozen=True)
class Output:
    """One message on the results or dead-letter topic, reduced to what the counting needs."""

    frame_id: str
    published_at: float  # epoch seconds: when the worker created the message


@dataclass(frozen=True)
class Outputs:
    results: list[Output]
    dead_letters: list[Output]


def _read_all(
    settings: LinewatchSettings, topics: list[str], done: Callable[[list], bool], timeout_s: float, settle_s: float
) -> list:
    """Every record of `topics` from the start, until `done(records)` or `timeout_s`, then `settle_s` more."""
    consumer = build_consumer(settings.kafka, group_id=None)  # no group: assigned by hand, nothing committed
    try:
        consumer.assign([TopicPartition(topic, p) for topic in topics for p in range(settings.kafka.partitions)])
        consumer.seek_to_beginning()
        records: list = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not done(records):
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        settle = time.monotonic() + settle_s
        while time.monotonic() < settle:
            for batch in consumer.poll(timeout_ms=250).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


def _output(ks: KafkaSettings, record: Any) -> Output:
    """A result carries its frame id in the JSON, a dead letter in the frame's own headers."""
    if record.topic == ks.results_topic:
        frame_id = json.loads(record.value)["frame_id"]
    else:
        frame_id = parse_frame_meta(record.headers).frame_id
    return Output(frame_id, record.timestamp / 1000)


def collect_outputs(
    settings: LinewatchSettings, frame_ids: set[str], *, timeout_s: float = 120.0, settle_s: float = 2.0
) -> Outputs:
    """The results and dead letters, read until every frame in `frame_ids` has one (or `timeout_s`),
    then `settle_s` longer for late duplicates."""
    ks = settings.kafka
    ensure_topics(ks, [ks.results_topic, ks.dlq_topic])

    def all_answered(records: list) -> bool:
        return frame_ids <= {_output(ks, r).frame_id for r in records}

    records = _read_all(settings, [ks.results_topic, ks.dlq_topic], all_answered, timeout_s, settle_s)
    outputs = [(r.topic, _output(ks, r)) for r in records]
    return Outputs(
        [o for topic, o in outputs if topic == ks.results_topic], [o for topic, o in outputs if topic == ks.dlq_topic]
    )


def frames_on_topic(settings: LinewatchSettings, expected: int, timeout_s: float = 30.0) -> list[SentFrame]:
    """The frames the broker holds (what a producer subprocess got acknowledged), up to `expected` of them."""
    records = _read_all(settings, [settings.kafka.frames_topic], lambda rs: len(rs) >= expected, timeout_s, 1.0)
    return [SentFrame(parse_frame_meta(r.headers).frame_id, r.partition, r.timestamp / 1000) for r in records]


def redis_keys(infra: Infra, settings: LinewatchSettings) -> int:
    """How many embeddings the scenario's workers stored in Redis."""
    client = redis.Redis.from_url(infra.redis.url, socket_timeout=2.0)
    try:
        return sum(1 for _ in client.scan_iter(f"{settings.redis.key_prefix}:emb:*", count=1000))
    finally:
        client.close()


# ----------------------------------------------------------------------------- counting


@dataclass(frozen=True)
class Tally:
    sent: int  # frames the producer was asked to send
    results: int  # result messages for them, duplicates included
    lost: int  # frames with neither a result nor a dead letter
    duplicates: int  # result messages beyond the first one of their frame
    dead_lettered: int  # frames that went to the dead-letter topic


def tally(sent: int, frame_ids: set[str], outputs: Outputs) -> Tally:
    """Count against `frame_ids`, the frames on the frames topic; `sent` may be more (undelivered ones are lost)."""
    result_ids = [o.frame_id for o in outputs.results if o.frame_id in frame_ids]
    dead_ids = {o.frame_id for o in outputs.dead_letters if o.frame_id in frame_ids}
    answered = set(result_ids) | dead_ids
    return Tally(
        sent=sent,
        results=len(result_ids),
        lost=sent - len(answered),
        duplicates=len(result_ids) - len(set(result_ids)),
        dead_lettered=len(dead_ids),
    )


def first_result_after(
    outputs: Outputs,
    frames: list[SentFrame],
    sent_after: float,
    *,
    since: float | None = None,
    partitions: set[int] | None = None,
) -> float | None:
    """Seconds from `since` (default `sent_after`) to the first result of a frame sent after `sent_after`,
    on `partitions` if given; None when there is none."""
    after = {
        f.frame_id for f in frames if f.sent_at >= sent_after and (partitions is None or f.partition in partitions)
    }
    times = [o.published_at for o in outputs.results if o.frame_id in after]
    return round(min(times) - (sent_after if since is None else since), 1) if times else None


VERDICT_COUNTERS = ("results_ok", "results_anomalous", "results_skipped")


def results_count(status: dict[str, Any]) -> int:
    """Frames the worker answered so far (every verdict), from its status counters."""
    return sum(status["counters"].get(name, 0) for name in VERDICT_COUNTERS)
