"""The alarm service: wiring of its two Kafka loops, and their readiness.

Two loops, each with its own consumer group, run in one process:

1. `AlarmEvaluator` (group `alarms.group_id`, default `linewatch-alarms`) reads
   `linewatch.results`, feeds the `RuleEngine`, publishes the alarm events to
   `linewatch.alarms` (key = camera id, or line id) and only then commits the results
   offsets: at least once (`evaluator.py`). Silence rules are evaluated after every poll
   (`alarms.tick_interval_s`).
2. `MesDeliverer` (group `alarms.webhook_group_id`, default `linewatch-alarms-mes`) reads
   `linewatch.alarms` and POSTs every event to the MES (`webhook.py`). It commits an event's
   offset once the MES accepted it, or once it was dead-lettered to `alarms.dlq_topic`
   (refused with a 4xx, or still failing after `webhook_max_attempts`). An MES outage
   therefore holds deliveries back (in order) instead of losing them; a slow MES never
   delays alarm evaluation (`deliverer.py`).

Both track and commit their offsets with the stream worker's `Checkpoint`
(worker/stream/offsets.py) and report broker reachability to one `BrokerReachability`.

Caveat: duplicate results are dropped by frame id only within the process (bounded LRU).
After a restart or a rebalance, results after the last committed offset are read again; the
rule engine starts from empty windows, so they may raise an alarm again. Anomaly alarm ids
are derived from rule + stream + triggering frame ids, so a re-raised identical alarm has
the same `Idempotency-Key` and the MES can drop it; the Kafka alarms topic may still hold
it twice.

Silence state is per process: run one alarm service replica (as compose does), or accept
that `expected` streams are watched by every replica.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from opentelemetry import metrics as metrics_api

from common.kafka import BrokerReachability, ensure_topics
from common.settings import LinewatchSettings
from worker.alarms.config import RulesFile
from worker.alarms.deliverer import MesDeliverer, webhook_from_settings
from worker.alarms.evaluator import AlarmEvaluator
from worker.alarms.rules import Clock, RuleEngine
from worker.alarms.shared import AlarmMetrics, AlarmPublishError, Heartbeats
from worker.alarms.webhook import WebhookClient

__all__ = ["AlarmEvaluator", "AlarmPublishError", "AlarmService", "MesDeliverer", "webhook_from_settings"]

log = logging.getLogger(__name__)


class AlarmService:
    """The evaluator in the calling thread, the MES deliverer (when a webhook is configured) in another."""

    def __init__(
        self,
        settings: LinewatchSettings,
        rules: RulesFile,
        *,
        clock: Clock = time.time,
        webhook: WebhookClient | None = None,
        meter: metrics_api.Meter | None = None,
        ensure: bool = True,
    ) -> None:
        self.settings = settings
        self.rules = rules
        self.heartbeats = Heartbeats()
        self.broker = BrokerReachability()
        self.metrics = AlarmMetrics(meter)
        self.webhook = webhook if webhook is not None else webhook_from_settings(settings)
        if ensure:
            kafka = settings.kafka
            ensure_topics(kafka, [kafka.results_topic, kafka.alarms_topic, settings.alarms.dlq_topic])
            self.broker.ok()
        alarms = settings.alarms
        self.engine = RuleEngine(rules, clock=clock, dedup_entries=alarms.dedup_entries, max_streams=alarms.max_streams)
        parts = {"metrics": self.metrics, "heartbeats": self.heartbeats, "reachability": self.broker}
        self.evaluator = AlarmEvaluator(settings, self.engine, **parts)
        self.deliverer = MesDeliverer(settings, self.webhook, **parts) if self.webhook else None
        self._failure: BaseException | None = None

    def readiness(self) -> dict[str, Any]:
        """Checks for /readyz: broker reachable, partitions assigned, loops alive."""
        assigned = self.evaluator.checkpoint.assigned()
        beats = self.heartbeats.snapshot()
        now = time.time()
        stale_after = max(10.0, 5 * self.settings.alarms.tick_interval_s)
        checks: dict[str, Any] = {
            "rules_loaded": (bool(self.rules.rules), len(self.rules.rules)),
            "broker_reachable": self.broker.reachable,
            "partitions_assigned": (bool(assigned), sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned)),
            "evaluator_alive": now - beats.get("evaluator", 0.0) < stale_after,
        }
        if self.deliverer is not None:
            # a delivery may legitimately retry for a while: allow the worst case
            assert self.webhook is not None
            allowance = self.webhook.policy.worst_case_s(self.webhook.timeout_s) + stale_after
            checks["mes_deliverer_alive"] = now - beats.get("mes_deliverer", 0.0) < allowance
        return checks

    def _deliver_thread(self, stop: threading.Event) -> None:
        assert self.deliverer is not None
        try:
            self.deliverer.run(stop)
        except BaseException as exc:  # noqa: BLE001 - reported by run()
            self._failure = exc
            log.exception("MES deliverer failed; stopping the alarm service")
            stop.set()

    def run(self, stop: threading.Event) -> None:
        """Run until `stop` is set or a loop fails (then raise its error after closing)."""
        thread = None
        if self.deliverer is not None:
            self.heartbeats.beat("mes_deliverer", time.time())
            thread = threading.Thread(target=self._deliver_thread, args=(stop,), name="alarms-mes", daemon=True)
            thread.start()
        try:
            self.evaluator.run(stop)
        except BaseException:
            stop.set()
            raise
        finally:
            if thread is not None:
                thread.join(timeout=30)
            self.close()
        if self._failure is not None:
            raise self._failure

    def close(self) -> None:
        self.evaluator.close()
        if self.deliverer is not None:
            self.deliverer.close()
