"""Alarm rule engine and rules file: pure logic with a controlled clock."""

from __future__ import annotations

import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from common.schemas import InspectionResult, RleMask, SourceRef, Versions
from worker.alarms.config import RulesFileError, load_rules, parse_rules, parse_rules_text
from worker.alarms.events import AlarmEvent
from worker.alarms.rules import RuleEngine, SeenFrames

T0 = datetime(2024, 5, 1, 8, 0, tzinfo=timezone.utc)


class FakeClock:
    def __init__(self, start: float = 1_714_550_400.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def result(
    n: int,
    score: float = 0.1,
    *,
    camera: str = "cam-1",
    line: str = "line-1",
    obj: str = "bottle",
    verdict: str | None = None,
    threshold: float = 0.5,
    frame_id: str | None = None,
) -> InspectionResult:
    if verdict is None:
        verdict = "anomalous" if score >= threshold else "ok"
    return InspectionResult(
        frame_id=frame_id or f"{camera}-{n:05d}",
        camera_id=camera,
        line_id=line,
        object_name=obj,
        captured_at=T0 + timedelta(seconds=n),
        processed_at=T0 + timedelta(seconds=n, milliseconds=80),
        score=score,
        threshold=threshold,
        verdict=verdict,  # type: ignore[arg-type]
        mask=RleMask(size=(4, 4), counts="04") if verdict == "anomalous" else None,
        versions=Versions(model_fingerprint="f", profile="tiny", prompt_set="p", threshold_version="static-0.5"),
        worker_id="w1",
    )


def src(offset: int, partition: int = 0) -> SourceRef:
    return SourceRef(topic="linewatch.results", partition=partition, offset=offset)


def rules(yaml_text: str):
    return parse_rules_text(textwrap.dedent(yaml_text), "test.yaml")


def engine(yaml_text: str, clock: FakeClock | None = None, **kw) -> RuleEngine:
    return RuleEngine(rules(yaml_text), clock=clock or FakeClock(), **kw)


def feed(
    eng: RuleEngine, scores: list[float], start: int = 0, clock: FakeClock | None = None, **kw
) -> list[AlarmEvent]:
    out: list[AlarmEvent] = []
    for i, score in enumerate(scores, start):
        out += eng.observe(result(i, score, **kw), src(i))
        if clock is not None:
            clock.advance(1.0)
    return out


# --------------------------------------------------------------------------- debounce


DEBOUNCE = """
rules:
  - name: d3of5
    kind: anomaly
    debounce: {anomalous: 3, of_last: 5}
"""


def test_debounce_needs_n_anomalous_of_last_m() -> None:
    eng = engine(DEBOUNCE)
    # 2 anomalous in the window: nothing
    assert feed(eng, [0.9, 0.1, 0.9, 0.1, 0.1]) == []
    # the window is now [0.9(2), 0.1, 0.1, 0.9(5), 0.9(6)] -> 3 of 5 at frame 6
    alarms = feed(eng, [0.9, 0.9], start=5)
    assert len(alarms) == 1
    alarm = alarms[0]
    assert alarm.kind == "anomaly" and alarm.rule == "d3of5"
    assert alarm.frame_ids == ["cam-1-00002", "cam-1-00005", "cam-1-00006"]
    assert alarm.scores == [0.9, 0.9, 0.9]
    assert (alarm.anomalous_in_window, alarm.window) == (3, 5)
    assert alarm.line_id == "line-1" and alarm.camera_id == "cam-1" and alarm.object_name == "bottle"
    assert alarm.first_seen == T0 + timedelta(seconds=2) and alarm.last_seen == T0 + timedelta(seconds=6)
    assert [m.offset for m in alarm.masks] == [2, 5, 6]
    assert all(m.topic == "linewatch.results" and m.has_mask for m in alarm.masks)


def test_anomalies_that_slid_out_of_the_window_do_not_count() -> None:
    eng = engine(DEBOUNCE)
    # anomalous frames always 3 apart: never 3 within 5
    assert feed(eng, [0.9, 0.1, 0.1, 0.9, 0.1, 0.1, 0.9, 0.1, 0.1, 0.9, 0.1, 0.1]) == []


def test_raising_empties_the_window() -> None:
    eng = engine(DEBOUNCE)
    assert len(feed(eng, [0.9, 0.9, 0.9])) == 1
    # cooldown is 0, but the next alarm needs three new anomalous frames
    assert feed(eng, [0.9, 0.9], start=3) == []
    assert len(feed(eng, [0.9], start=5)) == 1


def test_an_ok_frame_never_raises() -> None:
    clock = FakeClock()
    eng = engine(DEBOUNCE.replace("of_last: 5}", "of_last: 5}\n    cooldown_s: 10"), clock)
    assert len(feed(eng, [0.9, 0.9, 0.9])) == 1
    assert feed(eng, [0.9, 0.9, 0.9], start=3) == []  # in cooldown
    clock.advance(11)
    assert feed(eng, [0.1], start=6) == []  # window full of anomalies, but this frame is fine


def test_windows_are_per_camera_and_object() -> None:
    eng = engine(DEBOUNCE)
    assert feed(eng, [0.9, 0.9], camera="cam-1") == []
    assert feed(eng, [0.9, 0.9], start=10, camera="cam-2") == []
    assert feed(eng, [0.9, 0.9], start=20, camera="cam-1", obj="cap") == []
    alarms = feed(eng, [0.9], start=30, camera="cam-2")
    assert [a.camera_id for a in alarms] == ["cam-2"]


def test_skipped_results_are_not_inspections() -> None:
    eng = engine(DEBOUNCE)
    out = feed(eng, [0.9, 0.9])
    out += eng.observe(result(2, 0.0, verdict="skipped"), src(2))
    out += feed(eng, [0.1, 0.1, 0.1], start=3)
    assert out == []  # the skipped frame neither counted nor pushed anomalies out
    assert len(feed(eng, [0.9], start=6)) == 0  # window [0.9,0.9,0.1,0.1,0.1] slid to drop one 0.9
    eng2 = engine(DEBOUNCE)
    feed(eng2, [0.9, 0.9])
    eng2.observe(result(2, 0.99, verdict="skipped"), src(2))
    assert len(feed(eng2, [0.9], start=3)) == 1


# --------------------------------------------------------------------------- cooldown


def test_cooldown_suppresses_then_allows() -> None:
    clock = FakeClock()
    eng = engine(
        """
        rules:
          - name: every
            kind: anomaly
            cooldown_s: 60
        """,
        clock,
    )
    assert len(eng.observe(result(0, 0.9), src(0))) == 1
    clock.advance(30)
    assert eng.observe(result(1, 0.9), src(1)) == []
    clock.advance(29.9)
    assert eng.observe(result(2, 0.9), src(2)) == []
    clock.advance(0.1)  # 60 s after the alarm
    alarms = eng.observe(result(3, 0.9), src(3))
    assert len(alarms) == 1 and alarms[0].frame_ids == ["cam-1-00003"]
    # another camera has its own cooldown
    assert len(eng.observe(result(4, 0.9, camera="cam-2"), src(4))) == 1


def test_defaults_fill_cooldown() -> None:
    file = rules(
        """
        defaults: {cooldown_s: 120, silent_for_s: 15}
        rules:
          - {name: a, kind: anomaly}
          - {name: b, kind: anomaly, cooldown_s: 5}
          - {name: c, kind: silence}
        """
    )
    assert [r.cooldown_s for r in file.rules] == [120, 5, 120]
    assert file.rules[2].silent_for_s == 15


# --------------------------------------------------------------------------- threshold, match


def test_threshold_override_beats_the_result_verdict() -> None:
    eng = engine(
        """
        rules:
          - name: strict
            kind: anomaly
            threshold: 0.8
        """
    )
    # verdict anomalous (worker threshold 0.5) but below the rule's 0.8
    assert eng.observe(result(0, 0.7), src(0)) == []
    alarms = eng.observe(result(1, 0.85), src(1))
    assert len(alarms) == 1 and alarms[0].threshold == 0.8
    # and the other way: verdict ok at the worker's 0.95 threshold, yet above 0.8
    eng2 = engine("rules: [{name: lax, kind: anomaly, threshold: 0.8}]")
    assert len(eng2.observe(result(0, 0.9, threshold=0.95), src(0))) == 1


def test_without_override_the_verdict_decides() -> None:
    eng = engine("rules: [{name: v, kind: anomaly}]")
    assert eng.observe(result(0, 0.9, threshold=0.95), src(0)) == []  # verdict ok
    alarms = eng.observe(result(1, 0.3, threshold=0.2), src(1))  # verdict anomalous
    assert len(alarms) == 1 and alarms[0].threshold is None


def test_match_globs_and_lists() -> None:
    eng = engine(
        """
        rules:
          - name: l1
            kind: anomaly
            match: {line: "line-1", camera: "cam-[12]", object: [bottle, cap]}
        """
    )
    assert eng.observe(result(0, 0.9, camera="cam-3"), src(0)) == []
    assert eng.observe(result(1, 0.9, line="line-2"), src(1)) == []
    assert eng.observe(result(2, 0.9, obj="screw"), src(2)) == []
    assert len(eng.observe(result(3, 0.9, camera="cam-2", obj="cap"), src(3))) == 1


def test_every_matching_rule_fires() -> None:
    eng = engine(
        """
        rules:
          - {name: all, kind: anomaly}
          - {name: line1, kind: anomaly, match: {line: "line-*"}}
          - {name: other, kind: anomaly, match: {line: "line-9"}}
        """
    )
    alarms = eng.observe(result(0, 0.9), src(0))
    assert sorted(a.rule for a in alarms) == ["all", "line1"]
    assert len({a.alarm_id for a in alarms}) == 2


# --------------------------------------------------------------------------- duplicates


def test_duplicate_frames_never_count_twice() -> None:
    eng = engine(DEBOUNCE)
    first = result(0, 0.9)
    assert eng.observe(first, src(0)) == []
    assert eng.observe(first, src(0)) == []  # redelivered, same offset
    assert eng.observe(first, src(7)) == []  # redelivered after a producer retry: new offset
    assert eng.observe(result(1, 0.9), src(1)) == []  # only 2 distinct anomalous frames so far
    assert eng.stats.duplicates == 2
    assert len(eng.observe(result(2, 0.9), src(2))) == 1


def test_duplicates_do_not_reset_silence_or_raise_again() -> None:
    eng = engine("rules: [{name: each, kind: anomaly}]")
    r = result(0, 0.9)
    assert len(eng.observe(r, src(0))) == 1
    assert eng.observe(r, src(0)) == []


def test_seen_frames_lru_is_bounded() -> None:
    seen = SeenFrames(3)
    for i in range(3):
        assert seen.add(("c", str(i)))
    assert not seen.add(("c", "0"))  # refreshes "0"
    assert seen.add(("c", "3"))  # evicts the least recent: "1"
    assert len(seen) == 3
    assert ("c", "1") not in seen and ("c", "0") in seen
    eng = engine("rules: [{name: each, kind: anomaly}]", dedup_entries=2)
    for i in range(3):
        eng.observe(result(i, 0.1), src(i))
    eng.observe(result(0, 0.1), src(0))
    assert eng.stats.duplicates == 0  # the first frame was forgotten: bounded memory
    eng.observe(result(2, 0.1), src(2))
    assert eng.stats.duplicates == 1  # the last one is still remembered


def test_same_frame_id_on_another_camera_is_not_a_duplicate() -> None:
    eng = engine("rules: [{name: each, kind: anomaly}]")
    assert len(eng.observe(result(0, 0.9, camera="a", frame_id="f1"), src(0))) == 1
    assert len(eng.observe(result(0, 0.9, camera="b", frame_id="f1"), src(1))) == 1


def test_alarm_ids_are_deterministic() -> None:
    def run() -> list[str]:
        eng = engine(DEBOUNCE)
        return [a.alarm_id for a in feed(eng, [0.9, 0.9, 0.9, 0.1, 0.9, 0.9, 0.9])]

    first, second = run(), run()
    assert len(first) == 2 and first == second and first[0] != first[1]


# --------------------------------------------------------------------------- silence


SILENCE = """
rules:
  - name: quiet
    kind: silence
    match: {line: "line-*"}
    silent_for_s: 30
    cooldown_s: 100
    expected:
      - {line: line-1, camera: cam-9}
"""


def test_silence_of_a_seen_camera() -> None:
    clock = FakeClock()
    eng = engine(SILENCE, clock)
    eng.observe(result(0, camera="cam-1"), src(0))
    clock.advance(29)
    assert [a.camera_id for a in eng.tick()] == []
    clock.advance(1)
    alarms = eng.tick()
    # cam-9 was expected and never seen: silent for 30 s since start; cam-1 for 30 s
    by_camera = {a.camera_id: a for a in alarms}
    assert set(by_camera) == {"cam-1", "cam-9"}
    seen = by_camera["cam-1"]
    assert seen.kind == "silence" and seen.rule == "quiet" and seen.silent_for_s == 30
    assert seen.frame_ids == ["cam-1-00000"] and seen.last_seen == T0 and seen.object_name == "bottle"
    assert by_camera["cam-9"].frame_ids == [] and by_camera["cam-9"].last_seen is None
    assert "expected" in by_camera["cam-9"].message
    # once per silent spell
    clock.advance(500)
    assert eng.tick() == []


def test_silence_ends_with_a_result_and_cooldown_limits_flapping() -> None:
    clock = FakeClock()
    eng = engine(SILENCE.replace("expected:\n      - {line: line-1, camera: cam-9}\n", ""), clock)
    eng.observe(result(0), src(0))
    clock.advance(31)
    assert len(eng.tick()) == 1
    eng.observe(result(1), src(1))  # back
    clock.advance(31)
    assert eng.tick() == []  # silent again, but only 31 s after the last alarm (cooldown 100 s)
    clock.advance(68)
    assert eng.tick() == []  # 99 s
    clock.advance(1)
    alarms = eng.tick()
    assert len(alarms) == 1 and alarms[0].frame_ids == ["cam-1-00001"]
    assert alarms[0].silent_for_s == pytest.approx(100)


def test_results_keep_a_camera_alive() -> None:
    clock = FakeClock()
    eng = engine("rules: [{name: q, kind: silence, silent_for_s: 10}]", clock)
    for i in range(20):
        eng.observe(result(i), src(i))
        clock.advance(5)
        assert eng.tick() == []
    clock.advance(10)
    assert [a.camera_id for a in eng.tick()] == ["cam-1"]


def test_line_silence() -> None:
    clock = FakeClock()
    eng = engine(
        """
        rules:
          - name: line-quiet
            kind: silence
            per: line
            silent_for_s: 20
            expected: [{line: line-2}]
        """,
        clock,
    )
    eng.observe(result(0, camera="cam-1"), src(0))
    clock.advance(15)
    eng.observe(result(1, camera="cam-2"), src(1))  # another camera of line-1 keeps the line alive
    clock.advance(15)
    alarms = eng.tick()
    assert [(a.line_id, a.camera_id) for a in alarms] == [("line-2", None)]
    clock.advance(6)
    alarms = eng.tick()
    assert [(a.line_id, a.camera_id) for a in alarms] == [("line-1", None)]
    assert AlarmEvent.model_validate_json(alarms[0].model_dump_json()).key == b"line-1"


def test_silence_rules_respect_match() -> None:
    clock = FakeClock()
    eng = engine("rules: [{name: q, kind: silence, silent_for_s: 10, match: {camera: 'cam-1'}}]", clock)
    eng.observe(result(0, camera="cam-2"), src(0))
    clock.advance(11)
    assert eng.tick() == []


def test_revoked_partitions_are_forgotten() -> None:
    clock = FakeClock()
    eng = engine(SILENCE, clock)
    eng.observe(result(0, camera="cam-1"), src(0, partition=0))
    eng.observe(result(1, camera="cam-2"), src(1, partition=1))
    assert eng.forget_partitions([("linewatch.results", 1)]) == 1
    clock.advance(31)
    assert sorted(a.camera_id for a in eng.tick()) == ["cam-1", "cam-9"]  # expected cam-9 is kept


# --------------------------------------------------------------------------- events


def test_alarm_event_json_round_trip() -> None:
    eng = engine("rules: [{name: each, kind: anomaly}]")
    alarm = eng.observe(result(0, 0.9), src(42, partition=3))[0]
    data = alarm.model_dump(mode="json")
    assert data["kind"] == "anomaly" and data["masks"][0] == {
        "frame_id": "cam-1-00000",
        "topic": "linewatch.results",
        "partition": 3,
        "offset": 42,
        "has_mask": True,
    }
    assert data["created_at"].startswith("2024-05-01T08:00:00")
    assert AlarmEvent.model_validate_json(alarm.model_dump_json()) == alarm
    assert alarm.key == b"cam-1"


# --------------------------------------------------------------------------- rules file validation


def problems(text: str) -> list[str]:
    with pytest.raises(RulesFileError) as info:
        parse_rules_text(textwrap.dedent(text), "rules.yaml")
    return info.value.problems


def test_errors_name_file_rule_and_field() -> None:
    found = problems(
        """
        rules:
          - name: ok-rule
            kind: anomaly
          - name: bad-threshold
            kind: anomaly
            threshold: 1.5
          - name: bad-debounce
            kind: anomaly
            debounce: {anomalous: 4, of_last: 3}
          - name: bad-silence
            kind: silence
            silent_for_s: -1
        """
    )
    assert len(found) == 3
    assert found[0].startswith("rules.yaml: rules[1] (name 'bad-threshold'): threshold:")
    assert "less than or equal to 1" in found[0]
    assert found[1] == "rules.yaml: rules[2] (name 'bad-debounce'): debounce: anomalous (4) cannot exceed of_last (3)"
    assert found[2].startswith("rules.yaml: rules[3] (name 'bad-silence'): silent_for_s: ")


def test_unknown_fields_and_kinds_are_errors() -> None:
    found = problems(
        """
        rules:
          - {name: a, kind: anomaly, treshold: 0.5}
          - {name: b, kind: flood}
          - {name: c, kind: anomaly, match: {camrea: x}}
          - {kind: anomaly}
        """
    )
    assert found[0] == "rules.yaml: rules[0] (name 'a'): treshold: Extra inputs are not permitted"
    assert found[1].startswith("rules.yaml: rules[1] (name 'b'): kind: ")
    assert "'anomaly', 'silence'" in found[1]
    assert found[2] == "rules.yaml: rules[2] (name 'c'): match.camrea: Extra inputs are not permitted"
    assert found[3] == "rules.yaml: rules[3]: name: Field required"


def test_file_level_errors() -> None:
    assert problems("rules: []") == ["rules.yaml: rules: List should have at least 1 item after validation, not 0"]
    assert problems("- just a list") == ["the top level must be a mapping with a `rules:` list"]
    dup = problems("rules: [{name: x, kind: anomaly}, {name: x, kind: silence, silent_for_s: 3}]")
    assert dup == ["rules.yaml: rules[1]: name 'x' is already used by rules[0]"]
    bad_yaml = problems("rules:\n  - name: [unclosed\n")
    assert len(bad_yaml) == 1 and bad_yaml[0].startswith("rules.yaml:") and "not valid YAML" in bad_yaml[0]
    assert ":3:" in bad_yaml[0] or ":2:" in bad_yaml[0]  # line and column of the problem


def test_expected_streams_are_checked() -> None:
    found = problems(
        """
        rules:
          - name: s
            kind: silence
            silent_for_s: 5
            match: {line: "line-1"}
            expected: [{line: line-2, camera: c}, {line: line-1}]
        """
    )
    assert found == ["rules.yaml: rules[0] (name 's'): expected[0] (line-2/c) does not fit this rule's match"]
    found = problems("rules: [{name: s, kind: silence, silent_for_s: 5, expected: [{line: l}]}]")
    assert found == ["rules.yaml: rules[0] (name 's'): expected[0]: a camera is required when per is 'camera'"]


def test_load_rules_from_files(tmp_path: Path) -> None:
    good = tmp_path / "rules.yaml"
    good.write_text("rules:\n  - {name: a, kind: anomaly, debounce: {anomalous: 2, of_last: 4}}\n")
    loaded = load_rules(good)
    assert loaded.rules[0].debounce.of_last == 4
    with pytest.raises(RulesFileError, match="cannot read"):
        load_rules(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - {name: a, kind: anomaly, cooldown_s: soon}\n")
    with pytest.raises(RulesFileError) as info:
        load_rules(bad)
    assert info.value.problems[0].startswith(f"{bad}: rules[0] (name 'a'): cooldown_s:")
    assert str(bad) in str(info.value)


def test_shipped_example_rules_validate() -> None:
    example = Path(__file__).resolve().parents[2] / "docker" / "alarms.example.yaml"
    loaded = load_rules(example)
    assert {r.kind for r in loaded.rules} == {"anomaly", "silence", "skipped"}


def test_parse_rules_accepts_python_data() -> None:
    loaded = parse_rules({"rules": [{"name": "a", "kind": "anomaly", "match": {"line": "l*"}}]})
    assert loaded.rules[0].match.line == ("l*",)
