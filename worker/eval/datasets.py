"""Readers for the evaluation datasets: MVTec AD, VisA and a plain folder layout.

A reader lists *samples* (paths and labels, no pixels) lazily, category by
category; pixels are loaded one sample at a time with `load_image` and
`load_mask`, so an evaluation never holds the whole dataset in memory.

Layouts
-------
MVTec AD (`--dataset mvtec`, root = the folder holding the category folders)::

    <root>/<category>/test/good/*.png
    <root>/<category>/test/<defect>/<name>.png
    <root>/<category>/ground_truth/<defect>/<name>_mask.png

VisA (`--dataset visa`, root = the folder holding `split_csv/`)::

    <root>/split_csv/1cls.csv   columns object,split,label,image,mask
    paths in the CSV are relative to <root>; only split == "test" rows are used;
    label "normal" / "anomaly"; mask pixels != 0 are anomalous.

Folder (`--dataset folder`, root = one category; the category is the folder's name)::

    <root>/good/*                  normal images
    <root>/<defect>/*              anomalous images, one folder per defect type
    <root>/masks/<defect>/<stem>.png                  optional masks, looked up first,
    <root>/ground_truth/<defect>/<stem>_mask.png      then MVTec-style,
    <root>/ground_truth/<defect>/<stem>.png           then the same name.

    Without a `masks/` or `ground_truth/` folder only image metrics are computed.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
from PIL import Image

from common.codecs import IMAGE_SUFFIXES

# Datasets are read with PIL, so they may hold more formats than a frame (JPEG, PNG) may have.
DATASET_IMAGE_SUFFIXES = IMAGE_SUFFIXES | {".bmp", ".tif", ".tiff", ".webp"}

MVTEC_CATEGORIES = (
    "bottle",
    "cable",
    "capsule",
    "carpet",
    "grid",
    "hazelnut",
    "leather",
    "metal_nut",
    "pill",
    "screw",
    "tile",
    "toothbrush",
    "transistor",
    "wood",
    "zipper",
)
VISA_CATEGORIES = (
    "pcb1",
    "pcb2",
    "pcb3",
    "pcb4",
    "capsules",
    "candle",
    "macaroni1",
    "macaroni2",
    "cashew",
    "chewinggum",
    "fryum",
    "pipe_fryum",
)

# Category name -> the object name used in prompts ("a photo of a damaged <object>").
OBJECT_NAMES = {
    "pcb1": "printed circuit board",
    "pcb2": "printed circuit board",
    "pcb3": "printed circuit board",
    "pcb4": "printed circuit board",
    "macaroni1": "macaroni",
    "macaroni2": "macaroni",
    "pipe_fryum": "pipe fryum",
    "chewinggum": "chewing gum",
    "capsules": "capsules",
    "candle": "candle",
    "cashew": "cashew",
    "fryum": "fryum",
    "metal_nut": "metal nut",
    "toothbrush": "toothbrush",
    "transistor": "transistor",
}

DATASET_KINDS = ("mvtec", "visa", "folder")


class DatasetLayoutError(FileNotFoundError):
    """The root does not look like the requested dataset layout; the message names what is missing."""


class UnreadableFileError(OSError):
    """An image or mask file exists but cannot be decoded."""


@dataclass(frozen=True)
class Sample:
    """One test image of a category, before any pixel is loaded.

    label: 0 = normal, 1 = anomalous.
    mask_path: ground-truth mask, or None (normal image, or no mask available).
    has_pixel_truth: whether pixel metrics can use this sample (normal images
    always can, with an all-normal mask; anomalous ones only with a mask).
    """

    category: str
    image_path: Path
    label: int
    defect_type: str
    mask_path: Path | None
    has_pixel_truth: bool


class DatasetReader(Protocol):
    """What the evaluation needs from a dataset."""

    kind: str
    root: Path

    def categories(self) -> list[str]:
        """Category names available under the root, in evaluation order."""

    def samples(self, category: str) -> Iterator[Sample]:
        """The test samples of one category, lazily, in a stable order."""


def default_object_name(category: str) -> str:
    """The prompt object name for a category: the mapping table, else the name with '_' -> ' '."""
    return OBJECT_NAMES.get(category, category.replace("_", " "))


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in DATASET_IMAGE_SUFFIXES)


def _require_dir(path: Path, what: str) -> None:
    if not path.is_dir():
        raise DatasetLayoutError(f"expected {what} at {path}, which is not a folder")


# --------------------------------------------------------------------------- MVTec AD


class MvtecReader:
    """MVTec AD: `<root>/<category>/test/<defect>/*.png`, masks `<category>/ground_truth/<defect>/<name>_mask.png`."""

    kind = "mvtec"

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        _require_dir(self.root, "the MVTec AD root folder")

    def categories(self) -> list[str]:
        found = sorted(p.name for p in self.root.iterdir() if (p / "test").is_dir())
        if not found:
            raise DatasetLayoutError(
                f"no MVTec AD category under {self.root}: expected {self.root}/<category>/test/good/*.png "
                f"(e.g. {self.root}/bottle/test/good/000.png)"
            )
        return found

    def samples(self, category: str) -> Iterator[Sample]:
        test_dir = self.root / category / "test"
        _require_dir(test_dir, f"the test folder of MVTec AD category {category!r}")
        _require_dir(test_dir / "good", f"the normal test images of {category!r}")
        truth_dir = self.root / category / "ground_truth"
        for defect_dir in sorted(p for p in test_dir.iterdir() if p.is_dir()):
            defect = defect_dir.name
            for image_path in _image_files(defect_dir):
                if defect == "good":
                    yield Sample(category, image_path, 0, defect, None, True)
                    continue
                mask_path = truth_dir / defect / f"{image_path.stem}_mask.png"
                present = mask_path.is_file()
                yield Sample(category, image_path, 1, defect, mask_path if present else None, present)


# --------------------------------------------------------------------------- VisA

VISA_CSV = Path("split_csv") / "1cls.csv"
VISA_COLUMNS = ("object", "split", "label", "image", "mask")


class VisaReader:
    """VisA: rows of `<root>/split_csv/1cls.csv` with split == test; paths relative to the root."""

    kind = "visa"

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        _require_dir(self.root, "the VisA root folder")
        self.csv_path = self.root / VISA_CSV
        if not self.csv_path.is_file():
            raise DatasetLayoutError(
                f"expected the VisA split file {self.csv_path} (columns {','.join(VISA_COLUMNS)}); "
                "--root must be the folder that holds split_csv/ and the category folders"
            )
        with self.csv_path.open(newline="") as handle:
            header = next(csv.reader(handle), [])
        missing = [c for c in VISA_COLUMNS if c not in header]
        if missing:
            raise DatasetLayoutError(f"{self.csv_path} lacks the column(s) {', '.join(missing)}; header is {header}")

    def _rows(self) -> Iterator[dict[str, str]]:
        with self.csv_path.open(newline="") as handle:
            yield from csv.DictReader(handle)

    def categories(self) -> list[str]:
        seen: dict[str, None] = {}
        for row in self._rows():
            if row["split"].strip() == "test":
                seen.setdefault(row["object"].strip(), None)
        if not seen:
            raise DatasetLayoutError(f"{self.csv_path} has no row with split == test")
        ordered = [c for c in VISA_CATEGORIES if c in seen]
        return ordered + sorted(c for c in seen if c not in VISA_CATEGORIES)

    def samples(self, category: str) -> Iterator[Sample]:
        for row in self._rows():
            if row["object"].strip() != category or row["split"].strip() != "test":
                continue
            label = 0 if row["label"].strip() == "normal" else 1
            image_path = self.root / row["image"].strip()
            defect = "good" if label == 0 else "bad"
            if label == 0:
                yield Sample(category, image_path, 0, defect, None, True)
                continue
            mask_text = (row.get("mask") or "").strip()
            mask_path = self.root / mask_text if mask_text else None
            present = mask_path is not None and mask_path.is_file()
            yield Sample(category, image_path, 1, defect, mask_path if present else None, present)


# --------------------------------------------------------------------------- plain folder

_FOLDER_MASK_DIRS = ("masks", "ground_truth")


class FolderReader:
    """One category: `<root>/good/*` normal, every other folder a defect type; optional masks."""

    kind = "folder"

    def __init__(self, root: Path, category: str | None = None) -> None:
        self.root = Path(root)
        _require_dir(self.root, "the image folder")
        if not (self.root / "good").is_dir():
            raise DatasetLayoutError(
                f"expected normal images in {self.root / 'good'} (and one folder per defect type beside it)"
            )
        self.category = category or self.root.resolve().name
        self.has_masks = any((self.root / d).is_dir() for d in _FOLDER_MASK_DIRS)

    def categories(self) -> list[str]:
        return [self.category]

    def _mask_for(self, defect: str, stem: str) -> Path | None:
        for candidate in (
            self.root / "masks" / defect / f"{stem}.png",
            self.root / "ground_truth" / defect / f"{stem}_mask.png",
            self.root / "ground_truth" / defect / f"{stem}.png",
        ):
            if candidate.is_file():
                return candidate
        return None

    def samples(self, category: str) -> Iterator[Sample]:
        if category != self.category:
            raise DatasetLayoutError(f"the folder dataset at {self.root} has only the category {self.category!r}")
        folders = sorted(p for p in self.root.iterdir() if p.is_dir() and p.name not in _FOLDER_MASK_DIRS)
        for folder in folders:
            defect = folder.name
            for image_path in _image_files(folder):
                if defect == "good":
                    yield Sample(category, image_path, 0, defect, None, self.has_masks)
                    continue
                mask_path = self._mask_for(defect, image_path.stem)
                yield Sample(category, image_path, 1, defect, mask_path, mask_path is not None)


# --------------------------------------------------------------------------- construction and loading


def open_dataset(kind: str, root: Path | str, category: str | None = None) -> DatasetReader:
    """Reader for `kind` in DATASET_KINDS; raises DatasetLayoutError naming what is missing."""
    root = Path(root).expanduser()
    if kind == "mvtec":
        return MvtecReader(root)
    if kind == "visa":
        return VisaReader(root)
    if kind == "folder":
        return FolderReader(root, category)
    raise ValueError(f"unknown dataset kind {kind!r}; expected one of {', '.join(DATASET_KINDS)}")


def select_categories(reader: DatasetReader, wanted: list[str] | None) -> list[str]:
    """The reader's categories, or the `wanted` ones in the given order; unknown names raise."""
    available = reader.categories()
    if not wanted:
        return available
    unknown = [c for c in wanted if c not in available]
    if unknown:
        raise DatasetLayoutError(
            f"unknown categor{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown)} under {reader.root}; "
            f"available: {', '.join(available)}"
        )
    return list(wanted)


def limited(samples: Iterator[Sample], total: int, limit: int | None) -> Iterator[Sample]:
    """At most `limit` of `total` samples, evenly spread over the stream (keeps both classes in play).

    Lazy: `samples` is consumed once, only the chosen indices are yielded.
    """
    if limit is None or limit >= total:
        yield from samples
        return
    if limit <= 0:
        return
    chosen = set(np.linspace(0, total - 1, num=limit).round().astype(int).tolist())
    for index, sample in enumerate(samples):
        if index in chosen:
            yield sample


def load_image(path: Path) -> np.ndarray:
    """Decode an image file into (H, W, 3) uint8 RGB; UnreadableFileError if it cannot be decoded."""
    try:
        with Image.open(path) as image:
            image.load()
            return np.asarray(image.convert("RGB"))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise UnreadableFileError(f"cannot read image {path}: {exc}") from exc


def load_mask(path: Path | None, shape: tuple[int, int]) -> np.ndarray:
    """Ground-truth mask as (H, W) bool (non-zero = anomalous), resized (nearest) to `shape` = (H, W).

    path None gives an all-normal mask. UnreadableFileError if the file cannot be decoded.
    """
    if path is None:
        return np.zeros(shape, dtype=bool)
    try:
        with Image.open(path) as image:
            image.load()
            raw = np.asarray(image)  # palette masks keep their indices: non-zero index = anomalous
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise UnreadableFileError(f"cannot read mask {path}: {exc}") from exc
    if raw.ndim == 3:  # colour masks: any colour channel set (an alpha channel is ignored)
        raw = raw[..., :1] if raw.shape[2] <= 2 else raw[..., :3]
        mask = raw.any(axis=2)
    else:
        mask = raw != 0
    if mask.shape != tuple(shape):
        resized = cv2.resize(mask.astype(np.uint8), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
        mask = resized.astype(bool)
    return mask
