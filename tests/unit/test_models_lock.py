"""Trust on first use: the models folder's lock fills null pins, never overrides a pin, and workers check both."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from common.settings import ModelSettings
from worker.inspection.models.catalog import PINS_FILE, load_catalog
from worker.inspection.models.integrity import WeightsMismatch, check_files, require_intact
from worker.inspection.models.lock import load_lock, locked, record


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_record_merges_sources_and_locked_fills_only_null_pins(tmp_path):
    record(tmp_path, "clip", "c" * 40, {"open_clip_pytorch_model.bin": "1" * 64})
    record(tmp_path, "clipseg", "d" * 40, {"config.json": "2" * 64})
    record(tmp_path, "clipseg", None, {"vocab.json": "3" * 64})  # a later file keeps the revision
    lock = load_lock(tmp_path)
    assert lock["clip"]["revision"] == "c" * 40
    assert lock["clipseg"] == {"revision": "d" * 40, "files": {"config.json": "2" * 64, "vocab.json": "3" * 64}}

    catalog = load_catalog()
    clip, filled = locked(catalog["clip"], lock)
    assert clip.revision == "c" * 40 and clip.files["open_clip_pytorch_model.bin"] == "1" * 64
    assert filled == {"open_clip_pytorch_model.bin"}
    pinned = catalog["sam_vit_b"]  # a pin wins: a lock entry for a pinned file is ignored
    lock["sam_vit_b"] = {"revision": None, "files": {"sam_vit_b_01ec64.pth": "4" * 64}}
    assert locked(pinned, lock) == (pinned, set())


def test_a_corrupt_lock_is_named(tmp_path):
    (tmp_path / "lock.json").write_text("{not json")
    with pytest.raises(ValueError, match="lock.json is not valid JSON"):
        load_lock(tmp_path)


def _folder(tmp_path: Path) -> tuple[ModelSettings, Path, Path]:
    """A models folder with a CLIP file (locked) and a SAM file (pinned, through a pins file of the test's)."""
    pins = json.loads(PINS_FILE.read_text())
    sam_bytes, clip_bytes = b"sam weights", b"clip weights"
    pins["sam_vit_b"]["files"] = {"sam_vit_b_01ec64.pth": _sha(sam_bytes)}
    pins_file = tmp_path / "pins.json"
    pins_file.write_text(json.dumps(pins))
    models = tmp_path / "models"
    (models / "clip").mkdir(parents=True)
    (models / "sam").mkdir()
    clip, sam = models / "clip" / "open_clip_pytorch_model.bin", models / "sam" / "sam_vit_b_01ec64.pth"
    clip.write_bytes(clip_bytes)
    sam.write_bytes(sam_bytes)
    record(models, "clip", "c" * 40, {clip.name: _sha(clip_bytes)})
    settings = ModelSettings(models_dir=models, pins_file=pins_file, foreground="sam+isnet")
    return settings, clip, sam


def test_check_files_compares_each_present_file_with_its_pin_or_lock(tmp_path):
    settings, clip, sam = _folder(tmp_path)
    checks = {check.path: check for check in check_files(settings)}
    assert set(checks) == {clip, sam}  # CLIPSeg and IS-Net are absent: the loader reports those
    assert checks[clip].origin == "lock" and checks[sam].origin == "pin" and all(c.ok for c in checks.values())
    assert require_intact(settings)
    # A random profile loads no CLIP, CLIPSeg or SAM file, so none is checked.
    assert check_files(settings.model_copy(update={"profile": "tiny"})) == []


def test_require_intact_refuses_a_changed_file_naming_it_and_both_digests(tmp_path):
    settings, clip, sam = _folder(tmp_path)
    expected = _sha(clip.read_bytes())
    clip.write_bytes(b"clip weights, edited")
    with pytest.raises(WeightsMismatch) as caught:
        require_intact(settings)
    message = str(caught.value)
    assert f"{clip}: sha256 {_sha(b'clip weights, edited')}, expected {expected} (lock)" in message
    assert str(sam) not in message  # the intact one is not named


def test_a_file_without_pin_or_lock_is_reported_unverified_not_refused(tmp_path):
    settings, clip, _ = _folder(tmp_path)
    (settings.models_dir / "lock.json").unlink()
    (check,) = [c for c in check_files(settings) if c.path == clip]
    assert check.ok and check.origin == "none" and check.describe().startswith("unverified")


def test_the_isnet_pin_is_the_one_make_models_checks():
    import importlib.util

    spec = importlib.util.spec_from_file_location("fetch_isnet", Path(__file__).parents[2] / "scripts/fetch_isnet.py")
    fetch_isnet = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fetch_isnet)
    isnet = load_catalog()["isnet"]
    size, digest = fetch_isnet.PINNED[(isnet.revision, fetch_isnet.DEFAULT_VARIANT)]
    assert isnet.files == {"isnet.onnx": digest} and isnet.repo == fetch_isnet.PACKAGE
