"""The record each consumed message ends as: its result, its `skipped` result or its dead letter.

`Records.build(output)` returns the `Outgoing` record with its acknowledgement bookkeeping
(spans, counters, metrics) and its smaller form for a broker that refuses its size: a result
becomes a dead letter, a dead letter loses its value, then every header but `lw-frame`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from kafka import TopicPartition
from opentelemetry.trace import Span

from common.messages import dead_letter_error, dead_letter_record, trimmed_dead_letter
from common.schemas import InspectionResult, Versions, utc_now
from worker.stream.delivery import Outgoing
from worker.stream.intake import Consumed, DeadLetter, Skipped, clock_skew_s, stale_note
from worker.stream.results import ResultTooLarge, build_result, fit_result, skipped_result
from worker.stream.stages import Inspected, Output, StageContext

log = logging.getLogger(__name__)


class Records:
    def __init__(self, context: StageContext, versions: Callable[[], Versions]):
        self.context = context
        self.settings = context.settings
        self.worker_id = context.settings.worker.worker_id
        self._versions = versions

    def build(self, output: Output) -> Outgoing:
        if isinstance(output, DeadLetter):
            return self.dead_letter(output)
        if isinstance(output, Skipped):
            return self.skipped(output)
        return self.result(output)

    # ------------------------------------------------------------------ results

    def result(self, scored: Inspected) -> Outgoing:
        work, inspection = scored.work, scored.inspection
        try:
            thresholds, calibrating = None, False
            judge = self.context.judge
            if judge is not None and work.control is not None:
                thresholds, calibrating = judge.judge(work.control, inspection)
            few_shot = work.control.few_shot if work.control is not None else None
            result = build_result(
                work.meta,
                inspection,
                versions=self._versions(),
                worker_settings=self.settings.worker,
                worker_id=self.worker_id,
                source=work.message.source,
                thresholds=thresholds,
                calibrating=calibrating,
                reference_bank=few_shot.bank_label if few_shot is not None else None,
            )
        except Exception as exc:  # a frame whose result cannot be built goes to the DLQ alone
            log.exception("cannot build the result of frame %s", work.meta.frame_id)
            return self.dead_letter(
                DeadLetter(work.message, work.partition, "encode", type(exc).__name__, str(exc), work.span)
            )
        return self._result_record(work.message, work.partition, result, work.span)

    def skipped(self, skipped: Skipped) -> Outgoing:
        max_age_s = self.settings.worker.max_frame_age_s or 0.0
        note = stale_note(skipped.meta, utc_now(), max_age_s, skipped.message.timestamp_ms)
        result = skipped_result(
            skipped.meta,
            note,
            versions=self._versions(),
            worker_settings=self.settings.worker,
            worker_id=self.worker_id,
            source=skipped.message.source,
        )
        return self._result_record(skipped.message, skipped.partition, result, skipped.span)

    def _result_record(
        self, message: Consumed, partition: TopicPartition, result: InspectionResult, span: Span
    ) -> Outgoing:
        telemetry, counters = self.context.telemetry, self.context.counters
        skew = clock_skew_s(result.captured_at, message.timestamp_ms)
        result = result if skew is None else result.model_copy(update={"clock_skew_s": round(skew, 3)})
        key = result.camera_id.encode("utf-8")
        headers = telemetry.headers_for(span)  # the result continues the frame's trace
        try:
            result, value = fit_result(result, self.settings.kafka.max_message_bytes, key, headers)
        except ResultTooLarge as exc:
            return self.dead_letter(DeadLetter(message, partition, "encode", "ResultTooLarge", str(exc), span))
        if result.note and result.verdict != "skipped":
            counters.add("results_shrunk")
        publish_span = telemetry.child_span(span, "publish")

        def acked() -> None:
            publish_span.end()
            span.set_attribute("linewatch.verdict", result.verdict)
            span.end()
            counters.add(f"results_{result.verdict}")
            telemetry.metrics.frame_done(result.verdict, (utc_now() - result.captured_at).total_seconds())

        def as_dead_letter() -> Outgoing:  # the broker refused its size after all (a lower topic limit)
            publish_span.end()
            text = f"result of {len(value)} bytes refused by the broker"
            return self.dead_letter(DeadLetter(message, partition, "encode", "MessageSizeTooLarge", text, span))

        return Outgoing(
            self.settings.kafka.results_topic,
            key,
            value,
            headers,
            acked,
            as_dead_letter,
            (partition, message.offset),
        )

    # ------------------------------------------------------------------ dead letters

    def dead_letter(self, letter: DeadLetter) -> Outgoing:
        message, span = letter.message, letter.span
        error = dead_letter_error(
            letter.stage, letter.error_type, letter.text, worker_id=self.worker_id, source=message.source, now=utc_now()
        )
        max_bytes = self.settings.kafka.max_message_bytes
        key, value, headers = dead_letter_record(message.key, message.value, message.headers, error, max_bytes)
        log.info(
            "dead-lettering %s:%s@%s (%s/%s): %s",
            message.topic,
            message.partition,
            message.offset,
            letter.stage,
            letter.error_type,
            error.message,
        )
        span.set_attribute("linewatch.dead_letter", f"{letter.stage}/{letter.error_type}")
        telemetry, counters = self.context.telemetry, self.context.counters

        def acked() -> None:
            span.end()
            counters.add("dead_letters")
            telemetry.metrics.frame_done("dead_letter", None)
            telemetry.metrics.dead_letter(letter.stage, letter.error_type)

        topic, source = self.settings.kafka.dlq_topic, (letter.partition, message.offset)

        def trimmed() -> Outgoing:  # lw-frame and lw-error only
            small = trimmed_dead_letter(message.key, message.headers, error, max_bytes, len(message.value or b""))
            return Outgoing(topic, *small, acked, None, source)

        def without_value() -> Outgoing:
            return Outgoing(topic, key, None, headers, acked, trimmed, source)

        return Outgoing(topic, key, value, headers, acked, without_value if value is not None else trimmed, source)
