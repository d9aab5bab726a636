"""The Kafka stream worker: `linewatch-worker serve` -- wiring and lifecycle.

A frame passes these modules in order: `intake` (record -> Work, dead letter or skipped),
`batching` (micro-batches, backpressure), `inference` (inference thread, watchdog),
`results` (result message within the size limit), `publishing` (publish thread, Outbox),
`offsets` (Checkpoint: what is done is committed), `status` and `telemetry`.

Threads and their jobs:

- **poll thread** (`WorkerService.run`): polls the frames topic, parses and
  decodes each message, dead-letters bad ones, answers stale ones with a
  `skipped` result, groups good frames into micro-batches and hands them to the
  inference thread through a bounded queue. It pauses its partitions while
  `queue_max_frames` frames wait (polling goes on, so the group membership
  does too) and commits offsets.
- **inference thread**: runs the Inspector on each batch (one frame at a time
  after a batch fails, so a bad frame dead-letters alone) and hands the
  inspections on.
- **publish thread**: builds each result (RLE mask, regions, heatmap PNG, JSON)
  and sends it, so the device already scores the next batch meanwhile. At most
  `PUBLISH_QUEUE_BATCHES` scored batches wait for it; their frames still count
  as waiting for the backpressure until their results are sent.
- producer callbacks mark a message done once its result or dead letter is
  acknowledged by the broker (acks=all, idempotent producer).

Delivery is at least once: per partition the worker commits the offset after
the last message whose output is acknowledged, with nothing unacknowledged
before it (`Checkpoint`, `OffsetTracker`). On partition revocation it commits what is
acknowledged and **drops the rest uncommitted**: frames of revoked partitions
still queued are not inspected, results still in flight may be published, and
the next owner processes those messages again -- duplicates, never gaps
(results carry `frame_id` for de-duplication). When the next owner is this same
worker, the partition is sought back to its first dropped message. On SIGTERM/SIGINT it stops
polling, finishes the frames it already polled (up to `shutdown_timeout_s`),
waits for their acknowledgements, commits and leaves the group. A batch that
stays in the Inspector longer than `inference_timeout_s` (a wedged device) makes
the worker unready and stops it the same way, with `InferenceStuck`: it leaves the
group, so the others take over its partitions and score its frames again.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from kafka.errors import KafkaError

from common.audit import AUDIT_TOPIC_CONFIG
from common.control_topic import control_topics
from common.kafka import (
    COMPACTED,
    FRAMES_TOPIC_CONFIG,
    BrokerReachability,
    build_consumer,
    build_producer,
    close_and_leave,
    connection_hint,
    ensure_topics,
    static_membership,
)
from common.settings import KafkaSettings, LinewatchSettings
from common.signals import StopOnSignals
from common.telemetry import Telemetry
from worker.inspection.embedding_cache import EmbeddingCache
from worker.inspection.types import InspectorProtocol
from worker.stream.batching import STOP, InFlight, MicroBatcher, hand_over
from worker.stream.control_plane import ControlPlane
from worker.stream.inference import Inference, InferenceStuck
from worker.stream.intake import Consumed, Intake, Work
from worker.stream.offsets import Checkpoint
from worker.stream.publishing import Outbox, Publisher
from worker.stream.status import MonitoredCache, ServiceStatus, readiness_checks
from worker.stream.telemetry import Counters, ServiceTelemetry
from worker.stream.warmup import warm_up

__all__ = ["CONNECT_TIMEOUT_MS", "LAG_INTERVAL_S", "InferenceStuck", "ServiceStatus", "WorkerService", "run_service"]

log = logging.getLogger(__name__)

IDLE_POLL_S = 0.1
LAG_INTERVAL_S = 5.0
COMMIT_TIMEOUT_MS = 10_000  # a commit to an unreachable broker must not hold the loop (or shutdown) long
CONNECT_TIMEOUT_MS = 10_000  # one start-up attempt; a stop request waits for at most this


class WorkerService:
    """One member of the worker consumer group. `run(stop_event)` blocks until stopped."""

    def __init__(
        self,
        settings: LinewatchSettings,
        inspector: InspectorProtocol | None = None,
        *,
        cache: EmbeddingCache | None = None,
        telemetry: Telemetry | None = None,
    ):
        self.settings = settings
        self.worker_id = settings.worker.worker_id
        self.inspector = inspector
        self.cache = cache
        self.telemetry = ServiceTelemetry(telemetry)
        self.counters = Counters()
        self.broker = BrokerReachability()
        self.checkpoint = Checkpoint(
            reachability=self.broker, commit_timeout_ms=COMMIT_TIMEOUT_MS, name=f"worker {self.worker_id}"
        )
        self.tracker = self.checkpoint.tracker
        ws = settings.worker
        self.batcher: MicroBatcher[Work] = MicroBatcher(ws.batch_max_frames, ws.batch_max_wait_ms / 1000.0)
        self.in_flight = InFlight(ws.queue_max_frames)
        self._abandon = threading.Event()  # shutdown gave up on the helper threads
        self._running, self._last_commit = False, 0.0
        self._lag_lock = threading.Lock()
        self._lag: dict[Any, int] = {}
        self.consumer: Any = None
        self.outbox: Outbox | None = None
        self.publisher: Publisher | None = None
        self.inference: Inference | None = None
        self.intake: Intake | None = None
        self.control = ControlPlane(settings, self.counters, self.telemetry.metrics, outbox=lambda: self.outbox)

    # ================================================================== the loop

    def run(self, stop_event: threading.Event) -> None:
        """Serve until `stop_event` is set, then shut down gracefully."""
        try:
            if not self.start(stop_event):
                return
            last_lag = 0.0
            while not stop_event.is_set():
                self._watch()  # helper threads alive, no batch stuck in the Inspector
                try:
                    self._consume()  # poll -> intake -> micro-batch -> inference thread -> publish thread
                except KafkaError as exc:  # the client recovers by itself; keep serving
                    self.broker.error()
                    log.warning("poll failed (%s: %s); retrying", type(exc).__name__, exc)
                    stop_event.wait(1.0)
                self.outbox.retry_failed()  # flush: what the broker refused goes out again
                self._commit()  # then commit what the broker acknowledged
                if time.monotonic() - last_lag >= LAG_INTERVAL_S:
                    self._report_lag_and_cache()
                    last_lag = time.monotonic()
        finally:
            self.shutdown()

    def _watch(self) -> None:
        if not (self.inference.thread.is_alive() and self.publisher.thread.is_alive()):
            raise RuntimeError("inference or publish thread died")
        self.inference.check()

    def _consume(self) -> None:
        if self.in_flight.apply(self.consumer) == "pause":
            self.counters.add("pauses")
        wait = self.batcher.time_left(time.monotonic())
        records = self.consumer.poll(timeout_ms=int(1000 * (IDLE_POLL_S if wait is None else min(wait, IDLE_POLL_S))))
        for partition, batch in records.items():
            for record in batch:
                work = self.intake.take(partition, Consumed.from_record(record))
                if work is not None:
                    self.batcher.add(work, time.monotonic())
        if self.batcher.ready(time.monotonic()):
            self._dispatch(self.batcher.take())

    def _dispatch(self, batch: list[Work], timeout_s: float | None = None) -> None:
        if batch:
            self.in_flight.add(len(batch))
            self.inference.submit(batch, timeout_s)

    def _commit(self, force: bool = False) -> None:
        if not force and time.monotonic() - self._last_commit < self.settings.worker.commit_interval_ms / 1000.0:
            return
        self._last_commit = time.monotonic()
        try:
            if self.checkpoint.commit():
                self.counters.add("commits")
        except KafkaError as exc:  # e.g. a rebalance in progress: the listener commits instead
            self.counters.add("commit_errors")
            log.warning("offset commit failed (will retry): %s", exc)

    # ================================================================== lifecycle

    def start(self, stop_event: threading.Event | None = None) -> bool:
        """Load models, create missing topics (waiting for the broker), read control to its end, subscribe.

        Returns False when `stop_event` was set before the broker answered.
        """
        ks, ws = self.settings.kafka, self.settings.worker
        if self.inspector is None:
            self.inspector = self._build_inspector()
            warm_up(self.inspector, ws.warm_up_passes)  # before subscribing: no partition waits on a cold model
        stop_event = stop_event or threading.Event()
        while True:
            try:
                ensure_worker_topics(ks)
                break
            except Exception as exc:  # broker not up yet: wait for it rather than crash-loop
                self.broker.error()
                log.warning(
                    "cannot reach Kafka at %s (%s: %s); %s; retrying in 5 s",
                    ks.bootstrap_servers,
                    type(exc).__name__,
                    exc,
                    connection_hint(ks),
                )
                if stop_event.wait(5.0):
                    return False
        self.broker.ok()
        if not self.control.start(stop_event, self.inspector):  # read to its end first
            return False
        self.outbox = Outbox(build_producer(ks), on_broker_ok=self.broker.ok, on_broker_error=self.broker.error)
        parts = {"checkpoint": self.checkpoint, "telemetry": self.telemetry, "counters": self.counters}
        judge = self.control.judge
        self.publisher = Publisher(
            self.settings,
            self.outbox,
            lambda: self.inspector.versions,
            in_flight=self.in_flight,
            abandon=self._abandon,
            judge=judge,
            **parts,
        )
        self.inference = Inference(ws, self.inspector, self.publisher, abandon=self._abandon, judge=judge, **parts)
        self.intake = Intake(ws, dead_letter=self.publisher.send_dead_letter, skip=self.publisher.send_skipped, **parts)
        self.intake.known_scope = self.control.state.knows  # worker.known_scopes_only
        self.consumer = build_consumer(ks, max_poll_records=ws.batch_max_frames, **static_membership(ks))
        self.checkpoint.subscribe(self.consumer, [ks.frames_topic], on_revoked=self._revoked)
        self.publisher.thread.start()
        self.inference.thread.start()
        self._running = True
        log.info("worker %s consuming %s as group %s", self.worker_id, ks.frames_topic, ks.group_id)
        return True

    def shutdown(self) -> None:
        """Finish what was polled, publish, commit, leave the group. Safe to call twice."""
        self._running = False
        deadline = time.monotonic() + self.settings.worker.shutdown_timeout_s
        left = lambda: max(0.0, deadline - time.monotonic())  # noqa: E731
        helpers = [
            stage.thread for stage in (self.inference, self.publisher) if stage is not None and stage.thread.is_alive()
        ]
        if self.inference is not None and self.inference.thread.is_alive():
            self._dispatch(self.batcher.take(), timeout_s=left())
            hand_over(self.inference.queue, STOP, self.inference.thread, timeout_s=left())
        elif self.publisher is not None and self.publisher.thread.is_alive():  # no inference thread to pass STOP on
            hand_over(self.publisher.queue, STOP, self.publisher.thread, timeout_s=left())
        for helper in helpers:  # the publish thread ends once the inference thread's STOP reaches it
            helper.join(left())
        if any(helper.is_alive() for helper in helpers):
            log.warning(
                "shutdown: inference or publishing still busy after %.0f s; leaving queued frames uncommitted",
                self.settings.worker.shutdown_timeout_s,
            )
            self._abandon.set()
            for helper in helpers:
                helper.join(10.0)
        if self.outbox is not None:
            self.outbox.retry_failed(force=True)
            self.outbox.flush(max(1.0, left()))
        if self.consumer is not None:
            self._commit(force=True)
            close_and_leave(self.consumer)
            self.consumer = None
            log.info("worker %s left the group: %s", self.worker_id, self.status().counters)
        if self.outbox is not None:
            self.outbox.close()
            self.counters.add("publish_errors", self.outbox.errors)
            self.outbox = None
        self.control.stop()

    # ================================================================== status

    def status(self) -> ServiceStatus:
        counters = self.counters.snapshot()
        outbox = self.outbox
        if outbox is not None and outbox.errors:
            counters["publish_errors"] = outbox.errors
        with self._lag_lock:
            lag = {f"{tp.topic}:{tp.partition}": n for tp, n in self._lag.items()}
        return ServiceStatus(
            worker_id=self.worker_id,
            running=self._running,
            models_loaded=self.inspector is not None,
            broker_reachable=self.broker.reachable,
            cache_degraded=isinstance(self.cache, MonitoredCache) and self.cache.degraded,
            assigned_partitions=tuple(sorted((tp.topic, tp.partition) for tp in self.checkpoint.assigned())),
            paused=self.in_flight.paused,
            waiting_frames=self.in_flight.waiting + len(self.batcher),
            uncommitted_messages=self.tracker.open_count(),
            inference_busy_s=round(self.inference.busy_s() if self.inference else 0.0, 3),
            lag=lag,
            counters=counters,
            control_caught_up=self.control.caught_up,
            control_scopes=self.control.scopes,
            clock_skew=self.intake.skew.snapshot() if self.intake is not None and self.intake.skew else {},
        )

    def inference_stuck(self) -> bool:
        return self.inference is not None and self.inference.stuck()

    # ================================================================== helpers

    def _build_inspector(self) -> InspectorProtocol:
        from worker.inspection.inspector import build_inspector  # heavy (torch): only when serving
        from worker.inspection.redis_cache import build_embedding_cache

        if self.cache is None:
            self.cache = build_embedding_cache(self.settings.redis, metrics=self.telemetry.metrics)
        return build_inspector(self.settings.models, cache=self.cache)

    def _revoked(self, partitions: set, _committed: dict, dropped: int) -> None:  # rebalance listener
        with self._lag_lock:
            for tp in partitions:
                self._lag.pop(tp, None)
        self.counters.add("rebalances")
        self.counters.add("dropped_on_revoke", dropped)

    def _report_lag_and_cache(self) -> None:
        committed = self.checkpoint.committed_offsets()
        lag = {}
        for tp in self.checkpoint.assigned():
            try:
                end = self.consumer.highwater(tp)
            except Exception:  # partition moved between the snapshot and the call
                continue
            if end is None or tp not in committed:
                continue
            lag[tp] = max(0, end - committed[tp])
            self.telemetry.metrics.lag(tp.topic, tp.partition, lag[tp])
        with self._lag_lock:
            self._lag = lag
        self.telemetry.metrics.few_shot_held(self.control.references.memory())
        # Ping the shared cache: the in-process LRUs answer most lookups, so an outage or a recovery
        # would otherwise show in the status only at the next prompt never seen before.
        if isinstance(self.cache, MonitoredCache):
            self.cache.check()


# ====================================================================== entry point


def ensure_worker_topics(ks: KafkaSettings) -> None:
    """The topics a worker reads and writes, created when missing (control topics compacted, audit kept)."""
    configs = dict.fromkeys(control_topics(ks), COMPACTED) | {ks.audit_topic: AUDIT_TOPIC_CONFIG}
    configs[ks.frames_topic] = FRAMES_TOPIC_CONFIG  # record time = the broker's clock
    topics = [ks.results_topic, ks.dlq_topic, *configs]
    ensure_topics(ks, topics, configs, bootstrap_timeout_ms=CONNECT_TIMEOUT_MS)


def run_service(
    settings: LinewatchSettings, inspector: InspectorProtocol | None = None, stop_event: threading.Event | None = None
) -> None:
    """`linewatch-worker serve`: telemetry, cache, models, health endpoint, then the poll loop.

    SIGTERM and SIGINT set `stop_event` (when called from the main thread; a second one
    gives up on a clean stop).
    """
    from common.telemetry import setup_telemetry

    log.info("linewatch worker settings: %s", json.dumps(settings.redacted(), sort_keys=True))
    stop_event = stop_event or threading.Event()
    telemetry = setup_telemetry(settings.telemetry.service_name) if settings.telemetry.enabled else None
    service = WorkerService(settings, inspector, telemetry=telemetry)
    health = None
    if settings.worker.health_port is not None:
        from worker.stream.health import HealthServer

        health = HealthServer(
            port=settings.worker.health_port,
            readiness=lambda: readiness_checks(service.status(), service.inference_stuck()),
            metrics=telemetry.prometheus_text if telemetry is not None else None,
        ).start()
    try:
        with StopOnSignals(stop_event, "stopping after the frames already polled"):
            service.run(stop_event)
    finally:
        if health is not None:
            health.stop()
        if isinstance(service.cache, MonitoredCache):
            service.cache.close()
        if telemetry is not None:
            telemetry.shutdown()
