"""Few-shot and pool modes of `eval`.

`--shots K` follows the few-shot protocol (WinCLIP+, AdaptCLIP): for each seed, K references
drawn at random from each category's `train/good` images form the bank, the test set is scored
against it, and the metrics are the mean over the seeds (each seed's table is kept too).
`--pool M` is label-free: each category's test images are scored in order against a rolling
pool of the M test images before them (MuSc's idea), no training image used.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from worker.eval.datasets import DatasetLayoutError, DatasetReader, default_object_name, load_image
from worker.eval.metrics import ImageMetrics, PixelMetrics
from worker.eval.runner import CategoryResult


def mode_label(shots: int, pool: int, seeds: Sequence[int]) -> str:
    parts = []
    if shots:
        parts.append(f"{shots}-shot (mean of seeds {','.join(str(s) for s in seeds)})")
    if pool:
        parts.append(f"pool {pool}")
    return " + ".join(parts) or "zero-shot"


def train_good_images(reader: DatasetReader, category: str) -> list[Path]:
    """The normal training images of a category (MVTec AD and folder trees: `train/good/`; VisA: train rows)."""
    root = Path(getattr(reader, "root", "."))
    csv_path = getattr(reader, "csv_path", None)
    if csv_path is not None:  # VisA
        with open(csv_path, newline="") as handle:
            rows = list(csv.DictReader(handle))
        found = [
            root / row["image"].strip()
            for row in rows
            if row["object"].strip() == category
            and row["split"].strip() == "train"
            and row["label"].strip() == "normal"
        ]
    else:
        folder = root / category / "train" / "good"
        found = sorted(p for p in folder.glob("*") if p.suffix.lower() in {".png", ".jpg", ".jpeg", ".bmp"})
    if not found:
        raise DatasetLayoutError(f"no normal training image of {category!r} to draw references from")
    return found


def draw_references(paths: Sequence[Path], shots: int, seed: int) -> list[Path]:
    """`shots` distinct images, drawn by `seed` (reproducible)."""
    if shots > len(paths):
        raise DatasetLayoutError(f"--shots {shots} needs {shots} normal training images, found {len(paths)}")
    chosen = np.random.default_rng(seed).choice(len(paths), size=shots, replace=False)
    return [paths[i] for i in sorted(chosen)]


def context_for(
    inspector, reader: DatasetReader, category: str, *, shots: int, pool: int, seed: int, object_name: str | None
):
    """The FewShotContext of one category and seed (bank of K references and/or an empty pool)."""
    from worker.inspection.fewshot.build import bank_from_images
    from worker.inspection.fewshot.context import FewShotContext
    from worker.inspection.fewshot.pool import RollingPool

    name = object_name or default_object_name(category)
    bank = None
    if shots:
        references = draw_references(train_good_images(reader, category), shots, seed)
        bank = bank_from_images(inspector, [load_image(p) for p in references], name)
    settings = inspector.settings
    return FewShotContext(
        bank=bank,
        pool=RollingPool(pool) if pool else None,
        pool_fraction=settings.pool_fraction,
        pool_min_frames=min(settings.pool_min_frames, pool) if pool else settings.pool_min_frames,
    )


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def mean_over_seeds(per_seed: Sequence[Sequence[CategoryResult]]) -> list[CategoryResult]:
    """Per category, the metrics averaged over the seeds' runs (counts from the first run, time summed)."""
    merged = []
    for runs in zip(*per_seed):
        first = runs[0]
        image = ImageMetrics(*(_mean([getattr(r.image, f) for r in runs]) for f in ("auroc", "ap", "f1_max")))
        pixel = None
        if first.pixel is not None:
            fields = ("auroc", "ap", "f1_max", "aupro")
            pixel = PixelMetrics(*(_mean([getattr(r.pixel, f) for r in runs if r.pixel is not None]) for f in fields))
        merged.append(replace(first, image=image, pixel=pixel, seconds=sum(r.seconds for r in runs)))
    return merged


def evaluate_modes(
    evaluate: Callable[[str, object], CategoryResult],
    make_context: Callable[[str, int], object],
    categories: Sequence[str],
    seeds: Sequence[int],
) -> tuple[list[CategoryResult], dict[int, list[CategoryResult]]]:
    """Run every category once per seed with its context; (mean over seeds, per-seed results)."""
    per_seed = {seed: [evaluate(category, make_context(category, seed)) for category in categories] for seed in seeds}
    return mean_over_seeds(list(per_seed.values())), per_seed
