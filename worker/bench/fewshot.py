"""`linewatch-worker bench --few-shot`: what reference banks and the rolling pool cost.

For K reference frames (0 = zero-shot, the baseline) and for pools of M frames it reports ms per
frame (the few-shot step is a batched matrix product on the same device as the models) and the
memory they hold: the bank's or pool's bytes, and the device's peak allocation on CUDA.
"""

from __future__ import annotations

import numpy as np
import torch

from common.settings import ModelSettings
from worker.bench.inprocess import run_batches, synthetic_frames, warm_up
from worker.inspection.fewshot.build import bank_from_images
from worker.inspection.fewshot.context import FewShotContext
from worker.inspection.fewshot.pool import RollingPool
from worker.inspection.inspector import Inspector
from worker.inspection.measure import peak_rss_mb
from worker.inspection.models.registry import load_models
from worker.inspection.types import Frame

OBJECT = "metal washer"


def _with(frames: list[Frame], context: FewShotContext | None) -> list[Frame]:
    return [Frame(f.frame_id, f.image, f.object_name, few_shot=context) for f in frames]


def _device_peak_mb(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _measure(inspector: Inspector, frames: list[Frame], batch: int, context, held_bytes: int) -> dict:
    data = _with(frames, context)
    warm_up(inspector, data)
    _reset_peak(inspector.models.device)
    run = run_batches(inspector, data, batch)
    return {
        "ms_per_frame": run["ms_per_frame"],
        "latency_ms_p50": run["latency_ms_p50"],
        "tile_score_plus_aggregate_ms": round(
            run["stage_ms_per_frame"].get("tile_score", 0.0) + run["stage_ms_per_frame"].get("aggregate", 0.0), 2
        ),
        "held_mb": round(held_bytes / 2**20, 2),
        "device_peak_mb": _device_peak_mb(inspector.models.device),
    }


def run_fewshot_bench(
    settings: ModelSettings,
    frames: int,
    batch: int,
    width: int,
    height: int,
    shots: tuple[int, ...] = (0, 1, 4, 16),
    pools: tuple[int, ...] = (32, 128),
) -> dict:
    models = load_models(settings)
    inspector = Inspector(models, settings)
    data = synthetic_frames(frames, width, height)
    good = [f.image for f in synthetic_frames(max(shots + (1,)), width, height, seed=99)]
    report: dict = {
        "profile": models.profile,
        "device": str(models.device),
        "frame_size": [width, height],
        "frames": frames,
        "batch": batch,
        "layers": list(models.clip.patch_layers(settings.few_shot_layers)),
        "patches_per_tile": models.clip.patch_grid**2,
        "references": {},
        "pool": {},
    }
    for k in shots:
        bank = bank_from_images(inspector, good[:k], OBJECT) if k else None
        row = _measure(inspector, data, batch, FewShotContext(bank=bank) if bank else None, bank.nbytes if bank else 0)
        row["bank_patches"] = bank.patches if bank else 0
        report["references"][str(k)] = row
    features = inspector.patch_features(data[: min(len(data), 8)])
    for m in pools:
        pool = RollingPool(m)
        pool.replace([features[i % len(features)] for i in range(m)])  # a full pool from the start
        context = FewShotContext(pool=pool, pool_fraction=settings.pool_fraction, pool_min_frames=1)
        report["pool"][str(m)] = _measure(inspector, data, batch, context, pool.nbytes)
        report["pool"][str(m)]["pool_patches"] = int(sum(f.shape[1] for f in pool.frames()))
    report["bytes_per_patch"] = int(np.prod(features[0].shape[::2])) * 4 if features else None
    report["peak_rss_mb"] = peak_rss_mb()
    return report
