"""`calibrate --out` on synthetic good frames, then `inspect --calibration` on other frames
(tiny profile, no foreground stage, no broker): the results carry the record's thresholds."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from common.control import normalised_score
from common.schemas import InspectionResult
from producer.sources.synthetic import SyntheticSource
from worker.calibration.record import read_record_file
from worker.cli import main

pytestmark = pytest.mark.timeout(600)

OBJECT = "washer"


def write_good_frames(folder: Path, count: int, seed: int) -> list[Path]:
    """`count` defect-free frames of the synthetic conveyor scene as PNG files."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for frame in SyntheticSource(width=96, height=72, seed=seed, defect_rate=0.0, limit=count):
        path = folder / f"{frame.name}.png"
        cv2.imwrite(str(path), cv2.cvtColor(frame.rgb, cv2.COLOR_RGB2BGR))
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def frames(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    root = tmp_path_factory.mktemp("frames")
    return {"good": write_good_frames(root / "good", 19, seed=1), "new": write_good_frames(root / "new", 3, seed=2)}


TINY = ["--profile", "tiny", "--foreground", "none"]


def inspect(paths: list[Path], *extra: str, capsys) -> list[InspectionResult]:
    capsys.readouterr()
    assert main(["inspect", *map(str, paths), "--object", OBJECT, *TINY, *extra]) == 0
    return [InspectionResult.model_validate_json(line) for line in capsys.readouterr().out.splitlines()]


def test_calibrate_then_inspect_applies_the_record(frames, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cal.json"
    code = main(
        ["calibrate", *map(str, frames["good"]), "--object", OBJECT, "--target-fpr", "0.05", "--out", str(out)]
        + ["--by", "tester", "--no-progress", *TINY]
    )
    assert code == 0
    assert f"scope object:{OBJECT} version 1" in capsys.readouterr().out
    loaded = read_record_file(out)
    record = loaded.record
    assert loaded.scope == f"object:{OBJECT}" and record.version == 1
    assert record.calibration.n == record.calibration.pixel_n == 19
    assert record.calibration.target_fpr == 0.05 and record.calibration.by == record.updated_by == "tester"
    assert set(record.calibration.quantiles) == {"p50", "p90", "p99", "max"}

    # n = 19 at 0.05: k = 19, so the threshold lies just above the highest normal score
    calibrated = inspect(frames["good"], "--calibration", str(out), capsys=capsys)
    raw = np.array([r.raw_score for r in calibrated])
    assert record.calibration.quantiles["max"] == pytest.approx(raw.max())
    assert record.image_threshold == np.nextafter(raw.max(), 1.0)
    assert all(r.verdict == "ok" for r in calibrated)

    for result in inspect(frames["new"], "--calibration", str(out), capsys=capsys):
        assert result.threshold == record.image_threshold
        assert result.versions.threshold_version == f"object:{OBJECT}@v1"
        assert result.score == pytest.approx(normalised_score(result.raw_score, record.image_threshold))
        assert result.verdict == ("anomalous" if result.raw_score >= record.image_threshold else "ok")


def test_the_pixel_threshold_leaves_normal_masks_empty(frames, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cal.json"
    args = ["calibrate", *map(str, frames["good"]), "--object", OBJECT, "--target-fpr", "0.05"]
    assert main([*args, "--out", str(out), "--version", "4", "--no-progress", *TINY]) == 0
    record = read_record_file(out).record
    results = inspect(frames["good"], "--calibration", str(out), capsys=capsys)
    assert all(r.versions.threshold_version == f"object:{OBJECT}@v4" for r in results)
    # without a foreground stage the whole map is the foreground: every calibration frame's
    # map stays below the pixel threshold, so no defect pixel and no region
    assert all(not r.regions for r in results)
    static = inspect(frames["good"][:2], capsys=capsys)
    assert all(r.versions.threshold_version == "static-0.5" and r.threshold == 0.5 for r in static)
    assert record.pixel_threshold is not None and 0.0 < record.pixel_threshold <= 1.0


def test_too_few_frames_are_refused_naming_how_many_are_needed(frames, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cal.json"
    code = main(
        ["calibrate", *map(str, frames["good"][:18]), "--object", OBJECT, "--target-fpr", "0.05"]
        + ["--out", str(out), *TINY]
    )
    assert code == 2
    assert (
        "18 normal frames cannot bound the false-alarm rate at 0.05: at least 19 are needed" in capsys.readouterr().err
    )
    assert not out.exists()


def test_unreadable_frames_are_skipped_and_counted_out(frames, tmp_path: Path, capsys) -> None:
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image")
    code = main(
        ["calibrate", str(junk), *map(str, frames["good"][:18]), "--object", OBJECT, "--target-fpr", "0.05", *TINY]
    )
    err = capsys.readouterr().err
    assert code == 2 and f"skipped: {junk}" in err and "18 normal frames" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target-fpr", "0.05"], "give good frames"),
        (["--target-fpr", "0.05", "--from-topic", "--frames", "5"], "--from-topic needs --camera"),
        (["--target-fpr", "0.05", "x.png", "--frames", "5"], "--frames goes with --from-topic"),
        (["--target-fpr", "0.05", "x.png", "--publish", "--version", "2"], "numbers the version itself"),
    ],
)
def test_bad_arguments(args: list[str], message: str, capsys) -> None:
    assert main(["calibrate", "--object", OBJECT, *args]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("rate", ["0", "1", "-0.1", "abc"])
def test_bad_rates_are_usage_errors(rate: str, capsys) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["calibrate", "x.png", "--object", OBJECT, "--target-fpr", rate])
    assert caught.value.code == 2 and "--target-fpr" in capsys.readouterr().err


def test_inspect_refuses_bad_record_files(frames, tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.json"
    cases = {
        "not json": "not JSON",
        json.dumps({"record": {}}): 'expected {"scope"',
        json.dumps({"scope": "nonsense", "record": {"version": 1}}): "not a control scope",
        json.dumps({"scope": "object:washer", "record": {"version": 0}}): "version",
        json.dumps({"scope": "object:bolt", "record": {"version": 1}}): "calibrated for 'bolt'",
    }
    for text, message in cases.items():
        bad.write_text(text)
        assert main(["inspect", str(frames["new"][0]), "--object", OBJECT, *TINY, "--calibration", str(bad)]) == 2
        assert message in capsys.readouterr().err, text
    assert main(["inspect", str(frames["new"][0]), "--object", OBJECT, "--calibration", str(tmp_path / "no")]) == 2
    assert "cannot read" in capsys.readouterr().err
