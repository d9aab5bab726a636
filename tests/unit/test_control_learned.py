"""Learned records (workers' calibrations on `<control topic>.learned`) in the table of records in force."""

from __future__ import annotations

import pytest

from common.control import Calibration, ControlRecord, Learning, PromptOverrides, answers_learning
from common.control_topic import ControlTable, RefusedRecord

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
        calibrated(version=9),  # not the next version
        calibrated(prompts=PromptOverrides(extra_normal_states=("a photo of a {} with a crack",))),
        calibrated(learning=Learning(frames=200, target_fpr=0.1)),
        calibrated(calibration=None),
    ],
)
def test_a_learned_record_that_changes_more_than_thresholds_stays_out(forged):
    table = ControlTable()
    table.apply(SCOPE, LEARNING)
    assert not answers_learning(LEARNING, forged)
    assert table.apply(SCOPE, forged, learned=True) == "held"
    assert table.records[SCOPE] == LEARNING


def test_a_learned_record_for_a_scope_not_learning_stays_out():
    set_by_hand = ControlRecord(version=3, image_threshold=0.3)
    table = ControlTable()
    table.apply(SCOPE, set_by_hand)
    assert table.apply(SCOPE, calibrated(set_by_hand, image_threshold=1.0), learned=True) == "held"
    assert table.records[SCOPE].image_threshold == 0.3


def test_the_operator_overrides_a_learned_record_and_the_first_learned_record_wins():
    table = ControlTable()
    table.apply(SCOPE, LEARNING)
    table.apply(SCOPE, calibrated(), learned=True)
    with pytest.raises(RefusedRecord) as second:
        table.apply(SCOPE, calibrated(image_threshold=0.7), learned=True)
    assert second.value.reason == "not_newer" and table.records[SCOPE].image_threshold == 0.61
    with pytest.raises(RefusedRecord):  # the control topic cannot reuse the version the learned record took
        table.apply(SCOPE, ControlRecord(version=4, image_threshold=0.2))
    table.apply(SCOPE, ControlRecord(version=5, image_threshold=0.2))
    assert table.records[SCOPE].image_threshold == 0.2
    table.apply(SCOPE, None)
    assert SCOPE not in table.records and table.next_version(SCOPE) == 6
