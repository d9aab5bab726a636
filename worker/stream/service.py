"""The Kafka stream worker: `linewatch-worker serve`.

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
before it (`OffsetTracker`). On partition revocation it commits what is
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
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from kafka import TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from common.kafka import build_consumer, build_producer, connection_hint, ensure_topics
from common.messages import dead_letter_error, dead_letter_record
from common.schemas import FrameMeta, InspectionResult, utc_now
from common.settings import LinewatchSettings
from common.signals import StopOnSignals
from common.telemetry import Telemetry
from worker.inspection.types import Frame, Inspection
from worker.stream.results import build_result, skipped_result
from worker.stream.batching import MicroBatcher, backpressure
from worker.stream.intake import (
    Consumed,
    Rejected,
    ResultTooLarge,
    decode_frame,
    fit_result,
    is_stale,
    parse_meta,
    stale_note,
)
from worker.stream.offsets import OffsetTracker
from worker.stream.publishing import Outbox, Outgoing
from worker.stream.telemetry import ServiceTelemetry

log = logging.getLogger(__name__)

IDLE_POLL_S = 0.1
LAG_INTERVAL_S = 5.0
COMMIT_TIMEOUT_MS = 10_000  # a commit to an unreachable broker must not hold the loop (or shutdown) long
CONNECT_TIMEOUT_MS = 10_000  # one start-up attempt; a stop request waits for at most this
PUBLISH_QUEUE_BATCHES = 2  # scored batches waiting for the publish thread: keeps it busy, bounds the memory


class InferenceStuck(RuntimeError):
    """A batch has been in the Inspector for longer than `worker.inference_timeout_s`."""


_STOP = object()  # sentinel that ends the inference thread, which passes it on to the publish thread


@dataclass(frozen=True)
class ServiceStatus:
    """A snapshot for the health endpoint and tests."""

    worker_id: str
    running: bool
    models_loaded: bool
    broker_reachable: bool
    cache_degraded: bool
    assigned_partitions: tuple[tuple[str, int], ...]
    paused: bool
    waiting_frames: int
    uncommitted_messages: int
    inference_busy_s: float  # how long the batch now in the Inspector has been there; 0 when idle
    lag: dict[str, int]
    counters: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "assigned_partitions": [f"{t}:{p}" for t, p in self.assigned_partitions]}


@dataclass
class _Work:
    """A decoded frame on its way through the inference thread."""

    message: Consumed
    partition: TopicPartition
    generation: int
    meta: FrameMeta
    image: np.ndarray
    span: Any  # opentelemetry Span of the frame


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, service: WorkerService):
        self.service = service

    def on_partitions_revoked(self, revoked):
        self.service._on_revoked(set(revoked), commit=True)

    def on_partitions_assigned(self, assigned):
        self.service._on_assigned(set(assigned))

    def on_partitions_lost(self, lost):  # kafka-python >= 3: evicted from the group, commits would fail
        self.service._on_revoked(set(lost), commit=False)


class WorkerService:
    """One member of the worker consumer group. `run(stop_event)` blocks until stopped."""

    def __init__(
        self,
        settings: LinewatchSettings,
        inspector: Any | None = None,
        *,
        cache: Any | None = None,
        telemetry: Telemetry | None = None,
    ):
        self.settings = settings
        self.worker_id = settings.worker.worker_id
        self.inspector = inspector
        self.cache = cache
        self.telemetry = ServiceTelemetry(telemetry)
        self.tracker = OffsetTracker()
        ws = settings.worker
        self._batcher: MicroBatcher[_Work] = MicroBatcher(ws.batch_max_frames, ws.batch_max_wait_ms / 1000.0)
        self._queue: queue.Queue = queue.Queue(maxsize=max(2, ws.queue_max_frames // ws.batch_max_frames + 2))
        self._scored: queue.Queue = queue.Queue(maxsize=PUBLISH_QUEUE_BATCHES)  # (frames, [(work, inspection)])
        self._lock = threading.Lock()
        self._waiting = 0  # frames handed to the inference thread whose results are not sent yet
        self._generation: dict[TopicPartition, int] = {}
        self._assigned: set[TopicPartition] = set()
        self._committed: dict[TopicPartition, int] = {}
        self._rewind: dict[TopicPartition, int] = {}  # revoked partitions: first message not finished
        self._lag: dict[TopicPartition, int] = {}
        self._counters: dict[str, int] = {}
        self._paused = False
        self._running = False
        self._last_commit = 0.0
        self._last_broker_ok = 0.0
        self._last_broker_error = 0.0
        self._abandon = threading.Event()
        self._inspect_started: float | None = None  # monotonic time the batch now in the Inspector went in
        self._consumer = None
        self._outbox: Outbox | None = None
        self._inference_thread: threading.Thread | None = None
        self._publish_thread: threading.Thread | None = None

    # ================================================================== lifecycle

    def run(self, stop_event: threading.Event) -> None:
        """Serve until `stop_event` is set, then shut down gracefully."""
        try:
            if not self.start(stop_event):
                return
            last_lag = 0.0
            while not stop_event.is_set():
                if not (self._inference_thread.is_alive() and self._publish_thread.is_alive()):
                    raise RuntimeError("inference or publish thread died")
                self._check_inference_time()
                try:
                    self._poll_once()
                except KafkaError as exc:  # the client recovers by itself; keep serving
                    self._broker_error()
                    log.warning("poll failed (%s: %s); retrying", type(exc).__name__, exc)
                    stop_event.wait(1.0)
                self._outbox.retry_failed()
                self._maybe_commit()
                if time.monotonic() - last_lag >= LAG_INTERVAL_S:
                    self._update_lag()
                    self._check_cache()
                    last_lag = time.monotonic()
        finally:
            self.shutdown()

    def start(self, stop_event: threading.Event | None = None) -> bool:
        """Load models, create missing topics (waiting for the broker), subscribe.

        Returns False when `stop_event` was set before the broker answered.
        """
        ks = self.settings.kafka
        if self.inspector is None:
            self.inspector = self._build_inspector()
        stop_event = stop_event or threading.Event()
        while True:
            try:
                ensure_topics(ks, [ks.frames_topic, ks.results_topic, ks.dlq_topic],
                              bootstrap_timeout_ms=CONNECT_TIMEOUT_MS)
                break
            except Exception as exc:  # broker not up yet: wait for it rather than crash-loop
                self._broker_error()
                log.warning("cannot reach Kafka at %s (%s: %s); %s; retrying in 5 s",
                            ks.bootstrap_servers, type(exc).__name__, exc, connection_hint(ks))
                if stop_event.wait(5.0):
                    return False
        self._broker_ok()
        self._outbox = Outbox(build_producer(ks), on_broker_ok=self._broker_ok, on_broker_error=self._broker_error)
        self._consumer = build_consumer(ks, max_poll_records=self.settings.worker.batch_max_frames)
        self._consumer.subscribe([ks.frames_topic], listener=_Rebalance(self))
        self._publish_thread = threading.Thread(target=self._publish_loop, name="lw-publish", daemon=True)
        self._publish_thread.start()
        self._inference_thread = threading.Thread(target=self._inference_loop, args=(self._publish_thread,),
                                                  name="lw-inference", daemon=True)
        self._inference_thread.start()
        self._running = True
        log.info("worker %s consuming %s as group %s", self.worker_id, ks.frames_topic, ks.group_id)
        return True

    def shutdown(self) -> None:
        """Finish what was polled, publish, commit, leave the group. Safe to call twice."""
        self._running = False
        deadline = time.monotonic() + self.settings.worker.shutdown_timeout_s
        left = lambda: max(0.0, deadline - time.monotonic())  # noqa: E731
        thread, self._inference_thread = self._inference_thread, None
        publisher, self._publish_thread = self._publish_thread, None
        if thread is not None and thread.is_alive():
            if len(self._batcher):
                self._dispatch(self._batcher.take(), thread, timeout_s=left())
            _put(self._queue, _STOP, thread, timeout_s=left())
        elif publisher is not None and publisher.is_alive():  # no inference thread left to pass _STOP on
            _put(self._scored, _STOP, publisher, timeout_s=left())
        helpers = [t for t in (thread, publisher) if t is not None]
        for helper in helpers:  # the publish thread ends once the inference thread's _STOP reaches it
            helper.join(left())
        if any(helper.is_alive() for helper in helpers):
            log.warning("shutdown: inference or publishing still busy after %.0f s; leaving queued frames "
                        "uncommitted", self.settings.worker.shutdown_timeout_s)
            self._abandon.set()
            for helper in helpers:
                helper.join(10.0)
        if self._outbox is not None:
            self._outbox.retry_failed(force=True)
            self._outbox.flush(max(1.0, left()))
        if self._consumer is not None:
            self._maybe_commit(force=True)
            self._consumer.close(autocommit=False)
            self._consumer = None
            log.info("worker %s left the group: %s", self.worker_id, self.status().counters)
        if self._outbox is not None:
            self._outbox.close()
            self._count("publish_errors", self._outbox.errors)
            self._outbox = None

    def status(self) -> ServiceStatus:
        with self._lock:
            counters = dict(self._counters)
            if self._outbox is not None and self._outbox.errors:
                counters["publish_errors"] = self._outbox.errors
            assigned = tuple(sorted((tp.topic, tp.partition) for tp in self._assigned))
            lag = {f"{tp.topic}:{tp.partition}": n for tp, n in self._lag.items()}
            waiting = self._waiting + len(self._batcher)
        return ServiceStatus(
            worker_id=self.worker_id,
            running=self._running,
            models_loaded=self.inspector is not None,
            broker_reachable=self._last_broker_ok > 0 and self._last_broker_ok >= self._last_broker_error,
            cache_degraded=bool(getattr(self.cache, "degraded", False)),
            assigned_partitions=assigned,
            paused=self._paused,
            waiting_frames=waiting,
            uncommitted_messages=self.tracker.open_count(),
            inference_busy_s=round(self._inference_busy_s(), 3),
            lag=lag,
            counters=counters,
        )

    def inference_stuck(self) -> bool:
        limit = self.settings.worker.inference_timeout_s
        return limit is not None and self._inference_busy_s() > limit

    def _inference_busy_s(self) -> float:
        started = self._inspect_started  # one read: the inference thread may clear it meanwhile
        return time.monotonic() - started if started is not None else 0.0

    def _check_inference_time(self) -> None:  # every poll-loop turn: keep it cheap
        if self.inference_stuck():
            log.error("a batch has been in the Inspector for %.0f s (worker.inference_timeout_s = %.0f s): "
                      "the device looks wedged; leaving the group so other workers take the partitions",
                      self._inference_busy_s(), self.settings.worker.inference_timeout_s)
            self._count("inference_stuck")
            raise InferenceStuck(f"inference busy for more than {self.settings.worker.inference_timeout_s} s")

    def _build_inspector(self) -> Any:
        from worker.inspection.inspector import build_inspector  # heavy (torch): only when serving
        from worker.inspection.redis_cache import build_embedding_cache

        if self.cache is None:
            self.cache = build_embedding_cache(self.settings.redis, on_lookup=self.telemetry.cache_lookup)
        return build_inspector(self.settings.models, cache=self.cache)

    # ================================================================== poll thread

    def _poll_once(self) -> None:
        self._apply_backpressure()
        now = time.monotonic()
        wait = self._batcher.time_left(now)
        timeout_ms = int(1000 * (IDLE_POLL_S if wait is None else min(wait, IDLE_POLL_S)))
        records = self._consumer.poll(timeout_ms=timeout_ms)
        for partition, batch in records.items():
            for record in batch:
                self._intake(partition, Consumed.from_record(record))
        if self._batcher.ready(time.monotonic()):
            self._dispatch(self._batcher.take())

    def _intake(self, partition: TopicPartition, message: Consumed) -> None:
        """Track one consumed message and route it: dead letter, skipped result or batch."""
        self.tracker.add(partition, message.offset)
        self._count("consumed")
        span = self.telemetry.start_frame(
            message.headers,
            {"messaging.destination.name": message.topic, "messaging.kafka.partition": message.partition,
             "messaging.kafka.offset": message.offset},
        )
        ws = self.settings.worker
        try:
            with self.telemetry.stage(span, "decode"):
                meta = parse_meta(message.headers)
                span.set_attribute("linewatch.frame_id", meta.frame_id)
                stale = is_stale(meta, utc_now(), ws.max_frame_age_s)  # a stale frame is not even decoded
                image = None if stale else decode_frame(
                    meta, message.value, max_bytes=ws.max_frame_bytes, max_pixels=ws.max_frame_pixels
                )
        except Rejected as exc:
            self._send_dead_letter(partition, message, exc.stage, exc.error_type, exc.message, span)
            return
        except Exception as exc:  # never let one message stop the worker
            log.exception("unexpected error on %s:%s@%s", message.topic, message.partition, message.offset)
            self._send_dead_letter(partition, message, "decode", type(exc).__name__, str(exc), span)
            return
        if stale:
            self._send_skipped(partition, message, meta, span)
            return
        generation = self._generation.get(partition, 0)
        self._batcher.add(_Work(message, partition, generation, meta, image, span), time.monotonic())

    def _dispatch(self, batch: list[_Work], thread: threading.Thread | None = None,
                  timeout_s: float | None = None) -> None:
        if not batch:
            return
        with self._lock:
            self._waiting += len(batch)
        _put(self._queue, batch, thread or self._inference_thread, timeout_s)

    def _apply_backpressure(self) -> None:
        with self._lock:
            waiting = self._waiting
        action = backpressure(waiting, self.settings.worker.queue_max_frames, self._paused)
        if action == "pause":
            self._paused = True
            self._count("pauses")
            log.info("backpressure: %d frames waiting, pausing partitions", waiting)
        elif action == "resume":
            self._paused = False
            log.info("backpressure: %d frames waiting, resuming partitions", waiting)
        # Re-applied every time: a rebalance hands out partitions unpaused.
        assignment = self._consumer.assignment()
        if self._paused and assignment:
            self._consumer.pause(*assignment)
        elif not self._paused and self._consumer.paused():
            self._consumer.resume(*self._consumer.paused())

    # ------------------------------------------------------------------ commits

    def _maybe_commit(self, force: bool = False) -> None:
        interval = self.settings.worker.commit_interval_ms / 1000.0
        if not force and time.monotonic() - self._last_commit < interval:
            return
        self._last_commit = time.monotonic()
        offsets = self.tracker.committable(self._assigned_snapshot())
        if not offsets:
            return
        try:
            self._consumer.commit({tp: OffsetAndMetadata(off, "", -1) for tp, off in offsets.items()},
                                  timeout_ms=COMMIT_TIMEOUT_MS)
        except KafkaError as exc:  # e.g. a rebalance in progress: the listener commits instead
            self._count("commit_errors")
            self._broker_error()
            log.warning("offset commit failed (will retry): %s", exc)
            return
        self._broker_ok()
        self.tracker.committed(offsets)
        with self._lock:
            self._committed.update(offsets)
        self._count("commits")

    def _assigned_snapshot(self) -> set[TopicPartition]:
        with self._lock:
            return set(self._assigned)

    def _update_lag(self) -> None:
        lag = {}
        for tp in self._assigned_snapshot():
            try:
                end = self._consumer.highwater(tp)
            except Exception:  # partition moved between the snapshot and the call
                continue
            if end is None:
                continue
            done = self._committed.get(tp)
            if done is None:
                continue
            lag[tp] = max(0, end - done)
            self.telemetry.lag(tp.topic, tp.partition, lag[tp])
        with self._lock:
            self._lag = lag

    def _check_cache(self) -> None:
        """Ping the shared cache: the in-process LRUs answer most lookups, so an outage or a
        recovery would otherwise show in the status only at the next prompt never seen before."""
        check = getattr(self.cache, "check", None)  # the LRU-only cache (no Redis URL) has none
        if check is not None:
            check()

    # ------------------------------------------------------------------ rebalance (listener thread)

    def _on_revoked(self, partitions: set[TopicPartition], commit: bool) -> None:
        """Commit what is acknowledged; drop the rest uncommitted (its next owner re-processes it).

        A partition that comes straight back to this worker keeps its fetch position
        (kafka-python >= 3 preserves it), so `_on_assigned` seeks it back to the first
        dropped message: dropped work is done again, never skipped.
        """
        with self._lock:
            for tp in partitions:
                self._generation[tp] = self._generation.get(tp, 0) + 1
                self._lag.pop(tp, None)
            self._assigned -= partitions
        offsets = self.tracker.committable(partitions) if commit else {}
        if offsets:
            self.tracker.committed(offsets)
        dropped = sum(self.tracker.open_count(tp) for tp in partitions)
        for tp in partitions:
            first = self.tracker.first_open(tp)
            if first is not None:
                self._rewind[tp] = first
        self.tracker.forget(partitions)
        if offsets and self._consumer is not None:
            # Non-blocking: the listener may run on the consumer's IO thread, where a
            # blocking commit is not allowed; the request goes out before the re-join.
            try:
                self._consumer.commit_async({tp: OffsetAndMetadata(off, "", -1) for tp, off in offsets.items()})
            except Exception as exc:
                log.warning("commit on revocation failed (the next owner re-processes more): %s", exc)
            with self._lock:
                self._committed.update(offsets)
        self._count("rebalances")
        self._count("dropped_on_revoke", dropped)
        log.info("partitions %s: %s; committing %s; %d uncommitted messages dropped (re-processed by the next owner)",
                 "revoked" if commit else "lost", _names(partitions), _names(offsets), dropped)

    def _on_assigned(self, partitions: set[TopicPartition]) -> None:
        rewind, self._rewind = self._rewind, {}
        for tp in partitions & rewind.keys():
            try:
                self._consumer.seek(tp, rewind[tp])
            except Exception as exc:  # pragma: no cover - it was just assigned
                log.warning("cannot seek %s:%s back to %s: %s", tp.topic, tp.partition, rewind[tp], exc)
        with self._lock:
            self._assigned |= partitions
        log.info("partitions assigned: %s%s", _names(partitions),
                 f" (rewound {_names({tp: rewind[tp] for tp in partitions & rewind.keys()})})"
                 if partitions & rewind.keys() else "")

    # ================================================================== inference thread

    def _inference_loop(self, publisher: threading.Thread) -> None:
        while True:
            try:
                batch = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            if batch is _STOP:
                _put(self._scored, _STOP, publisher)
                return
            scored: list[tuple[_Work, Inspection]] = []
            try:
                if not self._abandon.is_set():
                    scored = self._score(batch)
            except Exception:  # keep the thread alive whatever happens to one batch
                log.exception("unexpected error while processing a batch")
            finally:  # the publish thread counts the whole batch as finished
                if not self._abandon.is_set():  # else the publish thread may be gone: nothing is sent any more
                    _put(self._scored, (len(batch), scored), publisher)

    def _score(self, batch: list[_Work]) -> list[tuple[_Work, Inspection]]:
        """Inspect the batch's frames that are still ours and fresh; failed frames are dead-lettered."""
        current = []
        for work in batch:
            if self._generation.get(work.partition, 0) == work.generation:
                current.append(work)
            else:  # its partition was revoked meanwhile: the next owner scores it
                work.span.set_attribute("linewatch.dropped", "partition revoked")
                work.span.end()
        now = utc_now()
        max_age = self.settings.worker.max_frame_age_s
        fresh = []
        for work in current:
            if is_stale(work.meta, now, max_age):  # it may have aged while it waited
                self._send_skipped(work.partition, work.message, work.meta, work.span)
            else:
                fresh.append(work)
        if not fresh:
            return []
        self.telemetry.batch(len(fresh))
        self._count("batches")
        start_ns = time.time_ns()
        with self._lock:
            self._inspect_started = time.monotonic()
        try:
            inspections = self.inspector.inspect([Frame(w.meta.frame_id, w.image, w.meta.object_name) for w in fresh])
            if len(inspections) != len(fresh):
                raise RuntimeError(f"inspector returned {len(inspections)} results for {len(fresh)} frames")
        except Exception as exc:
            self._inspect_done()
            if len(fresh) == 1:
                self._inference_failed(fresh[0], exc)
                return []
            log.warning("batch of %d frames failed (%s: %s); retrying frame by frame", len(fresh),
                        type(exc).__name__, exc)
            return [pair for work in fresh for pair in self._score([work])]
        self._inspect_done()
        end_ns = time.time_ns()
        self.telemetry.inference_stages(_sum_timings(inspections))  # per-frame shares add up to the batch
        for work, inspection in zip(fresh, inspections):
            self.telemetry.record_inference(work.span, start_ns, end_ns, inspection.timings_ms, len(fresh))
        return list(zip(fresh, inspections))

    def _inspect_done(self) -> None:
        with self._lock:
            self._inspect_started = None

    def _inference_failed(self, work: _Work, exc: Exception) -> None:
        log.warning("frame %s failed in inference: %s: %s", work.meta.frame_id, type(exc).__name__, exc)
        self._count("inference_errors")
        self._send_dead_letter(work.partition, work.message, "inference", type(exc).__name__, str(exc), work.span)

    # ================================================================== publish thread

    def _publish_loop(self) -> None:
        while True:
            try:
                item = self._scored.get(timeout=0.5)
            except queue.Empty:
                if self._abandon.is_set():  # shutdown gave up on a stuck inference thread
                    return
                continue
            if item is _STOP:
                return
            frames, scored = item
            try:
                for work, inspection in scored:
                    if self._abandon.is_set():
                        break
                    self._send_result(work, inspection)
            except Exception:  # keep the thread alive whatever happens to one batch
                log.exception("unexpected error while publishing a batch")
            finally:
                with self._lock:
                    self._waiting -= frames

    # ================================================================== publishing

    def _send_result(self, work: _Work, inspection: Inspection) -> None:
        try:
            result = build_result(
                work.meta, inspection, versions=self.inspector.versions, worker_settings=self.settings.worker,
                worker_id=self.worker_id, source=work.message.source,
            )
            self._publish_result(work.partition, work.message, result, work.span)
        except Exception as exc:  # a frame whose result cannot be built or sent goes to the DLQ alone
            log.exception("cannot publish the result of frame %s", work.meta.frame_id)
            self._send_dead_letter(work.partition, work.message, "encode", type(exc).__name__, str(exc), work.span)

    def _send_skipped(self, partition: TopicPartition, message: Consumed, meta: FrameMeta, span: Any) -> None:
        note = stale_note(meta, utc_now(), self.settings.worker.max_frame_age_s or 0.0)
        result = skipped_result(
            meta, note, versions=self.inspector.versions, worker_settings=self.settings.worker,
            worker_id=self.worker_id, source=message.source,
        )
        self._publish_result(partition, message, result, span)

    def _publish_result(self, partition: TopicPartition, message: Consumed, result: InspectionResult, span: Any) -> None:
        key = result.camera_id.encode("utf-8")
        headers = self.telemetry.headers_for(span)  # the result continues the frame's trace
        try:
            result, value = fit_result(result, self.settings.kafka.max_message_bytes, key, headers)
        except ResultTooLarge as exc:
            self._send_dead_letter(partition, message, "encode", "ResultTooLarge", str(exc), span)
            return
        if result.note and result.verdict != "skipped":
            self._count("results_shrunk")
        publish_span = self.telemetry.child_span(span, "publish")

        def acked() -> None:
            publish_span.end()
            span.set_attribute("linewatch.verdict", result.verdict)
            span.end()
            self.tracker.done(partition, message.offset)
            self._count(f"results_{result.verdict}")
            self.telemetry.frame_done(result.verdict, (utc_now() - result.captured_at).total_seconds())

        def too_large() -> None:  # the broker refused it after all (a lower topic limit)
            publish_span.end()
            self._send_dead_letter(partition, message, "encode", "MessageSizeTooLarge",
                                   f"result of {len(value)} bytes refused by the broker", span)

        self._outbox.send(Outgoing(self.settings.kafka.results_topic, key, value, headers, acked, too_large))

    def _send_dead_letter(
        self, partition: TopicPartition, message: Consumed, stage: str, error_type: str, text: str, span: Any
    ) -> None:
        error = dead_letter_error(stage, error_type, text, worker_id=self.worker_id, source=message.source,
                                  now=utc_now())
        key, value, headers = dead_letter_record(message.key, message.value, message.headers, error,
                                                self.settings.kafka.max_message_bytes)
        log.info("dead-lettering %s:%s@%s (%s/%s): %s", message.topic, message.partition, message.offset,
                 stage, error_type, error.message)
        span.set_attribute("linewatch.dead_letter", f"{stage}/{error_type}")

        def acked() -> None:
            span.end()
            self.tracker.done(partition, message.offset)
            self._count("dead_letters")
            self.telemetry.frame_done("dead_letter", None)
            self.telemetry.dead_letter(stage, error_type)

        def without_value() -> None:  # keep the error and headers, leave the payload out
            self._outbox.send(Outgoing(self.settings.kafka.dlq_topic, key, None, headers, acked))

        self._outbox.send(Outgoing(self.settings.kafka.dlq_topic, key, value, headers, acked, without_value))

    # ================================================================== small helpers

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counters[name] = self._counters.get(name, 0) + n

    def _broker_ok(self) -> None:
        self._last_broker_ok = time.monotonic()

    def _broker_error(self) -> None:
        self._last_broker_error = time.monotonic()


def _put(target: queue.Queue, item: Any, receiver: threading.Thread | None, timeout_s: float | None = None) -> bool:
    """Put `item` on the bounded `target`, waiting as long as `receiver` (who takes from it) runs,
    or at most `timeout_s`; False when that ran out."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:  # the queues are sized so that pausing keeps this from blocking long
        try:
            target.put(item, timeout=1.0 if deadline is None else max(0.01, min(1.0, deadline - time.monotonic())))
            return True
        except queue.Full:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            if receiver is None or not receiver.is_alive():
                raise RuntimeError(f"{receiver.name if receiver else 'the receiving thread'} is not running") from None


def _names(partitions: Any) -> str:
    items = partitions.items() if isinstance(partitions, dict) else ((tp, None) for tp in partitions)
    return ", ".join(
        f"{tp.topic}:{tp.partition}" + ("" if off is None else f"@{off}")
        for tp, off in sorted(items, key=lambda item: (item[0].topic, item[0].partition))
    ) or "none"


def _sum_timings(inspections: list[Inspection]) -> dict[str, float]:
    total: dict[str, float] = {}
    for inspection in inspections:
        for stage, ms in inspection.timings_ms.items():
            total[stage] = total.get(stage, 0.0) + ms
    return total


# ====================================================================== entry point


def run_service(
    settings: LinewatchSettings, inspector: Any | None = None, stop_event: threading.Event | None = None
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

        def readiness() -> dict[str, Any]:
            status = service.status()
            return {
                "models_loaded": status.models_loaded,
                "broker_reachable": status.broker_reachable,
                "partitions_assigned": (bool(status.assigned_partitions), status.as_dict()),
                "inference_responsive": (not service.inference_stuck(), {"busy_s": status.inference_busy_s}),
            }

        health = HealthServer(
            port=settings.worker.health_port, readiness=readiness,
            metrics=telemetry.prometheus_text if telemetry is not None else None,
        ).start()
    try:
        with StopOnSignals(stop_event, "stopping after the frames already polled"):
            service.run(stop_event)
    finally:
        if health is not None:
            health.stop()
        if service.cache is not None and hasattr(service.cache, "close"):
            service.cache.close()
        if telemetry is not None:
            telemetry.shutdown()
