"""The inference thread: runs the Inspector on each micro-batch, watched by a watchdog.

Each batch is scored as one `inspect` call; after a batch fails, its frames are scored
one at a time, so a bad frame is dead-lettered alone. Frames that went stale while they
waited get a `skipped` result. Every message of the batch leaves as one output, in offset
order, for the publish thread; a batch polled before a rewind is not scored, nor are the
messages of partitions revoked since they were polled (they are read again).

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
from worker.inspection.types import Frame, Inspection, InspectorProtocol
from worker.stream.batching import STOP, Batch, hand_over
from worker.stream.intake import DeadLetter, Item, Skipped, Work, is_stale
from worker.stream.publishing import Publisher
from worker.stream.stages import Inspected, Output, Scored, StageContext

log = logging.getLogger(__name__)


class InferenceStuck(RuntimeError):
    """A batch has been in the Inspector for longer than `worker.inference_timeout_s`."""


class Inference:
    """The inference thread, its input queue and its watchdog."""

    def __init__(self, context: StageContext, inspector: InspectorProtocol, publisher: Publisher):
        self.context = context
        self.settings = context.settings.worker
        self.inspector = inspector
        self.publisher = publisher
        self.queue: queue.Queue[Batch | object] = queue.Queue(
            maxsize=max(2, self.settings.queue_max_frames // self.settings.batch_max_frames + 2)
        )
        self.thread = threading.Thread(target=self._loop, name="lw-inference", daemon=True)
        self._started: float | None = None  # monotonic time the batch now in the Inspector went in (atomic swap)

    def has_room(self) -> bool:
        """A batch can be handed over now (the poll thread is the only one that puts)."""
        return not self.queue.full()

    def submit(self, batch: Batch, timeout_s: float | None = None) -> bool:
        """Hand a batch over (waits while the queue is full and the thread runs, at most `timeout_s`)."""
        return hand_over(self.queue, batch, self.thread, timeout_s)

    # ------------------------------------------------------------------ watchdog (any thread)

    def busy_s(self) -> float:
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
            self.context.counters.add("inference_stuck")
            raise InferenceStuck(f"inference busy for more than {self.settings.inference_timeout_s} s")

    # ------------------------------------------------------------------ the thread

    def _loop(self) -> None:
        while True:
            try:
                batch = self.queue.get(timeout=0.5)
            except queue.Empty:
                continue
            if not isinstance(batch, Batch):  # STOP
                hand_over(self.publisher.queue, STOP, self.publisher.thread)
                return
            outputs: list[Output] = []
            failed = False
            try:
                if self.context.current(batch.generation) and not self.context.abandon.is_set():
                    kept = [item for item in batch.items if self.context.kept(batch.epochs, item.partition)]
                    self.context.counters.add("dropped_on_revocation", len(batch.items) - len(kept))
                    outputs = self._outputs(kept)  # none for partitions revoked meanwhile
            except Exception:  # keep the thread alive whatever happens to one batch
                log.exception("unexpected error while processing a batch")
                failed = True
            if not self.context.abandon.is_set():  # else the publish thread may be gone: nothing is sent any more
                scored = Scored(batch.generation, len(batch.items), outputs, batch.epochs, failed)
                hand_over(self.publisher.queue, scored, self.publisher.thread)

    def _outputs(self, batch: list[Item]) -> list[Output]:
        """One output per item, in their order: frames scored, the rest passed through."""
        now, max_age_s = utc_now(), self.settings.max_frame_age_s
        items = [
            Skipped(item.message, item.partition, item.meta, item.span)  # it aged while it waited
            if isinstance(item, Work) and is_stale(item.meta, now, max_age_s, item.message.timestamp_ms)
            else item
            for item in batch
        ]
        scored = iter(self._score([item for item in items if isinstance(item, Work)]))
        return [next(scored) if isinstance(item, Work) else item for item in items]

    def _score(self, fresh: list[Work]) -> list[Output]:
        """Inspect the frames; a frame that fails alone becomes a dead letter."""
        if not fresh:
            return []
        self.context.telemetry.metrics.batch_size.record(len(fresh))
        self.context.counters.add("batches")
        start_ns = time.time_ns()
        self._started = time.monotonic()
        try:
            inspections = self.inspector.inspect([self._frame(work) for work in fresh])
            if len(inspections) != len(fresh):
                raise RuntimeError(f"inspector returned {len(inspections)} results for {len(fresh)} frames")
        except Exception as exc:
            self._started = None
            if len(fresh) == 1:
                return [self._failed(fresh[0], exc)]
            log.warning(
                "batch of %d frames failed (%s: %s); retrying frame by frame", len(fresh), type(exc).__name__, exc
            )
            return [output for work in fresh for output in self._score([work])]
        self._started = None
        end_ns = time.time_ns()
        self.context.telemetry.inference_stages(_sum_timings(inspections))  # per-frame shares add up to the batch
        for work, inspection in zip(fresh, inspections):
            self.context.telemetry.record_inference(work.span, start_ns, end_ns, inspection.timings_ms, len(fresh))
        return [Inspected(work, inspection) for work, inspection in zip(fresh, inspections)]

    def _frame(self, work: Work) -> Frame:
        """The Inspector's input, with the prompt overrides of the control record in force."""
        judge = self.context.judge
        if judge is None:
            return Frame(work.meta.frame_id, work.image, work.meta.object_name)
        work.control = resolved = judge.resolve(work.meta.camera_id, work.meta.object_name)
        normal, anomalous = resolved.extra_states
        return Frame(
            work.meta.frame_id, work.image, resolved.prompt_object_name, normal, anomalous, few_shot=resolved.few_shot
        )

    def _failed(self, work: Work, exc: Exception) -> DeadLetter:
        log.warning("frame %s failed in inference: %s: %s", work.meta.frame_id, type(exc).__name__, exc)
        self.context.counters.add("inference_errors")
        return DeadLetter(work.message, work.partition, "inference", type(exc).__name__, str(exc), work.span)


def _sum_timings(inspections: list[Inspection]) -> dict[str, float]:
    total: dict[str, float] = {}
    for inspection in inspections:
        for stage, ms in inspection.timings_ms.items():
            total[stage] = total.get(stage, 0.0) + ms
    return total
