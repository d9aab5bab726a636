"""The Inspector's few-shot step for one frame: patch distances -> few-shot map -> fused map and score."""

from __future__ import annotations

import weakref

import numpy as np
import torch

from worker.inspection.fewshot.bank import PatchBank
from worker.inspection.fewshot.context import FewShotContext
from worker.inspection.fewshot.pool import pool_distance
from worker.inspection.fewshot.scoring import fuse, nearest_distance, tile_distance_maps
from worker.inspection.pipeline.aggregate import paste_tiles
from worker.inspection.pipeline.tiling import Tile

# A bank's array is copied to the device once and kept as long as the bank itself is in use.
_ON_DEVICE: weakref.WeakKeyDictionary[PatchBank, torch.Tensor] = weakref.WeakKeyDictionary()


def bank_on_device(bank: PatchBank, device: torch.device) -> torch.Tensor:
    tensor = _ON_DEVICE.get(bank)
    if tensor is None or tensor.device != device:
        tensor = _ON_DEVICE[bank] = torch.from_numpy(bank.features).to(device)
    return tensor


def frame_queries(tile_patches: torch.Tensor) -> torch.Tensor:
    """(T, L, n, C) patch tokens of a frame's tiles -> (L, T * n, C), tiles in order."""
    tiles, layers, n, channels = tile_patches.shape
    return tile_patches.permute(1, 0, 2, 3).reshape(layers, tiles * n, channels)


def few_shot_distances(context: FewShotContext, queries: torch.Tensor) -> np.ndarray | None:
    """(T * n,) patch distances from the bank and/or the pool (averaged when both), None when neither scores."""
    parts = []
    if context.bank is not None:
        parts.append(nearest_distance(queries, bank_on_device(context.bank, queries.device)))
    pool = context.pool
    if pool is not None and len(pool) >= context.pool_min_frames:
        frames = [torch.from_numpy(f).to(queries.device) for f in pool.frames()]
        parts.append(pool_distance(queries, frames, context.pool_fraction))
    if not parts:
        return None
    return torch.stack(parts).mean(dim=0).float().cpu().numpy()


def apply_few_shot(
    context: FewShotContext,
    frame_shape: tuple[int, int],
    tiles: list[Tile],
    tile_patches: torch.Tensor,
    grid: int,
    zero_map: np.ndarray,
    zero_score: float,
    weight: float,
) -> tuple[np.ndarray, float]:
    """The frame's fused (map, score); the zero-shot ones unchanged when nothing scores it.

    The few-shot map is 1 - max cosine per patch, upsampled to each tile and pasted like the
    zero-shot map (overlaps averaged); its score is the map's maximum. The frame's features
    join the pool afterwards, so a frame is never compared with itself.
    """
    if not tiles:
        return zero_map, zero_score
    queries = frame_queries(tile_patches)
    distances = few_shot_distances(context, queries)
    if context.pool is not None:
        context.pool.add(queries.float().cpu().numpy())
    if distances is None:
        return zero_map, zero_score
    maps = tile_distance_maps(distances, len(tiles), grid)
    few_map = paste_tiles(frame_shape, tiles, maps, np.ones(len(tiles), dtype=np.float32))
    fused_map = np.clip(fuse(zero_map, few_map, weight), 0.0, 1.0).astype(np.float32)
    return fused_map, float(np.clip(fuse(zero_score, float(few_map.max()), weight), 0.0, 1.0))
