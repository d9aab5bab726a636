"""The benchmark helpers shared by `bench` and `bench --through-kafka`."""

import numpy as np
import pytest

from worker.bench.inprocess import percentile, run_batches, synthetic_frames, warm_up
from worker.inspection import measure
from worker.inspection.types import Frame, Inspection


class FakeClock:
    """`time.perf_counter` for the stage clock the bench times with, advanced only by the inspector below."""

    def __init__(self) -> None:
        self.now = 100.0

    def perf_counter(self) -> float:
        return self.now


class CountingInspector:
    """Records the batch sizes it is called with; a call costs 10 ms + 5 ms per frame on `clock`,
    and every frame reports stages of 2 ms and 1 ms."""

    def __init__(self, clock: FakeClock | None = None) -> None:
        self.calls: list[int] = []
        self.clock = clock

    def inspect(self, frames: list[Frame]) -> list[Inspection]:
        self.calls.append(len(frames))
        if self.clock is not None:
            self.clock.now += (10 + 5 * len(frames)) / 1000
        return [
            Inspection(
                f.frame_id,
                0.0,
                np.zeros((2, 2), np.float32),
                np.ones((2, 2), bool),
                timings_ms={"pixel_map": 2.0, "tiling": 1.0},
            )
            for f in frames
        ]


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(measure, "time", fake)
    return fake


def test_percentile_rounds_and_is_none_without_values():
    assert percentile([1.0, 2.0, 4.0], 50) == 2.0
    assert percentile([0.0, 1.0 / 3.0], 100) == 0.33
    assert percentile([], 99) is None


def test_run_batches_cuts_batches_and_times_them(clock):
    inspector = CountingInspector(clock)
    frames = synthetic_frames(10, 64, 64)
    report = run_batches(inspector, frames, 4)
    assert inspector.calls == [4, 4, 2]
    # batches of 30, 30 and 20 ms: 80 ms for 10 frames; each frame's latency is its batch's time
    assert report == {
        "frames": 10,
        "batch": 4,
        "wall_s": 0.08,
        "frames_per_s": 125.0,
        "ms_per_frame": 8.0,
        "latency_ms_p50": 30.0,
        "latency_ms_p95": 30.0,
        "stage_ms_per_frame": {"pixel_map": 2.0, "tiling": 1.0},
    }
    assert run_batches(CountingInspector(clock), frames[:2], 1)["latency_ms_p50"] == 15.0


def test_warm_up_inspects_one_frame_and_returns_its_ms(clock):
    inspector = CountingInspector(clock)
    assert warm_up(inspector, synthetic_frames(3, 64, 64)) == 15.0
    assert inspector.calls == [1]
