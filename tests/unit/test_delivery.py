"""At-least-once delivery keeps per-key order on retry; the trimmed dead letter always fits."""

from __future__ import annotations

from kafka.errors import KafkaTimeoutError, MessageSizeTooLargeError
from kafka.future import Future

from common.kafka import BrokerReachability
from common.messages import dead_letter_error, dead_letter_record
from common.schemas import ERROR_HEADER, FRAME_HEADER, DeadLetterError, utc_now
from common.settings import LinewatchSettings
from worker.stream import delivery as delivery_module
from worker.stream.delivery import AtLeastOnce, Outgoing


class ScriptedProducer:
    """Accepts every send; the records named in `refuse` fail once (their first attempt)."""

    def __init__(self, refuse: dict[bytes, BaseException]) -> None:
        self.refuse = dict(refuse)
        self.log: list[bytes] = []

    def send(self, topic, key=None, value=None, headers=None):
        self.log.append(value)
        future = Future()
        error = self.refuse.pop(value, None)
        future.failure(error) if error is not None else future.success(None)
        return future

    def flush(self, timeout=None) -> None:
        pass


def test_a_refused_record_is_sent_again_with_every_record_after_it_in_order(monkeypatch):
    monkeypatch.setattr(delivery_module, "RETRY_BACKOFF_S", 0.0)
    producer = ScriptedProducer({b"2": KafkaTimeoutError("broker away")})
    delivery = AtLeastOnce(LinewatchSettings(), BrokerReachability(), lambda: False, producer=producer)
    acked: list[bytes] = []
    items = [delivery.send(Outgoing("t", b"cam", v, [], lambda v=v: acked.append(v))) for v in (b"1", b"2", b"3")]
    assert delivery.settle(items, {}, None)
    # 3 went out after 2 failed: 2 and 3 again, in order (3 twice: a duplicate, never out of order)
    assert producer.log == [b"1", b"2", b"3", b"2", b"3"]
    assert acked == [b"1", b"2", b"3"] and delivery.errors == 1


def test_a_record_refused_for_its_size_is_replaced_by_its_smaller_form():
    producer = ScriptedProducer({b"big": MessageSizeTooLargeError("too large")})
    delivery = AtLeastOnce(LinewatchSettings(), BrokerReachability(), lambda: False, producer=producer)
    small = Outgoing("dlq", b"cam", b"small", [])
    items = [delivery.send(Outgoing("results", b"cam", b"big", [], smaller=lambda: small))]
    assert delivery.settle(items, {}, None)
    assert producer.log == [b"big", b"small"] and items == [small]


def test_settle_gives_up_when_the_shutdown_abandons_it():
    producer = ScriptedProducer({b"1": KafkaTimeoutError("broker away")})
    delivery = AtLeastOnce(LinewatchSettings(), BrokerReachability(), lambda: True, producer=producer)
    assert not delivery.settle([delivery.send(Outgoing("t", None, b"1", []))], {}, None)


def test_a_dead_letter_of_a_frame_whose_headers_alone_are_too_large_keeps_lw_frame_and_lw_error():
    error = dead_letter_error(
        "header", "HeadersTooLarge", "headers are 2 MB", worker_id="w", source=None, now=utc_now()
    )
    frame = (FRAME_HEADER, b'{"frame_id": "f-1"}')
    huge = [("x-junk", b"j" * 200_000), frame]
    key, value, headers = dead_letter_record(b"cam", b"jpeg" * 1000, huge, error, max_bytes=100_000)
    assert value is None and [k for k, _ in headers] == [FRAME_HEADER, ERROR_HEADER]
    reason = DeadLetterError.model_validate_json(dict(headers)[ERROR_HEADER])
    assert reason.error_type == "HeadersTooLarge" and "1 headers omitted" in reason.message
    assert key == b"cam"


def test_a_dead_letter_that_fits_without_its_value_keeps_every_header():
    error = dead_letter_error("decode", "X", "bad", worker_id="w", source=None, now=utc_now())
    headers = [("a", b"1"), (FRAME_HEADER, b"{}")]
    _, value, kept = dead_letter_record(b"k", b"v" * 5000, headers, error, max_bytes=2000)
    assert value is None and [k for k, _ in kept] == ["a", FRAME_HEADER, ERROR_HEADER]
