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

from common.audit import audit_record, encode_audit
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
        self.references.on_refused = metrics.redis_value_refused
        self.state.on_applied = self.references.announced
        self.judge.references = self.references

    def start(self, stop_event: threading.Event, inspector) -> bool:
        """Read the control topic to its end (then follow it live); False when stopped first.

        Reference banks are keyed by the inspector's model fingerprint: the announced ones load as
        records arrive, refused unless of its feature shape (layers and channels; unknown: not checked)."""
        shape = getattr(inspector, "feature_shape", lambda: None)()
        self.references.bind(inspector.versions.model_fingerprint, shape)
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
        """A calibrated record to the learned-records topic (workers may not write the control topic
        itself), and its audit record, on the plane's own producer (it retries them until the broker
        acknowledges them)."""
        ks = self.settings.kafka
        calibration = record.calibration
        reason = f"learning mode: {calibration.n} frames at target false-alarm rate {calibration.target_fpr:g}"
        before = self.state.records().get(scope)  # the learning record it answers
        audit = audit_record(ks, scope, "learned", before, record, by=record.updated_by, reason=reason)
        self._publish(ks.learned_topic, scope, encode_control(record), f"{scope} v{record.version}")
        self._publish(ks.audit_topic, scope, encode_audit(audit), f"the audit record of {scope} v{record.version}")

    def _publish(self, topic: str, scope: str, value: bytes, what: str) -> None:
        if self._producer is None:
            self._producer = build_producer(self.settings.kafka)
        future = self._producer.send(topic, key=scope.encode("utf-8"), value=value)
        future.add_callback(lambda _metadata: log.info("published %s to %s", what, topic))
        future.add_errback(lambda exc: log.error("could not publish %s to %s: %s", what, topic, exc))
