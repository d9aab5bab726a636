"""Drift rules (worker/alarms/drift.py): the anomalous share of a stream's verdicts against
multiple x its calibrated false-alarm rate. Pure logic with a controlled clock, in the style
of test_alarm_rules.py (whose helpers build the results)."""

from __future__ import annotations

import pytest

from tests.unit.test_alarm_rules import FakeClock, engine, result, rules, src
from worker.alarms.config import DriftRule, RulesFileError
from worker.alarms.events import AlarmEvent
from worker.alarms.rules import RuleEngine

DRIFT = """
rules:
  - name: drift
    kind: drift
    window: 100
    target_rate: 0.01
    multiple: 3
"""


def feed_verdicts(eng: RuleEngine, pattern: str, start: int = 0, clock: FakeClock | None = None, **kw) -> list:
    """One result per character: 'x' anomalous, '.' ok, 's' skipped, 'c' calibrating."""
    verdicts = {"x": "anomalous", ".": "ok", "s": "skipped", "c": "calibrating"}
    out: list[tuple[int, AlarmEvent]] = []
    for i, char in enumerate(pattern, start):
        score = 0.9 if char == "x" else 0.1
        for alarm in eng.observe(result(i, score, verdict=verdicts[char], **kw), src(i)):
            out.append((i, alarm))
        if clock is not None:
            clock.advance(1.0)
    return out


def test_fires_when_the_share_exceeds_multiple_times_the_target() -> None:
    eng = engine(DRIFT)
    # 3 anomalous of 100 = 3%, exactly the limit: no alarm
    assert feed_verdicts(eng, "x" + "." * 32 + "x" + "." * 32 + "x" + "." * 33) == []
    raised = feed_verdicts(eng, "x", start=100)  # the window slides: frame 0 (anomalous) leaves, 3 remain
    assert raised == []
    [(index, alarm)] = feed_verdicts(eng, "x", start=101)  # 4 of the last 100
    assert index == 101 and alarm.kind == "drift" and alarm.rule == "drift"
    assert (alarm.anomalous_in_window, alarm.window) == (4, 100)
    assert alarm.rate == pytest.approx(0.04) and alarm.rate_limit == pytest.approx(0.03)
    assert alarm.frame_ids == ["cam-1-00033", "cam-1-00066", "cam-1-00100", "cam-1-00101"]
    assert [m.offset for m in alarm.masks] == [33, 66, 100, 101]
    assert "4 of the last 100 frames" in alarm.message and "3 x target 0.01" in alarm.message
    assert eng.stats.alarms["drift"] == 1


def test_no_verdict_before_min_frames() -> None:
    eng = engine(DRIFT.replace("multiple: 3", "multiple: 3\n    min_frames: 50"))
    raised = feed_verdicts(eng, "x" * 10 + "." * 60)
    assert [i for i, _ in raised] == [49]  # 10 of 50 = 20% once 50 frames are in
    assert raised[0][1].window == 50


def test_default_min_frames_is_the_whole_window() -> None:
    eng = engine(DRIFT)
    assert [i for i, _ in feed_verdicts(eng, "x" * 99 + "x")] == [99]


def test_one_alarm_per_spell_then_re_armed_below_the_limit() -> None:
    eng = engine(DRIFT.replace("window: 100", "window: 10").replace("target_rate: 0.01", "target_rate: 0.05"))
    # limit 15%: 2 anomalous of 10 exceed it
    raised = feed_verdicts(eng, "." * 8 + "xx" + "x.x.x.")  # drifting all along: one alarm
    assert [i for i, _ in raised] == [9]
    calm = feed_verdicts(eng, "." * 10, start=16)  # back to 0%: re-armed
    assert calm == []
    again = feed_verdicts(eng, "xx", start=26)
    assert [i for i, _ in again] == [27]
    assert raised[0][1].alarm_id != again[0][1].alarm_id


def test_cooldown_spaces_a_streams_alarms() -> None:
    clock = FakeClock()
    text = DRIFT.replace("window: 100", "window: 10").replace("target_rate: 0.01", "target_rate: 0.05")
    eng = engine(text + "    cooldown_s: 100\n", clock)
    assert [i for i, _ in feed_verdicts(eng, "." * 8 + "xx", clock=clock)] == [9]
    assert feed_verdicts(eng, "." * 10, start=10, clock=clock) == []  # re-armed at frame 18 ...
    assert feed_verdicts(eng, "xx", start=20, clock=clock) == []  # ... a new spell, within the cooldown
    clock.advance(100)
    # the spell goes on past the cooldown: its first verdict then raises it
    assert [i for i, _ in feed_verdicts(eng, "..", start=22, clock=clock)] == [22]


def test_skipped_and_calibrating_frames_are_no_verdicts() -> None:
    eng = engine(DRIFT.replace("window: 100", "window: 10").replace("target_rate: 0.01", "target_rate: 0.05"))
    # 40 frames without a verdict in between: the window still holds 9 verdicts, 1 anomalous
    assert feed_verdicts(eng, "x" + "sc" * 20 + "." * 8) == []
    [(index, alarm)] = feed_verdicts(eng, "x", start=49)  # the 10th verdict: 2 of 10 = 20% > 15%
    assert index == 49 and alarm.window == 10 and alarm.frame_ids == ["cam-1-00000", "cam-1-00049"]


def test_streams_are_per_camera_and_object_and_match_applies() -> None:
    text = """
    rules:
      - name: drift
        kind: drift
        match: {camera: "cam-1"}
        window: 10
        target_rate: 0.05
    """
    eng = engine(text)
    assert feed_verdicts(eng, "x" * 5 + "." * 5, camera="cam-2") == []  # not matched
    assert feed_verdicts(eng, "x" * 5 + "." * 5, obj="cap") != []
    assert [i for i, _ in feed_verdicts(eng, "." * 8 + "xx", start=100, obj="bottle")] == [109]  # its own window


def test_revoked_partitions_forget_drift_state() -> None:
    eng = engine(DRIFT.replace("window: 100", "window: 10").replace("target_rate: 0.01", "target_rate: 0.05"))
    feed_verdicts(eng, "." * 8 + "x")
    assert eng.forget_partitions([("linewatch.results", 0)]) == 1
    assert feed_verdicts(eng, "x", start=9) == []  # a fresh window: 1 verdict, below min_frames


def test_drift_alarm_json_round_trip_and_stable_id() -> None:
    eng1, eng2 = engine(DRIFT), engine(DRIFT)
    [(_, a1)] = feed_verdicts(eng1, "x" * 100)
    [(_, a2)] = feed_verdicts(eng2, "x" * 100)
    assert a1.alarm_id == a2.alarm_id
    assert AlarmEvent.model_validate_json(a1.model_dump_json()) == a1
    assert len(a1.frame_ids) == 20  # the newest anomalous frames only


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ("window: 10\n    target_rate: 0.05\n    min_frames: 11", "min_frames (11) cannot exceed window (10)"),
        ("window: 10\n    target_rate: 0.5\n    multiple: 2", "multiple x target_rate = 1: a rate can never exceed it"),
        ("window: 10", "target_rate: Field required"),
        ("window: 0\n    target_rate: 0.05", "window: Input should be greater than or equal to 1"),
        (
            "window: 10\n    target_rate: 0.05\n    multiple: 0.5",
            "multiple: Input should be greater than or equal to 1",
        ),
        ("window: 10\n    target_rate: 0.05\n    debounce: {anomalous: 1}", "debounce: Extra inputs are not permitted"),
    ],
)
def test_bad_drift_rules_name_the_rule_and_field(fields: str, message: str) -> None:
    with pytest.raises(RulesFileError) as caught:
        rules(f"rules:\n  - name: d\n    kind: drift\n    {fields}\n")
    assert f"test.yaml: rules[0] (name 'd'): {message}" in str(caught.value)


def test_defaults_fill_the_cooldown_of_drift_rules() -> None:
    parsed = rules("defaults: {cooldown_s: 42}\n" + DRIFT)
    [rule] = parsed.rules
    assert isinstance(rule, DriftRule) and rule.cooldown_s == 42 and rule.needed == 100
