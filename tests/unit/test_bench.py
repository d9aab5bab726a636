"""The benchmark helpers shared by `bench` and `bench --through-kafka`."""
import numpy as np

from worker.bench.inprocess import percentile, run_batches, synthetic_frames, warm_up
from worker.inspection.types import Frame, Inspection


class CountingInspector:
    """Records the batch sizes it is called with; every frame's stages cost 2 ms and 1 ms."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def inspect(self, frames: list[Frame]) -> list[Inspection]:
        self.calls.append(len(frames))
        return [Inspection(f.frame_id, 0.0, np.zeros((2, 2), np.float32), np.ones((2, 2), bool),
                           timings_ms={"pixel_map": 2.0, "tiling": 1.0}) for f in frames]


def test_percentile_rounds_and_is_none_without_values():
    assert percentile([1.0, 2.0, 4.0], 50) == 2.0
    assert percentile([0.0, 1.0 / 3.0], 100) == 0.33
    assert percentile([], 99) is None


def test_run_batches_cuts_batches_and_averages_stages_per_frame():
    inspector = CountingInspector()
    frames = synthetic_frames(10, 64, 64)
    report = run_batches(inspector, frames, 4)
    assert inspector.calls == [4, 4, 2]
    assert report["frames"] == 10 and report["batch"] == 4
    assert report["stage_ms_per_frame"] == {"pixel_map": 2.0, "tiling": 1.0}
    assert report["ms_per_frame"] > 0 and report["frames_per_s"] > 0
    assert report["latency_ms_p50"] is not None and report["latency_ms_p95"] >= report["latency_ms_p50"]


def test_warm_up_inspects_one_frame():
    inspector = CountingInspector()
    assert warm_up(inspector, synthetic_frames(3, 64, 64)) >= 0.0
    assert inspector.calls == [1]
