"""Memory benchmark of the streaming metrics: a VisA-sized workload without any model.

Streams `--images` random anomaly maps of `--height` x `--width` (default 2,200
maps of 1000 x 1500 = 1.5 MP, about the VisA test split) through the same
per-category accumulators the evaluation uses (pixel histograms, AUPRO region
sums, image scores, worst-case tracker), then prints the metrics, the time and
the peak RSS. The point: peak RSS stays flat however many maps go through.

    python -m worker.bench.eval_memory [--images 2200] [--height 1000] [--width 1500]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from worker.eval.datasets import VISA_CATEGORIES, Sample
from worker.eval.metrics import DEFAULT_BINS, PixelMetricAccumulator, image_metrics, nan_mean
from worker.eval.overlays import WorstCases
from worker.inspection.measure import StageClock, peak_rss_mb

ANOMALOUS_FRACTION = 0.45


@dataclass(frozen=True)
class BenchResult:
    images: int
    megapixels: float
    seconds: float
    maps_per_second: float
    peak_rss_mb: float
    rss_before_mb: float
    accumulator_bytes: int
    mean_pixel_auroc: float
    mean_pixel_aupro: float
    mean_image_auroc: float


def synthetic_pair(rng: np.random.Generator, height: int, width: int, anomalous: bool) -> tuple[np.ndarray, np.ndarray]:
    """A random (H, W) float32 map in [0, 1] and its (H, W) bool mask (1-3 elliptic defects if anomalous).

    Defect pixels score higher on average, so the metrics are far from chance.
    """
    anomaly_map = rng.random((height, width), dtype=np.float32)
    anomaly_map *= 0.6
    mask = np.zeros((height, width), dtype=np.uint8)
    if anomalous:
        for _ in range(int(rng.integers(1, 4))):
            centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
            axes = (int(rng.integers(5, width // 20)), int(rng.integers(5, height // 20)))
            cv2.ellipse(mask, centre, axes, float(rng.integers(0, 180)), 0, 360, 1, thickness=-1)
        anomaly_map[mask.astype(bool)] += 0.4
    return anomaly_map, mask.astype(bool)


def run_benchmark(
    images: int,
    height: int,
    width: int,
    bins: int = DEFAULT_BINS,
    seed: int = 0,
    categories: Sequence[str] = VISA_CATEGORIES,
    worst: int = 3,
) -> BenchResult:
    """Stream `images` maps split evenly over `categories`; returns timings, peak RSS and metrics."""
    rng = np.random.default_rng(seed)
    rss_before = peak_rss_mb()
    clock = StageClock()
    pixel_results, image_results, accumulator_bytes = [], [], 0
    per_category = np.array_split(np.arange(images), len(categories))
    for category, indices in zip(categories, per_category):
        pixels = PixelMetricAccumulator(bins)
        worst_cases = WorstCases(worst)
        scores, labels = [], []
        for index in indices:
            anomalous = bool(rng.random() < ANOMALOUS_FRACTION)
            anomaly_map, mask = synthetic_pair(rng, height, width, anomalous)
            pixels.update(anomaly_map, mask)
            score = float(anomaly_map.max() * 0.5 + 0.5 * anomalous * rng.random())
            scores.append(score)
            labels.append(int(anomalous))
            sample = Sample(category, Path(f"{category}/{index}.png"), int(anomalous), "synthetic", None, True)
            worst_cases.offer(sample, score, anomaly_map)
        pixel_results.append(pixels.result())
        image_results.append(image_metrics(np.array(scores), np.array(labels)))
        accumulator_bytes = pixels.nbytes
    seconds = clock.elapsed_s()
    return BenchResult(
        images=images,
        megapixels=height * width / 1e6,
        seconds=seconds,
        maps_per_second=images / seconds,
        peak_rss_mb=peak_rss_mb(),
        rss_before_mb=rss_before,
        accumulator_bytes=accumulator_bytes,
        mean_pixel_auroc=nan_mean([r.auroc for r in pixel_results]),
        mean_pixel_aupro=nan_mean([r.aupro for r in pixel_results]),
        mean_image_auroc=nan_mean([r.auroc for r in image_results]),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2200)
    parser.add_argument("--height", type=int, default=1000)
    parser.add_argument("--width", type=int, default=1500)
    parser.add_argument("--bins", type=int, default=DEFAULT_BINS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    result = run_benchmark(args.images, args.height, args.width, args.bins, args.seed)
    if args.json:
        print(json.dumps(result.__dict__, indent=2))
    else:
        print(
            f"{result.images} maps of {result.megapixels:.2f} MP ({len(VISA_CATEGORIES)} categories, "
            f"{args.bins} bins): {result.seconds:.1f} s, {result.maps_per_second:.1f} maps/s\n"
            f"peak RSS {result.peak_rss_mb:.0f} MiB (before streaming: {result.rss_before_mb:.0f} MiB); "
            f"accumulator state {result.accumulator_bytes / 1024:.0f} KiB per category\n"
            f"mean pixel AUROC {result.mean_pixel_auroc:.3f}, mean pixel AUPRO {result.mean_pixel_aupro:.3f}, "
            f"mean image AUROC {result.mean_image_auroc:.3f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
