"""`eval` end to end on synthetic MVTec AD / VisA / folder trees (no broker needed, so unit).

Most tests use a fake inspector that finds the synthetic defect blotches by
colour, so the metrics are known (image AUROC 1). The `slow` tests run the
real Inspector with the tiny random-weight profile (scores meaningless) and
check the outputs exist and parse.
"""

from __future__ import annotations

import argparse
import csv
import json
import math

import cv2
import numpy as np
import pytest

from tests.support.synthetic_datasets import DEFECT_RGB, corrupt, write_folder, write_mvtec, write_visa
from worker.eval.cli import add_eval_parser, run_eval
from worker.inspection.types import Frame, Inspection

METRIC_KEYS = ("image_auroc", "image_ap", "image_f1_max", "pixel_auroc", "pixel_ap", "pixel_f1_max", "pixel_aupro")


class BlotchInspector:
    """Anomaly map = 0.9 where a pixel has the synthetic defect colour, else 0.05; score = map max."""

    versions = {"model_fingerprint": "fake-blotch", "profile": "fake"}

    def __init__(self) -> None:
        self.object_names: set[str] = set()
        self.batch_sizes: list[int] = []

    def inspect(self, frames: list[Frame]) -> list[Inspection]:
        self.batch_sizes.append(len(frames))
        results = []
        for frame in frames:
            self.object_names.add(frame.object_name)
            distance = np.abs(frame.image.astype(np.int16) - np.array(DEFECT_RGB, np.int16)).sum(axis=2)
            anomaly_map = np.where(distance < 60, 0.9, 0.05).astype(np.float32)
            foreground = np.ones(anomaly_map.shape, bool)
            results.append(Inspection(frame.frame_id, float(anomaly_map.max()), anomaly_map, foreground))
        return results


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_eval_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["eval", *argv])


def run_fake(argv: list[str]) -> tuple[int, BlotchInspector]:
    inspector = BlotchInspector()
    return run_eval(parse([*argv, "--no-progress"]), inspector_factory=lambda settings: inspector), inspector


def check_outputs(out, categories: list[str], worst: int) -> dict:
    """results.json / results.csv parse and agree; overlays exist per category; returns the JSON."""
    results = json.loads((out / "results.json").read_text())
    assert list(results["categories"]) == categories
    for record in [*results["categories"].values(), results["mean"]]:
        for key in METRIC_KEYS:
            value = record[key]
            assert value is None or 0.0 <= value <= 1.0, (key, value)
    with (out / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["category"] for r in rows] == [*categories, "Mean"]
    assert results["peak_rss_mb"] > 0 and results["n_images"] > 0
    for category in categories:
        for kind in ("fp", "fn"):
            files = sorted((out / category).glob(f"worst_{kind}_*.png"))
            assert len(files) == worst, (category, kind, files)
            picture = cv2.imread(str(files[0]))
            assert picture is not None and picture.ndim == 3
    return results


@pytest.fixture(scope="module")
def mvtec_root(tmp_path_factory):
    return write_mvtec(tmp_path_factory.mktemp("mvtec"), size=128)


@pytest.fixture(scope="module")
def visa_root(tmp_path_factory):
    return write_visa(tmp_path_factory.mktemp("visa"), size=128)


def test_mvtec_end_to_end_with_known_answers(mvtec_root, tmp_path, capsys):
    out = tmp_path / "out"
    code, inspector = run_fake(["--dataset", "mvtec", "--root", str(mvtec_root), "--out", str(out), "--worst", "2"])
    assert code == 0
    printed = capsys.readouterr().out
    header = next(line for line in printed.splitlines() if "bottle" in line and "Mean" in line)
    assert header.split() == ["bottle", "metal_nut", "Mean"]
    assert "image AUROC" in printed and "pixel AUPRO@0.3" in printed and "100.0" in printed
    results = check_outputs(out, ["bottle", "metal_nut"], worst=2)
    for record in results["categories"].values():
        assert record["n_images"] == 6 and record["n_anomalous"] == 3 and record["n_pixel_images"] == 6
        assert record["image_auroc"] == 1.0 and record["image_f1_max"] == 1.0
        assert record["pixel_auroc"] > 0.97 and record["pixel_aupro"] > 0.9
    assert inspector.object_names == {"bottle", "metal nut"}
    assert max(inspector.batch_sizes) == 4
    assert "seed_reference_f1_max_x100" not in results


def test_visa_end_to_end_prints_the_seed_reference(visa_root, tmp_path, capsys):
    out = tmp_path / "out"
    code, inspector = run_fake(
        [
            "--dataset",
            "visa",
            "--root",
            str(visa_root),
            "--out",
            str(out),
            "--worst",
            "1",
            "--categories",
            "candle,pcb1",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "Sample-level F1-max (paper Table 1)" in printed and "Pixel-level F1-max (paper Table 2)" in printed
    vvv_rows = [line for line in printed.splitlines() if line.startswith("Variance Vigilance Vanguard")]
    assert vvv_rows[0].split()[-3:] == ["82.1", "74.3", f"{(82.1 + 74.3) / 2:.1f}"]  # candle, pcb1, Mean*
    assert vvv_rows[1].split()[-3:-1] == ["20.2", "29.5"]
    results = check_outputs(out, ["candle", "pcb1"], worst=1)
    assert results["categories"]["pcb1"]["object_name"] == "printed circuit board"
    assert results["categories"]["pcb1"]["image_auroc"] == 1.0
    assert results["seed_reference_f1_max_x100"]["image.f1_max"]["WinCLIP"]["Mean"] == 79.0
    assert inspector.object_names == {"candle", "printed circuit board"}


def test_limit_and_object_name_override(mvtec_root, tmp_path):
    out = tmp_path / "out"
    code, inspector = run_fake(
        [
            "--dataset",
            "mvtec",
            "--root",
            str(mvtec_root),
            "--out",
            str(out),
            "--limit",
            "4",
            "--object-name",
            "widget",
            "--worst",
            "0",
        ]
    )
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    for record in results["categories"].values():
        assert record["n_images"] == 4 and record["n_normal"] == 2 and record["n_anomalous"] == 2
    assert inspector.object_names == {"widget"}
    assert not list(out.glob("*/worst_*.png"))


def test_folder_without_masks_reports_image_metrics_only(tmp_path, capsys):
    root = write_folder(tmp_path / "gear", masks=None, size=64)
    out = tmp_path / "out"
    code, _ = run_fake(["--dataset", "folder", "--root", str(root), "--out", str(out), "--worst", "1"])
    assert code == 0
    record = json.loads((out / "results.json").read_text())["categories"]["gear"]
    assert record["image_auroc"] == 1.0 and record["pixel_auroc"] is None
    assert record["n_anomalous_without_mask"] == 3
    pixel_row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("pixel AUROC"))
    assert pixel_row.split()[-2:] == ["n/a", "n/a"]


@pytest.mark.parametrize(
    ("kind", "expected"), [("mvtec", "test/good"), ("visa", "split_csv/1cls.csv"), ("folder", "good")]
)
def test_wrong_root_gives_a_clear_error(tmp_path, capsys, kind, expected):
    code, inspector = run_fake(["--dataset", kind, "--root", str(tmp_path), "--out", str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and expected in err and str(tmp_path) in err
    assert inspector.batch_sizes == []  # failed before any inspection


def test_unreadable_files_are_skipped_and_counted(tmp_path, capsys):
    root = write_mvtec(tmp_path / "data", categories=("bottle",), size=64)
    broken_image = corrupt(root / "bottle" / "test" / "good" / "001.png")
    corrupt(root / "bottle" / "ground_truth" / "scratch" / "000_mask.png")
    out = tmp_path / "out"
    code, _ = run_fake(["--dataset", "mvtec", "--root", str(root), "--out", str(out), "--worst", "1"])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["skipped_files"]["count"] == 2
    assert str(broken_image) in results["skipped_files"]["examples"][0]
    assert results["categories"]["bottle"]["n_images"] == 4
    assert "skipped 2 unreadable file(s)" in capsys.readouterr().out


def test_lead_cli_registers_eval():
    from worker.cli import build_parser

    args = build_parser().parse_args(["eval", "--dataset", "visa", "--root", "/x", "--worst", "5"])
    assert args.command == "eval" and args.worst == 5 and args.limit is None


def test_worst_cases_keep_the_extremes_only():
    from pathlib import Path

    from worker.eval.datasets import Sample
    from worker.eval.overlays import MAP_SIDE, WorstCases

    worst = WorstCases(2)
    big_map = np.zeros((1500, 1000), np.float32)
    for i, (label, score) in enumerate([(0, 0.1), (0, 0.9), (0, 0.5), (0, 0.7), (1, 0.2), (1, 0.05), (1, 0.8)]):
        worst.offer(Sample("c", Path(f"{i}.png"), label, "d", None, True), score, big_map)
    assert [c.score for c in worst.false_positives()] == [0.9, 0.7]
    assert [c.score for c in worst.false_negatives()] == [0.05, 0.2]
    kept = worst.false_positives()[0].small_map
    assert max(kept.shape) == MAP_SIDE and kept.dtype == np.float16


def test_reference_mean_is_the_published_one_for_all_twelve_categories():
    from worker.eval.datasets import VISA_CATEGORIES
    from worker.eval.metrics import ImageMetrics, PixelMetrics
    from worker.eval.report import reference_tables
    from worker.eval.runner import CategoryResult

    results = [
        CategoryResult(c, c, 2, 1, 1, 2, 0, ImageMetrics(1.0, 1.0, 0.5), PixelMetrics(0.5, 0.5, 0.25, 0.5), 0.0, [])
        for c in VISA_CATEGORIES
    ]
    text = reference_tables(results)
    assert "Mean*" not in text
    lines = [line for line in text.splitlines() if line.startswith("WinCLIP")]
    assert lines[0].split()[-1] == "79.0" and lines[1].split()[-1] == "14.8"  # published, not recomputed (79.1)
    ours = [line for line in text.splitlines() if line.startswith("linewatch")]
    assert ours[0].split()[-1] == "50.0" and ours[1].split()[-1] == "25.0"


# --------------------------------------------------------------------------- the real tiny Inspector


@pytest.fixture
def tiny_without_isnet_file(monkeypatch):
    """The tiny profile still loads the IS-Net ONNX file for foreground; tests cannot rely on it,
    so foreground is off (the CLIP and CLIPSeg stages still run)."""
    pytest.importorskip("worker.inspection.inspector")
    monkeypatch.setenv("LINEWATCH_MODELS__FOREGROUND", "none")
    monkeypatch.setenv("LINEWATCH_MODELS__DEVICE", "cpu")


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["mvtec", "visa"])
def test_tiny_profile_end_to_end(dataset, mvtec_root, visa_root, tmp_path, capsys, tiny_without_isnet_file):
    root = mvtec_root if dataset == "mvtec" else visa_root
    out = tmp_path / "out"
    code = run_eval(
        parse(
            [
                "--dataset",
                dataset,
                "--root",
                str(root),
                "--profile",
                "tiny",
                "--limit",
                "4",
                "--worst",
                "1",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "Mean" in printed and "meaningless" in printed
    categories = ["bottle", "metal_nut"] if dataset == "mvtec" else ["pcb1", "candle"]
    results = check_outputs(out, categories, worst=1)
    assert results["profile"] == "tiny" and results["versions"]["profile"] == "tiny"
    for record in results["categories"].values():
        assert record["n_images"] == 4
        assert all(record[key] is not None and not math.isnan(record[key]) for key in METRIC_KEYS)
