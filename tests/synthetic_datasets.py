"""Small synthetic datasets in the MVTec AD, VisA and plain-folder layouts, for tests.

Each image is a plain background with a simple object (ellipse, rounded box or
ring) in a per-category colour; anomalous images get a near-black "defect
blotch" on the object, and its mask is the blotch. `DEFECT_RGB` lets a fake
inspector find the blotches exactly.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

DEFECT_RGB = (12, 10, 8)
SHAPES = ("ellipse", "box", "ring")


@dataclass(frozen=True)
class SyntheticImage:
    """image: (H, W, 3) uint8 RGB; mask: (H, W) bool, all False for normal images."""

    image: np.ndarray
    mask: np.ndarray


def draw_sample(rng: np.random.Generator, size: int, shape: str, colour: tuple[int, int, int],
                defective: bool) -> SyntheticImage:
    """One image of `size` x `size` with an object of `shape`; a defect blotch when `defective`."""
    background = rng.integers(170, 210)
    image = np.full((size, size, 3), background, dtype=np.uint8)
    image = np.clip(image + rng.normal(0, 4, image.shape), 0, 255).astype(np.uint8)
    centre = (int(size / 2 + rng.integers(-size // 16, size // 16 + 1)),
              int(size / 2 + rng.integers(-size // 16, size // 16 + 1)))
    half = (int(size * 0.3), int(size * 0.22))
    if shape == "ellipse":
        cv2.ellipse(image, centre, half, 0, 0, 360, colour, thickness=-1)
    elif shape == "box":
        cv2.rectangle(image, (centre[0] - half[0], centre[1] - half[1]),
                      (centre[0] + half[0], centre[1] + half[1]), colour, thickness=-1)
    else:
        cv2.circle(image, centre, half[1], colour, thickness=max(4, size // 20))
    mask = np.zeros((size, size), dtype=np.uint8)
    if defective:
        offset = (int(rng.integers(-half[1] // 2, half[1] // 2 + 1)), int(rng.integers(-half[1] // 2, half[1] // 2 + 1)))
        if shape == "ring":
            offset = (half[1], 0)  # on the ring itself
        blotch_centre = (centre[0] + offset[0], centre[1] + offset[1])
        axes = (int(rng.integers(size // 40 + 2, size // 14 + 3)), int(rng.integers(size // 40 + 2, size // 14 + 3)))
        cv2.ellipse(mask, blotch_centre, axes, float(rng.integers(0, 180)), 0, 360, 1, thickness=-1)
        image[mask.astype(bool)] = DEFECT_RGB
    return SyntheticImage(image=image, mask=mask.astype(bool))


def _category_style(index: int) -> tuple[str, tuple[int, int, int]]:
    colours = ((40, 120, 200), (200, 140, 40), (60, 170, 90), (150, 60, 160))
    return SHAPES[index % len(SHAPES)], colours[index % len(colours)]


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, quality=95) if path.suffix.lower() in (".jpg", ".jpeg") else Image.fromarray(array).save(path)


def write_mvtec(root: Path, categories: tuple[str, ...] = ("bottle", "metal_nut"), n_good: int = 3,
                defects: tuple[tuple[str, int], ...] = (("scratch", 2), ("hole", 1)), size: int = 256,
                seed: int = 0) -> Path:
    """MVTec AD tree: <root>/<cat>/test/{good,<defect>}/NNN.png and ground_truth/<defect>/NNN_mask.png.

    Also a train/good folder with one image (ignored by the evaluation). Returns root.
    """
    rng = np.random.default_rng(seed)
    for index, category in enumerate(categories):
        shape, colour = _category_style(index)
        base = root / category
        _save(base / "train" / "good" / "000.png", draw_sample(rng, size, shape, colour, False).image)
        for i in range(n_good):
            _save(base / "test" / "good" / f"{i:03d}.png", draw_sample(rng, size, shape, colour, False).image)
        for defect, count in defects:
            for i in range(count):
                sample = draw_sample(rng, size, shape, colour, True)
                _save(base / "test" / defect / f"{i:03d}.png", sample.image)
                _save(base / "ground_truth" / defect / f"{i:03d}_mask.png", sample.mask.astype(np.uint8) * 255)
    return root


def write_visa(root: Path, categories: tuple[str, ...] = ("pcb1", "candle"), n_normal: int = 3,
               n_anomaly: int = 3, size: int = 256, seed: int = 1, mask_value: int = 1) -> Path:
    """VisA tree: <root>/<cat>/Data/Images/{Normal,Anomaly}/NNN.JPG, <cat>/Data/Masks/Anomaly/NNN.png,
    and <root>/split_csv/1cls.csv (object,split,label,image,mask), with one train row per category
    that the evaluation must ignore. Mask pixels are `mask_value` (non-zero) on the defect. Returns root.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for index, category in enumerate(categories):
        shape, colour = _category_style(index + 1)
        train = f"{category}/Data/Images/Normal/900.JPG"
        _save(root / train, draw_sample(rng, size, shape, colour, False).image)
        rows.append((category, "train", "normal", train, ""))
        for i in range(n_normal):
            rel = f"{category}/Data/Images/Normal/{i:03d}.JPG"
            _save(root / rel, draw_sample(rng, size, shape, colour, False).image)
            rows.append((category, "test", "normal", rel, ""))
        for i in range(n_anomaly):
            rel = f"{category}/Data/Images/Anomaly/{i:03d}.JPG"
            mask_rel = f"{category}/Data/Masks/Anomaly/{i:03d}.png"
            sample = draw_sample(rng, size, shape, colour, True)
            _save(root / rel, sample.image)
            _save(root / mask_rel, sample.mask.astype(np.uint8) * mask_value)
            rows.append((category, "test", "anomaly", rel, mask_rel))
    (root / "split_csv").mkdir(parents=True, exist_ok=True)
    with (root / "split_csv" / "1cls.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(("object", "split", "label", "image", "mask"))
        writer.writerows(rows)
    return root


def write_folder(root: Path, n_good: int = 3, defects: tuple[tuple[str, int], ...] = (("dent", 3),),
                 masks: str | None = "masks", size: int = 128, seed: int = 2) -> Path:
    """Plain folder: <root>/good/*.png, <root>/<defect>/*.png; masks under
    <root>/masks/<defect>/<stem>.png (masks="masks"), <root>/ground_truth/<defect>/<stem>_mask.png
    (masks="ground_truth") or none (masks=None). Returns root.
    """
    rng = np.random.default_rng(seed)
    for i in range(n_good):
        _save(root / "good" / f"g{i}.png", draw_sample(rng, size, "ellipse", (40, 120, 200), False).image)
    for defect, count in defects:
        for i in range(count):
            sample = draw_sample(rng, size, "ellipse", (40, 120, 200), True)
            _save(root / defect / f"d{i}.png", sample.image)
            if masks == "masks":
                _save(root / "masks" / defect / f"d{i}.png", sample.mask.astype(np.uint8) * 255)
            elif masks == "ground_truth":
                _save(root / "ground_truth" / defect / f"d{i}_mask.png", sample.mask.astype(np.uint8) * 255)
    return root


def corrupt(path: Path) -> Path:
    """Overwrite an image file with bytes no decoder accepts. Returns path."""
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"this is not an image" * 4)
    return path
