"""IS-Net salient-object model: the real weights on synthetic production-line frames.

Needs ``models/isnet/isnet.onnx`` (``make models``). When it is missing the
fixture runs ``scripts/fetch_isnet.py`` itself (a download: hence an integration
test) and fails (never skips) if that does not work.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from tests.support.synthetic import make_synthetic_scene
from worker.inspection.models.isnet import INPUT_SIZE, IsNetSalientModel, load_isnet

REPO = Path(__file__).resolve().parents[2]
MODEL_PATH = REPO / "models" / "isnet" / "isnet.onnx"
FETCH = REPO / "scripts" / "fetch_isnet.py"

# Connected components of the thresholded mask smaller than this fraction of
# the frame (0.1%: 307 px at 640x480, while every part covers > 2,000 px) are
# treated as specks and ignored.
SPECK_FRACTION = 0.001
THRESHOLD = 0.5


@pytest.fixture(scope="module")
def isnet() -> IsNetSalientModel:
    if not MODEL_PATH.is_file():
        proc = subprocess.run([sys.executable, str(FETCH)], cwd=REPO, capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0 or not MODEL_PATH.is_file():
            pytest.fail(
                f"{MODEL_PATH} is missing and `{FETCH.name}` could not fetch it "
                f"(exit {proc.returncode}); run `make models`.\n{proc.stdout}\n{proc.stderr}"
            )
    return load_isnet(MODEL_PATH)


def _components(mask: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """Label 8-connected components; return (labels, ids of non-speck components)."""
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if n == 0:
        return labels, []
    areas = ndimage.sum(mask, labels, index=np.arange(1, n + 1))
    min_area = SPECK_FRACTION * mask.size
    return labels, [i + 1 for i, a in enumerate(areas) if a >= min_area]


# --------------------------------------------------------------------------- real model
@pytest.mark.slow
@pytest.mark.parametrize(
    "seed, defects",
    [(0, None), (1, {0: "scratch", 2: "stain"}), (2, {1: "stain"})],
)
def test_one_component_per_object(isnet: IsNetSalientModel, seed, defects) -> None:
    scene = make_synthetic_scene(seed=seed, size=(480, 640), n_objects=3, defects=defects)
    (sal,) = isnet.predict([scene.image])
    assert sal.shape == (480, 640) and sal.dtype == np.float32

    fg = sal >= THRESHOLD
    labels, kept = _components(fg)
    assert len(kept) == len(scene.objects), (
        f"expected {len(scene.objects)} components, got {len(kept)} (kinds {[o.kind for o in scene.objects]})"
    )
    seen = set()
    for obj, om in zip(scene.objects, scene.object_masks):
        cy, cx = (int(round(c)) for c in obj.center)
        assert om[cy, cx], f"generator: centre of {obj.kind} not on the part"
        assert fg[cy, cx], f"{obj.kind} centre {(cy, cx)} not in the salient mask"
        hit = {int(label) for label in np.unique(labels[om & fg])} & set(kept)
        assert len(hit) == 1, f"{obj.kind}: overlaps components {hit}"
        seen |= hit
        # the component covers most of the part
        assert (fg & om).sum() >= 0.9 * om.sum(), f"{obj.kind}: only {(fg & om).sum() / om.sum():.2f} covered"
    assert len(seen) == len(scene.objects), "two objects share one component"


@pytest.mark.slow
def test_predict_shapes_range_and_batch(isnet: IsNetSalientModel) -> None:
    small = make_synthetic_scene(seed=5, size=(120, 200), n_objects=1).image
    square = make_synthetic_scene(seed=6, size=(INPUT_SIZE, INPUT_SIZE), n_objects=2).image
    out = isnet.predict([small, square])
    assert [o.shape for o in out] == [(120, 200), (INPUT_SIZE, INPUT_SIZE)]
    for o in out:
        assert o.dtype == np.float32
        assert float(o.min()) >= 0.0 and float(o.max()) <= 1.0
        assert float(o.max()) > 0.99  # min-max normalised
    assert isnet.predict([]) == []


def test_fingerprint_matches_sidecar(isnet: IsNetSalientModel) -> None:
    assert len(isnet.fingerprint) == 64 and isnet.short_fingerprint == isnet.fingerprint[:16]
    sidecar = MODEL_PATH.with_name(MODEL_PATH.name + ".sha256")
    if sidecar.is_file():
        assert sidecar.read_text().split()[0] == isnet.fingerprint
    assert isnet.batch_size in (None, 1)
    assert "CPUExecutionProvider" in isnet.providers
