"""IS-Net salient-object model: pre- and post-processing and errors, without the model file
(the real model's tests are in tests/integration/test_isnet_model.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.support.synthetic import make_synthetic_scene
from worker.inspection.models.isnet import INPUT_SIZE, IsNetSalientModel, load_isnet


# --------------------------------------------------------------------------- no model needed
def test_missing_file_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "isnet.onnx"
    with pytest.raises(FileNotFoundError) as exc:
        load_isnet(missing)
    msg = str(exc.value)
    assert str(missing) in msg
    assert "make models" in msg


def test_preprocess_normalisation() -> None:
    img = np.zeros((10, 20, 3), np.uint8)
    img[..., 0] = 255
    img[..., 1] = 0
    img[..., 2] = 128
    x = IsNetSalientModel.preprocess(img)
    assert x.shape == (3, INPUT_SIZE, INPUT_SIZE) and x.dtype == np.float32
    # (x / 255 - 0.5) / 1.0
    np.testing.assert_allclose(x[0], 0.5, atol=1e-6)
    np.testing.assert_allclose(x[1], -0.5, atol=1e-6)
    np.testing.assert_allclose(x[2], 128 / 255 - 0.5, atol=1e-6)
    with pytest.raises(ValueError):
        IsNetSalientModel.preprocess(np.zeros((10, 20), np.uint8))
    with pytest.raises(ValueError):
        IsNetSalientModel.preprocess(np.zeros((10, 20, 3), np.float32))


def test_postprocess_minmax_and_resize() -> None:
    raw = np.linspace(0.2, 0.6, INPUT_SIZE * INPUT_SIZE, dtype=np.float32).reshape(INPUT_SIZE, INPUT_SIZE)
    out = IsNetSalientModel.postprocess(raw, 30, 50)
    assert out.shape == (30, 50) and out.dtype == np.float32
    assert 0.0 <= out.min() < 0.05 and 0.95 < out.max() <= 1.0
    flat = IsNetSalientModel.postprocess(np.full((INPUT_SIZE, INPUT_SIZE), 0.3, np.float32), 8, 8)
    assert not flat.any()


def test_synthetic_scene_contract() -> None:
    a = make_synthetic_scene(seed=3, size=(240, 320), n_objects=3, defects={1: "stain", 2: "scratch"})
    b = make_synthetic_scene(seed=3, size=(240, 320), n_objects=3, defects={1: "stain", 2: "scratch"})
    np.testing.assert_array_equal(a.image, b.image)
    assert a.image.shape == (240, 320, 3) and a.image.dtype == np.uint8
    assert len(a.object_masks) == 3 and all(m.dtype == bool and m.any() for m in a.object_masks)
    assert not np.logical_and(a.object_masks[0], a.object_masks[1]).any()
    assert a.defect_mask.any()
    assert not (a.defect_mask & a.object_masks[0]).any()  # object 0 has no defect
    assert (a.defect_mask & ~(a.object_masks[1] | a.object_masks[2])).sum() == 0
    assert [o.defect for o in a.objects] == [None, "stain", "scratch"]
    clean = make_synthetic_scene(seed=3, size=(240, 320), n_objects=3)
    assert not clean.defect_mask.any()


@pytest.mark.parametrize(("omp", "asked", "expected"), [("1", None, 1), ("3", None, 3), ("1", 2, 2)])
def test_onnxruntime_takes_the_thread_budget_torch_takes(monkeypatch, omp, asked, expected) -> None:
    """OMP_NUM_THREADS (a CPU-limited pod's budget) bounds onnxruntime's pool as it bounds torch's,
    unless the caller asks for a number."""
    from worker.inspection.models.isnet import default_isnet_path

    if not default_isnet_path().is_file():
        pytest.fail(f"{default_isnet_path()} is missing; run `make models`")
    monkeypatch.setenv("OMP_NUM_THREADS", omp)
    model = load_isnet(default_isnet_path(), providers=["CPUExecutionProvider"], intra_op_num_threads=asked)
    assert model.session.get_session_options().intra_op_num_threads == expected
