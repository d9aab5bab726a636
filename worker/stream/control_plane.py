"""The worker's side of the control topic, as the service wires it: the records in force
(`ControlState`), the follower thread, the `Judge` that the inference and publish threads ask,
and the sending of records this worker calibrated (learning mode) to the learned-records topic, on a
producer of their own (idempotent, acks=all; outside any transaction of the results: a record is keyed
by its scope, so sending it twice is harmless).
"""

from __future__ import annotations

import logging
import threading

from kafka import KafkaProducer

from common.control import ControlRecord
from common.control_topic import encode_control
from common.kafka import build_producer
from common.metrics import Metrics
from common.settings import LinewatchSettings
from worker.stream.control import ControlFollower, ControlState
from worker.stream.judging import Judge
from worker.stream.references import ReferenceBanks
from worker.stream.telemetry import Counters

log = logging.getLogger(__name__)


class ControlPlane:
    def __init__(self, settings: LinewatchSettings, counters: Counters, metrics: Metrics) -> None:
        self.settings = settings
        self._producer: KafkaProducer | None = None  # built at the first calibrated record
        self.state = ControlState(settings.worker, counters, metrics)
        self.judge = Judge(
            self.state, self._send, worker_id=settings.worker.worker_id, counters=counters, metrics=metrics
        )
        self.follower: ControlFollower | None = None
        from worker.inspection.fewshot.store import open_store  # numpy + redis + torch: only when serving

        self.references = ReferenceBanks(settings.models, open_store(settings.redis))
        self.state.on_applied = self.references.announced
        self.judge.references = self.references

    def start(self, stop_event: threading.Event, model_fingerprint: str) -> bool:
        """Read the control topic to its end (then follow it live); False when stopped first.

        Reference banks are keyed by the model fingerprint: the announced ones load as records arrive."""
        self.references.bind(model_fingerprint)
        self.follower = ControlFollower(self.settings.kafka, self.state).start()
        if self.follower.wait_caught_up(stop_event):
            return True
        if not self.follower.thread.is_alive():
            raise RuntimeError("the control topic follower died before it caught up")
        return False

    @property
    def caught_up(self) -> bool:
        return self.follower is not None and self.follower.caught_up.is_set()

    @property
    def scopes(self) -> int:
        return len(self.state.records())

    def stop(self) -> None:
        if self.follower is not None:
            self.follower.stop()
        if self._producer is not None:
            self._producer.close(timeout=5.0)

    def _send(self, scope: str, record: ControlRecord) -> None:
        """A calibrated record, to the learned-records topic (workers may not write the control topic
        itself); the producer retries it until the broker acknowledges it."""
        topic = self.settings.kafka.learned_topic
        if self._producer is None:
            self._producer = build_producer(self.settings.kafka)
        future = self._producer.send(topic, key=scope.encode("utf-8"), value=encode_control(record))
        future.add_callback(lambda _metadata: log.info("published %s v%d to %s", scope, record.version, topic))
        future.add_errback(
            lambda exc: log.error("could not publish %s v%d to %s: %s", scope, record.version, topic, exc)
        )
