"""`linewatch-worker bench --sweep`: frames/s and p50/p99 batch latency per batch size and foreground.

Made for the day a GPU machine is lent: one command, one JSON, the device named in it.
Each (foreground, batch size) runs `rounds` batches after one warm-up batch.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from common.settings import ModelSettings
from worker.bench.inprocess import device_name, percentile, synthetic_frames
from worker.bench.units import reference_tile_ms, tile_units
from worker.inspection.inspector import Inspector
from worker.inspection.models.registry import load_models


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def sweep_one(inspector: Inspector, frames: list, batch: int, rounds: int) -> dict:
    """Batch latencies of `rounds` batches of `batch` frames (after one warm-up batch)."""
    device = inspector.models.device
    inspector.inspect(frames[:batch])
    latencies = []
    for round_index in range(rounds):
        chunk = [frames[(round_index * batch + i) % len(frames)] for i in range(batch)]
        _synchronise(device)
        start = time.perf_counter()
        inspector.inspect(chunk)
        _synchronise(device)
        latencies.append((time.perf_counter() - start) * 1000.0)
    total_s = sum(latencies) / 1000.0
    return {
        "batch": batch,
        "batches": rounds,
        "frames_per_s": round(batch * rounds / total_s, 2),
        "batch_latency_ms_p50": percentile(latencies, 50),
        "batch_latency_ms_p99": percentile(latencies, 99),
        "ms_per_frame": round(float(np.mean(latencies)) / batch, 2),
    }


def run_sweep(
    settings: ModelSettings,
    batches: list[int],
    foregrounds: list[str],
    rounds: int,
    width: int,
    height: int,
) -> dict:
    frames = synthetic_frames(max(batches) * 2, width, height)
    results, device = [], None
    reference_ms = None
    for foreground in foregrounds:
        models = load_models(settings.model_copy(update={"foreground": foreground}))
        device = models.device
        reference_ms = reference_ms or reference_tile_ms(device)
        inspector = Inspector(models, settings.model_copy(update={"foreground": foreground}))
        for batch in batches:
            row = sweep_one(inspector, frames, batch, rounds)
            row["tile_units_per_frame"] = tile_units(row["ms_per_frame"], reference_ms)
            results.append({"foreground": foreground, "precision": models.precision, **row})
        del inspector, models
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return {
        "profile": settings.profile,
        "device": device_name(device) if device is not None else None,
        "frame_size": [width, height],
        "reference_tile_ms": reference_ms,
        "results": results,
    }
