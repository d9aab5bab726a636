"""bench's machine-independent figures: tile units, SAM decoder points, precision deviation."""

import pytest

from common.settings import ModelSettings
from tests.support.hardware import needs_cpu_bf16
from worker.bench.inprocess import run_bench
from worker.bench.units import reference_check, tile_units, with_tile_units


def test_tile_units_divide_by_the_reference_pass():
    report = with_tile_units({"ms_per_frame": 500.0, "stage_ms_per_frame": {"pixel_map": 250.0, "tiling": 1.0}}, 100.0)
    assert report["tile_units_per_frame"] == 5.0
    assert report["stage_tile_units"] == {"pixel_map": 2.5, "tiling": 0.01}
    assert tile_units(1.0, 3.0) == 0.33


def test_a_reference_pass_that_changed_during_the_run_is_flagged():
    assert reference_check(200.0, 220.0) == {"reference_tile_ms_after": 220.0, "ratio": 1.1, "steady": True}
    assert reference_check(1750.0, 400.0)["steady"] is False  # the load dropped: units understated
    assert reference_check(200.0, 300.0)["steady"] is False


@pytest.mark.timeout(600)
@pytest.mark.parametrize("precision", [pytest.param("bf16", marks=needs_cpu_bf16), "int8"])
def test_bench_reports_tile_units_decoder_points_and_the_cost_of_the_precision(precision):
    settings = ModelSettings(profile="tiny", foreground="sam+isnet", precision=precision)
    report = run_bench(settings, frames=2, batch=2, naive_frames=0, width=320, height=240)
    assert report["reference_tile_ms"] > 0 and report["reference_check"]["reference_tile_ms_after"] > 0
    fast = report["optimised"]
    assert fast["tile_units_per_frame"] == pytest.approx(fast["ms_per_frame"] / report["reference_tile_ms"], abs=0.01)
    assert set(fast["stage_tile_units"]) == set(fast["stage_ms_per_frame"])
    points = report["sam_decoder_points"]
    assert points["full_grid"] == 16 and 0 <= points["decoded_per_frame"] <= 16  # the tiny profile's 4x4 grid
    deviation = report["precision_deviation_vs_fp32"]
    assert deviation["precision"] == precision and deviation["frames"] == 2
    assert report["bf16_matmul_speedup"] is None  # timed only when models.precision=auto needs it
    assert 0.0 <= deviation["max_image_score_diff"] <= 1.0 and 0.0 < deviation["max_anomaly_map_diff"] <= 1.0
