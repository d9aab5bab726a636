"""The synthetic producer's ground truth on the wire (`lw-synthetic-defect`), for the demo's AUROC and F1."""

import importlib.util
from pathlib import Path

import numpy as np

from producer.sources.base import Frame
from producer.sources.synthetic import DEFECT_HEADER, SyntheticSource, truth_headers


def test_synthetic_frames_carry_their_truth_and_other_sources_none():
    frames = list(SyntheticSource(width=160, height=120, seed=3, defect_rate=0.5, limit=12))
    headers = [truth_headers(frame) for frame in frames]
    assert all(len(h) == 1 and h[0][0] == DEFECT_HEADER for h in headers)
    assert [h[0][1] == b"1" for h in headers] == [frame.defective for frame in frames]
    assert 0 < sum(frame.defective for frame in frames) < 12
    assert truth_headers(Frame(np.zeros((4, 4, 3), np.uint8), 0)) == []  # a folder or camera frame: no truth


def _summary():
    path = Path(__file__).resolve().parents[2] / "scripts" / "demo_summary.py"
    spec = importlib.util.spec_from_file_location("demo_summary", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_demo_summary_scores_detection_against_the_truth():
    detection = _summary().detection
    truth = {"a": 1, "b": 1, "c": 0, "d": 0, "e": 0}
    scores = {"a": 0.9, "b": 0.4, "c": 0.5, "d": 0.1, "e": 0.2, "unknown": 0.3}
    verdicts = {"a": "anomalous", "b": "ok", "c": "anomalous", "d": "ok", "e": "calibrating", "unknown": "ok"}
    found = detection(truth, scores, verdicts)
    assert found["frames_with_truth"] == 5 and found["defective"] == 2
    assert abs(found["image_auroc"] - 5 / 6) < 1e-3  # 5 of the 6 (defect, good) pairs ordered right
    assert found["verdict_f1"] == 0.5  # tp 1 (a), fp 1 (c), fn 1 (b); e is still calibrating
