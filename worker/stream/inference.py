"""The inference thread: runs the Inspector on each micro-batch, watched by a watchdog.

Each batch is scored as one `inspect` call; after a batch fails, its frames are scored
one at a time, so a bad frame is dead-lettered alone. Frames of partitions revoked since
they were polled are dropped (their next owner scores them), frames that went stale while
they waited get a `skipped` result. The scored frames go on to the publish thread.

Watchdog: `busy_s` is how long the batch now in the Inspector has been there. Past
`worker.inference_timeout_s` the device looks wedged: `check` raises `InferenceStuck`
(the poll loop calls it every turn), which stops the worker so that it leaves the group.
"""

from __future__ import annotations

import logging
import queue
import threading
import time

from common.schemas import utc_now
from common.settings import WorkerSettings
from worker.inspection.types import Frame, Inspection, InspectorProtocol
from worker.stream.batching import STOP, hand_over
from worker.stream.intake import Work, is_stale
from worker.stream.judging import Judge
from worker.stream.offsets import Checkpoint
from worker.stream.publishing import Publisher
from worker.stream.telemetry import Counters, ServiceTelemetry

log = logging.getLogger(__name__)


class InferenceStuck(RuntimeError):
    """A batch has been in the Inspector for longer than `worker.inference_timeout_s`."""


class Inference:
    """The inference thread, its input queue and its watchdog."""

    def __init__(
        self,
        settings: WorkerSettings,
        inspector: InspectorProtocol,
        publisher: Publisher,
        *,
        checkpoint: Checkpoint,
        telemetry: ServiceTelemetry,
        counters: Counters,
        abandon: threading.Event,
        judge: Judge | None = None,
    ):
        self.settings = settings
        self.inspector = inspector
        self.publisher = publisher
        self.checkpoint = checkpoint
        self.telemetry = telemetry
        self.counters = counters
        self._abandon = abandon  # shutdown gave up: the publish thread may be gone
        self.judge = judge  # the control records in force (None: the static thresholds)
        self.queue: queue.Queue = queue.Queue(
            maxsize=max(2, settings.queue_max_frames // settings.batch_max_frames + 2)
        )
        self.thread = threading.Thread(target=self._loop, name="lw-inference", daemon=True)
        self._lock = threading.Lock()
        self._started: float | None = None  # monotonic time the batch now in the Inspector went in

    def submit(self, batch: list[Work], timeout_s: float | None = None) -> bool:
        """Hand a batch over (waits while the queue is full and the thread runs)."""
        return hand_over(self.queue, batch, self.thread, timeout_s)

    # ------------------------------------------------------------------ watchdog (any thread)

    def busy_s(self) -> float:
        with self._lock:
            started = self._started
        return time.monotonic() - started if started is not None else 0.0

    def stuck(self) -> bool:
        limit = self.settings.inference_timeout_s
        return limit is not None and self.busy_s() > limit

    def check(self) -> None:
        """Raise InferenceStuck when a batch is in the Inspector for too long (cheap: every loop turn)."""
        if self.stuck():
            log.error(
                "a batch has been in the Inspector for %.0f s (worker.inference_timeout_s = %.0f s): "
                "the device looks wedged; leaving the group so other workers take the partitions",
                self.busy_s(),
                self.settings.inference_timeout_s,
            )
            self.counters.add("inference_stuck")
            raise InferenceStuck(f"inference busy for more than {self.settings.inference_timeout_s} s")

    def _inspecting(self, started: float | None) -> None:
        with self._lock:
            self._started = started

    # ------------------------------------------------------------------ the thread

    def _loop(self) -> None:
        publish_thread = self.publisher.thread
        while True:
            try:
                batch = self.queue.get(timeout=0.5)
            except queue.Empty:
                continue
            if batch is STOP:
                hand_over(self.publisher.queue, STOP, publish_thread)
                return
            scored: list[tuple[Work, Inspection]] = []
            try:
                if not self._abandon.is_set():
                    scored = self._score(batch)
            except Exception:  # keep the thread alive whatever happens to one batch
                log.exception("unexpected error while processing a batch")
            finally:  # the publish thread counts the whole batch as finished
                if not self._abandon.is_set():  # else the publish thread may be gone: nothing is sent any more
                    hand_over(self.publisher.queue, (len(batch), scored), publish_thread)

    def _score(self, batch: list[Work]) -> list[tuple[Work, Inspection]]:
        """Inspect the batch's frames that are still ours and fresh; failed frames are dead-lettered."""
        current = []
        for work in batch:
            if self.checkpoint.current(work.partition, work.generation):
                current.append(work)
            else:  # its partition was revoked meanwhile: the next owner scores it
                work.span.set_attribute("linewatch.dropped", "partition revoked")
                work.span.end()
        now = utc_now()
        fresh = []
        for work in current:
            if is_stale(work.meta, now, self.settings.max_frame_age_s, work.message.timestamp_ms):  # aged waiting
                self.publisher.send_skipped(work.partition, work.message, work.meta, work.span)
            else:
                fresh.append(work)
        if not fresh:
            return []
        self.telemetry.metrics.batch_size.record(len(fresh))
        self.counters.add("batches")
        start_ns = time.time_ns()
        self._inspecting(time.monotonic())
        try:
            inspections = self.inspector.inspect([self._frame(work) for work in fresh])
            if len(inspections) != len(fresh):
                raise RuntimeError(f"inspector returned {len(inspections)} results for {len(fresh)} frames")
        except Exception as exc:
            self._inspecting(None)
            if len(fresh) == 1:
                self._failed(fresh[0], exc)
                return []
            log.warning(
                "batch of %d frames failed (%s: %s); retrying frame by frame", len(fresh), type(exc).__name__, exc
            )
            return [pair for work in fresh for pair in self._score([work])]
        self._inspecting(None)
        end_ns = time.time_ns()
        self.telemetry.inference_stages(_sum_timings(inspections))  # per-frame shares add up to the batch
        for work, inspection in zip(fresh, inspections):
            self.telemetry.record_inference(work.span, start_ns, end_ns, inspection.timings_ms, len(fresh))
        return list(zip(fresh, inspections))

    def _frame(self, work: Work) -> Frame:
        """The Inspector's input, with the prompt overrides of the control record in force."""
        if self.judge is None:
            return Frame(work.meta.frame_id, work.image, work.meta.object_name)
        work.control = resolved = self.judge.resolve(work.meta.camera_id, work.meta.object_name)
        normal, anomalous = resolved.extra_states
        return Frame(
            work.meta.frame_id, work.image, resolved.prompt_object_name, normal, anomalous, few_shot=resolved.few_shot
        )

    def _failed(self, work: Work, exc: Exception) -> None:
        log.warning("frame %s failed in inference: %s: %s", work.meta.frame_id, type(exc).__name__, exc)
        self.counters.add("inference_errors")
        self.publisher.send_dead_letter(
            work.partition, work.message, "inference", type(exc).__name__, str(exc), work.span
        )


def _sum_timings(inspections: list[Inspection]) -> dict[str, float]:
    total: dict[str, float] = {}
    for inspection in inspections:
        for stage, ms in inspection.timings_ms.items():
            total[stage] = total.get(stage, 0.0) + ms
    return total
