"""The publish thread: outputs in offset order, one checkpoint per settle, rewind after an abort."""

from __future__ import annotations

from kafka import TopicPartition
from opentelemetry.trace import INVALID_SPAN

from common.messages import frame_headers
from common.settings import LinewatchSettings, WorkerSettings
from producer.publisher import build_frame_meta
from worker.stream.batching import STOP, InFlight
from worker.stream.delivery import Outgoing
from worker.stream.intake import Consumed, DeadLetter, Intake
from worker.stream.offsets import Checkpoint
from worker.stream.publishing import Done, Open, Publisher, Rewind
from worker.stream.stages import Scored, StageContext
from worker.stream.telemetry import Counters, ServiceTelemetry

P0 = TopicPartition("frames", 0)


class FakeDelivery:
    def __init__(self, transactional: bool, fail_settles: int = 0) -> None:
        self.transactional = transactional
        self.errors = 0
        self.sent: list[Outgoing] = []
        self.settles: list[tuple[int, dict]] = []
        self.fail_settles = fail_settles
        self.aborts = 0

    def send(self, item: Outgoing) -> Outgoing:
        self.sent.append(item)
        return item

    def settle(self, items, offsets, group) -> bool:
        self.settles.append((len(items), dict(offsets)))
        if self.fail_settles:
            self.fail_settles -= 1
            return False
        for item in items:
            item.on_acked()
        return True

    def abort(self) -> None:
        self.aborts += 1


def context() -> StageContext:
    checkpoint = Checkpoint()
    checkpoint.assign({P0})
    return StageContext(LinewatchSettings(), checkpoint, InFlight(64), ServiceTelemetry(None), Counters())


def dead_letter(offset: int) -> DeadLetter:
    message = Consumed("frames", 0, offset, b"cam", b"bad", [])
    return DeadLetter(message, P0, "decode", "X", f"bad {offset}", INVALID_SPAN)


def run(publisher: Publisher, *batches: Scored) -> list:
    publisher.thread.start()
    for batch in batches:
        publisher.context.in_flight.add(batch.size)
        publisher.queue.put(batch)
    publisher.queue.put(STOP)
    publisher.thread.join(10)
    reports = []
    while not publisher.reports.empty():
        reports.append(publisher.reports.get())
    return reports


def test_outputs_go_out_in_offset_order_and_the_poll_thread_hears_done_through_the_last():
    ctx, delivery = context(), FakeDelivery(transactional=False)
    publisher = Publisher(ctx, delivery, lambda: None, lambda: None)
    generation = ctx.checkpoint.generation
    reports = run(publisher, Scored(generation, 3, [dead_letter(o) for o in (7, 8, 9)]))
    assert [item.source for item in delivery.sent] == [(P0, 7), (P0, 8), (P0, 9)]
    assert reports == [Done(generation, {P0: 10}, committed=False)]
    assert ctx.in_flight.waiting == 0  # counted until the checkpoint settled


def test_an_aborted_transaction_asks_for_a_rewind_and_drops_the_batches_after_it():
    ctx, delivery = context(), FakeDelivery(transactional=True, fail_settles=1)
    publisher = Publisher(ctx, delivery, lambda: None, lambda: "group")
    generation = ctx.checkpoint.generation
    reports = run(
        publisher, Scored(generation, 1, [dead_letter(0)]), Scored(generation, 2, [dead_letter(1), dead_letter(2)])
    )
    assert reports[0] == Rewind(generation)
    assert len(reports) == 1  # the later batch of the same generation is read again, not sent
    assert ctx.counters.snapshot()["aborted_transactions"] == 1 and ctx.in_flight.waiting == 0


def test_a_batch_of_an_older_generation_is_dropped_unsent():
    ctx, delivery = context(), FakeDelivery(transactional=False)
    publisher = Publisher(ctx, delivery, lambda: None, lambda: None)
    stale = ctx.checkpoint.generation
    ctx.checkpoint.bump()
    assert run(publisher, Scored(stale, 1, [dead_letter(0)])) == []
    assert delivery.sent == [] and ctx.in_flight.waiting == 0


def test_intake_dead_letters_a_frame_whose_headers_pass_the_cap():
    settings = WorkerSettings(max_header_bytes=2048)
    intake = Intake(settings, Checkpoint(), ServiceTelemetry(None), Counters())
    meta = build_frame_meta(
        camera_id="cam-1", line_id="l", object_name="screw", width=4, height=4, content_type="image/jpeg"
    )
    headers = frame_headers(meta) + [("x-junk", b"j" * 4096)]
    item = intake.take(P0, Consumed("frames", 0, 0, b"cam-1", b"", headers))
    assert isinstance(item, DeadLetter) and item.error_type == "HeadersTooLarge" and item.stage == "header"
    assert "max_header_bytes is 2048" in item.text


def test_an_unsettled_checkpoint_under_at_least_once_asks_for_a_rewind_and_drops_the_batches_after_it():
    ctx, delivery = context(), FakeDelivery(transactional=False, fail_settles=1)  # e.g. nothing smaller to send
    publisher = Publisher(ctx, delivery, lambda: None, lambda: None)
    generation = ctx.checkpoint.generation
    reports = run(
        publisher, Scored(generation, 1, [dead_letter(0)]), Scored(generation, 2, [dead_letter(1), dead_letter(2)])
    )
    assert reports == [Rewind(generation)]  # no Done past offset 0 before it is read again
    assert ctx.in_flight.waiting == 0


P1 = TopicPartition("frames", 1)


def letter_on(partition: TopicPartition, offset: int) -> DeadLetter:
    message = Consumed(partition.topic, partition.partition, offset, b"cam", b"bad", [])
    return DeadLetter(message, partition, "decode", "X", f"bad {offset}", INVALID_SPAN)


def test_outputs_of_a_partition_revoked_since_they_were_polled_are_dropped_and_the_others_go_out():
    ctx, delivery = context(), FakeDelivery(transactional=True)
    ctx.checkpoint.assign({P1})
    publisher = Publisher(ctx, delivery, lambda: None, lambda: "group")
    generation, epochs = ctx.checkpoint.generation, ctx.checkpoint.epochs()
    ctx.checkpoint.revoke({P0}, commit=False)  # P0 moves to another member; P1 stays
    reports = run(publisher, Scored(generation, 2, [letter_on(P0, 0), letter_on(P1, 5)], epochs))
    assert [item.source for item in delivery.sent] == [(P1, 5)]
    assert reports == [Done(generation, {P1: 6}, committed=True)] and delivery.aborts == 0
    assert ctx.counters.snapshot()["dropped_on_revocation"] == 1


def test_an_open_transaction_holding_a_revoked_partition_is_aborted_and_read_again():
    ctx, delivery = context(), FakeDelivery(transactional=True)
    ctx.checkpoint.assign({P1})
    publisher = Publisher(ctx, delivery, lambda: None, lambda: "group")
    generation, epochs = ctx.checkpoint.generation, ctx.checkpoint.epochs()
    publisher.context.in_flight.add(2)
    publisher._publish(Scored(generation, 2, [letter_on(P0, 0), letter_on(P1, 5)], epochs), pending := Open())
    ctx.checkpoint.revoke({P0}, commit=False)
    publisher._checkpoint(pending)
    assert delivery.aborts == 1 and delivery.settles == []  # its offsets are not this member's to commit
    assert publisher.reports.get_nowait() == Rewind(generation)  # P1's records in it are read again
