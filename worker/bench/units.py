"""Machine-independent figures for `bench`: tile units, SAM decoder points, precision deviations.

A tile unit is the time of one fp32 CLIP ViT-B-16-plus-240 image-tower pass at 240 px,
batch 1, measured in the same run. Milliseconds drift from machine to machine (and with
the load of the machine); the ratio drifts much less.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from worker.inspection.inspector import Inspector
from worker.inspection.models.registry import ModelBundle, set_precision
from worker.inspection.types import Frame

REFERENCE_MODEL = "ViT-B-16-plus-240"
REFERENCE_SIZE = 240


def tile_units(ms: float, reference_ms: float) -> float:
    """Milliseconds expressed in reference tile passes."""
    return round(ms / reference_ms, 2)


@torch.inference_mode()
def reference_tile_ms(device: torch.device, repeats: int = 5) -> float:
    """Median ms of one fp32 ViT-B-16-plus-240 image-tower pass at 240 px, batch 1 (random weights: same cost)."""
    import open_clip

    visual = open_clip.create_model(REFERENCE_MODEL, pretrained=None).visual.to(device).eval()
    image = torch.rand(1, 3, REFERENCE_SIZE, REFERENCE_SIZE, device=device)
    visual(image)  # warm-up: allocations and kernel selection
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        visual(image)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - start) * 1000.0)
    return round(float(np.median(times)), 2)


def reference_check(before_ms: float, after_ms: float, tolerance: float = 0.25) -> dict:
    """The reference pass at the start and at the end of a run: on a shared machine whose load changed
    in between, the tile units (taken against the start) are not to be trusted, and the report says so."""
    ratio = round(after_ms / before_ms, 2)
    return {"reference_tile_ms_after": after_ms, "ratio": ratio, "steady": abs(ratio - 1.0) <= tolerance}


def with_tile_units(report: dict, reference_ms: float) -> dict:
    """Adds `tile_units_per_frame` and `stage_tile_units` to a run_batches report."""
    report["tile_units_per_frame"] = tile_units(report["ms_per_frame"], reference_ms)
    report["stage_tile_units"] = {
        stage: tile_units(ms, reference_ms) for stage, ms in report["stage_ms_per_frame"].items()
    }
    return report


def decoder_points(inspector: Inspector, models: ModelBundle, frames: int) -> dict | None:
    """SAM point prompts per frame: the full grid (before) and what the run decoded (after)."""
    if models.sam is None or not frames:
        return None
    return {
        "full_grid": models.sam.grid_points,
        "decoded_per_frame": round(inspector.sam_decoder_points / frames, 1),
    }


def precision_deviation(models: ModelBundle, settings, frames: list[Frame]) -> dict | None:
    """Largest |difference| against fp32 on the same frames: image score, tile score (per instance) and anomaly map."""
    if models.precision == "fp32" or not frames:
        return None
    chosen = models.precision
    reduced = Inspector(models, settings).inspect(frames)
    set_precision(models, "fp32")
    try:
        full = Inspector(models, settings).inspect(frames)
    finally:
        set_precision(models, chosen)
    score = max(abs(a.score - b.score) for a, b in zip(reduced, full))
    instances = [
        abs(x.score - y.score)
        for a, b in zip(reduced, full)
        if len(a.instances) == len(b.instances)
        for x, y in zip(a.instances, b.instances)
    ]
    anomaly_map = max(float(np.abs(a.anomaly_map - b.anomaly_map).max()) for a, b in zip(reduced, full))
    return {
        "precision": chosen,
        "frames": len(frames),
        "max_image_score_diff": round(score, 5),
        "max_tile_score_diff": round(max(instances), 5) if instances else None,
        "max_anomaly_map_diff": round(anomaly_map, 5),
    }
