"""`eval --shots K --seeds ...` and `eval --pool M` end to end on the synthetic MVTec AD tree (tiny profile)."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest

from tests.support.synthetic_datasets import write_mvtec
from worker.eval.cli import add_eval_parser, run_eval
from worker.eval.datasets import DatasetLayoutError, open_dataset
from worker.eval.fewshot import draw_references, train_good_images

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mvtec_root(tmp_path_factory):
    return write_mvtec(tmp_path_factory.mktemp("mvtec-fewshot"), size=128, n_good=4, n_train=4)


@pytest.fixture(autouse=True)
def _tiny(monkeypatch):
    monkeypatch.setenv("LINEWATCH_MODELS__FOREGROUND", "none")
    monkeypatch.setenv("LINEWATCH_MODELS__DEVICE", "cpu")


def run(root, out, *extra: str) -> int:
    parser = argparse.ArgumentParser()
    add_eval_parser(parser.add_subparsers(dest="command"))
    argv = ["eval", "--dataset", "mvtec", "--root", str(root), "--profile", "tiny", "--worst", "0"]
    return run_eval(parser.parse_args([*argv, "--out", str(out), "--no-progress", *extra]))


def test_references_are_drawn_reproducibly_from_train_good(mvtec_root):
    paths = train_good_images(open_dataset("mvtec", mvtec_root), "bottle")
    assert [p.parent.name for p in paths] == ["good"] * 4 and all(p.parent.parent.name == "train" for p in paths)
    assert draw_references(paths, 2, seed=0) == draw_references(paths, 2, seed=0)
    assert len({tuple(draw_references(paths, 2, seed=s)) for s in range(6)}) > 1
    with pytest.raises(DatasetLayoutError, match="needs 5"):
        draw_references(paths, 5, seed=0)


def test_eval_shots_2_reports_the_mean_over_seeds(mvtec_root, tmp_path, capsys):
    out = tmp_path / "shots"
    assert run(mvtec_root, out, "--shots", "2", "--seeds", "0,1,2") == 0
    printed = capsys.readouterr().out
    assert "image AUROC [2-shot (mean of seeds 0,1,2)]" in printed and "image AUROC [seed 2]" in printed
    results = json.loads((out / "results.json").read_text())
    assert results["mode"] == "2-shot (mean of seeds 0,1,2)" and sorted(results["per_seed"]) == ["0", "1", "2"]
    for category, record in results["categories"].items():
        per_seed = [results["per_seed"][s][category]["image_auroc"] for s in ("0", "1", "2")]
        assert record["n_images"] == 7 and not math.isnan(record["image_auroc"])
        assert abs(record["image_auroc"] - float(np.mean(per_seed))) < 1e-5  # the JSON rounds to 6 digits


def test_eval_pool_8_runs_label_free(mvtec_root, tmp_path, capsys):
    out = tmp_path / "pool"
    assert run(mvtec_root, out, "--pool", "8") == 0
    assert "image AUROC [pool 8]" in capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert results["mode"] == "pool 8" and "per_seed" not in results
    assert all(r["image_auroc"] is not None for r in results["categories"].values())


def test_eval_shots_beyond_the_training_images_is_a_layout_error(mvtec_root, tmp_path, capsys):
    assert run(mvtec_root, tmp_path / "x", "--shots", "9") == 2
    assert "--shots 9 needs 9" in capsys.readouterr().err
