"""Dataset readers of the evaluation harness, on synthetic trees."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from tests.support.synthetic_datasets import corrupt, write_folder, write_mvtec, write_visa
from worker.eval.datasets import (
    DatasetLayoutError,
    UnreadableFileError,
    default_object_name,
    limited,
    load_image,
    load_mask,
    open_dataset,
    select_categories,
)


@pytest.fixture(scope="module")
def mvtec_root(tmp_path_factory):
    return write_mvtec(tmp_path_factory.mktemp("mvtec"), size=64)


@pytest.fixture(scope="module")
def visa_root(tmp_path_factory):
    return write_visa(tmp_path_factory.mktemp("visa"), size=64)


def test_mvtec_reader_lists_test_samples_with_masks(mvtec_root):
    reader = open_dataset("mvtec", mvtec_root)
    assert reader.categories() == ["bottle", "metal_nut"]
    samples = reader.samples("bottle")
    assert isinstance(samples, Iterator)  # lazy
    samples = list(samples)
    assert len(samples) == 6
    good = [s for s in samples if s.defect_type == "good"]
    assert len(good) == 3 and all(s.label == 0 and s.mask_path is None and s.has_pixel_truth for s in good)
    bad = [s for s in samples if s.label == 1]
    assert {s.defect_type for s in bad} == {"scratch", "hole"}
    assert all(s.mask_path.name == f"{s.image_path.stem}_mask.png" for s in bad)
    assert not any("train" in s.image_path.parts for s in samples)
    image = load_image(bad[0].image_path)
    mask = load_mask(bad[0].mask_path, image.shape[:2])
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    assert mask.dtype == bool and 0 < mask.sum() < mask.size


def test_mvtec_missing_mask_keeps_image_level_only(tmp_path):
    root = write_mvtec(tmp_path, categories=("screw",), size=32)
    (root / "screw" / "ground_truth" / "hole" / "000_mask.png").unlink()
    hole = [s for s in open_dataset("mvtec", root).samples("screw") if s.defect_type == "hole"]
    assert hole[0].mask_path is None and not hole[0].has_pixel_truth and hole[0].label == 1


def test_visa_reader_uses_test_split_and_nonzero_masks(visa_root):
    reader = open_dataset("visa", visa_root)
    assert reader.categories() == ["pcb1", "candle"]  # paper's table order
    samples = list(reader.samples("candle"))
    assert len(samples) == 6  # the train row is ignored
    assert [s.label for s in samples].count(1) == 3
    anomalous = next(s for s in samples if s.label == 1)
    mask = load_mask(anomalous.mask_path, (64, 64))  # mask pixels are 1, not 255
    assert mask.any()
    normal = next(s for s in samples if s.label == 0)
    assert normal.mask_path is None and normal.has_pixel_truth


def test_folder_reader_masks_folder(tmp_path):
    root = write_folder(tmp_path / "widget", masks="masks", size=32)
    reader = open_dataset("folder", root)
    assert reader.categories() == ["widget"]
    samples = list(reader.samples("widget"))
    assert sorted(s.defect_type for s in samples) == ["dent"] * 3 + ["good"] * 3
    dents = [s for s in samples if s.label == 1]
    assert all(s.mask_path == root / "masks" / "dent" / f"{s.image_path.stem}.png" for s in dents)
    assert all(s.has_pixel_truth for s in samples)


def test_folder_reader_ground_truth_folder_and_no_masks(tmp_path):
    gt_root = write_folder(tmp_path / "a", masks="ground_truth", size=32)
    dents = [s for s in open_dataset("folder", gt_root).samples("a") if s.label == 1]
    assert all(s.mask_path.name.endswith("_mask.png") for s in dents)
    bare_root = write_folder(tmp_path / "b", masks=None, size=32)
    samples = list(open_dataset("folder", bare_root).samples("b"))
    assert not any(s.has_pixel_truth for s in samples)


@pytest.mark.parametrize(
    ("kind", "make", "expected"),
    [
        ("mvtec", lambda p: p / "nope", "MVTec AD root folder"),
        ("mvtec", lambda p: p, "test/good"),
        ("visa", lambda p: p, "split_csv/1cls.csv"),
        ("folder", lambda p: p, "good"),
    ],
)
def test_wrong_root_names_what_is_expected(tmp_path, kind, make, expected):
    (tmp_path / "something").mkdir()
    with pytest.raises(DatasetLayoutError, match=expected.replace("/", ".")):
        reader = open_dataset(kind, make(tmp_path))
        reader.categories()


def test_visa_csv_without_columns(tmp_path):
    (tmp_path / "split_csv").mkdir()
    (tmp_path / "split_csv" / "1cls.csv").write_text("object,image\npcb1,a.jpg\n")
    with pytest.raises(DatasetLayoutError, match="split, label, mask"):
        open_dataset("visa", tmp_path)


def test_unknown_category_lists_the_available_ones(mvtec_root):
    with pytest.raises(DatasetLayoutError, match="available: bottle, metal_nut"):
        select_categories(open_dataset("mvtec", mvtec_root), ["zipper"])
    assert select_categories(open_dataset("mvtec", mvtec_root), ["metal_nut"]) == ["metal_nut"]


def test_object_name_mapping():
    assert default_object_name("pcb3") == "printed circuit board"
    assert default_object_name("macaroni2") == "macaroni"
    assert default_object_name("pipe_fryum") == "pipe fryum"
    assert default_object_name("chewinggum") == "chewing gum"
    assert default_object_name("metal_nut") == "metal nut"
    assert default_object_name("capsules") == "capsules"
    assert default_object_name("hazelnut") == "hazelnut"
    assert default_object_name("rubber_seal") == "rubber seal"


def test_limited_spreads_evenly_and_stays_lazy():
    consumed = []

    def stream():
        for i in range(10):
            consumed.append(i)
            yield i

    picked = limited(stream(), 10, 4)
    assert consumed == []
    assert list(picked) == [0, 3, 6, 9]
    assert list(limited(iter(range(3)), 3, 10)) == [0, 1, 2]
    assert list(limited(iter(range(3)), 3, None)) == [0, 1, 2]


def test_unreadable_files_raise_a_specific_error(tmp_path, mvtec_root):
    broken = corrupt(tmp_path / "broken.png")
    with pytest.raises(UnreadableFileError, match="broken.png"):
        load_image(broken)
    with pytest.raises(UnreadableFileError, match="broken.png"):
        load_mask(broken, (4, 4))
    with pytest.raises(UnreadableFileError):
        load_image(tmp_path / "missing.png")


def test_mask_is_resized_to_the_image_and_none_is_all_normal(tmp_path):
    from PIL import Image

    raw = np.zeros((10, 20), np.uint8)
    raw[2:4, 5:9] = 255
    Image.fromarray(raw).save(tmp_path / "m.png")
    mask = load_mask(tmp_path / "m.png", (20, 40))
    assert mask.shape == (20, 40) and mask.sum() == 4 * raw.astype(bool).sum()
    assert not load_mask(None, (3, 5)).any()
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 3] = 255  # opaque alpha must not count as a defect
    rgba[1, 1, 0] = 200
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    assert load_mask(tmp_path / "rgba.png", (4, 4)).sum() == 1
