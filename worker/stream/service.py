"""The Kafka stream worker: `linewatch-worker serve` -- wiring and lifecycle.

A frame passes these modules in order: `intake` (record -> Work, dead letter or skipped),
`batching` (micro-batches, backpressure), `inference` (inference thread, watchdog),
`outputs` and `results` (the record each message ends as), `publishing` (publish thread,
checkpoints), `delivery` (the processing guarantee), `offsets` (what is done, committed),
`status` and `telemetry`.

The micro-batch is the unit of delivery. Three threads, each handing on in order:

- **poll thread** (`WorkerService.run`): polls the frames topic, turns each record into an
  item (a frame to score, a dead letter, a `skipped` result), groups the items into
  micro-batches and hands them to the inference thread through a bounded queue, never waiting
  on it: a batch that finds the queue full stays in the batcher until the next turn. It pauses
  its partitions while `queue_max_frames` messages are polled and unacknowledged (polling goes
  on, so the group membership does too), and it commits: the publish thread tells it "done through
  offset N" per partition, or "read again" after an aborted transaction.
- **inference thread**: runs the Inspector on each batch (one frame at a time after a batch
  fails, so a bad frame dead-letters alone) and hands one output per message on, in order.
- **publish thread**: builds and sends each message's record (results, skipped results and
  dead letters alike) while the device scores the next batch, and closes a checkpoint when
  `commit_interval_ms` passed or no scored batch waits.

Delivery (`kafka.processing_guarantee`):

- at-least-once (default): a checkpoint's records are all acknowledged (acks=all, idempotent
  producer) before its offsets are committed. A worker that dies in between leaves its
  successor to publish those results again: duplicates (same `frame_id`), never gaps.
- exactly-once: a checkpoint is one Kafka transaction holding its records and the consumed
  offsets, fenced by the consumer's group generation; a failure, a rebalance or a shutdown
  that times out aborts it and the messages are read again from the committed offsets.
  Readers with `isolation_level=read_committed` see each result once.

A revoked partition starts a new *epoch* of its own: the work polled from it before is dropped
by every thread (its next owner reads it), and the partitions kept go on undisturbed; an open
transaction holding records of it is aborted. An aborted transaction or a checkpoint not settled
starts a new *generation*: work polled before it is dropped by every thread, what the publish
thread had open is settled (at-least-once) or aborted (exactly-once), and the partitions still
assigned are read again from where their work not done begins. On SIGTERM/SIGINT the worker stops polling, finishes the messages it
already polled (up to `shutdown_timeout_s`), closes its last checkpoint and leaves the group.
A batch that stays in the Inspector longer than `inference_timeout_s` (a wedged device)
makes the worker unready and stops it the same way, with `InferenceStuck`; `/healthz` fails
as soon as such a batch, or a loop turn that never ends, is older than its bound (`liveness`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import queue
import threading
import time

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from common.kafka import BrokerReachability, build_consumer, close_and_leave, static_membership
from common.settings import LinewatchSettings
from common.signals import StopOnSignals
from common.telemetry import Telemetry
from worker.inspection.embedding_cache import EmbeddingCache
from worker.inspection.types import InspectorProtocol
from worker.stream.batching import STOP, Batch, InFlight, MicroBatcher, drop_revoked, hand_over
from worker.stream.control_plane import ControlPlane
from worker.stream.delivery import AtLeastOnce, Delivery, ExactlyOnce, transaction_timeout_problem
from worker.stream.health import HealthServer
from worker.stream.inference import Inference, InferenceStuck
from worker.stream.intake import Consumed, Intake, Item
from worker.stream.offsets import Checkpoint
from worker.stream.publishing import Done, Publisher
from worker.stream.stages import StageContext
from worker.stream.startup import CONNECT_TIMEOUT_MS, build_service_inspector, partition_lag, wait_for_topics
from worker.stream.status import MonitoredCache, ServiceStatus, liveness_checks, readiness_checks
from worker.stream.telemetry import Counters, ServiceTelemetry
from worker.stream.warmup import warm_up

__all__ = ["CONNECT_TIMEOUT_MS", "LAG_INTERVAL_S", "InferenceStuck", "ServiceStatus", "WorkerService", "run_service"]

log = logging.getLogger(__name__)

IDLE_POLL_S = 0.1
LAG_INTERVAL_S = 5.0
COMMIT_TIMEOUT_MS = 10_000  # a commit to an unreachable broker must not hold the loop (or shutdown) long
SETTLE_TIMEOUT_S = 60.0  # a rebalance waits this long for the publish thread to close what it had open
LOOP_STALL_S = 90.0  # the longest one loop turn may take (a settle, then a commit): /healthz's least bound


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
        self.counters = Counters()
        self.broker = BrokerReachability()
        name = f"worker {self.worker_id}"
        self.checkpoint = Checkpoint(reachability=self.broker, commit_timeout_ms=COMMIT_TIMEOUT_MS, name=name)
        ws = settings.worker
        self.batcher: MicroBatcher[Item] = MicroBatcher(ws.batch_max_frames, ws.batch_max_wait_ms / 1000.0)
        self.telemetry = service_telemetry = ServiceTelemetry(telemetry)
        self.control = ControlPlane(settings, self.counters, service_telemetry.metrics)
        in_flight = InFlight(ws.queue_max_frames)
        self.context = StageContext(settings, self.checkpoint, in_flight, service_telemetry, self.counters)
        self._generation = 0  # of the batches this thread hands on
        self._epochs: dict[TopicPartition, int] = {}  # the checkpoint's partition epochs it has seen
        self._running, self._beat = False, 0.0  # _beat: when the loop last began a turn (liveness)
        self._last_commit = 0.0
        self._lag: dict[TopicPartition, int] = {}  # replaced whole, never changed in place
        self.consumer: KafkaConsumer | None = None
        self.delivery: Delivery | None = None
        self.publisher: Publisher | None = None
        self.inference: Inference | None = None
        self.intake: Intake | None = None

    # ================================================================== the loop

    def run(self, stop_event: threading.Event) -> None:
        """Serve until `stop_event` is set, then shut down gracefully."""
        try:
            if not self.start(stop_event):
                return
            last_lag = 0.0
            while not stop_event.is_set():
                self._beat = time.monotonic()
                self._watch()  # helper threads alive, no batch stuck in the Inspector
                try:
                    self._consume()  # poll -> intake -> micro-batch -> inference thread -> publish thread
                    self._checkpoint()  # the publish thread's reports: commit what is done, or read again
                except KafkaError as exc:  # the client recovers by itself; keep serving
                    self.broker.error()
                    log.warning("poll or commit failed (%s: %s); retrying", type(exc).__name__, exc)
                    stop_event.wait(1.0)
                if time.monotonic() - last_lag >= LAG_INTERVAL_S:
                    self._report_lag_and_cache()
                    last_lag = time.monotonic()
        finally:
            self.shutdown()

    def _consume(self) -> None:
        assert self.consumer is not None and self.intake is not None and self.inference is not None
        if self.context.in_flight.apply(self.consumer, held=len(self.batcher)) == "pause":
            self.counters.add("pauses")
        wait = self.batcher.time_left(time.monotonic()) if self.inference.has_room() else None
        records = self.consumer.poll(timeout_ms=int(1000 * (IDLE_POLL_S if wait is None else min(wait, IDLE_POLL_S))))
        if (epochs := self.checkpoint.epochs()) != self._epochs:  # partitions revoked inside poll
            records, dropped = drop_revoked(self._epochs, epochs, records, self.batcher, self.checkpoint)
            self.counters.add("dropped_on_revocation", dropped)
            self._epochs = epochs
        for partition, batch in records.items():
            for record in batch:
                self.batcher.add(self.intake.take(partition, Consumed.from_record(record)), time.monotonic())
        if self.batcher.ready(time.monotonic()) and self.inference.has_room():  # else: held until a later turn
            self._dispatch(self.batcher.take(), timeout_s=0.0)  # only this thread puts: there is room

    def _dispatch(self, items: list[Item], timeout_s: float) -> None:
        if items and self.inference is not None:
            self.context.in_flight.add(len(items))
            if not self.inference.submit(Batch(self._generation, items, self._epochs), timeout_s):  # (shutdown)
                self.context.in_flight.finished(len(items))

    def _checkpoint(self, force: bool = False) -> None:
        """Apply the publish thread's reports; at-least-once: commit what is done."""
        assert self.publisher is not None
        while True:
            try:
                report = self.publisher.reports.get_nowait()
            except queue.Empty:
                break
            if isinstance(report, Done):
                (self.checkpoint.committed if report.committed else self.checkpoint.done_through)(report.offsets)
            elif report.generation == self._generation:  # a checkpoint not settled: read its messages again
                self.checkpoint.bump()
                self._resync()
        if self.delivery is None or self.delivery.transactional:
            return
        if not force and time.monotonic() - self._last_commit < self.settings.worker.commit_interval_ms / 1000.0:
            return
        self._last_commit = time.monotonic()
        try:
            if self.checkpoint.commit():
                self.counters.add("commits")
        except KafkaError as exc:  # e.g. a rebalance in progress: the listener commits instead
            self.counters.add("commit_errors")
            log.warning("offset commit failed (will retry): %s", exc)

    def _resync(self) -> None:
        """A new generation (a checkpoint not settled): drop the polled work, read it again
        from where the publish thread's last checkpoint left it (it settles what it held open first)."""
        assert self.publisher is not None
        self._generation = self.checkpoint.generation
        dropped = len(self.batcher.take_all())
        self.counters.add("resyncs")
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while self.publisher.settled < self._generation and self.publisher.thread.is_alive():
            if time.monotonic() > deadline:
                raise RuntimeError(f"the publish thread did not settle within {SETTLE_TIMEOUT_S:.0f} s")
            time.sleep(0.01)
        self.counters.add("dropped_on_resync", dropped + self.context.in_flight.waiting)  # still in the pipeline
        self._checkpoint(force=True)
        self.checkpoint.rewind()

    def _watch(self) -> None:
        assert self.inference is not None and self.publisher is not None
        if not (self.inference.thread.is_alive() and self.publisher.thread.is_alive()):
            raise RuntimeError("inference or publish thread died")
        self.inference.check()

    # ================================================================== lifecycle

    def start(self, stop_event: threading.Event | None = None) -> bool:
        """Load models, create missing topics (waiting for the broker), read control to its end, subscribe.

        Returns False when `stop_event` was set before the broker answered.
        """
        ks, ws = self.settings.kafka, self.settings.worker
        eos = ks.processing_guarantee == "exactly-once"  # exactly-once
        if eos and (problem := transaction_timeout_problem(self.settings)):
            raise ValueError(problem)
        if self.inspector is None:
            self.cache, self.inspector = build_service_inspector(self.settings, self.cache, self.telemetry)
            warm_up(self.inspector, ws.warm_up_passes)  # before subscribing: no partition waits on a cold model
        inspector = self.inspector
        stop_event = stop_event or threading.Event()
        if not wait_for_topics(ks, stop_event, self.broker):
            return False
        if not self.control.start(stop_event, inspector):  # read to its end first
            return False
        self.context = context = dataclasses.replace(self.context, judge=self.control.judge)
        gave_up = context.abandon.is_set
        self.delivery = (
            ExactlyOnce(self.settings, self.broker) if eos else AtLeastOnce(self.settings, self.broker, gave_up)
        )
        self.consumer = consumer = build_consumer(ks, max_poll_records=ws.batch_max_frames, **static_membership(ks))
        self.publisher = Publisher(context, self.delivery, lambda: inspector.versions, consumer.group_metadata)
        self.inference = Inference(context, inspector, self.publisher)
        self.intake = Intake(ws, self.checkpoint, self.telemetry, self.counters)
        self.checkpoint.subscribe(consumer, [ks.frames_topic], on_revoked=self._revoked)
        self.intake.known_scope = self.control.state.knows  # worker.known_scopes_only
        self.publisher.thread.start()
        self.inference.thread.start()
        self._beat, self._running = time.monotonic(), True
        guarantee = ks.processing_guarantee
        log.info("worker %s consuming %s as group %s (%s)", self.worker_id, ks.frames_topic, ks.group_id, guarantee)
        return True

    def shutdown(self) -> None:
        """Finish what was polled, publish, commit, leave the group. Safe to call twice."""
        self._running = False
        deadline = time.monotonic() + self.settings.worker.shutdown_timeout_s

        def left() -> float:
            return max(0.0, deadline - time.monotonic())

        helpers = [
            stage.thread for stage in (self.inference, self.publisher) if stage is not None and stage.thread.is_alive()
        ]
        if self.inference is not None and self.inference.thread.is_alive():
            self._dispatch(self.batcher.take_all(), timeout_s=left())
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
            self.context.abandon.set()
            for helper in helpers:
                helper.join(10.0)
        if self.consumer is not None:
            if self.publisher is not None:
                self._checkpoint(force=True)
            close_and_leave(self.consumer)
            self.consumer = None
            log.info("worker %s left the group: %s", self.worker_id, self.status().counters)
        if self.delivery is not None:
            self.delivery.close()  # exactly-once: aborts a transaction left open
            self.counters.add("publish_errors", self.delivery.errors)
            self.delivery = None
        self.control.stop()

    # ================================================================== status

    def status(self) -> ServiceStatus:
        counters = self.counters.snapshot()
        delivery = self.delivery
        if delivery is not None and delivery.errors:
            counters["publish_errors"] = delivery.errors
        lag = {f"{tp.topic}:{tp.partition}": n for tp, n in self._lag.items()}
        return ServiceStatus(
            worker_id=self.worker_id,
            running=self._running,
            models_loaded=self.inspector is not None,
            broker_reachable=self.broker.reachable,
            cache_degraded=isinstance(self.cache, MonitoredCache) and self.cache.degraded,
            assigned_partitions=tuple(sorted((tp.topic, tp.partition) for tp in self.checkpoint.assigned())),
            paused=self.context.in_flight.paused,
            waiting_frames=self.context.in_flight.waiting + len(self.batcher),
            uncommitted_messages=self.context.in_flight.waiting,
            inference_busy_s=round(self.inference.busy_s() if self.inference else 0.0, 3),
            loop_age_s=round(time.monotonic() - self._beat, 3) if self._running else 0.0,
            lag=lag,
            counters=counters,
            control_caught_up=self.control.caught_up,
            control_scopes=self.control.scopes,
            clock_skew=self.intake.skew.snapshot() if self.intake is not None and self.intake.skew else {},
        )

    def inference_stuck(self) -> bool:
        return self.inference is not None and self.inference.stuck()

    # ================================================================== helpers

    def _revoked(self, _partitions: set[TopicPartition]) -> None:  # rebalance listener
        self._lag = {}
        self.counters.add("rebalances")

    def _report_lag_and_cache(self) -> None:
        self._lag = lag = partition_lag(self.consumer, self.checkpoint)
        for tp, behind in lag.items():
            self.telemetry.metrics.lag(tp.topic, tp.partition, behind)
        self.telemetry.metrics.few_shot_held(self.control.references.memory())
        # Ping the shared cache: the in-process LRUs answer most lookups, so an outage or a recovery
        # would otherwise show in the status only at the next prompt never seen before.
        if isinstance(self.cache, MonitoredCache):
            self.cache.check()


# ====================================================================== entry point


def health_server(service: WorkerService, port: int, host: str = "0.0.0.0") -> HealthServer:
    """`/healthz` (`liveness_checks`), `/readyz` (`readiness_checks`) and `/metrics` of a worker."""
    telemetry, timeout_s = service.telemetry.telemetry, service.settings.worker.inference_timeout_s
    return HealthServer(
        port,
        readiness=lambda: readiness_checks(service.status(), service.inference_stuck()),
        metrics=telemetry.prometheus_text if telemetry is not None else None,
        host=host,
        liveness=lambda: liveness_checks(service.status(), timeout_s, LOOP_STALL_S),
    )


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
        health = health_server(service, settings.worker.health_port).start()
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
