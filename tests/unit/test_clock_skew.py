"""Staleness by the camera's clock and by the broker's record time, the skew between them, and the
alarm rule on the share of skipped (stale) results."""

from __future__ import annotations

from datetime import timedelta

import pytest

from common.schemas import utc_now
from producer.publisher import build_frame_meta
from tests.unit.test_alarm_rules import FakeClock, engine, result, src
from worker.alarms.config import RulesFileError, parse_rules_text
from worker.stream.clock_skew import SkewBook
from worker.stream.intake import clock_skew_s, frame_age_s, is_stale, stale_note


def meta(captured_at):
    return build_frame_meta(
        camera_id="cam-1", line_id="line-1", object_name="screw", content_type="image/jpeg", width=8, height=8,
        captured_at=captured_at,
    )  # fmt: skip


def test_a_camera_clock_ahead_cannot_keep_a_backlogged_frame_fresh():
    now = utc_now()
    ahead = meta(now + timedelta(hours=1))  # the camera's clock runs an hour ahead
    queued_ms = int((now - timedelta(seconds=120)).timestamp() * 1000)  # in the topic for two minutes
    assert not is_stale(ahead, now, 30.0)  # by the camera's clock alone: "from the future", never stale
    assert is_stale(ahead, now, 30.0, queued_ms)
    assert frame_age_s(ahead, now, queued_ms) == pytest.approx(120, abs=0.01)
    assert "by the broker's clock" in stale_note(ahead, now, 30.0, queued_ms)
    assert clock_skew_s(ahead, queued_ms) == pytest.approx(-3720, abs=0.01)  # broker minus camera


def test_a_fresh_record_of_a_camera_clock_behind_is_still_judged_by_the_camera_too():
    now = utc_now()
    behind = meta(now - timedelta(minutes=5))
    just_now_ms = int(now.timestamp() * 1000)
    assert is_stale(behind, now, 30.0, just_now_ms)  # either clock saying "old" skips the frame
    assert "by the camera's clock" in stale_note(behind, now, 30.0, just_now_ms)
    assert clock_skew_s(behind, just_now_ms) == pytest.approx(300, abs=0.01)
    assert clock_skew_s(behind, None) is None and clock_skew_s(behind, -1) is None
    assert not is_stale(meta(now), now, 30.0, just_now_ms) and not is_stale(behind, now, None, just_now_ms)


def test_the_skew_book_keeps_latest_and_worst_per_camera_and_stays_bounded():
    book = SkewBook(max_cameras=2)
    book.observe("a", -3.0)
    book.observe("a", 1.5)
    book.observe("b", 0.2)
    book.observe("c", 9.0)  # "a" is the least recently seen: dropped
    assert book.snapshot() == {"b": {"latest_s": 0.2, "max_abs_s": 0.2}, "c": {"latest_s": 9.0, "max_abs_s": 9.0}}


SKIPPED = """
rules:
  - name: stale
    kind: skipped
    window: 10
    max_share: 0.3
"""


def test_the_skipped_rule_raises_once_per_spell_above_the_share():
    clock = FakeClock()
    eng = engine(SKIPPED, clock)
    verdicts = ["ok"] * 6 + ["skipped"] * 4  # 4 of 10 skipped: above 30%
    alarms = []
    for i, verdict in enumerate(verdicts):
        alarms += eng.observe(result(i, verdict=verdict), src(i))
    (alarm,) = alarms
    assert alarm.kind == "skipped" and alarm.rate == pytest.approx(0.4) and alarm.rate_limit == 0.3
    assert alarm.window == 10 and alarm.frame_ids == [f"cam-1-{i:05d}" for i in range(6, 10)]
    assert "clock" in alarm.message and eng.stats.alarms["skipped"] == 1
    more = [eng.observe(result(i, verdict="skipped"), src(i)) for i in range(10, 13)]
    assert more == [[], [], []]  # the same spell
    for i in range(13, 23):  # the share falls back: re-armed
        eng.observe(result(i, verdict="ok"), src(i))
    clock.advance(1)
    again = [a for i in range(23, 27) for a in eng.observe(result(i, verdict="skipped"), src(i))]
    assert len(again) == 1


def test_the_skipped_rule_waits_for_its_window_and_is_per_camera():
    eng = engine(SKIPPED)
    assert eng.observe(result(0, verdict="skipped"), src(0)) == []  # 1 of 1, but the window is not full
    for i in range(1, 10):
        assert eng.observe(result(i, verdict="ok", camera="cam-2"), src(i)) == []
    with pytest.raises(RulesFileError, match="max_share"):
        parse_rules_text("rules:\n  - {name: s, kind: skipped, window: 10, max_share: 1.5}\n", "bad.yaml")
