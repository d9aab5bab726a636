"""Where the default profile looks for weights (published names), and what `models check` says."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from common.settings import ModelSettings
from worker.inspection.models import locate
from worker.inspection.pipeline.scoring import tile_anomaly_scores

REPO = Path(__file__).resolve().parents[2]


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_clip_is_found_under_each_published_name_in_order(tmp_path):
    settings = ModelSettings(models_dir=tmp_path)
    assert locate.find_clip(settings) is None
    legacy = _touch(tmp_path / "clip" / "ViT-B-16-plus-240-laion400m_e32.safetensors")
    assert locate.find_clip(settings) == legacy
    release = _touch(tmp_path / "clip" / "vit_b_16_plus_240-laion400m_e32-699c4b84.pt")  # open_clip's release name
    assert locate.find_clip(settings) == release
    hub_bin = _touch(tmp_path / "clip" / "open_clip_pytorch_model.bin")
    assert locate.find_clip(settings) == hub_bin
    hub_safetensors = _touch(tmp_path / "clip" / "open_clip_model.safetensors")
    assert locate.find_clip(settings) == hub_safetensors  # safetensors first: nothing to unpickle
    elsewhere = _touch(tmp_path / "mine.pt")
    assert locate.find_clip(settings.model_copy(update={"clip_pretrained": str(elsewhere)})) == elsewhere


def test_clipseg_folder_needs_only_config_and_the_cidas_files(tmp_path):
    settings = ModelSettings(models_dir=tmp_path, clipseg_model="no-such/repo")
    assert locate.find_clipseg(settings) is None
    for name in ("config.json", "vocab.json", "merges.txt"):  # no tokenizer.json, as CIDAS ships it
        _touch(tmp_path / "clipseg" / name)
    assert locate.find_clipseg(settings) == tmp_path / "clipseg"


def test_sam_is_found_under_meta_names_not_a_half_download(tmp_path):
    settings = ModelSettings(models_dir=tmp_path, sam_type="vit_l")
    _touch(tmp_path / "sam" / "sam_vit_l_0b3195.pth.part")
    _touch(tmp_path / "sam" / "sam_vit_b_01ec64.pth")
    assert locate.find_sam(settings) is None
    real = _touch(tmp_path / "sam" / "sam_vit_l_0b3195.pth")
    assert locate.find_sam(settings) == real


def test_tile_temperature_sharpens_the_two_way_softmax():
    rng = np.random.default_rng(0)
    unit = lambda a: a / np.linalg.norm(a, axis=-1, keepdims=True)  # noqa: E731
    tiles, normal, anomalous = (
        unit(rng.normal(size=(6, 8))),
        unit(rng.normal(size=(3, 8))),
        unit(rng.normal(size=(4, 8))),
    )
    soft = tile_anomaly_scores(tiles, normal, anomalous, 1 / 0.07)
    sharp = tile_anomaly_scores(tiles, normal, anomalous, 100.0)
    assert np.all(np.sign(soft - 0.5) == np.sign(sharp - 0.5))  # same side of 0.5 ...
    assert np.all(np.abs(sharp - 0.5) > np.abs(soft - 0.5))  # ... but further from it
    gap = (tiles @ anomalous.T).mean(1) - (tiles @ normal.T).mean(1)
    np.testing.assert_allclose(sharp, 1 / (1 + np.exp(-100.0 * gap)), rtol=1e-5)


def test_tile_temperature_setting_is_used_and_stamped_in_versions():
    from worker.inspection.inspector import build_inspector
    from worker.inspection.types import Frame

    image = np.full((64, 64, 3), 90, np.uint8)
    default = build_inspector(ModelSettings(profile="tiny", foreground="none", device="cpu"))
    assert default.versions.tile_temperature == pytest.approx(default.models.clip.logit_scale)
    swept = build_inspector(ModelSettings(profile="tiny", foreground="none", device="cpu", tile_temperature=1.0))
    assert swept.versions.tile_temperature == 1.0
    a, b = default.inspect([Frame("a", image, "screw")])[0], swept.inspect([Frame("b", image, "screw")])[0]
    assert abs(b.score - 0.5) < abs(a.score - 0.5) or a.score == b.score == 0.5


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LINEWATCH_")}
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args],
        cwd=REPO,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_models_check_names_each_missing_file_and_fails(tmp_path):
    done = _cli(
        "models",
        "check",
        "--no-load",
        LINEWATCH_MODELS__MODELS_DIR=str(tmp_path),
        LINEWATCH_MODELS__FOREGROUND="sam+isnet",
    )
    assert done.returncode == 1
    lines = {line.split()[0]: line for line in done.stdout.splitlines() if line.startswith("  ")}
    assert set(lines) == {"clip", "clipseg", "sam", "isnet"}
    assert "MISSING" in lines["clip"] and f"{tmp_path}/clip/open_clip_pytorch_model.bin" in lines["clip"]
    assert f"{tmp_path}/clipseg/" in lines["clipseg"] and "LINEWATCH_MODELS__CLIPSEG_MODEL" in lines["clipseg"]
    assert f"{tmp_path}/sam/sam_vit_b_" in lines["sam"] and f"{tmp_path}/isnet/isnet.onnx" in lines["isnet"]
    assert "cannot load" in done.stdout


def test_models_check_on_a_random_profile_says_so_and_passes():
    done = _cli(
        "models", "check", "--profile", "tiny", LINEWATCH_MODELS__FOREGROUND="none", LINEWATCH_MODELS__DEVICE="cpu"
    )
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    assert "RANDOM weights" in done.stdout and "profile tiny loads: fingerprint tiny-" in done.stdout
    clip = next(line for line in done.stdout.splitlines() if line.startswith("  clip"))
    assert clip.split()[1] == "random" and len(clip.split()[2]) == 16
