"""Small synthetic datasets in the MVTec AD, VisA and plain-folder layouts, for tests.

Each image is the producer's belt scene (``producer.sources.synthetic``) with one part
(a cap or a washer, per category) in the middle; anomalous images get a "stain" defect
painted in `DEFECT_RGB` on the part, and its mask is the stain. `DEFECT_RGB` (a colour
nothing else in the scene comes near) lets a fake inspector find the stains exactly.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from producer.sources.synthetic import (
    BELT_PERIOD,
    HOLE_FRACTIONS,
    PART_COLOURS,
    Part,
    add_noise,
    belt_background,
    belt_rows,
    belt_texture,
    draw_defect,
    draw_part,
)

DEFECT_RGB = (12, 10, 8)


@dataclass(frozen=True)
class SyntheticImage:
    """image: (H, W, 3) uint8 RGB; mask: (H, W) bool, all False for normal images."""

    image: np.ndarray
    mask: np.ndarray


def draw_sample(
    rng: np.random.Generator, size: int, colour: tuple[int, int, int], hole: float, defective: bool
) -> SyntheticImage:
    """One `size` x `size` belt scene with one part near the centre; a DEFECT_RGB stain when `defective`."""
    texture = belt_texture(size, size, int(rng.integers(2**31)))
    background = belt_background(texture, size, size, shift=float(rng.uniform(0, BELT_PERIOD)))
    top, bottom = belt_rows(size)
    jitter = size // 16
    part = Part(
        x=size / 2 + int(rng.integers(-jitter, jitter + 1)),
        y=(top + bottom) / 2 + int(rng.integers(-jitter, jitter + 1)),
        radius=0.3 * size,
        colour=colour,
        hole=hole,
        angle=float(rng.uniform(0, 2 * np.pi)),
    )
    canvas = background.copy()
    draw_part(canvas, background, part)
    mask = np.zeros((size, size), bool)
    while defective and not mask.any():  # a stain clipped away entirely by the hole: draw another
        mask = draw_defect(canvas, background, part, rng, "stain", colour=DEFECT_RGB)
    return SyntheticImage(image=add_noise(canvas, rng, 2.0), mask=mask)


def _category_style(index: int) -> tuple[tuple[int, int, int], float]:
    """(part colour, hole fraction) of the index-th category."""
    return PART_COLOURS[index % len(PART_COLOURS)], HOLE_FRACTIONS[index % len(HOLE_FRACTIONS)]


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, quality=95) if path.suffix.lower() in (".jpg", ".jpeg") else Image.fromarray(
        array
    ).save(path)


def write_mvtec(
    root: Path,
    categories: tuple[str, ...] = ("bottle", "metal_nut"),
    n_good: int = 3,
    defects: tuple[tuple[str, int], ...] = (("scratch", 2), ("hole", 1)),
    size: int = 256,
    seed: int = 0,
    n_train: int = 1,
) -> Path:
    """MVTec AD tree: <root>/<cat>/test/{good,<defect>}/NNN.png and ground_truth/<defect>/NNN_mask.png.

    Also a train/good folder with `n_train` images (the references of `eval --shots`). Returns root.
    """
    rng = np.random.default_rng(seed)
    extra = np.random.default_rng(seed + 1000)  # more training images leave the test images as they were
    for index, category in enumerate(categories):
        colour, hole = _category_style(index)
        base = root / category
        _save(base / "train" / "good" / "000.png", draw_sample(rng, size, colour, hole, False).image)
        for i in range(1, n_train):
            _save(base / "train" / "good" / f"{i:03d}.png", draw_sample(extra, size, colour, hole, False).image)
        for i in range(n_good):
            _save(base / "test" / "good" / f"{i:03d}.png", draw_sample(rng, size, colour, hole, False).image)
        for defect, count in defects:
            for i in range(count):
                sample = draw_sample(rng, size, colour, hole, True)
                _save(base / "test" / defect / f"{i:03d}.png", sample.image)
                _save(base / "ground_truth" / defect / f"{i:03d}_mask.png", sample.mask.astype(np.uint8) * 255)
    return root


def write_visa(
    root: Path,
    categories: tuple[str, ...] = ("pcb1", "candle"),
    n_normal: int = 3,
    n_anomaly: int = 3,
    size: int = 256,
    seed: int = 1,
    mask_value: int = 1,
) -> Path:
    """VisA tree: <root>/<cat>/Data/Images/{Normal,Anomaly}/NNN.JPG, <cat>/Data/Masks/Anomaly/NNN.png,
    and <root>/split_csv/1cls.csv (object,split,label,image,mask), with one train row per category
    that the evaluation must ignore. Mask pixels are `mask_value` (non-zero) on the defect. Returns root.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for index, category in enumerate(categories):
        colour, hole = _category_style(index + 1)
        train = f"{category}/Data/Images/Normal/900.JPG"
        _save(root / train, draw_sample(rng, size, colour, hole, False).image)
        rows.append((category, "train", "normal", train, ""))
        for i in range(n_normal):
            rel = f"{category}/Data/Images/Normal/{i:03d}.JPG"
            _save(root / rel, draw_sample(rng, size, colour, hole, False).image)
            rows.append((category, "test", "normal", rel, ""))
        for i in range(n_anomaly):
            rel = f"{category}/Data/Images/Anomaly/{i:03d}.JPG"
            mask_rel = f"{category}/Data/Masks/Anomaly/{i:03d}.png"
            sample = draw_sample(rng, size, colour, hole, True)
            _save(root / rel, sample.image)
            _save(root / mask_rel, sample.mask.astype(np.uint8) * mask_value)
            rows.append((category, "test", "anomaly", rel, mask_rel))
    (root / "split_csv").mkdir(parents=True, exist_ok=True)
    with (root / "split_csv" / "1cls.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(("object", "split", "label", "image", "mask"))
        writer.writerows(rows)
    return root


def write_folder(
    root: Path,
    n_good: int = 3,
    defects: tuple[tuple[str, int], ...] = (("dent", 3),),
    masks: str | None = "masks",
    size: int = 128,
    seed: int = 2,
) -> Path:
    """Plain folder: <root>/good/*.png, <root>/<defect>/*.png; masks under
    <root>/masks/<defect>/<stem>.png (masks="masks"), <root>/ground_truth/<defect>/<stem>_mask.png
    (masks="ground_truth") or none (masks=None). Returns root.
    """
    rng = np.random.default_rng(seed)
    for i in range(n_good):
        _save(root / "good" / f"g{i}.png", draw_sample(rng, size, *_category_style(0), False).image)
    for defect, count in defects:
        for i in range(count):
            sample = draw_sample(rng, size, *_category_style(0), True)
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
