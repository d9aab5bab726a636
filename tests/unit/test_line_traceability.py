"""Part traceability in frame headers and results, pixel formats, frame-counter gaps."""

from __future__ import annotations

import argparse
import json
import textwrap

import numpy as np
import pytest

from common.messages import frame_headers, parse_frame_meta
from common.schemas import FRAME_HEADER, Traceability
from producer.counters import FrameCounterWatch, counter_step
from producer.line_args import GapReporter, frame_traceability
from producer.publisher import build_frame_meta
from producer.sources.base import Frame
from producer.sources.pixels import PixelFormatError, to_rgb
from tests.support.line_sinks import make_result
from worker.alarms.config import parse_rules_text
from worker.alarms.rules import RuleEngine
from worker.dashboard.state import summary


def _meta(**extra):
    return build_frame_meta(
        camera_id="cam-1", line_id="line-1", object_name="washer", content_type="image/jpeg", width=4, height=4, **extra
    )


def test_frame_without_traceability_keeps_the_old_header():
    headers = frame_headers(_meta())
    fields = json.loads(dict(headers)[FRAME_HEADER])
    assert "traceability" not in fields  # an older reader (extra=forbid) still accepts it
    assert parse_frame_meta(headers).traceability is None


def test_traceability_round_trips_through_the_header():
    trace = Traceability(part_id="P-0042", recipe="R7", lot="L-3", frame_counter=65535, hardware_timestamp_ns=12)
    meta = parse_frame_meta(frame_headers(_meta(traceability=trace)))
    assert meta.traceability == trace


def test_empty_traceability_is_left_out():
    assert _meta(traceability=Traceability()).traceability is None


def test_part_id_must_be_printable():
    with pytest.raises(ValueError):
        Traceability(part_id="P\n1")


def test_producer_never_invents_a_part_id():
    args = argparse.Namespace(recipe="R1", lot=None)
    frame = Frame(rgb=np.zeros((2, 2, 3), np.uint8), index=0, frame_counter=7, hardware_timestamp_ns=99)
    trace = frame_traceability(frame, args)
    assert trace.part_id is None and trace.recipe == "R1" and trace.frame_counter == 7


@pytest.mark.parametrize(
    ("previous", "current", "missed", "reset"),
    [
        (None, 5, 0, False),
        (5, 6, 0, False),
        (5, 9, 3, False),
        (65535, 1, 0, False),
        (65534, 2, 2, False),
        (900, 3, 0, True),
    ],
)
def test_counter_steps(previous, current, missed, reset):
    step = counter_step(previous, current)
    assert (step.missed, step.reset) == (missed, reset)


def test_gap_reporter_counts_and_logs(caplog):
    reporter = GapReporter("cam-7")
    for counter in (10, 11, 14, 15, 17):
        reporter.observe(Frame(rgb=np.zeros((1, 1, 3), np.uint8), index=0, frame_counter=counter))
    assert (reporter.watch.gaps, reporter.watch.missed) == (2, 3)
    assert sum("frame(s) missed" in r.message for r in caplog.records) == 2
    assert isinstance(reporter.watch, FrameCounterWatch)


def _mosaic(rgb: np.ndarray, pattern: str) -> np.ndarray:
    channel = {"R": 0, "G": 1, "B": 2}
    out = np.zeros(rgb.shape[:2], np.uint8)
    for dy in range(2):
        for dx in range(2):
            out[dy::2, dx::2] = rgb[dy::2, dx::2, channel[pattern[dy * 2 + dx]]]
    return out


@pytest.mark.parametrize(
    ("name", "pattern"), [("BayerRG8", "RGGB"), ("BayerBG8", "BGGR"), ("BayerGR8", "GRBG"), ("BayerGB8", "GBRG")]
)
def test_bayer_formats_give_the_scene_colour(name, pattern):
    scene = np.zeros((8, 8, 3), np.uint8)
    scene[...] = (200, 100, 30)
    rgb = to_rgb(_mosaic(scene, pattern).tobytes(), 8, 8, name)
    assert np.abs(rgb[2:6, 2:6].astype(int) - scene[2:6, 2:6]).max() <= 2


def test_mono_and_rgb_formats():
    mono = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert (to_rgb(mono.tobytes(), 4, 3, "Mono8") == mono[..., None]).all()
    rgb = np.random.default_rng(0).integers(0, 255, (3, 4, 3), dtype=np.uint8)
    assert (to_rgb(rgb.tobytes(), 4, 3, "RGB8") == rgb).all()
    assert (to_rgb(rgb[..., ::-1].tobytes(), 4, 3, "BGR8") == rgb).all()


def test_unknown_or_short_buffers_are_refused():
    with pytest.raises(PixelFormatError, match="not supported"):
        to_rgb(b"\0" * 32, 4, 4, "Mono16")
    with pytest.raises(PixelFormatError, match="needs 48"):
        to_rgb(b"\0" * 10, 4, 4, "RGB8")


def test_alarm_events_name_the_parts_of_their_frames():
    rules = parse_rules_text(
        textwrap.dedent(
            """
            rules:
              - name: two-of-three
                kind: anomaly
                debounce: {anomalous: 2, of_last: 3}
            """
        ),
        "test.yaml",
    )
    engine = RuleEngine(rules, clock=lambda: 1_700_000_000.0)
    alarms = []
    untraced = make_result(2, verdict="anomalous").model_copy(update={"traceability": None})
    for result in (make_result(1, verdict="anomalous"), make_result(9), untraced):
        alarms += engine.observe(result, None)
    assert len(alarms) == 1
    assert alarms[0].frame_ids == ["frame-cam-1-1", "frame-cam-1-2"]
    assert alarms[0].part_ids == ["P-0001", None]
    tile = summary(make_result(5))
    assert (tile["part_id"], tile["recipe"], tile["lot"], tile["frame_counter"]) == ("P-0005", "R-1", "L-1", 5)
