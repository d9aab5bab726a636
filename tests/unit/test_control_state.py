"""The control topic's rules without a broker: decoding, refusal, version order, scope resolution,
learning bookkeeping, drift windows, prompt overrides and the `control set` record."""

from __future__ import annotations

import json

import numpy as np
import pytest
from opentelemetry.metrics import NoOpMeter

from common.calibration import conformal_threshold
from common.control import ControlRecord, Learning, PromptOverrides
from common.control_topic import ControlTable, RefusedRecord, decode_control, encode_control
from common.metrics import Metrics
from common.settings import WorkerSettings
from worker.inspection.prompts import PromptSet
from worker.stream.control import ControlState
from worker.stream.control_cli import UsageError, new_record, parse
from worker.stream.drift import RollingScores
from worker.stream.learning import LearningBook, calibrated_record, frames_to_learn
from worker.stream.telemetry import Counters

STATIC = WorkerSettings(worker_id="w", threshold=0.5, pixel_threshold=0.6, threshold_version="static-0.5")


def beyond(**fields) -> bytes:
    """A control value of version 2 with `fields` (each beyond a bound in the tests below)."""
    return json.dumps({"version": 2} | fields).encode()


def message(record: ControlRecord | None) -> bytes | None:
    return None if record is None else encode_control(record)


def state() -> ControlState:
    return ControlState(STATIC, Counters(), Metrics.create(NoOpMeter("test")))


# --------------------------------------------------------------------------- decoding and refusal


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        (b"screw", b"{}", "not_a_scope"),
        (None, b"{}", "not_a_scope"),
        (b"\xff\xfe", b"{}", "not_a_scope"),
        (b"camera:", b"{}", "not_a_scope"),
        (b"object:screw", b"{not json", "not_json"),
        (b"object:screw", b"\xff", "not_json"),
        (b"object:screw", b'{"version": 0}', "invalid_record"),
        (b"object:screw", b'{"version": 2, "image_threshold": 1.5}', "out_of_bounds"),
        (b"object:screw", beyond(learning={"frames": 10**9, "target_fpr": 0.1}), "out_of_bounds"),
        (b"object:screw", beyond(learning={"frames": 20, "target_fpr": 1e-9}), "out_of_bounds"),
        (b"object:screw", beyond(prompts={"extra_normal_states": ["a {}"] * 17}), "out_of_bounds"),
        (b"object:screw", beyond(prompts={"extra_anomalous_states": ["x" * 121]}), "out_of_bounds"),
        (b"object:screw", beyond(prompts={"object_name": "nut\nDROP"}), "out_of_bounds"),
        (b"object:screw", beyond(updated_by="x" * 129), "out_of_bounds"),
        (b"object:screw/x", b"{}", "not_a_scope"),
        (b"camera:cam 1", b"{}", "not_a_scope"),
        (b"object:" + b"x" * 101, b"{}", "not_a_scope"),
        (b"object:screw", b'{"version": 2, "surprise": true}', "invalid_record"),
        (b"object:screw", b"[1, 2]", "invalid_record"),
    ],
)
def test_a_malformed_message_is_refused_with_its_reason(key, value, reason):
    with pytest.raises(RefusedRecord) as refused:
        decode_control(key, value)
    assert refused.value.reason == reason


def test_a_tombstone_decodes_as_no_record_and_a_good_value_round_trips():
    assert decode_control(b"camera:c1", None) == ("camera:c1", None)
    record = ControlRecord(version=3, image_threshold=0.7, prompts=PromptOverrides(extra_normal_states=("shiny {}",)))
    assert decode_control(b"camera:c1/object:nut", encode_control(record)) == ("camera:c1/object:nut", record)


def test_only_a_higher_version_replaces_the_record_in_force():
    table = ControlTable()
    assert table.apply("object:nut", ControlRecord(version=2, image_threshold=0.7)) == "applied"
    for version in (1, 2):
        with pytest.raises(RefusedRecord) as refused:
            table.apply("object:nut", ControlRecord(version=version, image_threshold=0.1))
        assert refused.value.reason == "not_newer"
    assert table.records["object:nut"].image_threshold == 0.7
    assert table.next_version("object:nut") == 3 and table.next_version("object:bolt") == 1
    assert table.apply("object:nut", None) == "deleted" and "object:nut" not in table.records
    assert table.next_version("object:nut") == 3  # a version a tombstone deleted is never given again
    assert table.apply("object:nut", ControlRecord(version=1, image_threshold=0.2)) == "applied"


def test_a_refused_message_is_counted_by_reason_and_the_old_record_stays():
    control = state()
    assert control.apply_message(b"object:nut", message(ControlRecord(version=5, image_threshold=0.8))) == "applied"
    assert control.apply_message(b"object:nut", b"garbage") == "refused"
    assert control.apply_message(b"object:nut", message(ControlRecord(version=4, image_threshold=0.1))) == "refused"
    assert control.apply_message(b"nut", message(ControlRecord(version=9, image_threshold=0.1))) == "refused"
    counts = control.counters.snapshot()
    assert counts["control_refused"] == 3 and counts["control_applied"] == 1
    assert (counts["control_refused_not_json"], counts["control_refused_not_newer"]) == (1, 1)
    assert counts["control_refused_not_a_scope"] == 1
    assert control.resolve("c1", "nut").thresholds.version == "object:nut@v5"


# --------------------------------------------------------------------------- scope resolution


def test_the_most_specific_scope_wins_and_without_any_the_static_threshold_is_stamped():
    control = state()
    assert control.resolve("c1", "nut").thresholds.model_dump() == {
        "image": 0.5,
        "pixel": 0.6,
        "version": "static-0.5",
    }
    control.apply_message(b"object:nut", message(ControlRecord(version=1, image_threshold=0.7)))
    control.apply_message(b"camera:c1", message(ControlRecord(version=1, image_threshold=0.8, pixel_threshold=0.9)))
    control.apply_message(b"camera:c1/object:nut", message(ControlRecord(version=4, image_threshold=0.9)))
    assert control.resolve("c1", "nut").thresholds.version == "camera:c1/object:nut@v4"
    assert control.resolve("c1", "nut").thresholds.pixel == 0.6  # a record without a pixel threshold keeps the static
    assert control.resolve("c1", "bolt").thresholds.model_dump() == {
        "image": 0.8,
        "pixel": 0.9,
        "version": "camera:c1@v1",
    }
    assert control.resolve("c2", "nut").thresholds.version == "object:nut@v1"
    assert control.resolve("c2", "bolt").thresholds.version == "static-0.5"
    control.apply_message(b"camera:c1/object:nut", None)
    assert control.resolve("c1", "nut").thresholds.version == "camera:c1@v1"


def test_prompt_overrides_of_the_record_in_force_reach_the_frame():
    control = state()
    prompts = PromptOverrides(
        object_name="hex nut", extra_normal_states=("shiny {}",), extra_anomalous_states=("rusty {}",)
    )
    control.apply_message(b"object:nut", message(ControlRecord(version=1, prompts=prompts)))
    resolved = control.resolve("c1", "nut")
    assert resolved.prompt_object_name == "hex nut"
    assert resolved.extra_states == (("shiny {}",), ("rusty {}",))
    assert resolved.thresholds.version == "static-0.5"  # prompts only: the thresholds stay static
    assert control.resolve("c1", "bolt").prompt_object_name == "bolt"


def test_extra_states_join_the_prompt_ensemble_with_the_object_name():
    prompts = PromptSet(templates=("a photo of a {}.",), normal_states=("{}",), anomalous_states=("broken {}",))
    normal, anomalous = prompts.state_prompts("nut", ("shiny {}",), ("{} with {rust}",))
    assert normal == ["a photo of a nut.", "a photo of a shiny nut."]
    assert anomalous == ["a photo of a broken nut.", "a photo of a nut with {rust}."]
    assert prompts.state_prompts("nut") == (["a photo of a nut."], ["a photo of a broken nut."])


# --------------------------------------------------------------------------- learning


def test_learning_collects_n_frames_once_then_calibrates_conformally():
    record = ControlRecord(version=3, learning=Learning(frames=20, target_fpr=0.1))
    book = LearningBook()
    rng = np.random.default_rng(0)
    raws, pixels = rng.uniform(0.1, 0.4, 20), rng.uniform(0.2, 0.6, 20)
    learned = [book.observe("object:nut", record, r, p) for r, p in zip(raws, pixels)]
    assert learned[:-1] == [None] * 19 and learned[-1] is not None
    assert book.observe("object:nut", record, 0.3, 0.3) is None  # once per record version
    calibrated = calibrated_record(learned[-1], "w1")
    assert calibrated.version == 4 and calibrated.calibration.by == "worker:w1" and calibrated.updated_by == "worker:w1"
    assert calibrated.image_threshold == conformal_threshold(raws, 0.1)
    assert calibrated.pixel_threshold == conformal_threshold(pixels, 0.1, np.float32)  # for float32 maps
    assert calibrated.calibration.n == 20 and calibrated.calibration.pixel_n == 20
    assert calibrated.calibration.quantiles["max"] == pytest.approx(raws.max())
    assert np.mean(raws >= calibrated.image_threshold) <= 0.1
    # a new learning record (higher version) starts over
    again = record.model_copy(update={"version": 5})
    assert book.observe("object:nut", again, 0.3, 0.3) is None and book.progress("object:nut") == 1


def test_learning_waits_for_as_many_frames_as_the_target_rate_needs():
    record = ControlRecord(version=1, learning=Learning(frames=2, target_fpr=0.05))
    assert frames_to_learn(record) == 19  # ceil((n+1)(1-0.05)) <= n from n = 19
    book = LearningBook()
    assert all(book.observe("camera:c", record, 0.2, 0.2) is None for _ in range(18))
    assert book.observe("camera:c", record, 0.2, 0.2) is not None


# --------------------------------------------------------------------------- drift


def test_drift_window_reports_the_rate_above_threshold_and_the_p95_of_recent_scores():
    rolling = RollingScores(window=4)
    for raw in (0.1, 0.2, 0.3):
        rolling.add(raw, above=False)
    rate, p95 = rolling.add(0.9, above=True)
    assert rate == 0.25 and p95 == pytest.approx(np.quantile([0.1, 0.2, 0.3, 0.9], 0.95))
    for _ in range(4):  # the window forgets the old frames
        rate, p95 = rolling.add(0.8, above=True)
    assert (rate, p95) == (1.0, pytest.approx(0.8))


# --------------------------------------------------------------------------- control set


def test_set_bumps_the_version_keeps_what_it_does_not_change_and_learning_clears_thresholds():
    table = ControlTable()
    table.apply("object:nut", ControlRecord(version=7, image_threshold=0.7, pixel_threshold=0.8))
    record = new_record(parse(["set", "--scope", "object:nut", "--pixel-threshold", "0.9", "--by", "ana"]), table)
    assert (record.version, record.image_threshold, record.pixel_threshold, record.updated_by) == (8, 0.7, 0.9, "ana")
    learning = new_record(
        parse(["set", "--scope", "object:nut", "--learning-frames", "30", "--target-fpr", "0.05", "--by", "ana"]), table
    )
    assert learning.image_threshold is None and learning.learning == Learning(frames=30, target_fpr=0.05)
    prompts = new_record(parse(["set", "--scope", "camera:c9", "--extra-anomalous", "rusty {}", "--by", "ana"]), table)
    assert prompts.version == 1 and prompts.prompts.extra_anomalous_states == ("rusty {}",)


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--image-threshold", "1.5"], "image_threshold"),
        (["--learning-frames", "30"], "both --learning-frames and --target-fpr"),
        (["--learning-frames", "5", "--target-fpr", "0.01"], "at least 99"),
        (["--target-fpr", "0.05", "--learning-frames", "1"], "learning.frames"),
    ],
)
def test_set_refuses_bad_values_with_a_clear_message(argv, says):
    with pytest.raises(UsageError, match=says.replace("-", r"\-").replace(".", r"\.")):
        new_record(parse(["set", "--scope", "object:nut", "--by", "ana", *argv]), ControlTable())


def test_set_from_a_file_ignores_its_version(tmp_path):
    path = tmp_path / "record.json"
    path.write_text(json.dumps({"version": 99, "image_threshold": 0.42}))
    table = ControlTable()
    table.apply("object:nut", ControlRecord(version=2, image_threshold=0.7))
    record = new_record(parse(["set", "--scope", "object:nut", "--from-file", str(path), "--by", "ana"]), table)
    assert (record.version, record.image_threshold) == (3, 0.42)


def test_a_scope_in_learning_is_stamped_with_its_learning_record():
    control = state()
    control.apply_message(
        b"object:nut", message(ControlRecord(version=2, learning=Learning(frames=20, target_fpr=0.1)))
    )
    resolved = control.resolve("c1", "nut")
    assert resolved.learning and resolved.thresholds.version == "object:nut@v2"
    assert (resolved.thresholds.image, resolved.thresholds.pixel) == (0.5, 0.6)  # the static ones meanwhile
