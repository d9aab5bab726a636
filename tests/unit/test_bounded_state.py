"""State keyed by camera ids that producers choose stays bounded: the dashboard's cameras and the alarm
engine's streams keep the cameras that keep sending, forget the least recently seen, count and log it."""

from __future__ import annotations

import logging

from common.bounded import BoundedMap
from tests.support.line_sinks import make_result
from worker.alarms.config import RulesFile
from worker.alarms.rules import RuleEngine
from worker.dashboard.state import LiveState


def test_the_map_forgets_the_least_recently_seen_and_counts(caplog):
    seen: BoundedMap[str, int] = BoundedMap(2, "test ids")
    with caplog.at_level(logging.WARNING, logger="common.bounded"):
        seen.put("a", 1)
        seen.put("b", 2)
        assert seen.get("a") == 1  # a sighting: "b" is now the least recently seen
        assert seen.put("c", 3) == [("b", 2)]
        assert seen.peek("a") == 1 and seen.put("d", 4) == [("a", 1)]  # a read is not a sighting
    assert list(seen) == ["c", "d"] and seen.evicted == 2
    assert caplog.text.count("test ids: more than 2 kept") == 1  # the first eviction (then every 1000th)


def test_the_dashboard_keeps_at_most_max_cameras_whatever_ids_results_carry(caplog):
    state = LiveState(max_cameras=50)
    with caplog.at_level(logging.WARNING, logger="common.bounded"):
        for n in range(5000):
            state.add_result(make_result(n, camera="cam-1"))
            state.add_result(make_result(n, camera=f"fake-{n}"))
    cameras = [c["camera_id"] for c in state.changes_since(0)["cameras"]]
    assert len(cameras) == 50 and "cam-1" in cameras and "fake-4999" in cameras and "fake-0" not in cameras
    assert state.cameras_forgotten == 4951 and "dashboard cameras: more than 50 kept" in caplog.text
    assert state.result("cam-1", "frame-cam-1-4999") is not None


RULES = RulesFile.model_validate(
    {
        "rules": [
            {"name": "ng", "kind": "anomaly", "debounce": {"anomalous": 3, "of_last": 5}},
            {"name": "quiet", "kind": "silence", "silent_for_s": 60, "per": "camera",
             "expected": [{"line": "line-1", "camera": "cam-9"}]},
            {"name": "drift", "kind": "drift", "window": 50, "target_rate": 0.01},
            {"name": "stale", "kind": "skipped", "window": 50, "max_share": 0.5},
        ]
    }
)  # fmt: skip


def test_the_alarm_engine_keeps_the_cameras_that_send_and_the_expected_ones_under_a_flood_of_ids():
    now = [0.0]
    engine = RuleEngine(RULES, clock=lambda: now[0], max_streams=100)
    raised = []
    for n in range(3000):  # the real camera anomalous every frame, a new invented id between its frames
        raised += engine.observe(make_result(n, camera="cam-1", verdict="anomalous"))
        engine.observe(make_result(n, camera=f"fake-{n}"))
    assert all(len(streams) <= 100 for streams in (engine._anomaly, engine._silence))
    assert engine.streams_forgotten == 4 * (3001 - 100)  # four rule kinds, each over 3001 cameras
    assert raised and {a.camera_id for a in raised} == {"cam-1"}  # its 3-of-5 window was never forgotten
    now[0] = 120.0
    silent = {a.camera_id for a in engine.tick()}
    assert "cam-9" in silent and "fake-0" not in silent  # the expected camera is kept whatever else arrives
