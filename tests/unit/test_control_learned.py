"""Learned records (workers' calibrations on `<control topic>.learned`) in the table of records in force."""

from __future__ import annotations

import pytest
from opentelemetry.metrics import NoOpMeter

from common import control_topic
from common.control import (
    MAX_LEARNED_THRESHOLD,
    Calibration,
    ControlRecord,
    Learning,
    PromptOverrides,
    answers_learning,
)
from common.control_topic import MAX_HELD_LEARNED, ControlTable, RefusedRecord, encode_control
from common.metrics import Metrics
from common.settings import WorkerSettings
from worker.stream.control import ControlState
from worker.stream.learning import LearningBook, calibrated_record
from worker.stream.telemetry import Counters

SCOPE = "object:screw"
LEARNING = ControlRecord(version=3, learning=Learning(frames=20, target_fpr=0.1), updated_by="ana")


def calibrated(base: ControlRecord = LEARNING, **changes) -> ControlRecord:
    fields = dict(
        version=base.version + 1,
        image_threshold=0.61,
        pixel_threshold=0.4,
        calibration=Calibration(n=20, target_fpr=0.1, by="worker:w1"),
        updated_by="worker:w1",
    )
    return base.model_copy(update=fields | changes)


def test_a_calibration_of_the_learning_record_is_in_force():
    table = ControlTable()
    table.apply(SCOPE, LEARNING)
    assert table.apply(SCOPE, calibrated(), learned=True) == "applied"
    assert table.records[SCOPE].image_threshold == 0.61 and table.next_version(SCOPE) == 5


def test_a_learned_record_read_before_its_learning_record_waits_for_it():
    table = ControlTable()
    assert table.apply(SCOPE, calibrated(), learned=True) == "held"
    assert SCOPE not in table.records
    table.apply(SCOPE, LEARNING)
    assert table.records[SCOPE].version == 4


@pytest.mark.parametrize(
    "forged",
    [
        calibrated(prompts=PromptOverrides(extra_normal_states=("a photo of a {} with a crack",))),
        calibrated(learning=Learning(frames=200, target_fpr=0.1)),
        calibrated(calibration=Calibration(n=19, target_fpr=0.1, by="worker:w1")),  # fewer frames than learned
        calibrated(calibration=Calibration(n=20, target_fpr=0.5, by="worker:w1")),  # another false-alarm rate
    ],
)
def test_a_learned_record_that_is_no_calibration_of_the_session_is_refused(forged):
    table = ControlTable()
    table.apply(SCOPE, LEARNING)
    assert not answers_learning(LEARNING, forged)
    with pytest.raises(RefusedRecord) as refused:
        table.apply(SCOPE, forged, learned=True)
    assert refused.value.reason == "not_an_answer" and table.records[SCOPE] == LEARNING
    assert table.apply(SCOPE, calibrated(), learned=True) == "applied"  # the honest one still closes the session


@pytest.mark.parametrize(
    "forged",
    [
        calibrated(image_threshold=1.0),
        calibrated(image_threshold=0.995),
        calibrated(pixel_threshold=1.0),
        calibrated(calibration=None),
    ],
)
def test_a_learned_record_beyond_the_learned_bounds_is_refused_even_before_its_learning_record(forged):
    table = ControlTable()
    for learning in (None, LEARNING):
        if learning is not None:
            table.apply(SCOPE, learning)
        with pytest.raises(RefusedRecord) as refused:
            table.apply(SCOPE, forged, learned=True)
        assert refused.value.reason == "out_of_bounds"
    assert table.records[SCOPE] == LEARNING


def test_an_operator_may_still_write_a_threshold_of_one():
    table = ControlTable()
    assert table.apply(SCOPE, ControlRecord(version=1, image_threshold=1.0, updated_by="ana")) == "applied"
    assert table.records[SCOPE].image_threshold == 1.0


def test_a_learned_record_for_a_scope_not_learning_is_refused():
    set_by_hand = ControlRecord(version=3, image_threshold=0.3)
    table = ControlTable()
    table.apply(SCOPE, set_by_hand)
    with pytest.raises(RefusedRecord) as refused:
        table.apply(SCOPE, calibrated(set_by_hand, image_threshold=0.9), learned=True)
    assert refused.value.reason == "not_an_answer" and table.records[SCOPE].image_threshold == 0.3


def test_a_learned_record_for_a_later_session_waits_and_never_answers_an_earlier_one():
    table = ControlTable()
    table.apply(SCOPE, LEARNING)
    assert table.apply(SCOPE, calibrated(version=9), learned=True) == "held"
    assert table.records[SCOPE] == LEARNING and table.next_version(SCOPE) == 10  # the operator skips past it


def test_the_operator_overrides_a_learned_record_and_the_first_learned_record_wins():
    table = ControlTable()
    table.apply(SCOPE, LEARNING)
    table.apply(SCOPE, calibrated(), learned=True)
    with pytest.raises(RefusedRecord) as second:
        table.apply(SCOPE, calibrated(image_threshold=0.7), learned=True)
    assert second.value.reason == "replayed" and table.records[SCOPE].image_threshold == 0.61
    with pytest.raises(RefusedRecord):  # the control topic cannot reuse the version the learned record took
        table.apply(SCOPE, ControlRecord(version=4, image_threshold=0.2))
    table.apply(SCOPE, ControlRecord(version=5, image_threshold=0.2))
    assert table.records[SCOPE].image_threshold == 0.2
    table.apply(SCOPE, None)
    assert SCOPE not in table.records and table.next_version(SCOPE) == 6


def test_a_learned_tombstone_then_a_forged_record_for_the_same_session_is_refused():
    """The attack: delete the honest learned record with a tombstone, then write a second calibration of
    the same session with the highest threshold allowed. The session stays closed by the first one."""
    table = ControlTable()
    table.apply(SCOPE, LEARNING)
    table.apply(SCOPE, calibrated(), learned=True)
    assert table.apply(SCOPE, None, learned=True) == "ignored"
    assert table.records[SCOPE].image_threshold == 0.61  # never back to learning
    with pytest.raises(RefusedRecord) as replayed:
        table.apply(SCOPE, calibrated(image_threshold=0.99, pixel_threshold=0.99), learned=True)
    assert replayed.value.reason == "replayed" and table.records[SCOPE].image_threshold == 0.61


def test_a_session_stays_closed_across_a_control_tombstone():
    table = ControlTable()
    table.apply(SCOPE, LEARNING)
    table.apply(SCOPE, calibrated(), learned=True)
    table.apply(SCOPE, None)  # the operator deletes the scope
    assert SCOPE not in table.records
    with pytest.raises(RefusedRecord) as replayed:
        table.apply(SCOPE, calibrated(image_threshold=0.9), learned=True)
    assert replayed.value.reason == "replayed"
    relearn = LEARNING.model_copy(update={"version": table.next_version(SCOPE)})
    table.apply(SCOPE, relearn)
    assert table.apply(SCOPE, calibrated(relearn, image_threshold=0.5), learned=True) == "applied"
    assert table.records[SCOPE].image_threshold == 0.5


def test_held_forgeries_do_not_keep_the_honest_record_out():
    """Read before the learning record (the topics are read side by side): the first held record that
    answers it closes the session, whatever was held before it."""
    table = ControlTable()
    for forged in (calibrated(calibration=Calibration(n=2, target_fpr=0.1, by="x")), calibrated(version=7)):
        assert table.apply(SCOPE, forged, learned=True) == "held"
    assert table.apply(SCOPE, calibrated(), learned=True) == "held"
    assert table.apply(SCOPE, calibrated(image_threshold=0.9), learned=True) == "held"
    table.apply(SCOPE, LEARNING)
    assert table.records[SCOPE].image_threshold == 0.61
    with pytest.raises(RefusedRecord):
        table.apply(SCOPE, calibrated(image_threshold=0.9), learned=True)
    for _ in range(MAX_HELD_LEARNED - 1):  # the one for v7 still waits; the rest are bounded
        table.apply("object:nut", calibrated(version=30), learned=True)
    assert table.apply("object:nut", calibrated(version=30), learned=True) == "held"
    with pytest.raises(RefusedRecord):
        table.apply("object:nut", calibrated(version=30), learned=True)


def test_through_the_worker_a_tombstone_and_a_forgery_leave_the_honest_calibration_in_force():
    """The worker's path: messages as bytes, the LearningBook's calibrated record, the counters."""
    state = ControlState(WorkerSettings(worker_id="w1"), Counters(), Metrics.create(NoOpMeter("test")))
    key = SCOPE.encode()
    state.apply_message(key, encode_control(LEARNING))
    book, learned = LearningBook(), None
    for i in range(20):
        learned = book.observe(SCOPE, state.resolve("cam-0", "screw").record, 0.2 + i / 100, 0.3) or learned
    honest = calibrated_record(learned, "w1")
    assert state.apply_message(key, encode_control(honest), learned=True) == "applied"
    assert state.apply_message(key, None, learned=True) == "ignored"
    forged = honest.model_copy(update={"image_threshold": 0.99, "updated_by": "worker:evil"})
    assert state.apply_message(key, encode_control(forged), learned=True) == "refused"
    resolved = state.resolve("cam-0", "screw")
    assert not resolved.learning and resolved.thresholds.image == honest.image_threshold
    assert resolved.thresholds.version == f"{SCOPE}@v4"
    assert state.counters.snapshot()["control_refused_replayed"] == 1


def test_a_worker_caps_a_saturated_calibration_at_the_learned_bound():
    book, learned = LearningBook(), None
    for _ in range(20):
        learned = book.observe(SCOPE, LEARNING, 1.0, 1.0) or learned
    record = calibrated_record(learned, "w1")
    assert record.image_threshold == record.pixel_threshold == MAX_LEARNED_THRESHOLD
    assert answers_learning(LEARNING, record)


def test_held_learned_records_are_bounded_over_all_scopes(monkeypatch):
    monkeypatch.setattr(control_topic, "MAX_HELD_LEARNED_IN_ALL", 3)
    table = ControlTable()
    for name in ("a", "b", "c"):
        assert table.apply(f"object:{name}", calibrated(), learned=True) == "held"
    with pytest.raises(RefusedRecord):
        table.apply("object:d", calibrated(), learned=True)
    table.apply("object:a", LEARNING)  # its held record answers: one place free again
    assert table.records["object:a"].version == 4
    assert table.apply("object:d", calibrated(), learned=True) == "held"
