"""The control topic inside a worker: the records in force (`ControlState`) and the thread that
reads the topic whole at start and follows it live (`ControlFollower`).

The follower has a consumer of its own outside the frames group: every partition of
`kafka.control_topic` and of its learned-records topic assigned, read from the beginning. It is caught up once its positions
reached the end offsets seen at start; the service subscribes to frames only then (and
/readyz says `control_caught_up`), so no frame is judged with stale thresholds. A record that
cannot be applied is refused with a logged reason, counted (`control_refused` and
`control_refused_<reason>`, metric `linewatch.control.records`), and the previous one stays.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kafka.errors import KafkaError

from common.control import (
    ControlRecord,
    ThresholdsInForce,
    candidate_scopes,
    in_learning,
    threshold_version,
    thresholds_in_force,
)
from common.control_topic import ControlTable, RefusedRecord, caught_up, control_consumer, decode_control, poll_control
from common.metrics import Metrics
from common.settings import KafkaSettings, WorkerSettings
from worker.stream.telemetry import Counters

if TYPE_CHECKING:
    from worker.inspection.fewshot.context import FewShotContext

log = logging.getLogger(__name__)

POLL_MS = 100


@dataclass(frozen=True)
class Resolved:
    """What the control topic says about one frame's (camera, object): the record in force
    (most specific scope first; None: none applies) and the thresholds that follow from it."""

    camera_id: str
    object_name: str
    scope: str | None
    record: ControlRecord | None
    thresholds: ThresholdsInForce
    few_shot: FewShotContext | None = (
        None  # the FewShotContext of the frame's scope (reference bank, pool), set by the Judge
    )

    @property
    def learning(self) -> bool:
        return in_learning(self.record)

    @property
    def prompt_object_name(self) -> str:
        prompts = self.record.prompts if self.record is not None else None
        return prompts.object_name if prompts is not None and prompts.object_name else self.object_name

    @property
    def extra_states(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        prompts = self.record.prompts if self.record is not None else None
        if prompts is None:
            return (), ()
        return prompts.extra_normal_states, prompts.extra_anomalous_states


class ControlState:
    """The records in force by scope; `apply` from the follower thread, `resolve` from any (locked, a dict lookup)."""

    def __init__(self, worker_settings: WorkerSettings, counters: Counters, metrics: Metrics) -> None:
        self.worker_settings = worker_settings
        self.counters = counters
        self.metrics = metrics
        self._lock = threading.Lock()
        self._table = ControlTable()
        # called after each applied record (None: deleted), e.g. to load an announced reference bank
        self.on_applied: Callable[[str, ControlRecord | None], None] | None = None

    def apply_message(self, key: bytes | None, value: bytes | None, *, learned: bool = False) -> str:
        """Apply one message of the control topic (or, `learned`, of the learned-records topic):
        "applied", "deleted", "held" (a learned record read before its learning record), "ignored"
        (a learned tombstone) or "refused" (the old record stays)."""
        try:
            scope, record = decode_control(key, value)
            with self._lock:
                outcome = self._table.apply(scope, record, learned=learned)
                in_force = self._table.records.get(scope)
        except RefusedRecord as exc:
            log.warning("control record refused (%s): %s", exc.reason, exc.message)
            self.counters.add("control_refused")
            self.counters.add(f"control_refused_{exc.reason}")
            self.metrics.control_record("refused", exc.reason)
            return "refused"
        origin = "learned " if learned else ""
        log.info("%scontrol %s %s%s", origin, scope, outcome, f" (v{record.version})" if record is not None else "")
        if self.on_applied is not None and outcome in ("applied", "deleted"):
            self.on_applied(scope, in_force)
        self.counters.add(f"control_{outcome}")
        self.metrics.control_record(outcome)
        return outcome

    def resolve(self, camera_id: str, object_name: str) -> Resolved:
        with self._lock:
            found = next(
                (
                    (s, self._table.records[s])
                    for s in candidate_scopes(camera_id, object_name)
                    if s in self._table.records
                ),
                (None, None),
            )
        scope, record = found
        ws = self.worker_settings
        thresholds = thresholds_in_force(
            scope, record, image=ws.threshold, pixel=ws.pixel_threshold, static_version=ws.threshold_version
        )
        if scope is not None and in_learning(record):  # `calibrating` results name the learning record
            thresholds = thresholds.model_copy(update={"version": threshold_version(scope, record)})
        return Resolved(camera_id, object_name, scope, record, thresholds)

    def knows(self, camera_id: str, object_name: str) -> bool:
        """Whether a record applies to the frame's camera and object (for `worker.known_scopes_only`)."""
        with self._lock:
            return any(scope in self._table.records for scope in candidate_scopes(camera_id, object_name))

    def records(self) -> dict[str, ControlRecord]:
        with self._lock:
            return dict(self._table.records)


class ControlFollower:
    """The thread that applies the control topic to a ControlState, from its beginning, live."""

    def __init__(self, settings: KafkaSettings, state: ControlState) -> None:
        self.settings = settings
        self.state = state
        self.caught_up = threading.Event()
        self._stop = threading.Event()
        self._consumer = None
        self._end: dict = {}
        self.thread = threading.Thread(target=self._loop, name="lw-control", daemon=True)

    def start(self) -> ControlFollower:
        self._consumer, self._end = control_consumer(self.settings)
        log.info("reading %s to %s", self.settings.control_topic, {tp.partition: n for tp, n in self._end.items()})
        self.thread.start()
        return self

    def wait_caught_up(self, stop_event: threading.Event, timeout_s: float | None = None) -> bool:
        """Block until caught up (True), `stop_event` is set or `timeout_s` passed (False)."""
        waited = 0.0
        while not self.caught_up.wait(0.1):
            waited += 0.1
            if stop_event.is_set() or (timeout_s is not None and waited >= timeout_s) or not self.thread.is_alive():
                return False
        return True

    def stop(self) -> None:
        self._stop.set()
        if self.thread.is_alive():
            self.thread.join(10.0)
        if self._consumer is not None and not self.thread.is_alive():
            self._consumer.close()
            self._consumer = None

    def _loop(self) -> None:
        consumer = self._consumer
        while not self._stop.is_set():
            try:
                if not self.caught_up.is_set() and caught_up(consumer, self._end):
                    log.info("control topic caught up: %d scope(s) in force", len(self.state.records()))
                    self.caught_up.set()
                for message in poll_control(consumer, POLL_MS):
                    learned = message.topic == self.settings.learned_topic
                    self.state.apply_message(message.key, message.value, learned=learned)
            except KafkaError as exc:  # the client reconnects by itself
                log.warning("control topic poll failed (%s: %s); retrying", type(exc).__name__, exc)
                self._stop.wait(1.0)
            except Exception:  # never let the follower die on one message
                log.exception("unexpected error following the control topic")
                self._stop.wait(1.0)
