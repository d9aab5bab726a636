"""The evaluation loop: stream samples through an Inspector into the metric accumulators.

Memory stays bounded: one batch of decoded images and maps at a time, the
image scores (one float per image), O(bins) pixel histograms per category and
2 N small maps for the worst-case overlays.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from worker.eval.datasets import (
    DatasetReader,
    Sample,
    UnreadableFileError,
    default_object_name,
    limited,
    load_image,
    load_mask,
)
from worker.eval.metrics import DEFAULT_BINS, ImageMetrics, PixelMetricAccumulator, PixelMetrics, image_metrics
from worker.eval.overlays import WorstCases, write_worst_cases
from worker.inspection.measure import StageClock
from worker.inspection.types import Frame, Inspection

SKIPPED_EXAMPLES = 5


class InspectorLike(Protocol):
    """The part of worker.inspector.Inspector the evaluation uses."""

    def inspect(self, frames: Sequence[Frame]) -> list[Inspection]: ...


@dataclass(frozen=True)
class EvalOptions:
    batch_size: int = 4
    limit: int | None = None  # images per category, evenly spread
    object_name: str | None = None  # overrides the per-category default
    worst: int = 3  # overlays per kind (false positive / false negative) and category
    bins: int = DEFAULT_BINS
    out_dir: Path | None = None


@dataclass
class SkippedFiles:
    """Unreadable files met during the run: how many, and the first few with the reason."""

    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, error: Exception) -> None:
        self.count += 1
        if len(self.examples) < SKIPPED_EXAMPLES:
            self.examples.append(str(error))

    def summary(self) -> str:
        if not self.count:
            return "no unreadable files"
        lines = [f"skipped {self.count} unreadable file(s); first {len(self.examples)}:"]
        lines += [f"  - {example}" for example in self.examples]
        return "\n".join(lines)


@dataclass(frozen=True)
class CategoryResult:
    """Metrics of one category. pixel is None when no sample had pixel ground truth."""

    category: str
    object_name: str
    n_images: int
    n_normal: int
    n_anomalous: int
    n_pixel_images: int
    n_anomalous_without_mask: int
    image: ImageMetrics
    pixel: PixelMetrics | None
    seconds: float
    overlays: list[str]


@dataclass(frozen=True)
class EvalRun:
    """A whole run: the per-category results plus what the report shows about the run itself."""

    dataset: str
    root: str
    profile: str
    versions: dict[str, Any]
    bins: int
    categories: list[CategoryResult]
    skipped: SkippedFiles
    seconds: float
    peak_rss_mb: float
    mode: str = "zero-shot"  # or "2-shot (mean of seeds 0,1,2)", "pool 8" (worker/eval/fewshot.py)
    per_seed: dict[int, list[CategoryResult]] = field(default_factory=dict)

    @property
    def n_images(self) -> int:
        return sum(c.n_images for c in self.categories)


def count_samples(reader: DatasetReader, category: str, limit: int | None) -> int:
    """How many samples `evaluate_category` will visit (reads paths only)."""
    total = sum(1 for _ in reader.samples(category))
    return total if limit is None else min(total, max(limit, 0))


@dataclass
class _Loaded:
    sample: Sample
    image: np.ndarray  # (H, W, 3) uint8 RGB
    mask: np.ndarray | None  # (H, W) bool, None when the sample has no pixel truth


def _load_stream(samples: Iterator[Sample], skipped: SkippedFiles, on_skip) -> Iterator[_Loaded]:
    for sample in samples:
        try:
            image = load_image(sample.image_path)
            mask = load_mask(sample.mask_path, image.shape[:2]) if sample.has_pixel_truth else None
        except UnreadableFileError as error:
            skipped.add(error)
            on_skip()
            continue
        yield _Loaded(sample, image, mask)


def _batches(items: Iterator[_Loaded], size: int) -> Iterator[list[_Loaded]]:
    batch: list[_Loaded] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _map_at(inspection: Inspection, shape: tuple[int, int]) -> np.ndarray:
    """The inspection's anomaly map as (H, W) float32 in [0, 1] at `shape` (resized if it differs)."""
    anomaly_map = np.asarray(inspection.anomaly_map, dtype=np.float32)
    if anomaly_map.shape != shape:
        anomaly_map = cv2.resize(anomaly_map, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
    return np.clip(np.nan_to_num(anomaly_map, nan=0.0), 0.0, 1.0)


def evaluate_category(
    reader: DatasetReader,
    category: str,
    inspector: InspectorLike,
    options: EvalOptions,
    skipped: SkippedFiles,
    progress: Any = None,
    few_shot: Any = None,
) -> CategoryResult:
    """Inspect every (or `options.limit`) test sample of one category and compute its metrics.

    progress: an object with update(n) (a tqdm bar), advanced once per sample, skipped ones included.
    few_shot: a FewShotContext (reference bank, rolling pool) every frame takes; None: zero-shot.
    """
    clock = StageClock()
    object_name = options.object_name or default_object_name(category)
    total = sum(1 for _ in reader.samples(category))
    samples = limited(reader.samples(category), total, options.limit)
    tick = progress.update if progress is not None else (lambda n=1: None)

    scores: list[float] = []
    labels: list[int] = []
    pixels = PixelMetricAccumulator(options.bins)
    worst = WorstCases(options.worst)
    without_mask = 0
    loaded = _load_stream(samples, skipped, lambda: tick(1))
    for batch_index, batch in enumerate(_batches(loaded, options.batch_size)):
        frames = [
            Frame(f"{category}/{batch_index}/{i}", item.image, object_name, few_shot=few_shot)
            for i, item in enumerate(batch)
        ]
        inspections = inspector.inspect(frames)
        if len(inspections) != len(frames):
            raise RuntimeError(f"the inspector returned {len(inspections)} results for {len(frames)} frames")
        for item, inspection in zip(batch, inspections):
            score = float(np.clip(np.nan_to_num(inspection.score, nan=0.0), 0.0, 1.0))
            anomaly_map = _map_at(inspection, item.image.shape[:2])
            scores.append(score)
            labels.append(item.sample.label)
            if item.mask is not None:
                pixels.update(anomaly_map, item.mask)
            elif item.sample.label == 1:
                without_mask += 1
            worst.offer(item.sample, score, anomaly_map)
        tick(len(batch))

    overlays: list[str] = []
    if options.out_dir is not None and options.worst > 0:
        overlays = [str(p) for p in write_worst_cases(worst, Path(options.out_dir) / category)]
    n_anomalous = int(sum(labels))
    return CategoryResult(
        category=category,
        object_name=object_name,
        n_images=len(labels),
        n_normal=len(labels) - n_anomalous,
        n_anomalous=n_anomalous,
        n_pixel_images=pixels.n_images,
        n_anomalous_without_mask=without_mask,
        image=image_metrics(np.array(scores), np.array(labels))
        if labels
        else ImageMetrics(math.nan, math.nan, math.nan),
        pixel=pixels.result() if pixels.n_images else None,
        seconds=clock.elapsed_s(),
        overlays=overlays,
    )


def versions_as_dict(versions: Any) -> dict[str, Any]:
    """inspector.versions (pydantic model, dataclass, mapping or None) -> plain dict."""
    if versions is None:
        return {}
    if hasattr(versions, "model_dump"):
        return versions.model_dump(mode="json")
    if isinstance(versions, dict):
        return dict(versions)
    if hasattr(versions, "__dataclass_fields__"):
        from dataclasses import asdict

        return asdict(versions)
    return {"versions": str(versions)}
